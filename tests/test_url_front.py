"""Image URLs are fetched in the endpoint's front, never in a model worker (issue 23).

A real endpoint process (one worker, serving the real `inference.py` with an untrained model)
and a real image server on 127.0.0.1 whose URL never answers (allowed through the environment,
as an operator would). Nothing is mocked.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from http_servers import http_server, send_image
from PIL import Image

from dogops.settings import ScalingConfig

pytestmark = pytest.mark.slow

URL_TIMEOUT_S = 3.0
SERVING_ENV = {"DOGOPS_ALLOWED_URL_SCHEMES": "http", "DOGOPS_ALLOWED_URL_HOSTS": "127.0.0.1",
               "DOGOPS_URL_TIMEOUT_S": str(URL_TIMEOUT_S), "OMP_NUM_THREADS": "1"}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "brown").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def image_urls() -> Iterator[str]:
    """/hang never answers (until the module ends); /dog.png is an image, /slow.png after 1.5 s."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.startswith("/hang"):
                release.wait(60)
                return
            if self.path.startswith("/slow"):
                time.sleep(1.5)
            body = png()
            send_image(self, body, "image/png")

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as url:
        yield url
        release.set()


def _endpoint(tmp: Path, name: str, max_url_fetches: int) -> Any:
    from dogops.local.endpoint import start_endpoint
    from model_code import net, train_outputs

    model = tmp / "model"
    module = net.build_model("efficientnet_lite0", 2, image_size=32, pretrained=False)
    train_outputs.save_model(model, module, {"class_names": ["a", "b"], "image_size": 32,
                                             "architecture": "efficientnet_lite0"})
    return start_endpoint(name, model, tmp / "state", ScalingConfig(min_capacity=1,
                                                                    max_capacity=1),
                          env=SERVING_ENV, options={"drain_seconds": 0.2,
                                                    "max_url_fetches": max_url_fetches})


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from dogops.local.endpoint import stop_endpoint

    tmp = tmp_path_factory.mktemp("url-front")
    info = _endpoint(tmp, "url-front", max_url_fetches=9)
    yield str(info.runtime_endpoint_url)
    stop_endpoint("url-front", tmp / "state")


def post(base: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any], float]:
    """(status, JSON answer, seconds) over the container contract (the model's own status)."""
    request = urllib.request.Request(f"{base}/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw), time.monotonic() - started


def test_never_answering_urls_do_not_delay_an_image_request(endpoint: str,
                                                           image_urls: str) -> None:
    """Before: the worker fetched each URL (a batch at a time); 9 such requests held the image
    request behind them for several URL deadlines. Now they wait in the front."""
    hang = json.dumps({"url": f"{image_urls}/hang.jpg"}).encode()
    with ThreadPoolExecutor(max_workers=9) as pool:
        slow = [pool.submit(post, endpoint, hang, "application/json") for _ in range(9)]
        time.sleep(0.5)  # all nine are in flight
        status, answer, seconds = post(endpoint, png(), "image/png")
        answers = [f.result() for f in slow]
    assert status == 200 and answer["label"] in ("a", "b")
    assert seconds < URL_TIMEOUT_S / 2, f"the image request waited {seconds:.2f} s"
    for got, body, took in answers:  # each slow one: the model's own refusal, at its deadline
        assert got == 400 and "timed out" in body["message"], body
        assert took < URL_TIMEOUT_S + 2


def test_a_url_is_fetched_in_the_front_and_answered_with_its_options(endpoint: str,
                                                                     image_urls: str) -> None:
    body = json.dumps({"url": f"{image_urls}/dog.png", "top_k": 1}).encode()
    status, answer, _ = post(endpoint, body, "application/json")
    assert status == 200 and len(answer["predictions"]) == 1
    refused = json.dumps({"url": "http://10.0.0.1/dog.png"}).encode()
    status, answer, _ = post(endpoint, refused, "application/json")
    assert status == 400 and "not in the allowed hosts" in answer["message"]


def test_fetches_over_the_bound_are_429_at_once(tmp_path: Path, image_urls: str) -> None:
    from dogops.local.endpoint import stop_endpoint

    base = str(_endpoint(tmp_path, "url-bound", max_url_fetches=2).runtime_endpoint_url)
    try:
        hang = json.dumps({"url": f"{image_urls}/hang.jpg"}).encode()
        with ThreadPoolExecutor(max_workers=2) as pool:
            slow = [pool.submit(post, base, hang, "application/json") for _ in range(2)]
            time.sleep(0.5)
            status, answer, seconds = post(base, hang, "application/json")
            assert status == 429 and "max_url_fetches" in answer["message"]
            assert seconds < 1.0
            inline = post(base, png(), "image/png")  # an image needs no fetch slot
            assert inline[0] == 200
            assert [f.result()[0] for f in slow] == [400, 400]
        status_page = json.loads(urllib.request.urlopen(f"{base}/dogops/status",
                                                        timeout=10).read())
        assert status_page["url_fetches"]["url_fetches_refused_busy"] == 1
    finally:
        stop_endpoint("url-bound", tmp_path / "state")


def test_off_by_default_bodies_reach_the_model_code_untouched(tmp_path: Path) -> None:
    """Other model code (the toy echoes the body it got) is served as the container serves it:
    only the local backend, serving the project's inference.py, turns the front fetch on."""
    from fixtures.toy_inference import make_model_dir

    from dogops.local.endpoint import start_endpoint, stop_endpoint

    info = start_endpoint("url-off", make_model_dir(tmp_path), tmp_path / "state",
                          ScalingConfig(min_capacity=1, max_capacity=1),
                          options={"drain_seconds": 0.2})
    try:
        body = json.dumps({"url": "https://example.com/dog.jpg"}).encode()
        status, answer, _ = post(str(info.runtime_endpoint_url), body, "application/json")
        assert status == 200 and answer["url"] == "https://example.com/dog.jpg"
    finally:
        stop_endpoint("url-off", tmp_path / "state")


def test_a_stopping_endpoint_answers_the_url_requests_it_is_fetching(tmp_path: Path,
                                                                     image_urls: str) -> None:
    """SIGTERM drains: a URL request still downloading in the front gets its answer."""
    from dogops.local.endpoint import stop_endpoint

    base = str(_endpoint(tmp_path, "url-drain", max_url_fetches=2).runtime_endpoint_url)
    body = json.dumps({"url": f"{image_urls}/slow.png"}).encode()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(post, base, body, "application/json")
        time.sleep(0.4)  # the fetch is under way (1.5 s)
        stop_endpoint("url-drain", tmp_path / "state")
        status, answer, _ = pending.result()
    assert status == 200 and answer["label"] in ("a", "b")
