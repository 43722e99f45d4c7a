"""Fault injection and load: what breaks is reported clearly, retried only when it may pass, and
nothing finished is redone.

- a tuning trial's process killed mid-run: the tuning goes on and reports it as Failed;
- the flow's process killed right after tuning: the re-run reuses the tuning (no trial re-runs);
- a model update whose server fails its health check, on the local backend with a real model:
  the old model keeps serving (tests/test_endpoint_server.py checks the same with a toy model
  that refuses to load, and zero-downtime replacement);
- throttling and 5xx injected into real boto3 calls to the moto server with botocore
  `before-send` hooks: retried with backoff by botocore's standard retries, then a clear error;
  client errors are not retried; `dogops.errors.is_transient` / `retry_condition` agree, and a
  Prefect task retries only the transient failure;
- a burst of 2,000 requests from 16 clients: every answer is right or an explicit 503, and the
  endpoint stays up.

Nothing is mocked except where an outage has to be injected (the `before-send` hooks answer in the
server's place, on the real client, and say so).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from fixtures.toy_inference import make_model_dir

from dogops.errors import (
    DataLayoutError,
    OperationFailedError,
    TransientError,
    UserInputError,
    is_transient,
    retry_condition,
)
from dogops.settings import (
    AwsConfig,
    EndpointConfig,
    ScalingConfig,
    TrainingConfig,
    TuningConfig,
)
from model_code.demo_data import generate_demo_dataset

REPO = Path(__file__).resolve().parents[1]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def tiny_data(root: Path, seed: int = 5) -> Path:
    return generate_demo_dataset(root / "dogs", classes=2, train_per_class=6, valid_per_class=3,
                                 test_per_class=3, image_size=32, seed=seed)


# --------------------------------------------------------------------------------------------
# A tuning trial killed mid-run


def train_py_children(marker: str) -> list[int]:
    """`train.py` processes (started by the training toolkit we started) whose SM_MODEL_DIR
    contains `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"train.py" not in (proc / "cmdline").read_bytes():
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            model_dir = [v for v in environ if v.startswith(b"SM_MODEL_DIR=")]
            if model_dir and marker.encode() in model_dir[0]:
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
def test_killed_trial_is_reported_failed_and_tuning_goes_on(tmp_path: Path) -> None:
    from dogops.local.tuner import LocalTuner

    job_dir = tmp_path / "kill-job"
    tuner = LocalTuner(
        job_name="kill-job", job_dir=job_dir, data_dir=tiny_data(tmp_path),
        tuning=TuningConfig(max_jobs=2, max_parallel_jobs=1, epochs=2, batch_sizes=[8],
                            strategy="random", early_stopping=False),
        training=TrainingConfig(image_size=32, epochs=2),
    )
    killed: list[int] = []

    def kill_first_trial() -> None:
        # Mid-run: once the first trial has started logging, SIGKILL it (an OOM kill looks so).
        def started() -> bool:
            logs = list(job_dir.glob("trials/tune-000-*/train.log"))
            return bool(logs and logs[0].stat().st_size and train_py_children("tune-000-"))

        wait_for(started, 120, "the first trial to start")
        for pid in train_py_children("tune-000-"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_first_trial, daemon=True)
    killer.start()
    result = tuner.run()
    killer.join(5)
    assert killed, "the first trial was never seen running"
    first, second = sorted(result.trials, key=lambda t: t.name)
    assert first.state == "Failed"
    assert first.failure_reason == "training process killed by signal SIGKILL"
    assert first.model_uri is None  # nothing of the killed trial is offered as a model
    assert second.state == "Completed" and second.objective is not None
    assert result.best is not None and result.best.name == second.name
    # The finished job is recorded, so a re-run reuses it instead of launching trials again.
    again = LocalTuner(job_name="kill-job", job_dir=job_dir, data_dir=tuner.data_dir,
                       tuning=tuner.tuning, training=tuner.training).run()
    assert again.reused and [t.state for t in again.trials] == ["Failed", "Completed"]


# --------------------------------------------------------------------------------------------
# The flow's process killed after tuning


FLOW_SCRIPT = """
import sys
from dogops.settings import TrainingConfig, TuningConfig
from flows.train_and_deploy import train_and_deploy

train_and_deploy(
    data_dir=sys.argv[1], backend="local", state_dir=sys.argv[2],
    tuning=TuningConfig(max_jobs=2, max_parallel_jobs=1, epochs=2, batch_sizes=[8]),
    training=TrainingConfig(image_size=32, epochs=2, reuse_best_trial=False),
    endpoint={"name": sys.argv[3]},
)
"""


@pytest.mark.slow
def test_flow_killed_after_tuning_resumes_without_retuning(
    prefect_harness: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    from dogops.local.endpoint import stop_endpoint
    from flows.train_and_deploy import train_and_deploy

    data, state_dir, name = tiny_data(tmp_path), tmp_path / "state", "resume-test"
    script = tmp_path / "run_flow.py"
    script.write_text(FLOW_SCRIPT)
    log = tmp_path / "flow.log"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        # Its own process group: the kill takes its training child with it, as a crash would.
        proc = subprocess.Popen([sys.executable, str(script), str(data), str(state_dir), name],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        def tuned() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the flow ended before it could be killed:\n"
                                     f"{log.read_text()[-3000:]}")
            return any(state_dir.glob("jobs/tuning/*/result.json"))

        wait_for(tuned, 300, "tuning's result.json", interval=0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        trial_logs = sorted(state_dir.glob("jobs/tuning/*/trials/*/train.log"))
        stamps = [p.stat().st_mtime_ns for p in trial_logs]
        assert len(trial_logs) == 2
        assert not list(state_dir.glob("jobs/training/*/model.tar.gz"))  # killed before that

        result = train_and_deploy(
            data_dir=str(data), backend="local", state_dir=str(state_dir),
            tuning=TuningConfig(max_jobs=2, max_parallel_jobs=1, epochs=2, batch_sizes=[8]),
            training=TrainingConfig(image_size=32, epochs=2, reuse_best_trial=False),
            endpoint=EndpointConfig(name=name),
        )
        assert result.tuning.reused
        assert sorted(state_dir.glob("jobs/tuning/*/trials/*/train.log")) == trial_logs
        assert [p.stat().st_mtime_ns for p in trial_logs] == stamps  # no trial ran again
        assert len(list(state_dir.glob("jobs/**/train.log"))) == 3  # 2 trials + the final one
        assert not result.model.reused  # the interrupted final training was not promoted
        assert result.smoke_test["predicted"]  # type: ignore[index]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_endpoint(name, state_dir)


# --------------------------------------------------------------------------------------------
# A model update that fails its health check, with real model code


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model dir, data dir) of a tiny model trained in-process."""
    from model_code import train

    root = tmp_path_factory.mktemp("reliability-model")
    data = tiny_data(root, seed=6)
    model_dir = root / "model"
    assert train.main(["--data-dir", str(data), "--model-dir", str(model_dir), "--image-size",
                       "32", "--epochs", "2", "--batch-size", "8", "--learning-rate",
                       "0.01"]) == 0
    return model_dir, data


def packaged(model_dir: Path, archive: Path) -> Any:
    from dogops.local.training import make_model_archive
    from dogops.results import TrainedModel

    version = make_model_archive(model_dir, archive)
    return TrainedModel(job_name=archive.parent.name, model_uri=archive.resolve().as_uri(),
                        hyperparameters={}, version=version[:16])


@pytest.mark.slow
def test_broken_model_update_keeps_the_old_model_serving(
    trained_model: tuple[Path, Path], tmp_path: Path
) -> None:
    from dogops.local.backend import LocalBackend
    from dogops.local.endpoint import read_endpoint, stop_endpoint
    from dogops.settings import Settings

    model_dir, data = trained_model
    broken_dir = tmp_path / "broken"
    shutil.copytree(model_dir, broken_dir)
    weights = broken_dir / "model.pth"
    weights.write_bytes(weights.read_bytes()[:4096])  # a truncated upload
    good, bad = packaged(model_dir, tmp_path / "good" / "model.tar.gz"), packaged(
        broken_dir, tmp_path / "bad" / "model.tar.gz")
    settings = Settings(state_dir=tmp_path / "state", endpoint={"name": "update-test"},
                        scaling={"min_capacity": 1, "max_capacity": 1})
    backend = LocalBackend(settings)
    image = sorted((data / "test").rglob("*.jpg"))[0].read_bytes()
    try:
        live = backend.deploy(good, "run-1")
        before = json.loads(backend.invoke_endpoint(live, image, "image/jpeg"))
        with pytest.raises(OperationFailedError) as caught:
            backend.deploy(bad, "run-2")
        message = str(caught.value)
        assert f"model {bad.version} failed their health check" in message
        # The update went through the guarded rollout: new workers beside the old ones.
        assert f"previous model ({good.version}) keeps serving" in message
        assert "could not load the model" in message  # the new workers' own error, for the fix
        current = read_endpoint("update-test", settings.state_dir)
        assert current is not None and current.model_name == good.version
        assert current.runtime_endpoint_url == live.runtime_endpoint_url
        assert json.loads(backend.invoke_endpoint(current, image, "image/jpeg")) == before
    finally:
        stop_endpoint("update-test", settings.state_dir)


# --------------------------------------------------------------------------------------------
# Throttling and 5xx from AWS


class _Raw:
    """The smallest raw body botocore reads (`stream()`)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


S3_SLOW_DOWN = (503, {"Content-Type": "application/xml"},
                b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
                b"</Message></Error>")
S3_INTERNAL = (500, {"Content-Type": "application/xml"},
               b"<Error><Code>InternalError</Code><Message>We encountered an internal error."
               b"</Message></Error>")
THROTTLED = (400, {"Content-Type": "application/x-amz-json-1.1"},
             b'{"__type": "ThrottlingException", "message": "Rate exceeded"}')
INVALID = (400, {"Content-Type": "application/x-amz-json-1.1"},
           b'{"__type": "ValidationException", "message": "bad value"}')


class Outage:
    """A `before-send` hook: answers `failures` times in the server's place, then lets calls
    through; records the time of every attempt."""

    def __init__(self, response: tuple[int, dict[str, str], bytes], failures: int) -> None:
        self.response = response
        self.failures = failures
        self.attempts: list[float] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        self.attempts.append(time.monotonic())
        if len(self.attempts) > self.failures:
            return None
        status, headers, body = self.response
        return AWSResponse(request.url, status, headers, _Raw(body))


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff delays botocore's standard retry mode computes (a spy: it still sleeps)."""
    from botocore.retries import standard

    seen: list[float] = []
    original = standard.ExponentialBackoff.delay_amount

    def spy(self: Any, context: Any) -> float:
        delay = float(original(self, context))
        seen.append(delay)
        return delay

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", spy)
    return seen


def total_attempts(client: Any) -> int:
    """Attempts botocore makes per call with this client's retry config. (botocore's
    `retries={"max_attempts": n}` counts retries, so n + 1 attempts; `total_max_attempts` counts
    the first one too.)"""
    retries = client.meta.config.retries
    return int(retries.get("total_max_attempts") or retries["max_attempts"] + 1)


def clients_for(moto: str, max_attempts: int) -> Any:
    from dogops.aws.clients import AwsClients

    return AwsClients(AwsConfig(endpoint_url=moto, region="us-east-1", bucket="reliability",
                                max_attempts=max_attempts))


@pytest.mark.aws
@pytest.mark.parametrize("response", [S3_SLOW_DOWN, S3_INTERNAL], ids=["503-slowdown", "500"])
def test_s3_5xx_is_retried_with_backoff_then_succeeds(
    moto: str, delays: list[float], response: tuple[int, dict[str, str], bytes]
) -> None:
    s3 = clients_for(moto, max_attempts=4).client("s3")
    s3.create_bucket(Bucket="reliability")
    outage = Outage(response, failures=2)
    s3.meta.events.register("before-send.s3.PutObject", outage)
    answer = s3.put_object(Bucket="reliability", Key="k", Body=b"v")
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(outage.attempts) == 3 and len(delays) == 2
    gaps = [b - a for a, b in zip(outage.attempts, outage.attempts[1:], strict=False)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert 0 < delay <= 20 and gap >= delay * 0.9  # botocore slept the backoff it computed
    assert s3.get_object(Bucket="reliability", Key="k")["Body"].read() == b"v"


@pytest.mark.aws
def test_persistent_s3_503_fails_clearly_after_max_attempts(
    moto: str, delays: list[float]
) -> None:
    s3 = clients_for(moto, max_attempts=3).client("s3")
    s3.create_bucket(Bucket="reliability")
    outage = Outage(S3_SLOW_DOWN, failures=1000)
    s3.meta.events.register("before-send.s3.PutObject", outage)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="reliability", Key="k", Body=b"v")
    attempts = total_attempts(s3)
    assert len(outage.attempts) == attempts and len(delays) == attempts - 1
    message = str(caught.value)
    assert "SlowDown" in message and "PutObject" in message
    assert f"reached max retries: {attempts - 1}" in message
    assert "reduce your request rate" in message
    assert is_transient(caught.value)  # so a Prefect task retries it later, slower


@pytest.mark.aws
def test_throttling_exception_is_retried_then_fails_clearly(
    moto: str, delays: list[float]
) -> None:
    sagemaker = clients_for(moto, max_attempts=3).client("sagemaker")
    passing = Outage(THROTTLED, failures=1)
    sagemaker.meta.events.register("before-send.sagemaker.ListEndpoints", passing)
    assert sagemaker.list_endpoints()["ResponseMetadata"]["RetryAttempts"] == 1
    sagemaker.meta.events.unregister("before-send.sagemaker.ListEndpoints", passing)

    failing = Outage(THROTTLED, failures=1000)
    sagemaker.meta.events.register("before-send.sagemaker.ListEndpoints", failing)
    with pytest.raises(ClientError) as caught:
        sagemaker.list_endpoints()
    attempts = total_attempts(sagemaker)
    assert len(failing.attempts) == attempts
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert f"reached max retries: {attempts - 1}" in str(caught.value)
    assert is_transient(caught.value)


@pytest.mark.aws
def test_client_errors_are_not_retried(moto: str, delays: list[float]) -> None:
    clients = clients_for(moto, max_attempts=5)
    s3 = clients.client("s3")
    s3.create_bucket(Bucket="reliability")
    seen = Outage(S3_SLOW_DOWN, failures=0)  # only counts attempts
    s3.meta.events.register("before-send.s3.GetObject", seen)
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="reliability", Key="missing")
    assert caught.value.response["Error"]["Code"] == "NoSuchKey"
    assert len(seen.attempts) == 1 and not is_transient(caught.value)

    sagemaker = clients.client("sagemaker")
    invalid = Outage(INVALID, failures=1000)
    sagemaker.meta.events.register("before-send.sagemaker.ListEndpoints", invalid)
    with pytest.raises(ClientError) as caught:
        sagemaker.list_endpoints()
    assert len(invalid.attempts) == 1 and not is_transient(caught.value)
    assert delays == []


@pytest.mark.aws
def test_sync_failing_mid_upload_leaves_the_manifest_untouched(
    moto: str, tmp_path: Path
) -> None:
    from dogops.aws.s3_sync import MANIFEST_NAME, sync_folder

    data = tiny_data(tmp_path)
    clients = clients_for(moto, max_attempts=2)
    first = sync_folder(clients, data, "reliability", "data", create_bucket=True)
    s3 = clients.client("s3")
    manifest = s3.get_object(Bucket="reliability", Key=f"data/{MANIFEST_NAME}")["Body"].read()
    for image in sorted((data / "train").rglob("*.jpg"))[:3]:
        image.write_bytes(image.read_bytes() + b"changed")
    outage = Outage(S3_SLOW_DOWN, failures=1000)
    s3.meta.events.register("before-send.s3.PutObject", outage)
    with pytest.raises(ClientError) as caught:
        sync_folder(clients, data, "reliability", "data", create_bucket=True)
    assert is_transient(caught.value) and "SlowDown" in str(caught.value)
    s3.meta.events.unregister("before-send.s3.PutObject", outage)
    after = s3.get_object(Bucket="reliability", Key=f"data/{MANIFEST_NAME}")["Body"].read()
    assert after == manifest  # the previous, complete manifest: nothing half-synced
    again = sync_folder(clients, data, "reliability", "data", create_bucket=True)
    assert again.uploaded == 3 and again.files_total == first.files_total


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientError("server starting"), True),
        (_client_error("SlowDown", 503), True),
        (_client_error("ThrottlingException", 400), True),
        (_client_error("TooManyRequestsException", 429), True),
        (_client_error("InternalError", 500), True),
        (_client_error("SomethingNew", 502), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (UserInputError("bad range"), False),
        (DataLayoutError("no train/"), False),
        (OperationFailedError("job failed"), False),
        (_client_error("NoSuchKey", 404), False),
        (_client_error("AccessDenied", 403), False),
        (_client_error("ValidationException", 400), False),
        (_client_error("ResourceNotFound", 400), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda v: v if isinstance(v, bool) else type(v).__name__ + (
        f"-{v.response['Error']['Code']}" if isinstance(v, ClientError) else ""),
)
def test_is_transient_and_retry_condition_agree(exc: BaseException, transient: bool) -> None:
    from prefect.states import Failed

    assert is_transient(exc) is transient
    assert retry_condition(None, None, Failed(data=exc)) is transient


def test_prefect_tasks_retry_transient_failures_only(prefect_harness: None) -> None:
    from prefect import flow, task

    calls = {"transient": 0, "user": 0}

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_condition)
    def flaky() -> str:
        calls["transient"] += 1
        if calls["transient"] < 3:
            raise TransientError("throttled, try again")
        return "done"

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_condition)
    def wrong() -> str:
        calls["user"] += 1
        raise UserInputError("learning_rate_min > learning_rate_max: swap them")

    @flow
    def both() -> str:
        result = flaky()
        wrong()
        return result

    with pytest.raises(UserInputError, match="swap them"):
        both()
    assert calls == {"transient": 3, "user": 1}


# --------------------------------------------------------------------------------------------
# A bounded burst


BURST_REQUESTS, BURST_CLIENTS = 2000, 16


@pytest.mark.slow
def test_burst_answers_right_or_503_and_the_endpoint_stays_up(tmp_path: Path) -> None:
    """2,000 requests from 16 clients against 2 workers and a queue of 4 (capacity 6 in flight):
    overload must be an explicit 503, never a hang, a wrong answer or a crash. The toy model
    (tests/fixtures/toy_inference) answers with the request's byte length, so a mixed-up answer
    between concurrent requests would show."""
    from dogops.local.endpoint import start_endpoint, stop_endpoint

    state = tmp_path / "state"
    info = start_endpoint(
        "burst-test", make_model_dir(tmp_path), state,
        ScalingConfig(min_capacity=2, max_capacity=2),
        options={"drain_seconds": 0.2, "max_queue": 4, "queue_timeout": 10},
    )
    url = str(info.runtime_endpoint_url)
    outcomes: dict[str, int] = {"ok": 0, "overloaded": 0}
    wrong: list[str] = []
    lock = threading.Lock()

    def client_thread(n: int) -> None:
        client = boto3.client(
            "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
        )
        for i in range(BURST_REQUESTS // BURST_CLIENTS):
            size = 1 + n * 1000 + i
            try:
                body = client.invoke_endpoint(EndpointName="burst-test", Body=b"x" * size,
                                              ContentType="image/jpeg")["Body"].read()
                answer = json.loads(body)
                kind = "ok" if answer["image_bytes"] == size else "wrong"
            except ClientError as exc:
                error = exc.response
                overloaded = (error["Error"]["Code"] == "ServiceUnavailable"
                              and error["ResponseMetadata"]["HTTPStatusCode"] == 503)
                kind = "overloaded" if overloaded else f"error {error['Error']}"
            except Exception as exc:  # noqa: BLE001 - any other failure is what we look for
                kind = f"error {exc!r}"
            with lock:
                if kind in outcomes:
                    outcomes[kind] += 1
                else:
                    wrong.append(kind)

    try:
        threads = [threading.Thread(target=client_thread, args=(n,))
                   for n in range(BURST_CLIENTS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert wrong == [], wrong[:5]
        assert outcomes["ok"] + outcomes["overloaded"] == BURST_REQUESTS
        assert outcomes["ok"] >= BURST_REQUESTS // 4, outcomes
        with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
            assert response.status == 200
        status = json.loads(urllib.request.urlopen(f"{url}/dogops/status", timeout=10).read())
        assert status["status"] == "InService" and status["workers"]["ready"] == 2
        assert status["invocations"]["in_flight"] == 0
        assert status["invocations"]["total"] == outcomes["ok"]  # only admitted work ran
        print(f"burst: {outcomes} in {time.monotonic() - started:.1f} s")
    finally:
        stop_endpoint("burst-test", state)
