"""The local endpoint: autoscaler logic, model-code contract, and real servers driven by boto3.

Servers are real detached processes hosting the toy code dir (`tests/fixtures/toy_inference`);
the boto3 client is unmodified except for `endpoint_url`. Nothing is mocked but the clock of the
autoscaler unit tests.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from fixtures.toy_inference import make_model_dir

from dogops.errors import OperationFailedError, UserInputError
from dogops.local.autoscaler import InvocationCounter, ScalingPolicy, TargetTrackingScaler
from dogops.local.backend import LocalBackend
from dogops.local.endpoint import (
    endpoint_status,
    list_endpoints,
    read_endpoint,
    read_endpoint_record,
    start_endpoint,
    stop_endpoint,
)
from dogops.local.endpoint_server import ServerOptions, parse_args
from dogops.local.serving_toolkit import ToolkitWorker, public_error
from dogops.results import EndpointInfo
from dogops.settings import ScalingConfig, Settings

NAME = "toy-endpoint"
FAST = {"drain_seconds": 0.3}


def runtime_client(url: str, read_timeout: float = 20) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout),
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EndpointInfo, Path]]:
    """One toy endpoint shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("endpoint")
    state_dir = root / "state"
    info = start_endpoint(NAME, make_model_dir(root), state_dir, ScalingConfig(), options=FAST)
    yield info, state_dir
    stop_endpoint(NAME, state_dir)


# --------------------------------------------------------------------------------------------
# Autoscaler logic (fake clock)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_desired_capacity_is_ceil_of_rate_over_target_clamped() -> None:
    policy = ScalingPolicy(min_capacity=1, max_capacity=4, target_invocations_per_instance=50)
    assert policy.desired_for(0) == 1
    assert policy.desired_for(50) == 1
    assert policy.desired_for(51) == 2
    assert policy.desired_for(100) == 2
    assert policy.desired_for(1000) == 4


def test_policy_rejects_bad_numbers() -> None:
    with pytest.raises(ValueError, match="greater than scaling.max_capacity"):
        ScalingPolicy(min_capacity=3, max_capacity=2)
    with pytest.raises(ValueError, match="positive"):
        ScalingPolicy(target_invocations_per_instance=0)
    with pytest.raises(ValueError, match="cooldown"):
        ScalingPolicy(scale_in_cooldown_s=-1)


def test_the_server_names_its_scaling_knobs_as_the_settings_do() -> None:
    """One set of names: the policy, the server's options (and so its command line and status
    document) and `ScalingConfig` say the same five knobs."""
    knobs = set(ScalingConfig.model_fields) - {"enabled"}
    assert set(asdict(ScalingPolicy())) == knobs
    assert knobs <= {f.name for f in fields(ServerOptions)}
    options = ServerOptions(name="n", model_dir="m", code_dir="c", min_capacity=0,
                            max_capacity=3, target_invocations_per_instance=20,
                            scale_in_cooldown_s=60, scale_out_cooldown_s=5)
    assert "--target-invocations-per-instance" in options.to_args()
    assert parse_args(options.to_args()) == options


def test_the_server_command_line_refuses_a_bad_knob_with_the_settings_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--name", "n", "--model-dir", "m", "--code-dir", "c"]
    with pytest.raises(SystemExit) as exited:
        parse_args([*base, "--min-capacity", "3", "--max-capacity", "2"])
    assert exited.value.code == 2
    assert ("scaling.min_capacity (3) is greater than scaling.max_capacity (2): lower min or "
            "raise max.") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*base, "--scale-in-cooldown-s", "7200"])
    assert ("scaling.scale_in_cooldown_s must be between 0 and 3600 seconds, got 7200"
            in capsys.readouterr().err)


def test_scale_out_honours_scale_out_cooldown() -> None:
    clock = FakeClock()
    policy = ScalingPolicy(1, 4, 50, scale_in_cooldown_s=300, scale_out_cooldown_s=30)
    scaler = TargetTrackingScaler(policy, clock=clock)
    assert scaler.current == 1
    assert scaler.evaluate(40) is None  # under target
    event = scaler.evaluate(120)
    assert event is not None and (event.from_workers, event.to_workers) == (1, 3)
    assert "scale-out" in event.reason
    clock.now += 10
    assert scaler.evaluate(400) is None  # still in the scale-out cooldown
    clock.now += 20
    event = scaler.evaluate(400)
    assert event is not None and event.to_workers == 4  # clamped to max
    clock.now += 60
    assert scaler.evaluate(10_000) is None  # already at max


