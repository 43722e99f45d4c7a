"""model_code/inference.py end to end on a model trained here, with every content type and every
kind of bad request. URLs are served by a real http.server on 127.0.0.1 (allowed through the
environment, as an operator would), S3 objects by the moto server from conftest."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from http_servers import http_server, send_image
from PIL import Image

from model_code import inference, train, url_fetch
from model_code.demo_data import generate_demo_dataset
from model_code.inference import RequestError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inference")
    data = generate_demo_dataset(root / "data", classes=3, train_per_class=10,
                                 valid_per_class=3, test_per_class=3, image_size=64)
    code = train.main(["--data-dir", str(data), "--model-dir", str(root / "model"),
                       "--image-size", "64", "--epochs", "3", "--learning-rate", "0.01",
                       "--batch-size", "8"])
    assert code == 0
    return root / "model"


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Iterator[inference.LoadedModel]:
    # One thread: single small images gain nothing from more, and on a busy shared CI machine
    # two spinning threads made each request ~100x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield inference.model_fn(model_dir)
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def jpeg(model_dir: Path) -> bytes:
    data = model_dir.parent / "data" / "test" / "002.Synthetic_Collie"
    return sorted(data.glob("*.jpg"))[0].read_bytes()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DOGOPS_ALLOWED_URL_SCHEMES", "DOGOPS_ALLOWED_URL_HOSTS", "DOGOPS_URL_TIMEOUT_S",
                 "DOGOPS_MAX_IMAGE_BYTES", "DOGOPS_TOP_K", "DOGOPS_ALLOWED_S3_BUCKETS"):
        monkeypatch.delenv(name, raising=False)


def _png(jpeg: bytes, mode: str) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert(mode).save(out, format="PNG")
    return out.getvalue()


def _status(exc: pytest.ExceptionInfo[RequestError]) -> int:
    return exc.value.status_code


# --- content types -------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/x-image",
                                          "image/jpeg; charset=binary"])
def test_image_bytes(model: inference.LoadedModel, jpeg: bytes, content_type: str) -> None:
    body, ctype = inference.handle(model, jpeg, content_type, "application/json")
    result = json.loads(body)
    assert ctype == "application/json"
    assert result["label"] == "002.Synthetic_Collie"
    assert len(result["predictions"]) == 3  # top 5 capped at the number of classes
    probs = [p["probability"] for p in result["predictions"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert result["probability"] == probs[0]


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_png_with_alpha_greyscale_palette(model: inference.LoadedModel, jpeg: bytes,
                                          mode: str) -> None:
    result = json.loads(inference.handle(model, _png(jpeg, mode), "image/png", None)[0])
    assert result["label"] in model.class_names


def test_four_serving_functions_separately(model_dir: Path, jpeg: bytes) -> None:
    loaded = inference.model_fn(str(model_dir))
    request = inference.input_fn(jpeg, "image/jpeg")
    prediction = inference.predict_fn(request, loaded)
    assert json.loads(inference.output_fn(prediction, "application/json"))["label"]


def test_json_base64_variants(model: inference.LoadedModel, jpeg: bytes) -> None:
    b64 = base64.b64encode(jpeg).decode()
    for payload in ({"image": b64}, {"b64": b64}, {"image": f"data:image/jpeg;base64,{b64}"}):
        body = json.dumps({**payload, "top_k": 2})
        result = json.loads(inference.handle(model, body, "application/json", "*/*")[0])
        assert result["label"] == "002.Synthetic_Collie" and len(result["predictions"]) == 2


def test_logits_by_accept_type_and_by_flag(model: inference.LoadedModel, jpeg: bytes) -> None:
    body, ctype = inference.handle(model, jpeg, "image/jpeg", "application/x-logits+json")
    logits = json.loads(body)
    assert ctype == "application/x-logits+json"
    assert len(logits) == 1 and len(logits[0]) == 3
    assert max(range(3), key=lambda i: logits[0][i]) == 1  # argmax, as the original caller did
    flagged = json.dumps({"image": base64.b64encode(jpeg).decode(), "logits": True})
    assert json.loads(inference.handle(model, flagged, "application/json", None)[0]) == logits


# --- bad requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status", "match"),
    [
        (b"", "image/jpeg", None, 400, "empty"),
        (b"\xff\xd8 not really a jpeg", "image/jpeg", None, 400, "cannot decode"),
        (b"GIF89a", "text/plain", None, 415, "unsupported content type"),
        (b"{}", None, None, 415, "unsupported content type"),
        (b"{not json", "application/json", None, 400, "invalid JSON"),
        (b"[1, 2]", "application/json", None, 400, "must be an object"),
        (b'{"foo": 1}', "application/json", None, 400, '"url" or "image"'),
        (b'{"image": "***"}', "application/json", None, 400, "base64"),
        (b'{"image": "aGVsbG8=", "top_k": 0}', "application/json", None, 400, "top_k"),
        (b'{"image": "aGVsbG8="}', "application/json", None, 400, "cannot decode"),
        (b'{"url": 5}', "application/json", None, 400, "url"),
    ],
)
def test_bad_requests_are_client_errors(
    model: inference.LoadedModel, body: bytes, content_type: str | None, accept: str | None,
    status: int, match: str
) -> None:
    with pytest.raises(RequestError, match=match) as exc:
        inference.handle(model, body, content_type, accept)
    assert _status(exc) == status


def test_unsupported_accept_is_406(model: inference.LoadedModel, jpeg: bytes) -> None:
    with pytest.raises(RequestError, match="Accept") as exc:
        inference.handle(model, jpeg, "image/jpeg", "text/csv")
    assert _status(exc) == 406


def test_oversized_body_is_413(model: inference.LoadedModel, jpeg: bytes,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGOPS_MAX_IMAGE_BYTES", str(len(jpeg) - 1))
    with pytest.raises(RequestError, match="limit") as exc:
        inference.handle(model, jpeg, "image/jpeg", None)
    assert _status(exc) == 413
    # base64 inflates by 4/3: the JSON body is over a limit that the image itself is under
    b64 = json.dumps({"image": base64.b64encode(jpeg).decode()})
    monkeypatch.setenv("DOGOPS_MAX_IMAGE_BYTES", str(len(jpeg) + 100))
    with pytest.raises(RequestError, match="request body") as exc:
        inference.handle(model, b64, "application/json", None)
    assert _status(exc) == 413


# --- URLs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_server(jpeg: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/dog.jpg")
                self.end_headers()
                return
            if self.path == "/slow.jpg":
                time.sleep(2)
            if self.path == "/drip.jpg":  # headers, then one byte every 0.5 s
                self.send_response(200)
                self.send_header("Content-Length", str(len(jpeg)))
                self.end_headers()
                try:
                    for byte in jpeg[:40]:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:  # the client gave up, as the deadline test wants
                    pass
                return
            if self.path not in ("/dog.jpg", "/slow.jpg"):
                self.send_error(404)
                return
            send_image(self, jpeg, "image/jpeg")

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as url:
        yield url


@pytest.fixture
def allow_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGOPS_ALLOWED_URL_SCHEMES", "http,https")
    monkeypatch.setenv("DOGOPS_ALLOWED_URL_HOSTS", "127.0.0.1")


def _url_request(model: inference.LoadedModel, url: str) -> dict[str, object]:
    body = json.dumps({"url": url})
    result: dict[str, object] = json.loads(
        inference.handle(model, body, "application/json", "application/json")[0])
    return result


def test_url_from_an_allowed_host(model: inference.LoadedModel, image_server: str,
                                  allow_local: None) -> None:
    assert _url_request(model, f"{image_server}/dog.jpg")["label"] == "002.Synthetic_Collie"


@pytest.mark.parametrize(
    ("env", "path", "status", "match"),
    [
        ({}, "/dog.jpg", 400, "scheme 'http' is not allowed"),  # default: https and s3 only
        ({"DOGOPS_ALLOWED_URL_SCHEMES": "http"}, "/dog.jpg", 400, "private, loopback"),
        ({"DOGOPS_ALLOWED_URL_SCHEMES": "http", "DOGOPS_ALLOWED_URL_HOSTS": "example.com"},
         "/dog.jpg", 400, "not in the allowed hosts"),
        ({"DOGOPS_ALLOWED_URL_SCHEMES": "http", "DOGOPS_ALLOWED_URL_HOSTS": "127.0.0.1"},
         "/redirect", 400, "redirects are not followed"),
        ({"DOGOPS_ALLOWED_URL_SCHEMES": "http", "DOGOPS_ALLOWED_URL_HOSTS": "127.0.0.1"},
         "/missing.jpg", 400, "HTTP 404"),
        ({"DOGOPS_ALLOWED_URL_SCHEMES": "http", "DOGOPS_ALLOWED_URL_HOSTS": "127.0.0.1",
          "DOGOPS_MAX_IMAGE_BYTES": "1000"}, "/dog.jpg", 413, "limit"),
        ({"DOGOPS_ALLOWED_URL_SCHEMES": "http", "DOGOPS_ALLOWED_URL_HOSTS": "127.0.0.1",
          "DOGOPS_URL_TIMEOUT_S": "0.5"}, "/slow.jpg", 400, "timed out"),
    ],
    ids=["scheme", "private-address", "host-not-listed", "redirect", "404", "too-big", "timeout"],
)
def test_url_refusals(model: inference.LoadedModel, image_server: str,
                      monkeypatch: pytest.MonkeyPatch, env: dict[str, str], path: str,
                      status: int, match: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RequestError, match=match) as exc:
        _url_request(model, f"{image_server}{path}")
    assert _status(exc) == status


def test_one_deadline_for_the_whole_fetch(model: inference.LoadedModel, image_server: str,
                                          allow_local: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A server dripping a byte every 0.5 s never trips a socket timeout; the deadline stops it."""
    monkeypatch.setenv("DOGOPS_URL_TIMEOUT_S", "1")
    started = time.monotonic()
    with pytest.raises(RequestError, match="took longer than 1 s") as exc:
        _url_request(model, f"{image_server}/drip.jpg")
    assert _status(exc) == 400
    assert time.monotonic() - started < 1.8


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("https://169.254.169.254/latest/meta-data", "private, loopback, link-local"),
        ("https://10.0.0.1/dog.jpg", "private"),
        ("https://[::1]/dog.jpg", "private"),
        ("https://100.64.0.1/dog.jpg", "not globally routable"),  # carrier-grade NAT
        ("https://192.0.2.7/dog.jpg", "not globally routable"),  # documentation range
        ("https://[::ffff:10.0.0.1]/dog.jpg", "not globally routable"),
        ("https://[2002:a00:1::1]/dog.jpg", "not globally routable"),  # 6to4 of 10.0.0.1
        ("https://[fd00::1]/dog.jpg", "not globally routable"),
        ("https://224.0.0.1/dog.jpg", "not globally routable"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("https:///nohost", "no host"),
        ("s3://someone-elses-bucket/dog.jpg", "not in the allowed buckets"),
    ],
)
def test_url_checks_without_network(url: str, match: str) -> None:
    with pytest.raises(url_fetch.FetchError, match=match):
        url_fetch.check_url(url)


def test_public_addresses_pass_the_check() -> None:
    assert url_fetch.check_url("https://8.8.8.8/dog.jpg")[3] == "8.8.8.8"


def test_s3_url(model: inference.LoadedModel, jpeg: bytes, moto: str,
                monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="dog-images")
    s3.put_object(Bucket="dog-images", Key="collie.jpg", Body=jpeg)
    with pytest.raises(RequestError, match="not in the allowed buckets"):  # none by default
        _url_request(model, "s3://dog-images/collie.jpg")
    monkeypatch.setenv("DOGOPS_ALLOWED_S3_BUCKETS", "dog-images")
    assert _url_request(model, "s3://dog-images/collie.jpg")["label"] == "002.Synthetic_Collie"
    with pytest.raises(RequestError, match="cannot read"):
        _url_request(model, "s3://dog-images/missing.jpg")
    monkeypatch.setenv("DOGOPS_ALLOWED_URL_HOSTS", "other-bucket")
    with pytest.raises(RequestError, match="not in the allowed hosts"):
        _url_request(model, "s3://dog-images/collie.jpg")


def test_model_fn_names_a_missing_metadata_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        inference.model_fn(tmp_path)
