"""The parity battery: one trained model and one table of good and bad requests, shared by
`test_toolkit_parity.py` (the toolkit in-process, the local endpoint, the Lambda) and
`test_torchserve_parity.py` (the local endpoint against TorchServe with SageMaker's toolkits).

A row is built from `Sources` (a real test image and the URLs of real image servers on
127.0.0.1) when a test runs, so the table itself is static and can be parametrized over.
`expected` is the status the local endpoint must answer: every caller's mistake is a 4xx.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from http_servers import http_server, send_image
from PIL import Image

from dogops.settings import ScalingConfig, Settings, TrainingConfig, TuningConfig

LABEL = "002.Synthetic_Collie"
URL_TIMEOUT_S = 1.0
# URLs to 127.0.0.1 over http are allowed so the image servers are reachable; every other URL
# case is still refused (scheme, host list, or address), as the table asserts. Both stacks'
# workers get this environment, as an operator would set it on the endpoint.
SERVING_ENV = {
    "DOGOPS_ALLOWED_URL_SCHEMES": "https,http,s3",
    "DOGOPS_ALLOWED_URL_HOSTS": "127.0.0.1",
    "DOGOPS_URL_TIMEOUT_S": str(URL_TIMEOUT_S),
}
JSON = "application/json"


def train_trial(root: Path) -> dict[str, Any]:
    """One small model trained by the local tuner (one trial, started by `sagemaker-training`)."""
    from dogops.local.tuner import LocalTuner
    from model_code.demo_data import generate_demo_dataset

    data = generate_demo_dataset(root / "data", classes=3, train_per_class=10,
                                 valid_per_class=3, test_per_class=3, image_size=64)
    tuning = TuningConfig(max_jobs=1, max_parallel_jobs=1, epochs=3, batch_sizes=[8],
                          learning_rate_min=0.01, learning_rate_max=0.01, strategy="random")
    training = TrainingConfig(image_size=64, epochs=3)
    result = LocalTuner(job_name="parity-job", job_dir=root / "job", data_dir=data,
                        tuning=tuning, training=training).run()
    best = result.best
    assert best is not None and best.model_uri is not None, result.trials
    trial_dir = Path(best.model_uri.removeprefix("file://")).parent
    return {"data": data, "dir": trial_dir, "model": trial_dir / "model", "result": best,
            "tuning": tuning, "training": training, "job_dir": root / "job"}


def sample_jpeg(trial: dict[str, Any]) -> bytes:
    """A test-split JPEG of class LABEL."""
    return sorted((trial["data"] / "test" / LABEL).glob("*.jpg"))[0].read_bytes()


def local_endpoint(name: str, trial: dict[str, Any], state_dir: Path) -> Iterator[str]:
    """The trial's model behind the local endpoint (one worker, SERVING_ENV in its workers), for
    the length of the generator: its runtime URL."""
    from dogops.local.endpoint import start_endpoint, stop_endpoint
    from dogops.serving_env import serving_environment

    env = {**serving_environment(Settings()), **SERVING_ENV}
    scaling = ScalingConfig(min_capacity=1, max_capacity=1)
    info = start_endpoint(name, trial["model"], state_dir, scaling, env=env,
                          options={"drain_seconds": 0.3})
    try:
        yield str(info.runtime_endpoint_url)
    finally:
        stop_endpoint(name, state_dir)


# --------------------------------------------------------------------------------------------
# Image servers on 127.0.0.1


@dataclass(frozen=True)
class Sources:
    """What rows are built from: the test image and the image servers' URLs."""

    jpeg: bytes
    image_url: str  # serves `jpeg`
    drip_url: str  # sends its headers, then one byte every 0.5 s


def image_server(jpeg: bytes) -> Iterator[str]:
    """Serves `jpeg` at /dog.jpg for the length of the generator."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            send_image(self, jpeg, "image/jpeg")

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as url:
        yield f"{url}/dog.jpg"


def drip_server() -> Iterator[str]:
    """An image server that sends its headers, then one byte every 0.5 s."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as url:
        yield f"{url}/dog.jpg"


# --------------------------------------------------------------------------------------------
# Bodies


def png(jpeg: bytes, mode: str) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert(mode).save(out, format="PNG")
    return out.getvalue()


