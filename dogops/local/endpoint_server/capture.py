"""Data capture of the local endpoint: what SageMaker's DataCaptureConfig does on AWS.

A sampled share (`capture_percent`) of answered requests is written to the local object store
in SageMaker's capture layout and JSON Lines format (`dogops.capture`), so the `monitor` flow
reads both backends' captures the same way.

The request path only decides the sample and puts a reference on a bounded queue
(`offer`, which never blocks): a background thread builds the lines (base64 of the image
included) and writes one file per batch (what arrived within a second) and UTC hour, temp file
+ rename, so a reader never sees half a file. A full queue drops the capture and counts it; a
failed write is logged (never its content) and counted. Neither can touch the request's answer.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dogops.capture import capture_record, hour_folder, jsonl
from dogops.local.store import write_atomic

log = logging.getLogger("dogops.endpoint")

QUEUE_SIZE = 1000  # captures waiting for the writer; beyond this they are dropped, not waited on
BATCH_MAX = 500
LINGER_S = 1.0  # longest a capture waits for others to share its file


@dataclass
class _Capture:
    request: bytes
    request_type: str
    response: bytes
    response_type: str
    when: datetime
    inference_id: str | None


@dataclass
class CaptureWriter:
    root: Path
    endpoint: str
    percent: int
    queue_size: int = QUEUE_SIZE
    sampled: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0
    _queue: queue.Queue[_Capture | None] = field(init=False)
    _thread: threading.Thread = field(init=False)
    _random: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def offer(
        self, request: bytes, request_type: str, response: bytes, response_type: str,
        inference_id: str | None = None,
    ) -> None:
        """Queue one answered request for capture if it falls in the sample; never blocks
        and never raises (the answer has gone out; a capture problem is only counted)."""
        try:
            self._offer(request, request_type, response, response_type, inference_id)
        except Exception:  # noqa: BLE001
            with self._lock:
                self.failed += 1

    def _offer(
        self, request: bytes, request_type: str, response: bytes, response_type: str,
        inference_id: str | None,
    ) -> None:
        with self._lock:  # request threads share the counters and the random generator
            if self.percent < 100 and self._random.uniform(0, 100) >= self.percent:
                return
            self.sampled += 1
        item = _Capture(request, request_type, response, response_type, datetime.now(UTC),
                        inference_id)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (the server calls this when it stops)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("capture writer: queue still full at shutdown; pending captures lost")
            return
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {"percent": self.percent, "destination": self.root.as_uri(),
                "sampled": self.sampled, "written": self.written, "dropped": self.dropped,
                "failed": self.failed, "pending": self._queue.qsize()}

    # -- writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            # Gather what arrives within LINGER_S into one file (SageMaker also batches), so a
            # steady trickle of requests does not become one file per request.
            batch, deadline = [first], time.monotonic() + LINGER_S
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Capture]) -> None:
        by_hour: dict[str, list[_Capture]] = {}
        for item in batch:
            by_hour.setdefault(hour_folder(self.endpoint, item.when), []).append(item)
        for folder, items in by_hour.items():
            first = items[0].when
            # SageMaker-like names: time within the hour, then a unique part.
            name = f"{first:%M-%S}-{first.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
            try:
                body = jsonl(
                    capture_record(i.request, i.request_type, i.response, i.response_type,
                                   when=i.when, inference_id=i.inference_id)
                    for i in items
                )
                write_atomic(self.root / folder / name, body)
                with self._lock:
                    self.written += len(items)
            except Exception as exc:  # noqa: BLE001 - a capture must never take the server down
                with self._lock:
                    self.failed += len(items)
                log.error("capture writer: %d captures not written to %s: %s",
                          len(items), self.root / folder, type(exc).__name__)


def writer_for(endpoint: str, percent: int, capture_dir: str | None) -> CaptureWriter | None:
    """The writer the options ask for, or None when capture is off."""
    if percent <= 0 or not capture_dir:
        return None
    root = Path(capture_dir)
    os.makedirs(root, exist_ok=True)
    log.info("data capture: %d %% of requests to %s", percent, root)
    return CaptureWriter(root, endpoint, percent)
