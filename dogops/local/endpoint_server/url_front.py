"""Image URLs fetched in the front, so a URL that never answers cannot hold a model worker.

`inference.py` fetches `{"url": ...}` itself, in the worker that runs the model: a batch waits
for its slowest URL, and 9 requests whose URL never answers made an innocent image request wait
25 s (17 made it 503). Here the HTTP thread of such a request fetches the image first, with the
same code and settings the model uses (`model_code/url_fetch.py`: allow-lists, address checks,
size limit, the one `DOGOPS_URL_TIMEOUT_S` deadline), and hands the worker the image inline
(`{"image": <base64>, ...}`, the request's other keys kept), before the request counts against
the endpoint's capacity or enters the batcher. At most `max_url_fetches` fetches run at once per
endpoint; one more is answered 429 ThrottlingException at once (the caller's load, not a fault of
the model: a 4xx, which guarded rollouts and 5xx alarms do not count).

On only where the server is told so (`max_url_fetches` > 0; the local backend sets
`endpoint.max_url_fetches`, since it serves the project's `inference.py`, for which both forms
are the same request): other model code gets its bodies untouched, as in the container.

A refused or failed fetch is answered as the model would answer it: the same `FetchError`
message and status. Anything that is not a JSON object with a "url" and no inline image (which
`inference.py` would prefer) goes to the worker unchanged, and is judged there.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from typing import Any

from model_code import url_fetch

# What inference.py accepts as JSON and how it picks the image (model_code/inference.py).
JSON_TYPE = "application/json"
INLINE_KEYS = ("image", "b64")
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024


class FetchBusy(Exception):
    """Every fetch slot of this endpoint is taken."""


class UrlFront:
    """Resolves URL requests in the calling (HTTP) thread, at most `limit` at a time."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"max_url_fetches must be >= 0, got {limit}")
        self.limit = limit  # 0: off, every body goes to the model code as it came
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self._lock = threading.Lock()
        self.in_flight = 0
        self.refused_busy = 0

    def resolve(self, body: bytes, content_type: str) -> bytes:
        """The body to hand the worker: a URL request's with the image inline, any other as it
        came. Raises `url_fetch.FetchError` (the model's answer) or `FetchBusy`."""
        payload = _url_request(body, content_type) if self.limit else None
        if payload is None:
            return body
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.refused_busy += 1
            raise FetchBusy
        with self._lock:
            self.in_flight += 1
        try:
            image = url_fetch.fetch_url(payload.pop("url"), _max_image_bytes())
        finally:
            with self._lock:
                self.in_flight -= 1
            self._slots.release()
        payload["image"] = base64.b64encode(image).decode("ascii")
        return json.dumps(payload).encode()

    def fetching(self) -> int:
        with self._lock:
            return self.in_flight

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"max_url_fetches": self.limit, "url_fetches_in_flight": self.in_flight,
                    "url_fetches_refused_busy": self.refused_busy}


def _url_request(body: bytes, content_type: str) -> dict[str, Any] | None:
    """The JSON object if `inference.py` would fetch its "url", else None."""
    if content_type.split(";")[0].strip().lower() != JSON_TYPE:
        return None
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError: the model says
        return None
    if not isinstance(payload, dict) or "url" not in payload:
        return None
    if any(key in payload for key in INLINE_KEYS):
        return None
    return payload


def _max_image_bytes() -> int:
    """inference.py's DOGOPS_MAX_IMAGE_BYTES, read the same way (the workers share this env)."""
    raw = os.environ.get("DOGOPS_MAX_IMAGE_BYTES", "").strip()
    return int(raw) if raw else DEFAULT_MAX_IMAGE_BYTES
