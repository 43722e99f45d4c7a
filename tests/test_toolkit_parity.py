"""Parity with SageMaker's PyTorch containers: the SageMaker toolkits run model_code here.

A model is trained by the local tuner (one trial, started by `sagemaker-training`), then the same
requests go through three doors: (a) `sagemaker-pytorch-inference`'s HandlerService in-process
(with a TorchServe-like context, `dogops.local.serving_toolkit`), (b) the local endpoint through
boto3 `sagemaker-runtime`, (c) the Lambda handler in front of (b). Their statuses must agree, no
answer may carry a traceback, and good images get the right label. Nothing is mocked; image URLs
go to real servers on 127.0.0.1 (allowed through the environment, as an operator would).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from parity_cases import (
    LABEL,
    SERVING_ENV,
    URL_TIMEOUT_S,
    Sources,
    local_endpoint,
    sample_jpeg,
    toolkit_cases,
)

from dogops.settings import Settings

pytestmark = pytest.mark.slow

ENDPOINT = "parity-endpoint"


# --------------------------------------------------------------------------------------------
# One trial through the training toolkit (the `parity_trial` fixture, tests/conftest.py)


def _env_lines(log: str) -> dict[str, str]:
    """The environment the toolkit logs for the script it invokes (`NAME=value` lines)."""
    found = {}
    for line in log.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("SM_") and name.isupper():
            found[name] = value
    return found


def test_the_training_toolkit_started_the_trial_with_sagemakers_contract(
    parity_trial: dict[str, Any],
) -> None:
    from dogops.aws.sagemaker_job import static_hyperparameters

    trial_dir: Path = parity_trial["dir"]
    source = parity_trial["job_dir"] / "sourcedir.tar.gz"
    written = json.loads((trial_dir / "input" / "config" / "hyperparameters.json").read_text())
    # SageMaker writes every value as a JSON-encoded string: "8", not 8.
    assert all(isinstance(v, str) for v in written.values()), written
    assert written["batch_size"] == "8" and float(written["learning_rate"]) == 0.01
    assert written["sagemaker_program"] == "train.py"
    assert written["sagemaker_submit_directory"] == str(source)
    # The same strings the aws backend sends the SageMaker tuner as static hyperparameters.
    settings = Settings(tuning=parity_trial["tuning"], training=parity_trial["training"])
    sent = static_hyperparameters(settings, "s3://bucket/code/sourcedir.tar.gz")
    for name, value in sent.items():
        if name not in ("sagemaker_submit_directory", "sagemaker_region"):
            assert written[name] == value, name
    # The toolkit, not dogops, unpacked the code, set SM_* and started train.py.
    log = (trial_dir / "train.log").read_text()
    assert "Invoking script with the following command" in log
    assert "-- train.py --architecture efficientnet_lite0" in log
    env = _env_lines(log)
    assert json.loads(env["SM_HPS"]) == {
        "architecture": "efficientnet_lite0", "augment": False, "batch_size": 8, "epochs": 3,
        "image_size": 64, "learning_rate": 0.01, "patience": 3, "seed": 42,
    }
    assert env["SM_CHANNEL_TRAINING"] == str(trial_dir / "input" / "data" / "training")
    assert Path(env["SM_CHANNEL_TRAINING"]).resolve() == parity_trial["data"].resolve()
    assert env["SM_MODEL_DIR"] == str(trial_dir / "model")
    assert (trial_dir / "code" / "train.py").is_file()  # unpacked from sourcedir.tar.gz
    assert (trial_dir / "output" / "success").exists()  # written by the toolkit
    assert "Epoch: 3" in log and parity_trial["result"].state == "Completed"


# --------------------------------------------------------------------------------------------
# The three doors


@pytest.fixture(scope="module")
def endpoint_url(parity_trial: dict[str, Any],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from local_endpoint(ENDPOINT, parity_trial, tmp_path_factory.mktemp("parity-state"))


def _in_process(parity_trial: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from dogops.local.serving_toolkit import ToolkitWorker

    for name, value in SERVING_ENV.items():
        monkeypatch.setenv(name, value)
    worker = ToolkitWorker(str(parity_trial["model"]), str(parity_trial["model"] / "code"))

    def call(body: bytes, content_type: str) -> tuple[int, str]:
        status, payload, _ = worker.invoke(body, content_type, "application/json")
        return status, payload.decode(errors="replace")

    return call


def _through_endpoint(url: str) -> Any:
    client = boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )

    def call(body: bytes, content_type: str) -> tuple[int, str]:
        try:
            response = client.invoke_endpoint(EndpointName=ENDPOINT, Body=body,
                                              ContentType=content_type,
                                              Accept="application/json")
        except ClientError as exc:
            error = exc.response
            status = error.get("OriginalStatusCode") or error["ResponseMetadata"][
                "HTTPStatusCode"]
            return int(status), json.dumps(error.get("Error", {})) + str(
                error.get("OriginalMessage", ""))
        return 200, response["Body"].read().decode()

    return call


def _through_lambda(url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from dogops.lambda_handler import handler

    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("SAGEMAKER_RUNTIME_ENDPOINT_URL", url)
    monkeypatch.setenv("READ_TIMEOUT_S", "30")

    def call(event: Any) -> tuple[int, str]:
        response = handler.lambda_handler(event, None)
        return int(response["statusCode"]), str(response["body"])

    return call


def test_one_parity_table_three_doors(
    parity_trial: dict[str, Any], endpoint_url: str, drip_url: str, image_url: str,
    monkeypatch: pytest.MonkeyPatch, toolkit_in_process: None,
) -> None:
    jpeg = sample_jpeg(parity_trial)
    doors = {
        "handler-service": _in_process(parity_trial, monkeypatch),
        "endpoint": _through_endpoint(endpoint_url),
    }
    via_lambda = _through_lambda(endpoint_url, monkeypatch)
    rows = []
    cases = toolkit_cases(Sources(jpeg, image_url, drip_url))
    for name, body, content_type, event, expected in cases:
        answers = {}
        for door, call in doors.items():
            started = time.monotonic()
            answers[door] = (*call(body, content_type), time.monotonic() - started)
        started = time.monotonic()
        answers["lambda"] = (*via_lambda(event), time.monotonic() - started)
        rows.append((name, {door: a[0] for door, a in answers.items()}))
        for door, (status, text, seconds) in answers.items():
            assert status == expected, (name, door, status, text[:500])
            assert "Traceback" not in text, (name, door, text[:2000])
            if name == "drip-server":  # one deadline for the whole fetch, not per byte
                assert seconds < URL_TIMEOUT_S + 2.0, (door, seconds)
        if name in ("good-jpeg", "rgba-png"):
            for door, (_, text, _) in answers.items():
                assert json.loads(text)["label"] == LABEL, (door, text[:300])
        elif expected >= 400:
            # One line, so a caller sees the reason and not the model's insides.
            assert "\n" not in answers["handler-service"][1].strip(), name
    print("\n".join(f"{name:20s} {statuses}" for name, statuses in rows))


def test_the_whole_table_as_one_batch_answers_each_request_alone(
    parity_trial: dict[str, Any], drip_url: str, image_url: str, monkeypatch: pytest.MonkeyPatch,
    toolkit_in_process: None,
) -> None:
    """The worker's batch path (what the endpoint's batcher sends): every row of the parity table
    in one batch, good and bad mixed. Each request gets the status it gets alone, the good ones
    the same answer as alone, and the good images go through the network in one forward pass."""
    from dogops.local.serving_toolkit import ToolkitWorker

    for name, value in SERVING_ENV.items():
        monkeypatch.setenv(name, value)
    worker = ToolkitWorker(str(parity_trial["model"]), str(parity_trial["model"] / "code"))
    assert worker.batch_predict_fn is not None
    jpeg = sample_jpeg(parity_trial)
    cases = toolkit_cases(Sources(jpeg, image_url, drip_url))
    requests = [(body, content_type, "application/json") for _, body, content_type, _, _ in cases]
    forwards: list[int] = []
    module = worker.service._service._model.module
    hook = module.register_forward_hook(lambda _m, args, _o: forwards.append(len(args[0])))
    try:
        answers = worker.invoke_batch(requests)
    finally:
        hook.remove()
    good = [name for name, *_, expected in cases if expected == 200]
    assert forwards == [len(good)], forwards  # one pass, every good image in it
    for (name, body, content_type, _, expected), (status, payload, out_type) in zip(
            cases, answers, strict=True):
        text = payload.decode(errors="replace")
        assert status == expected, (name, status, text[:300])
        assert "Traceback" not in text, (name, text[:2000])
        if expected == 200:
            alone = worker.invoke(body, content_type, "application/json")
            assert out_type == alone[2] == "application/json"
            batched, single = json.loads(text), json.loads(alone[1])
            assert batched["label"] == single["label"], name
            assert abs(batched["probability"] - single["probability"]) < 1e-4, name
        else:
            assert "\n" not in text.strip() and out_type == "text/plain", (name, text[:300])


class _TorchServeBatchContext:
    """TorchServe's `ts.context.Context` during a batch, as far as the toolkits use it: one header
    holder per request, a status and a content type per index; one object per worker, whose
    `request_processor` TorchServe replaces for every batch."""

    def __init__(self, model_dir: str) -> None:
        from dogops.local.serving_toolkit import _RequestProcessor

        self._holder = _RequestProcessor
        self.system_properties = {"model_dir": model_dir, "gpu_id": None}
        self.request_processor: list[Any] = []
        self.statuses: dict[int, int] = {}
        self.types: dict[int, str] = {}

    def batch(self, headers: list[dict[str, str]]) -> None:
        self.request_processor = [self._holder(h) for h in headers]
        self.statuses, self.types = {}, {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = code

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.types[idx] = value

    def get_response_content_type(self, idx: int = 0) -> str | None:
        return self.types.get(idx)


def test_a_model_that_replaces_predict_fn_is_served_by_it_in_a_batch_too(
    parity_trial: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    toolkit_in_process: None,
) -> None:
    """Code that redefines predict_fn (and not batch_predict_fn) gets its own predict_fn for
    every request, batched or not: the batch step is used only while predict_fn declares itself
    its batch of one. (A canary whose predict_fn raises must fail on batched traffic too.)"""
    import shutil

    from dogops.local.serving_toolkit import ToolkitWorker

    for name, value in SERVING_ENV.items():
        monkeypatch.setenv(name, value)
    model = tmp_path / "model"
    shutil.copytree(parity_trial["model"], model)
    with (model / "code" / "inference.py").open("a") as handle:
        handle.write("\n\ndef predict_fn(data, model):\n    raise RuntimeError('replaced')\n")
    worker = ToolkitWorker(str(model), str(model / "code"))
    assert worker.batch_predict_fn is None
    jpeg = sample_jpeg(parity_trial)
    answers = worker.invoke_batch([(jpeg, "image/jpeg", "application/json")] * 3)
    assert [status for status, _, _ in answers] == [500, 500, 500]


def test_a_torchserve_batch_through_the_toolkit_answers_each_request_with_its_own_status(
    parity_trial: dict[str, Any], monkeypatch: pytest.MonkeyPatch, toolkit_in_process: None,
) -> None:
    """On a real endpoint with SAGEMAKER_TS_BATCH_SIZE > 1, sagemaker-inference's Transformer
    runs a batch one request at a time with the first request's headers and no index.
    inference.py still reads each request with its own Content-Type and Accept and sets a bad
    request's status on its own index, so a bad request fails alone, batch after batch."""
    from sagemaker_pytorch_serving_container.handler_service import HandlerService

    from dogops.local.serving_toolkit import ToolkitWorker

    model = parity_trial["model"]
    ToolkitWorker(str(model), str(model / "code"))  # env and sys.path
    context = _TorchServeBatchContext(str(parity_trial["model"]))
    service = HandlerService()
    service.initialize(context)
    jpeg = sample_jpeg(parity_trial)
    as_json = json.dumps({"image": base64.b64encode(jpeg).decode(), "logits": True}).encode()
    broken = b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20
    for _ in range(2):  # a second batch starts counting again
        context.batch([{"Content-Type": "image/jpeg", "Accept": "application/json"},
                       {"Content-Type": "image/jpeg", "Accept": "application/json"},
                       {"Content-Type": "application/json", "Accept": "application/json"},
                       {"Content-Type": "image/jpeg", "Accept": "application/x-logits+json"}])
        answers = service.handle([{"body": bytearray(b)} for b in (jpeg, broken, as_json, jpeg)],
                                 context)
        assert len(answers) == 4
        assert {i: context.statuses.get(i, 200) for i in range(4)} == {0: 200, 1: 400, 2: 200,
                                                                       3: 200}
        assert json.loads(answers[0])["label"] == LABEL
        assert "cannot decode the image" in answers[1]
        assert isinstance(json.loads(answers[2]), list)  # its own "logits": true
        assert isinstance(json.loads(answers[3]), list)  # its own Accept
        assert context.types[3] == "application/x-logits+json"


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    parity_trial: dict[str, Any], endpoint_url: str,
) -> None:
    """Through boto3 and the endpoint's batcher: 12 clients at once, every third one sending a
    broken image. Each good one gets its label, each bad one its own 400, and the front served
    them in fewer batches than requests."""
    jpeg = sample_jpeg(parity_trial)
    broken = b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20
    call = _through_endpoint(endpoint_url)
    status_url = endpoint_url.rstrip("/") + "/dogops/status"

    def batches() -> int:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
        with opener.open(status_url, timeout=10) as response:
            return int(json.loads(response.read())["batching"]["batches"])

    before = batches()
    results: dict[int, tuple[int, str]] = {}
    start = threading.Barrier(12)

    def client(n: int) -> None:
        start.wait()
        results[n] = call(broken if n % 3 == 2 else jpeg, "image/jpeg")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for n in range(12):
        status, text = results[n]
        if n % 3 == 2:
            assert status == 400 and "cannot decode the image" in text, (n, status, text[:300])
        else:
            assert status == 200 and json.loads(text)["label"] == LABEL, (n, status, text[:300])
    assert batches() - before < 12