def pixel_bomb_png(width: int = 12_000, height: int = 12_000) -> bytes:
    """A complete, valid 1-bit PNG of `width` x `height` black pixels, ~20 KB on the wire:
    144 million pixels, under PIL's error threshold (2 x MAX_IMAGE_PIXELS), so PIL only warns
    and decodes it (hundreds of MB as RGB) unless the server refuses it by its declared size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str
    accept: str = JSON
    event: Any = None  # the Lambda event carrying the same request, where the Lambda has one


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Sources], Request]
    expected: int  # the local endpoint's status
    toolkit: bool = False  # also a row of the three-door table in test_toolkit_parity.py

    def __repr__(self) -> str:  # the pytest id
        return self.name


def _image(raw: bytes, content_type: str) -> Request:
    return Request(raw, content_type, event={"image": base64.b64encode(raw).decode()})


def _json(payload: Any) -> Request:
    return Request(json.dumps(payload).encode(), JSON, event=payload)


def _raw_json(body: bytes) -> Request:
    return Request(body, JSON)


BROKEN_JPEG = b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20
TEXT_EVENT = {"httpMethod": "POST", "headers": {"content-type": "text/plain"},
              "body": "a dog, honestly"}

CASES: list[Case] = [
    # Good requests: 200 and the same label everywhere.
    Case("good-jpeg", lambda s: _image(s.jpeg, "image/jpeg"), 200, toolkit=True),
    Case("rgba-png", lambda s: _image(png(s.jpeg, "RGBA"), "image/png"), 200, toolkit=True),
    Case("greyscale-png", lambda s: _image(png(s.jpeg, "L"), "image/png"), 200, toolkit=True),
    Case("json-base64", lambda s: _json({"image": base64.b64encode(s.jpeg).decode()}), 200),
    Case("good-url", lambda s: _json({"url": s.image_url}), 200),
    # Caller mistakes: each a 4xx with a one-line reason.
    Case("oversized", lambda s: _image(s.jpeg + os.urandom(11 * 1024 * 1024), "image/jpeg"),
         413, toolkit=True),  # over every limit: 6 MB, 10 MB
    Case("broken-jpeg", lambda s: _image(BROKEN_JPEG, "image/jpeg"), 400, toolkit=True),
    Case("empty-body", lambda s: _image(b"", "image/jpeg"), 400, toolkit=True),
    Case("text-plain", lambda s: Request(b"a dog, honestly", "text/plain", event=TEXT_EVENT),
         415, toolkit=True),
    Case("json-without-url", lambda s: _json({"foo": 1}), 400, toolkit=True),
    Case("json-not-object", lambda s: _raw_json(b"[1, 2, 3]"), 400),
    Case("bad-base64", lambda s: _json({"image": "this is not base64!"}), 400),
    Case("metadata-url", lambda s: _json({"url": "http://169.254.169.254/latest/meta-data/iam/"}),
         400, toolkit=True),
    Case("file-url", lambda s: _json({"url": "file:///etc/passwd"}), 400, toolkit=True),
    Case("shared-address-url", lambda s: _json({"url": "https://100.64.0.1/dog.jpg"}), 400,
         toolkit=True),
    Case("drip-server", lambda s: _json({"url": s.drip_url}), 400, toolkit=True),
    Case("unknown-accept", lambda s: Request(s.jpeg, "image/jpeg", accept="text/csv"), 406),
    # Hostile bodies (issue 23): still the caller's mistake, so still a 4xx.
    Case("json-not-utf8", lambda s: _raw_json(b'{"url": "\xff\xfe\xfd"}'), 400),
    Case("json-nested-100000", lambda s: _raw_json(b"[" * 100_000 + b"]" * 100_000), 400),
    Case("json-int-5000-digits",
         lambda s: _raw_json(b'{"image": "' + base64.b64encode(s.jpeg) + b'", "top_k": '
                             + b"9" * 5000 + b"}"), 400),
    Case("png-12000x12000", lambda s: Request(pixel_bomb_png(), "image/png"), 413),
]
GOOD = frozenset(case.name for case in CASES if case.expected == 200)


def toolkit_cases(sources: Sources) -> list[tuple[str, bytes, str, Any, int]]:
    """The three-door table's rows: (name, body, content type, Lambda event, expected status)."""
    rows = []
    for case in CASES:
        if case.toolkit:
            request = case.build(sources)
            rows.append((case.name, request.body, request.content_type, request.event,
                         case.expected))
    return rows
