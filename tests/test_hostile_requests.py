"""Hostile request bodies (issue 23): each is the caller's mistake, answered 4xx with one line.

Through SageMaker's own serving toolkit in-process (`dogops.local.serving_toolkit.ToolkitWorker`
around the real `model_code/inference.py`: what the local endpoint's workers and the PyTorch
container run), alone and inside a batch; and through the Lambda handler, whose refusals come
before any endpoint call (its endpoint URL is a closed port: a forwarded event would be 502).
The model is untrained (its weights do not matter to a refusal); nothing is mocked.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from model_code import inference

DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
HOSTILE_BODIES = [
    ("non-utf8-json", b'{"url": "https://example.com/\xff\xfe.jpg"}', "application/json", 400,
     "not UTF-8"),
    ("deep-array", DEEP_ARRAY, "application/json", 400, "nested too deeply"),
    ("deep-object", DEEP_OBJECT, "application/json", 400, "nested too deeply"),
    ("huge-integer", b'{"top_k": ' + b"9" * 5000 + b"}", "application/json", 400,
     "number too long"),
    ("non-utf8-csv", b"\xff,\xfe\n", "text/csv", 415, "unsupported content type"),
]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bilevel_png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A valid 1-bit greyscale PNG of width x height, all black: ~20 KB for 12,000 x 12,000,
    0.7 GB once decoded and converted to RGB. Built row by row, never held decoded here."""
    if idat is None:
        packer, row = zlib.compressobj(9), b"\x00" * (1 + (width + 7) // 8)
        idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "brown").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-class model laid out as train.py lays it out (code/ included)."""
    from model_code import net, train_outputs

    root = tmp_path_factory.mktemp("hostile") / "model"
    module = net.build_model("efficientnet_lite0", 2, image_size=32, pretrained=False)
    train_outputs.save_model(root, module, {"class_names": ["a", "b"], "image_size": 32,
                                            "architecture": "efficientnet_lite0"})
    return root


@pytest.fixture
def worker(model_dir: Path, toolkit_in_process: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    from dogops.local.serving_toolkit import ToolkitWorker

    monkeypatch.delenv("DOGOPS_MAX_IMAGE_PIXELS", raising=False)
    return ToolkitWorker(str(model_dir), str(model_dir / "code"))


def assert_one_line_client_error(answer: tuple[int, bytes, str], status: int, words: str) -> None:
    got, body, content_type = answer
    text = body.decode()
    assert (got, content_type) == (status, "text/plain"), text[:300]
    assert words in text and "\n" not in text and "Traceback" not in text, text[:300]


@pytest.mark.parametrize(("body", "content_type", "status", "words"),
                         [c[1:] for c in HOSTILE_BODIES], ids=[c[0] for c in HOSTILE_BODIES])
def test_hostile_bodies_are_4xx_one_liners_through_the_serving_toolkit(
    worker: Any, body: bytes, content_type: str, status: int, words: str
) -> None:
    assert_one_line_client_error(worker.invoke(body, content_type, "application/json"),
                                 status, words)
    # In a batch the toolkit's rules are applied per request: it fails alone.
    bad, good = worker.invoke_batch([(body, content_type, "application/json"),
                                     (small_png(), "image/png", "application/json")])
    assert_one_line_client_error(bad, status, words)
    assert good[0] == 200 and json.loads(good[1])["label"] in ("a", "b")


def test_the_toolkit_hands_json_to_input_fn_undecoded() -> None:
    """The lever the fix uses: sagemaker-inference decodes only the types in this list."""
    from sagemaker_inference import content_types

    assert content_types.UTF8_TYPES == []


@pytest.mark.parametrize("payload", [b'{"image": "x"', DEEP_ARRAY, b'{"top_k": ' + b"1" * 4301 +
                                     b"}", b"\xff"], ids=["syntax", "deep", "long-int", "bytes"])
def test_load_json_says_what_is_wrong_in_one_line(payload: bytes) -> None:
    with pytest.raises(inference.RequestError) as caught:
        inference.load_json(payload)
    assert caught.value.status_code == 400 and "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Pixel bombs


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_pixel_bomb_is_413_naming_the_limit(worker: Any) -> None:
    bomb = bilevel_png(12_000, 12_000)
    assert len(bomb) < 64 * 1024  # far inside every byte limit
    assert_one_line_client_error(worker.invoke(bomb, "image/png", "application/json"), 413,
                                 "over the 24,000,000-pixel limit (DOGOPS_MAX_IMAGE_PIXELS)")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_pixel_limit_is_checked_before_any_pixel_is_decoded() -> None:
    """A header of 12,000 x 12,000 with garbage pixel data: refused for its size (413), not for
    its data (400), so the size was judged before decoding began."""
    with pytest.raises(inference.RequestError, match="megapixels") as caught:
        inference.load_image_bytes(bilevel_png(12_000, 12_000, idat=b"garbage"))
    assert caught.value.status_code == 413


def test_the_pixel_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGOPS_MAX_IMAGE_PIXELS", "255")
    with pytest.raises(inference.RequestError, match="16 x 16 = 256 pixels") as caught:
        inference.load_image_bytes(small_png())
    assert caught.value.status_code == 413
    monkeypatch.setenv("DOGOPS_MAX_IMAGE_PIXELS", "256")
    image = inference.load_image_bytes(small_png())
    assert image.size == (16, 16) and image.mode == "RGB"


# --------------------------------------------------------------------------------------------
# The Lambda: refused before the endpoint is called


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "never-called")
    monkeypatch.setenv("SAGEMAKER_RUNTIME_ENDPOINT_URL", "http://127.0.0.1:9")  # closed: 502
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("CONNECT_TIMEOUT_S", "1")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


LAMBDA_EVENTS = [
    ("deep-json-body", {"httpMethod": "POST", "headers": {"content-type": "application/json"},
                        "body": DEEP_ARRAY.decode()}, 400, "nested too deeply"),
    ("deep-object-body", {"httpMethod": "POST", "body": DEEP_OBJECT.decode()}, 400,
     "nested too deeply"),
    ("huge-integer-body", {"httpMethod": "POST", "headers": {"content-type": "application/json"},
                           "body": '{"top_k": ' + "9" * 5000 + "}"}, 400, "not valid JSON"),
    ("headers-list", {"httpMethod": "POST", "headers": [["content-type", "image/png"]],
                      "body": "x"}, 400, "'headers' must be an object"),
    ("lone-surrogate-body", {"httpMethod": "POST", "body": "\ud800"}, 400, "not valid Unicode"),
    ("base64-json-as-image", {"image": _b64(b'{"url": "https://169.254.169.254/latest/"}'),
                              "content_type": "application/json"}, 415,
     "unsupported content type 'application/json' for 'image'"),
]


@pytest.mark.parametrize(("event", "status", "words"), [c[1:] for c in LAMBDA_EVENTS],
                         ids=[c[0] for c in LAMBDA_EVENTS])
def test_lambda_answers_hostile_events_4xx_without_calling_the_endpoint(
    lambda_env: None, event: Any, status: int, words: str
) -> None:
    from dogops.lambda_handler import handler

    response = handler.lambda_handler(event, None)
    error = json.loads(response["body"])["error"]
    assert response["statusCode"] == status, error
    assert words in error and "\n" not in error


# --------------------------------------------------------------------------------------------
# The local endpoint, through boto3: the same answers, as SageMaker shapes them


@pytest.fixture(scope="module")
def endpoint_url(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from dogops.local.endpoint import start_endpoint, stop_endpoint
    from dogops.settings import ScalingConfig

    state = tmp_path_factory.mktemp("hostile-state")
    info = start_endpoint("hostile", model_dir, state, ScalingConfig(min_capacity=1,
                                                                     max_capacity=1),
                          env={"OMP_NUM_THREADS": "1"}, options={"drain_seconds": 0.2})
    yield str(info.runtime_endpoint_url)
    stop_endpoint("hostile", state)


@pytest.mark.slow
@pytest.mark.parametrize(("body", "content_type", "status", "words"),
                         [c[1:] for c in HOSTILE_BODIES] + [
                             (bilevel_png(12_000, 12_000), "image/png", 413, "megapixels")],
                         ids=[c[0] for c in HOSTILE_BODIES] + ["pixel-bomb"])
def test_the_local_endpoint_answers_hostile_bodies_as_model_errors_with_4xx(
    endpoint_url: str, body: bytes, content_type: str, status: int, words: str
) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client("sagemaker-runtime", endpoint_url=endpoint_url,
                          region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(retries={"total_max_attempts": 1}, read_timeout=30))
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName="hostile", Body=body, ContentType=content_type)
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == status, error["OriginalMessage"]
    assert words in error["OriginalMessage"]
    assert "Traceback" not in error["Error"]["Message"]


class _BatchContext:
    """TorchServe's context during a batch, as far as the toolkits use it (as in
    tests/test_toolkit_parity.py): one header holder per request, a status per index."""

    def __init__(self, model_dir: str, headers: list[dict[str, str]]) -> None:
        from dogops.local.serving_toolkit import _RequestProcessor

        self.system_properties = {"model_dir": model_dir, "gpu_id": None}
        self.request_processor = [_RequestProcessor(h) for h in headers]
        self.statuses: dict[int, int] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = code

    def set_response_content_type(self, idx: int, value: str) -> None:
        pass


def test_a_torchserve_batch_led_by_json_answers_each_request_alone(worker: Any,
                                                                   model_dir: Path) -> None:
    """With SAGEMAKER_TS_BATCH_SIZE > 1 the toolkit decided UTF-8 decoding for the whole batch
    from the first request's Content-Type: a JSON request first made the image after it fail to
    decode, and one non-UTF-8 body failed the whole batch with 500."""
    from sagemaker_pytorch_serving_container.handler_service import HandlerService

    service = HandlerService()
    bodies = [b'{"image": "' + base64.b64encode(small_png()) + b'"}', small_png(),
              b'{"url": "\xff"}', small_png()]
    kinds = ["application/json", "image/png", "application/json", "image/png"]
    context = _BatchContext(str(model_dir), [{"Content-Type": k, "Accept": "application/json"}
                                             for k in kinds])
    service.initialize(context)
    answers = service.handle([{"body": bytearray(b)} for b in bodies], context)
    assert {i: context.statuses.get(i, 200) for i in range(4)} == {0: 200, 1: 200, 2: 400,
                                                                   3: 200}
    assert "not UTF-8" in answers[2]
    assert all(json.loads(answers[i])["label"] in ("a", "b") for i in (0, 1, 3))
