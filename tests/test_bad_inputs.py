"""Bad inputs end to end: each gets a clear error, and nothing is left half-written.

Complements, without repeating, the unit-level checks elsewhere:
- layout errors inside `train.main` (missing split, no class folders, empty class, different
  classes, a text file named .jpg): tests/test_model_code.py;
- every malformed request to the serving functions in-process, and the URL allow-list:
  tests/test_inference.py;
- thirteen malformed Lambda events against a toy endpoint: tests/test_lambda_handler.py.

Here the same kinds of mistakes go through the real entry points: `dogops.dataset.inspect_dataset`
(what the flow's first task runs), `python -m model_code.train` as a process and the local
backend's `train_final` (exit code 2, nothing promoted), the local store sync (manifest
untouched), boto3 `sagemaker-runtime` against a real endpoint process serving a tiny trained
model, and the Lambda handler in front of that endpoint. Nothing is mocked.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dogops.dataset import inspect_dataset
from dogops.errors import DataLayoutError, UserInputError
from dogops.local.store import MANIFEST_NAME
from dogops.local.store import sync_folder as local_sync
from model_code.demo_data import generate_demo_dataset

REPO = Path(__file__).resolve().parents[1]
ENDPOINT = "bad-inputs"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return generate_demo_dataset(tmp_path / "dogs", classes=2, train_per_class=3,
                                 valid_per_class=2, test_per_class=2, image_size=32, seed=4)


def a_class_dir(data: Path, split: str = "train") -> Path:
    return sorted(p for p in (data / split).iterdir() if p.is_dir())[0]


# --------------------------------------------------------------------------------------------
# The data folder, as the flow's first task sees it


def _empty(d: Path) -> None:
    for child in list(d.iterdir()):
        shutil.rmtree(child)


def _flat_split(d: Path) -> None:
    """Images straight in train/, no class folders."""
    for image in list((d / "train").rglob("*.jpg")):
        image.rename(d / "train" / image.name)
    for folder in [p for p in (d / "train").iterdir() if p.is_dir()]:
        folder.rmdir()


def _only_non_images(d: Path) -> None:
    folder = a_class_dir(d, "valid")
    for image in folder.iterdir():
        image.unlink()
    (folder / "notes.txt").write_text("no images here")


def _extra_class_in_test(d: Path) -> None:
    shutil.copytree(a_class_dir(d, "test"), d / "test" / "099.Extra_Breed")


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: shutil.rmtree(d), "does not exist"),
        (_empty, "lacks the split folder(s) train, valid, test"),
        (lambda d: shutil.rmtree(d / "test"), "lacks the split folder(s) test"),
        (_flat_split, "has no class folders"),
        (_only_non_images, "holds no images"),
        (_extra_class_in_test, "only in test/: ['099.Extra_Breed']"),
    ],
    ids=["missing", "empty", "no-test-split", "no-class-folders", "no-images", "class-mismatch"],
)
def test_inspect_dataset_names_the_problem_and_the_fix(
    data: Path, damage: Any, words: str
) -> None:
    damage(data)
    with pytest.raises(DataLayoutError) as caught:
        inspect_dataset(data)
    message = str(caught.value)
    assert words in message
    assert str(data) in message or "No data dir" in message
    assert isinstance(caught.value, UserInputError)  # never retried by the tasks


def test_inspect_dataset_without_a_folder_says_how_to_get_one() -> None:
    with pytest.raises(DataLayoutError, match="demo-data"):
        inspect_dataset(None)


def test_failed_local_sync_leaves_the_store_and_manifest_untouched(
    data: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = local_sync(data, store)
    manifest = (store / MANIFEST_NAME).read_bytes()
    files = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
    # A changed image and a broken layout in the same run: the layout check comes first.
    image = sorted((data / "train").rglob("*.jpg"))[0]
    image.write_bytes(image.read_bytes() + b"changed")
    shutil.rmtree(data / "valid")
    with pytest.raises(DataLayoutError, match="valid"):
        local_sync(data, store)
    assert (store / MANIFEST_NAME).read_bytes() == manifest
    assert sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file()) == files
    assert first.files_total == len(files) - 1  # every image plus the manifest


# --------------------------------------------------------------------------------------------
# Images that only decoding finds: the training script


def _zero_byte(d: Path) -> Path:
    bad = a_class_dir(d) / "zero.jpg"
    bad.write_bytes(b"")
    return bad


def _truncated_jpeg(d: Path) -> Path:
    good = sorted(a_class_dir(d, "valid").iterdir())[0]
    bad = good.with_name("truncated.jpg")
    bad.write_bytes(good.read_bytes()[:200])
    return bad


def _pdf_named_png(d: Path) -> Path:
    bad = a_class_dir(d, "test") / "scan.png"
    bad.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    return bad


@pytest.mark.slow
def test_train_py_process_exits_2_naming_a_zero_byte_image(data: Path, tmp_path: Path) -> None:
    bad = _zero_byte(data)
    model_dir = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "model_code.train", "--data-dir", str(data), "--model-dir",
         str(model_dir), "--image-size", "32", "--epochs", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    error_lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR: ")]
    assert error_lines and str(bad) in error_lines[-1] and "--skip-corrupt" in error_lines[-1]
    assert "Traceback" not in done.stderr
    assert not model_dir.exists() or not any(model_dir.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncated_jpeg, _pdf_named_png],
                         ids=["truncated-jpeg", "pdf-named-png"])
def test_local_training_job_fails_as_user_error_and_promotes_nothing(
    data: Path, tmp_path: Path, damage: Any
) -> None:
    from dogops.local.training import MODEL_ARCHIVE, train_final

    bad = damage(data)
    job_dir = tmp_path / "job"
    with pytest.raises(UserInputError) as caught:
        train_final("bad-data-job", job_dir, data,
                    {"learning_rate": 0.01, "batch_size": 8, "epochs": 1, "image_size": 32},
                    feature_cache_dir=None, timeout_s=300)
    message = str(caught.value)
    assert "exited with code 2" in message and bad.name in message
    assert not (job_dir / MODEL_ARCHIVE).exists()
    assert not (job_dir / "model" / "model.pth").exists()
    assert not (job_dir / "model" / "metadata.json").exists()


# --------------------------------------------------------------------------------------------
# A real endpoint serving a tiny trained model, called through boto3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """(runtime URL, data dir, state dir) of an endpoint serving a model trained here."""
    from dogops.local.endpoint import start_endpoint, stop_endpoint
    from dogops.settings import ScalingConfig
    from model_code import train

    root = tmp_path_factory.mktemp("bad-inputs-endpoint")
    data = generate_demo_dataset(root / "dogs", classes=3, train_per_class=8, valid_per_class=3,
                                 test_per_class=3, image_size=48, seed=2)
    model_dir = root / "model"
    assert train.main(["--data-dir", str(data), "--model-dir", str(model_dir), "--image-size",
                       "32", "--epochs", "3", "--batch-size", "8", "--learning-rate",
                       "0.01"]) == 0
    state = root / "state"
    info = start_endpoint(ENDPOINT, model_dir, state,
                          ScalingConfig(min_capacity=1, max_capacity=1),
                          options={"drain_seconds": 0.2}, env={"OMP_NUM_THREADS": "1"})
    yield str(info.runtime_endpoint_url), data, state
    stop_endpoint(ENDPOINT, state)


def runtime(url: str) -> Any:
    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60),
    )


def error_of(url: str, body: bytes, content_type: str) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        runtime(url).invoke_endpoint(EndpointName=ENDPOINT, Body=body, ContentType=content_type)
    return dict(caught.value.response)


def truncated(data: Path) -> bytes:
    return sorted((data / "test").rglob("*.jpg"))[0].read_bytes()[:150]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"", "image/jpeg", 400, "empty"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image/jpeg", 400, "cannot decode"),
        (b"%PDF-1.4 not an image", "image/png", 400, "cannot decode"),
        (b"a dog, honestly", "text/plain", 415, "unsupported content type"),
        (b"<dog/>", "application/xml", 415, "unsupported content type"),
        (b"", "application/json", 400, ""),
        (b'{"top_k": 3}', "application/json", 400, '"url" or "image"'),
        (b'{"URL": "https://example.com/dog.jpg"}', "application/json", 400, '"url" or "image"'),
        (b'{"url": "https://localhost/dog.jpg"}', "application/json", 400,
         "private, loopback, link-local"),
        (b'{"url": "https://169.254.169.254/latest/meta-data/iam/"}', "application/json", 400,
         "private, loopback, link-local"),
        (b'{"url": "https://10.1.2.3/dog.jpg"}', "application/json", 400, "private"),
        (b'{"url": "http://example.com/dog.jpg"}', "application/json", 400,
         "scheme 'http' is not allowed"),
        (b'{"url": "file:///etc/passwd"}', "application/json", 400, "scheme 'file'"),
    ],
    ids=["empty-image", "corrupt-jpeg", "pdf-as-png", "text-plain", "xml", "empty-json",
         "json-without-url", "json-wrong-key", "localhost", "metadata-service", "private-ip",
         "http-scheme", "file-scheme"],
)
def test_bad_payloads_are_client_errors_with_the_models_reason(
    served: tuple[str, Path, Path], body: bytes, content_type: str, status: int, words: str
) -> None:
    url, _, _ = served
    error = error_of(url, body, content_type)
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424  # as SageMaker answers
    assert error["OriginalStatusCode"] == status
    assert words in error["OriginalMessage"]
    assert "Traceback" not in error["Error"]["Message"]


@pytest.mark.slow
def test_oversized_body_is_refused_before_the_model_sees_it(
    served: tuple[str, Path, Path]
) -> None:
    url, _, _ = served
    error = error_of(url, b"\xff" * (6 * 1024 * 1024 + 1), "image/jpeg")
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Code"] == "ValidationError"
    assert "exceeds the endpoint's limit" in error["Error"]["Message"]


@pytest.mark.slow
def test_endpoint_stays_up_and_right_after_bad_payloads(served: tuple[str, Path, Path]) -> None:
    url, data, _ = served
    for body, content_type in ((b"", "image/jpeg"), (b"{", "application/json"),
                               (truncated(data), "image/jpeg")):
        error_of(url, body, content_type)
    with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
        assert response.status == 200
    status = json.loads(urllib.request.urlopen(f"{url}/dogops/status", timeout=10).read())
    assert status["status"] == "InService" and status["invocations"]["errors"] >= 3
    client = runtime(url)
    images = sorted((data / "test").rglob("*.jpg"))
    labels = [json.loads(client.invoke_endpoint(EndpointName=ENDPOINT, Body=p.read_bytes(),
                                                ContentType="image/jpeg")["Body"].read())["label"]
              for p in images]
    accuracy = sum(label == p.parent.name for label, p in zip(labels, images, strict=True))
    assert accuracy / len(images) >= 0.6, list(zip(labels, images, strict=True))


# --------------------------------------------------------------------------------------------
# Lambda events of every wrong shape, in front of that endpoint


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, served: tuple[str, Path, Path]) -> Path:
    url, data, _ = served
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("SAGEMAKER_RUNTIME_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("READ_TIMEOUT_S", "30")
    return data


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_EVENTS: list[tuple[str, Any, int, str]] = [
    ("none", None, 400, "non-empty JSON object"),
    ("string", "https://example.com/dog.jpg", 400, "non-empty JSON object"),
    ("number", 42, 400, "non-empty JSON object"),
    ("list-of-events", [{"url": "https://example.com/dog.jpg"}], 400, "non-empty JSON object"),
    ("empty-url", {"url": ""}, 400, "http(s) URL"),
    ("url-list", {"url": ["https://example.com/dog.jpg"]}, 400, "http(s) URL"),
    ("ftp-url", {"url": "ftp://example.com/dog.jpg"}, 400, "http(s) URL"),
    ("huge-url", {"url": "https://example.com/" + "a" * 3000}, 400, "http(s) URL"),
    ("image-null", {"image": None}, 400, "base64 string"),
    ("localhost-url", {"url": "https://localhost/dog.jpg"}, 400, "private, loopback"),
    ("metadata-url", {"url": "https://169.254.169.254/latest/"}, 400, "private, loopback"),
    ("http-url", {"url": "http://example.com/dog.jpg"}, 400, "scheme 'http' is not allowed"),
    ("image-not-an-image", {"image": _b64(b"just some text")}, 400, "cannot decode"),
    ("body-is-an-object", {"httpMethod": "POST", "body": {"url": "https://example.com/d.jpg"}},
     400, "must be a string"),
    ("body-empty-string", {"requestContext": {}, "body": ""}, 400, "no body"),
    ("get-without-url", {"httpMethod": "GET", "queryStringParameters": {"q": "dog"}}, 400,
     "no body"),
    ("get-file-url", {"httpMethod": "GET", "queryStringParameters": {"url": "file:///etc/x"}},
     400, "http(s) URL"),
    ("json-body-null", {"httpMethod": "POST", "headers": {"content-type": "application/json"},
                        "body": "null"}, 400, "must be an object"),
    ("gif-body", {"httpMethod": "POST", "headers": {"content-type": "image/gif"},
                  "body": _b64(b"GIF89a" + b"\x00" * 20), "isBase64Encoded": True}, 415,
     "model rejected"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("event", "status", "words"), [c[1:] for c in BAD_EVENTS],
                         ids=[c[0] for c in BAD_EVENTS])
def test_lambda_bad_events_never_answer_200(
    lambda_env: Path, event: Any, status: int, words: str
) -> None:
    from dogops.lambda_handler import handler

    response = handler.lambda_handler(event, None)
    body = json.loads(response["body"])
    assert response["statusCode"] == status, body
    assert words in body["error"]
    assert "label" not in body


@pytest.mark.slow
def test_lambda_good_events_still_answer_after_bad_ones(lambda_env: Path) -> None:
    from dogops.lambda_handler import handler

    image = sorted((lambda_env / "test").rglob("*.jpg"))[0]
    for event in ({"image": _b64(image.read_bytes())},
                  {"httpMethod": "POST", "headers": {"content-type": "image/jpeg"},
                   "body": _b64(image.read_bytes()), "isBase64Encoded": True},
                  {"image": _b64(_png_bytes())}):
        response = handler.lambda_handler(event, None)
        assert response["statusCode"] == 200, response
        answer = json.loads(response["body"])
        assert 0.0 <= answer["probability"] <= 1.0 and answer["predictions"]