def test_scale_in_waits_for_scale_in_cooldown_and_stops_at_min() -> None:
    clock = FakeClock()
    policy = ScalingPolicy(2, 4, 50, scale_in_cooldown_s=30, scale_out_cooldown_s=0)
    scaler = TargetTrackingScaler(policy, clock=clock)
    assert scaler.current == 2  # starts at min
    assert scaler.evaluate(200) is not None and scaler.current == 4
    clock.now += 29
    assert scaler.evaluate(0) is None  # scale-in cooldown after the scale-out
    clock.now += 1
    event = scaler.evaluate(0)
    assert event is not None and event.to_workers == 2 and "scale-in" in event.reason
    clock.now += 100
    assert scaler.evaluate(0) is None  # never below min
    assert [e.to_workers for e in scaler.events] == [4, 2]


def test_scale_out_is_not_blocked_by_scale_in_cooldown() -> None:
    clock = FakeClock()
    scaler = TargetTrackingScaler(ScalingPolicy(1, 3, 50, 300, 0), clock=clock, current=3)
    clock.now += 300
    assert scaler.evaluate(10) is not None and scaler.current == 1
    clock.now += 1
    assert scaler.evaluate(140) is not None and scaler.current == 3


def test_invocation_counter_rate_over_sliding_window() -> None:
    clock = FakeClock()
    counter = InvocationCounter(window_s=10, clock=clock)
    counter.record(5)
    clock.now += 5
    counter.record(5)
    assert counter.rate_per_minute() == pytest.approx(60.0)  # 10 in 10 s
    clock.now += 5
    assert counter.rate_per_minute() == pytest.approx(30.0)  # the first 5 left the window
    clock.now += 5
    assert counter.rate_per_minute() == 0
    assert counter.total == 10


# --------------------------------------------------------------------------------------------
# The model-code contract, in-process


def test_toolkit_worker_answers_with_the_containers_statuses(
    tmp_path: Path, toolkit_in_process: None
) -> None:
    model_dir = make_model_dir(tmp_path)
    worker = ToolkitWorker(str(model_dir), str(model_dir / "code"))
    status, body, content_type = worker.invoke(b"abcd", "image/jpeg", "*/*")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["image_bytes"] == 4
    status, body, _ = worker.invoke(b"x", "text/plain", "application/json")
    assert status == 415 and b"unsupported content type" in body
    status, body, _ = worker.invoke(b"x", "image/png", "text/csv")
    assert status == 406
    # Any other exception is the toolkit's 500, its traceback in the body; the front shows
    # only a line without the details.
    status, body, _ = worker.invoke(b'{"boom": true}', "application/json", "*/*")
    assert status == 500 and b"exploded" in body and b"Traceback" in body
    assert b"exploded" not in public_error(status, body)


def test_toolkit_worker_names_a_missing_inference_py(
    tmp_path: Path, toolkit_in_process: None
) -> None:
    with pytest.raises(FileNotFoundError, match="inference.py"):
        ToolkitWorker(str(tmp_path), str(tmp_path))


# --------------------------------------------------------------------------------------------
# A running endpoint


def test_ping_and_status(served: tuple[EndpointInfo, Path]) -> None:
    info, state_dir = served
    with urllib.request.urlopen(f"{info.runtime_endpoint_url}/ping", timeout=5) as response:
        assert response.status == 200
    status = get_json(f"{info.runtime_endpoint_url}/dogops/status")
    assert status["name"] == NAME and status["status"] == "InService"
    assert status["model"]["version"] == "v1"
    assert status["workers"]["ready"] >= 1
    assert status["scaling"]["policy"]["target_invocations_per_instance"] == 50
    assert info.url == f"{info.runtime_endpoint_url}/endpoints/{NAME}/invocations"
    assert read_endpoint(NAME, state_dir) == info
    assert [e.name for e in list_endpoints(state_dir)] == [NAME]
    assert endpoint_status(NAME, state_dir)["server"]["name"] == NAME


def test_the_local_backend_reports_the_running_servers_scaling_policy(
    served: tuple[EndpointInfo, Path],
) -> None:
    """`register_autoscaling` reads the policy the server runs (its status document, under the
    settings' names), not the settings of the run that asks: here they say max 5, it runs 2."""
    info, state_dir = served
    settings = Settings(state_dir=state_dir, scaling=ScalingConfig(max_capacity=5))
    scaling = LocalBackend(settings).register_autoscaling(info)
    assert (scaling.min_capacity, scaling.max_capacity, scaling.target) == (1, 2, 50)
    assert (scaling.scale_in_cooldown_s, scaling.scale_out_cooldown_s) == (30, 30)