def test_requirements_install_is_skipped_only_when_it_would_change_nothing(
    tmp_path: Path,
) -> None:
    """The container pip-installs requirements.txt before each job; locally that no-op is skipped
    when every line is an exact pin already installed, and kept otherwise."""
    from importlib import metadata

    from dogops.local.toolkit_train import requirements_satisfied

    requirements = tmp_path / "requirements.txt"
    torch_version = metadata.version("torch")
    requirements.write_text(f"# pinned\ntorch=={torch_version}\n\n")
    assert requirements_satisfied(requirements)
    requirements.write_text(f"torch=={torch_version}\nnumpy==0.0.1\n")
    assert not requirements_satisfied(requirements)
    requirements.write_text("torch>=2\n")  # not a pin: let pip decide
    assert not requirements_satisfied(requirements)
    requirements.write_text("no-such-package-dogops==1.0\n")
    assert not requirements_satisfied(requirements)


def test_project_pins_the_toolkits_of_the_chosen_pytorch_image() -> None:
    import tomllib
    from importlib import metadata

    from dogops.aws.sagemaker_job import toolkit_versions

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    pins = dict(
        dep.split("==", 1) for dep in tomllib.loads(pyproject.read_text())["project"]
        ["dependencies"] if "==" in dep
    )
    expected = toolkit_versions(Settings().training)
    assert {name: pins.get(name) for name in expected} == expected
    # ... and what runs here is what is pinned.
    assert {name: metadata.version(name) for name in expected} == expected
