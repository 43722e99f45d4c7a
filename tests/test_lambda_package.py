"""The Lambda package: deterministic bytes, only the handler inside, and a real local invocation
of the unpacked zip in a separate process against a toy endpoint."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.toy_inference import make_model_dir

from dogops.errors import UserInputError
from dogops.lambda_package import HANDLER_DIR, build_package, write_package
from dogops.local.endpoint import start_endpoint, stop_endpoint
from dogops.local.lambda_runner import invoke_local_lambda
from dogops.results import EndpointInfo
from dogops.settings import ScalingConfig

NAME = "toy-package-target"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointInfo]:
    root = tmp_path_factory.mktemp("package-endpoint")
    info = start_endpoint(NAME, make_model_dir(root), root / "state", ScalingConfig(),
                          options={"drain_seconds": 0.3})
    yield info
    stop_endpoint(NAME, root / "state")


def test_same_source_gives_same_bytes_and_hashes() -> None:
    first, second = build_package(), build_package()
    assert first.zip_bytes == second.zip_bytes
    digest = hashlib.sha256(first.zip_bytes).digest()
    assert first.sha256 == digest.hex() == second.sha256
    assert first.code_sha256_b64 == base64.b64encode(digest).decode()
    assert first.size_bytes == len(first.zip_bytes) < 20_000
    assert first.handler == "handler.lambda_handler"


def test_zip_holds_only_the_handler_with_fixed_metadata() -> None:
    package = build_package()
    with zipfile.ZipFile(io.BytesIO(package.zip_bytes)) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["handler.py"]
        info = infos[0]
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert (info.external_attr >> 16) & 0o777 == 0o644
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert archive.read("handler.py") == (HANDLER_DIR / "handler.py").read_bytes()


def test_changed_source_changes_the_hash(tmp_path: Path) -> None:
    source = (HANDLER_DIR / "handler.py").read_text()
    (tmp_path / "handler.py").write_text(source + "\n# changed\n")
    assert build_package(tmp_path).sha256 != build_package().sha256


def test_write_package_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "out" / "lambda.zip"
    package = write_package(path)
    assert path.read_bytes() == package.zip_bytes
    mtime = path.stat().st_mtime_ns
    assert write_package(path) == package
    assert path.stat().st_mtime_ns == mtime  # unchanged bytes are not rewritten


def test_invoke_local_lambda_round_trip(endpoint: EndpointInfo) -> None:
    response = invoke_local_lambda(
        {"url": "https://example.com/carolina-dog.jpg"}, endpoint, timeout_s=30
    )
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["url"] == "https://example.com/carolina-dog.jpg"
    assert body["label"] == body["predictions"][0]["label"]


def test_invoke_local_lambda_bad_event_and_timeout(endpoint: EndpointInfo) -> None:
    package = build_package()
    response = invoke_local_lambda({"nothing": True}, endpoint, package=package, timeout_s=30)
    assert response["statusCode"] == 400
    # The handler's own endpoint timeout (set through env) answers 504 within the run.
    response = invoke_local_lambda(
        {"url": "https://example.com/dog.jpg?toy_sleep=1.5"}, endpoint, package=package,
        env={"READ_TIMEOUT_S": "0.5"}, timeout_s=30,
    )
    assert response["statusCode"] == 504


def test_invoke_local_lambda_needs_a_local_endpoint() -> None:
    remote = EndpointInfo(name="x", url="https://console.aws.amazon.com/sagemaker/")
    with pytest.raises(UserInputError, match="runtime_endpoint_url"):
        invoke_local_lambda({"url": "https://example.com/a.jpg"}, remote)