def test_boto3_invoke_endpoint_round_trip(served: tuple[EndpointInfo, Path]) -> None:
    info, _ = served
    client = runtime_client(str(info.runtime_endpoint_url))
    response = client.invoke_endpoint(
        EndpointName=NAME, Body=b"\xff\xd8\xff" + b"0" * 97, ContentType="image/jpeg",
        Accept="application/json",
    )
    assert response["ContentType"] == "application/json"
    answer = json.loads(response["Body"].read())
    assert answer["image_bytes"] == 100 and answer["model_version"] == "v1"
    assert answer["label"] == answer["predictions"][0]["label"]


def test_container_contract_invocations(served: tuple[EndpointInfo, Path]) -> None:
    info, _ = served
    host, port = str(info.runtime_endpoint_url).removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", "/invocations", body=b"abc", headers={"Content-Type": "image/png"})
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["image_bytes"] == 3
    connection.request("POST", "/invocations", body=b"abc", headers={"Content-Type": "text/plain"})
    response = connection.getresponse()
    # The container contract answers with the model's own status, as a SageMaker container does.
    assert response.status == 415
    assert "unsupported content type" in json.loads(response.read())["message"]
    connection.close()


def test_unknown_endpoint_name_is_a_validation_error(served: tuple[EndpointInfo, Path]) -> None:
    info, _ = served
    client = runtime_client(str(info.runtime_endpoint_url))
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"x", ContentType="image/jpeg")
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationError"
    assert "no-such-endpoint" in error["Error"]["Message"]
    assert "not found" in error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    ("content_type", "accept", "status", "text"),
    [
        ("text/plain", "application/json", 415, "unsupported content type"),
        ("image/jpeg", "text/csv", 406, "cannot answer in"),
        ("application/json", "application/json", 400, "not a JSON object"),
    ],
)
def test_request_errors_become_model_errors_with_their_status(
    served: tuple[EndpointInfo, Path], content_type: str, accept: str, status: int, text: str
) -> None:
    info, _ = served
    client = runtime_client(str(info.runtime_endpoint_url))
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(
            EndpointName=NAME, Body=b"[1, 2]", ContentType=content_type, Accept=accept
        )
    error = caught.value.response
    # As on AWS: 424 ModelError, the container's status and message in Original*.
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == status
    assert text in error["OriginalMessage"] and text in error["Error"]["Message"]


def test_internal_model_error_is_500_and_server_stays_up(served: tuple[EndpointInfo, Path]) -> None:
    info, _ = served
    client = runtime_client(str(info.runtime_endpoint_url))
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(
            EndpointName=NAME, Body=b'{"boom": 1}', ContentType="application/json"
        )
    assert caught.value.response["OriginalStatusCode"] == 500
    assert "exploded" not in caught.value.response["Error"]["Message"]  # details stay in the log
    response = client.invoke_endpoint(EndpointName=NAME, Body=b"ok", ContentType="image/jpeg")
    assert json.loads(response["Body"].read())["image_bytes"] == 2


def test_oversized_body_is_413(served: tuple[EndpointInfo, Path]) -> None:
    info, _ = served
    client = runtime_client(str(info.runtime_endpoint_url))
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(
            EndpointName=NAME, Body=b"0" * (6 * 1024 * 1024 + 1), ContentType="image/jpeg"
        )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "exceeds" in caught.value.response["Error"]["Message"]


