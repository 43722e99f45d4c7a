"""The Lambda handler, imported in-process and pointed at a real local toy endpoint.

Only the environment is set per test (monkeypatch), as Lambda would set it; the endpoint, the
boto3 client and the network calls are real.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.toy_inference import make_model_dir

from dogops.lambda_handler import handler
from dogops.local.endpoint import start_endpoint, stop_endpoint
from dogops.results import EndpointInfo
from dogops.settings import ScalingConfig

NAME = "toy-lambda-target"
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 96
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 42
ORIGINAL_EVENT = {
    "url": "https://s3.amazonaws.com/cdn-origin-etr.akc.org/wp-content/uploads/2017/11/"
    "20113314/Carolina-Dog-standing-outdoors.jpg"
}
SECRET = "do-not-echo-this-secret"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointInfo]:
    root = tmp_path_factory.mktemp("lambda-endpoint")
    # Two workers, so the slow-endpoint test does not hold up the others.
    info = start_endpoint(NAME, make_model_dir(root), root / "state",
                          ScalingConfig(min_capacity=2, max_capacity=2),
                          options={"drain_seconds": 0.3})
    yield info
    stop_endpoint(NAME, root / "state")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, endpoint: EndpointInfo) -> pytest.MonkeyPatch:
    monkeypatch.setenv("ENDPOINT_NAME", NAME)
    monkeypatch.setenv("SAGEMAKER_RUNTIME_ENDPOINT_URL", str(endpoint.runtime_endpoint_url))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("READ_TIMEOUT_S", "10")
    monkeypatch.delenv("TOP_K", raising=False)
    return monkeypatch


def call(event: Any) -> tuple[int, dict[str, Any]]:
    response = handler.lambda_handler(event, None)
    assert response["headers"] == {"Content-Type": "application/json"}
    assert SECRET not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def api_gateway(body: str | None, content_type: str, b64: bool = False) -> dict[str, Any]:
    return {
        "resource": "/predict", "path": "/predict", "httpMethod": "POST",
        "headers": {"Content-Type": content_type}, "queryStringParameters": None,
        "requestContext": {"stage": "prod"}, "body": body, "isBase64Encoded": b64,
    }


def function_url(body: str, content_type: str, b64: bool) -> dict[str, Any]:
    return {
        "version": "2.0", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": content_type},
        "requestContext": {"http": {"method": "POST"}}, "body": body, "isBase64Encoded": b64,
    }


# --------------------------------------------------------------------------------------------
# Accepted events


def test_original_url_event(env: pytest.MonkeyPatch) -> None:
    status, body = call(ORIGINAL_EVENT)
    assert status == 200
    assert body["url"] == ORIGINAL_EVENT["url"]  # the toy echoes what the endpoint received
    assert body["label"] == body["predictions"][0]["label"]
    assert body["probability"] == pytest.approx(0.7)


def test_base64_image_event(env: pytest.MonkeyPatch) -> None:
    status, body = call({"image": base64.b64encode(JPEG).decode()})
    assert status == 200 and body["image_bytes"] == len(JPEG)


def test_top_k_limits_predictions(env: pytest.MonkeyPatch) -> None:
    env.setenv("TOP_K", "2")
    status, body = call({"image": base64.b64encode(PNG).decode()})
    assert status == 200 and len(body["predictions"]) == 2


@pytest.mark.parametrize(
    "event",
    [
        api_gateway(json.dumps(ORIGINAL_EVENT), "application/json"),
        api_gateway(base64.b64encode(json.dumps(ORIGINAL_EVENT).encode()).decode(),
                    "application/json", b64=True),
        function_url(json.dumps(ORIGINAL_EVENT), "application/json", b64=False),
        {"httpMethod": "GET", "body": None, "queryStringParameters": ORIGINAL_EVENT},
    ],
    ids=["rest-json", "rest-json-base64", "function-url-json", "get-query"],
)
def test_api_gateway_url_events(env: pytest.MonkeyPatch, event: dict[str, Any]) -> None:
    status, body = call(event)
    assert status == 200 and body["url"] == ORIGINAL_EVENT["url"]


@pytest.mark.parametrize(
    "event",
    [
        api_gateway(base64.b64encode(JPEG).decode(), "image/jpeg", b64=True),
        function_url(base64.b64encode(JPEG).decode(), "application/octet-stream", b64=True),
        api_gateway(json.dumps({"image": base64.b64encode(JPEG).decode()}), "application/json"),
    ],
    ids=["rest-binary", "function-url-binary-sniffed", "rest-json-image"],
)
def test_api_gateway_image_events(env: pytest.MonkeyPatch, event: dict[str, Any]) -> None:
    status, body = call(event)
    assert status == 200 and body["image_bytes"] == len(JPEG)


def test_client_is_created_once_and_reused(env: pytest.MonkeyPatch) -> None:
    call(ORIGINAL_EVENT)
    first = handler.get_client()
    call(ORIGINAL_EVENT)
    assert handler.get_client() is first


# --------------------------------------------------------------------------------------------
# Failures: never 200


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ([], "non-empty JSON object"),
        ({}, "non-empty JSON object"),
        ({"foo": 1}, "neither 'url' nor 'image'"),
        ({"url": 42}, "http(s) URL"),
        ({"url": "file:///etc/passwd"}, "http(s) URL"),
        ({"image": "not base64!"}, "not valid base64"),
        ({"image": ""}, "empty"),
        ({"image": 7}, "base64 string"),
        (api_gateway("{not json", "application/json"), "not valid JSON"),
        (api_gateway("[1, 2]", "application/json"), "must be an object"),
        (api_gateway(None, "application/json"), "no body"),
        (api_gateway("%%%", "image/jpeg", b64=True), "not valid base64"),
    ],
)
def test_bad_events_are_400_with_the_expected_shape(
    env: pytest.MonkeyPatch, event: Any, text: str
) -> None:
    status, body = call(event)
    assert status == 400
    assert text in body["error"]
    assert '{"url": "https://' in body["error"]  # says what shape is expected


def test_body_of_an_unsupported_type_is_415(env: pytest.MonkeyPatch) -> None:
    status, body = call(api_gateway("hello", "text/plain"))
    assert status == 415
    assert "Unsupported request body" in body["error"] and '{"url": "https://' in body["error"]


def test_oversized_image_is_413(env: pytest.MonkeyPatch) -> None:
    status, body = call({"image": base64.b64encode(b"\xff\xd8\xff" + b"0" * (6 << 20)).decode()})
    assert status == 413 and "limit" in body["error"]


def test_request_the_model_rejects_keeps_its_status_and_first_line(
    env: pytest.MonkeyPatch,
) -> None:
    event = {"image": base64.b64encode(b"plain words").decode(), "content_type": "text/plain"}
    status, body = call(event)
    assert status == 415  # the model's own status, not a blanket 400
    assert "unsupported content type" in body["error"]
    assert "Traceback" not in body["error"]  # the toy raises: the toolkit adds its traceback


def test_model_failure_is_502(env: pytest.MonkeyPatch) -> None:
    status, body = call({"url": "https://example.com/dog.jpg?toy_boom=1"})
    assert status == 502 and "500" in body["error"]


def test_missing_endpoint_name_is_500(env: pytest.MonkeyPatch) -> None:
    env.delenv("ENDPOINT_NAME")
    status, body = call(ORIGINAL_EVENT)
    assert status == 500 and "ENDPOINT_NAME" in body["error"]


def test_unknown_endpoint_is_502(env: pytest.MonkeyPatch) -> None:
    env.setenv("ENDPOINT_NAME", "someone-else")
    status, body = call(ORIGINAL_EVENT)
    assert status == 502 and "not found" in body["error"]


def test_endpoint_down_is_502(env: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.setenv("SAGEMAKER_RUNTIME_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    env.setenv("CONNECT_TIMEOUT_S", "2")
    status, body = call(ORIGINAL_EVENT)
    assert status in (502, 504) and "endpoint" in body["error"]


def test_slow_endpoint_is_504(env: pytest.MonkeyPatch) -> None:
    env.setenv("READ_TIMEOUT_S", "0.5")
    status, body = call({"url": "https://example.com/dog.jpg?toy_sleep=1.5"})
    assert status == 504 and "did not answer in time" in body["error"]


def test_logits_answer_is_turned_into_probabilities() -> None:
    summary = handler.summarise(b"[[0.0, 2.0, 1.0]]", top_k=2)
    assert summary["label"] == "1"
    assert [p["label"] for p in summary["predictions"]] == ["1", "2"]
    assert summary["probability"] == pytest.approx(0.665, abs=1e-3)


def test_handler_module_imports_only_boto3_and_stdlib() -> None:
    import ast
    import sys

    tree = ast.parse(Path(handler.__file__).read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "no relative imports: it is zipped alone"
            modules.add(node.module.split(".")[0])
    assert modules - set(sys.stdlib_module_names) <= {"boto3", "botocore"}