def test_start_rejects_a_model_dir_without_code(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with pytest.raises(UserInputError, match="code/inference.py"):
        start_endpoint(NAME, tmp_path / "model", tmp_path / "state", ScalingConfig())
    with pytest.raises(UserInputError, match="invalid"):
        start_endpoint("bad_name!", make_model_dir(tmp_path), tmp_path / "state", ScalingConfig())


# --------------------------------------------------------------------------------------------
# Lifecycle: replace, failed replace, stop, busy, scaling


def test_replace_without_downtime_then_failed_replace_then_stop(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    # The old server keeps answering for drain_seconds after the switch, for callers that read
    # the record just before it changed.
    drain = {"drain_seconds": 1.0}
    first = start_endpoint(NAME, make_model_dir(tmp_path, "v1"), state_dir, ScalingConfig(),
                           options=drain)
    first_pid = read_endpoint_record(NAME, state_dir)["pid"]  # type: ignore[index]
    clients: dict[str, Any] = {}
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def keep_invoking() -> None:
        # A well-behaved caller: reads the record for every request, as the docs say.
        while not stop.is_set():
            info = read_endpoint(NAME, state_dir)
            if info is None:
                failures.append("no running endpoint in the record")
                continue
            url = str(info.runtime_endpoint_url)
            client = clients.setdefault(url, runtime_client(url))
            try:
                response = client.invoke_endpoint(EndpointName=NAME, Body=b"img",
                                                  ContentType="image/jpeg")
                seen.append(json.loads(response["Body"].read())["model_version"])
            except Exception as exc:  # noqa: BLE001 - any failure is what we look for
                failures.append(repr(exc))

    thread = threading.Thread(target=keep_invoking)
    thread.start()
    try:
        wait_for(lambda: len(seen) >= 5, 10, "first answers")
        second = start_endpoint(NAME, make_model_dir(tmp_path, "v2"), state_dir, ScalingConfig(),
                                options=drain)
        wait_for(lambda: seen[-1:] == ["v2"], 10, "answers from v2")
        count = len(seen)
        wait_for(lambda: len(seen) >= count + 5, 10, "more answers from v2")
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    assert "v1" in seen and seen[-1] == "v2"
    assert second.updated and second.model_name == "v2" and not first.updated
    assert second.runtime_endpoint_url != first.runtime_endpoint_url
    assert pid_gone(first_pid)

    # A model that cannot load: the replacement fails its health check, v2 keeps serving.
    with pytest.raises(OperationFailedError) as caught:
        start_endpoint(NAME, make_model_dir(tmp_path, "v3", fail_load=True), state_dir,
                       ScalingConfig(), options=FAST, timeout_s=60)
    message = str(caught.value)
    assert "v3" in message and "keeps serving" in message
    assert "fail_load is set" in message  # the tail of the new server's log
    current = read_endpoint(NAME, state_dir)
    assert current == second.model_copy(update={"updated": False})
    client = runtime_client(str(current.runtime_endpoint_url))  # type: ignore[union-attr]
    response = client.invoke_endpoint(EndpointName=NAME, Body=b"i", ContentType="image/jpeg")
    assert json.loads(response["Body"].read())["model_version"] == "v2"

    second_pid = read_endpoint_record(NAME, state_dir)["pid"]  # type: ignore[index]
    assert stop_endpoint(NAME, state_dir) is True
    assert pid_gone(second_pid)
    assert read_endpoint(NAME, state_dir) is None and list_endpoints(state_dir) == []
    assert stop_endpoint(NAME, state_dir) is False


def test_busy_endpoint_answers_503_instead_of_hanging(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    info = start_endpoint(
        NAME, make_model_dir(tmp_path), state_dir,
        ScalingConfig(min_capacity=1, max_capacity=1),
        options={**FAST, "max_queue": 0, "queue_timeout": 1},
    )
    try:
        client = runtime_client(str(info.runtime_endpoint_url))
        slow = threading.Thread(target=client.invoke_endpoint, kwargs={
            "EndpointName": NAME, "Body": b'{"sleep": 1.5}', "ContentType": "application/json"})
        slow.start()
        wait_for(lambda: get_json(f"{info.runtime_endpoint_url}/dogops/status")
                 ["invocations"]["in_flight"] == 1, 5, "the slow request to start")
        other = runtime_client(str(info.runtime_endpoint_url))
        started = time.monotonic()
        with pytest.raises(ClientError) as caught:
            other.invoke_endpoint(EndpointName=NAME, Body=b"x", ContentType="image/jpeg")
        assert time.monotonic() - started < 1.0  # refused at once, not after the queue timeout
        assert caught.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert "at capacity" in caught.value.response["Error"]["Message"]
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        slow.join(10)
    finally:
        stop_endpoint(NAME, state_dir)


def test_burst_scales_out_to_max_then_back_in(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    scaling = ScalingConfig(
        min_capacity=1, max_capacity=2, target_invocations_per_instance=30,
        scale_out_cooldown_s=0, scale_in_cooldown_s=1,
    )
    # A 3 s metric window: 10 requests in it are 200/min against a target of 30 per worker.
    info = start_endpoint(NAME, make_model_dir(tmp_path), state_dir, scaling,
                          options={**FAST, "metric_window": 3, "scaling_interval": 0.2})
    status_url = f"{info.runtime_endpoint_url}/dogops/status"
    try:
        assert get_json(status_url)["workers"]["ready"] == 1
        client = runtime_client(str(info.runtime_endpoint_url))
        for _ in range(10):
            client.invoke_endpoint(EndpointName=NAME, Body=b"x", ContentType="image/jpeg")

        def second_worker_ready() -> bool:
            # Traffic keeps coming while the new worker starts: it imports the serving toolkit
            # (and torch, as the container's workers do), which takes seconds on a busy machine.
            client.invoke_endpoint(EndpointName=NAME, Body=b"x", ContentType="image/jpeg")
            return bool(get_json(status_url)["workers"]["ready"] == 2)

        wait_for(second_worker_ready, 90, "a second worker")
        status = get_json(status_url)
        scale_out = status["scaling"]["events"][0]
        assert (scale_out["from_workers"], scale_out["to_workers"]) == (1, 2)
        assert len({p["pid"] for p in status["workers"]["processes"]}) == 2
        # Traffic stops: after the window empties and the cooldown passes, back to min.
        wait_for(lambda: get_json(status_url)["workers"]["desired"] == 1, 20, "scale-in")
        wait_for(lambda: get_json(status_url)["workers"]["ready"] == 1, 10, "a worker to stop")
        assert get_json(status_url)["scaling"]["events"][-1]["to_workers"] == 1
    finally:
        stop_endpoint(NAME, state_dir)


def test_scale_to_zero_policy_and_wake() -> None:
    clock = FakeClock()
    policy = ScalingPolicy(0, 2, 50, scale_in_cooldown_s=30, scale_out_cooldown_s=30)
    assert policy.desired_for(0) == 0 and policy.desired_for(1) == 1
    scaler = TargetTrackingScaler(policy, clock=clock, current=1)  # one worker to start with
    clock.now += 29
    assert scaler.evaluate(0) is None  # the start counts as an activity: cooldown first
    clock.now += 1
    event = scaler.evaluate(0)
    assert event is not None and (event.from_workers, event.to_workers) == (1, 0)
    assert scaler.wake(0) is not None and scaler.current == 1  # a request: at once, no cooldown
    assert scaler.wake(0) is None  # already awake
    clock.now += 29
    assert scaler.evaluate(0) is None  # the wake-up is an activity too
    with pytest.raises(ValueError, match="max_capacity must be at least 1"):
        ScalingPolicy(0, 0)


def test_idle_pool_scales_to_zero_and_the_first_request_starts_a_worker(tmp_path: Path) -> None:
    """scaling.min_capacity=0: after the scale-in cooldown the endpoint has no worker, stays
    healthy, and the next request starts one (its cold start shows in the status)."""
    state_dir = tmp_path / "state"
    scaling = ScalingConfig(min_capacity=0, max_capacity=2, scale_in_cooldown_s=2,
                            scale_out_cooldown_s=0)
    info = start_endpoint(NAME, make_model_dir(tmp_path), state_dir, scaling,
                          options={**FAST, "metric_window": 2, "scaling_interval": 0.2})
    url = str(info.runtime_endpoint_url)
    status_url = f"{url}/dogops/status"
    try:
        wait_for(lambda: get_json(status_url)["workers"]["ready"] == 0, 30, "scale to zero")
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
            assert resp.status == 200  # scaled to zero is healthy
        assert get_json(status_url)["cold_starts"]["count"] == 0

        client = runtime_client(url, read_timeout=120)
        started = time.monotonic()
        answer = client.invoke_endpoint(EndpointName=NAME, Body=b"x", ContentType="image/jpeg")
        took = time.monotonic() - started
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        shown = endpoint_status(NAME, state_dir)  # what `dogops status` prints
        cold = next(v for v in _walk(shown) if isinstance(v, dict) and "cold_starts" in v)
        assert cold["cold_starts"]["count"] == 1
        assert 0 < cold["cold_starts"]["last_s"] <= took
        events = [(e["from_workers"], e["to_workers"]) for e in cold["scaling"]["events"]]
        assert events == [(1, 0), (0, 1)]
        assert "cold start" in cold["scaling"]["events"][-1]["reason"]
        # A warm request does not count as a cold start; idle again, back to zero.
        client.invoke_endpoint(EndpointName=NAME, Body=b"x", ContentType="image/jpeg")
        assert get_json(status_url)["cold_starts"]["count"] == 1
        wait_for(lambda: get_json(status_url)["workers"]["ready"] == 0, 30, "zero again")
    finally:
        stop_endpoint(NAME, state_dir)


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
