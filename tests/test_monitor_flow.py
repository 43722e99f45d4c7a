"""The monitor flow on captures written by the local endpoint: a small model trained in-process,
deployed by the local backend with `endpoint.capture_percent=100`, asked through boto3's
sagemaker-runtime client; the endpoint's capture writer stores SageMaker-format lines in the
local object store, and the `monitor` flow (under the Prefect harness) must report exactly what
was sent and answered."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from test_operations_flows import IMAGE_SIZE, _artifact, _train

from dogops.capture import local_capture_root
from dogops.results import EndpointInfo
from dogops.settings import Settings

pytestmark = pytest.mark.slow

NAME = "monitor-test"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_code.demo_data import generate_demo_dataset

    return generate_demo_dataset(
        tmp_path_factory.mktemp("monitor-data") / "dogs", classes=3, train_per_class=10,
        valid_per_class=4, test_per_class=4, image_size=IMAGE_SIZE, seed=11,
    )


def _status(endpoint: EndpointInfo) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint.runtime_endpoint_url}/dogops/status",
                                timeout=10) as response:
        return dict(json.loads(response.read()))


def _wait_written(endpoint: EndpointInfo, count: int, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        capture = _status(endpoint)["capture"]
        if capture["written"] >= count or time.monotonic() > deadline:
            return dict(capture)
        time.sleep(0.1)


def test_monitor_reports_what_the_local_endpoint_captured(
    prefect_harness: None, data_dir: Path, tmp_path: Path
) -> None:
    from dogops.local.backend import LocalBackend
    from dogops.local.endpoint import stop_endpoint
    from flows.monitor import monitor_flow

    state_dir = tmp_path / "state"
    settings = Settings(state_dir=state_dir).merged(
        endpoint={"name": NAME, "capture_percent": 100},
        scaling={"min_capacity": 1, "max_capacity": 1},
    )
    backend = LocalBackend(settings)
    backend.upload_data(data_dir)  # the test split's class counts come from this manifest
    # Half-trained on purpose: its top-1 probabilities spread out, so a threshold splits them.
    model = _train(data_dir, tmp_path / "models", "half", "--learning-rate", "0.002",
                   "--epochs", "1")
    endpoint = backend.deploy(model, "run-1")
    images = sorted((data_dir / "test").rglob("*.jpg"))
    answers: list[dict[str, Any]] = []
    try:
        for path in images:
            answers.append(json.loads(backend.invoke_endpoint(endpoint, path.read_bytes(),
                                                              "image/jpeg")))
        # A caller's id travels as SageMaker's inferenceId.
        runtime = boto3.client(
            "sagemaker-runtime", endpoint_url=endpoint.runtime_endpoint_url,
            region_name="us-east-1", aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - the local endpoint checks no signature
            config=Config(retries={"max_attempts": 1}))
        tagged = runtime.invoke_endpoint(EndpointName=NAME, Body=images[0].read_bytes(),
                                         ContentType="image/jpeg", InferenceId="caller-id-1")
        answers.append(json.loads(tagged["Body"].read()))
        # A caller's mistake (not an image) is answered 4xx and is not a capture.
        with pytest.raises(runtime.exceptions.ClientError):
            runtime.invoke_endpoint(EndpointName=NAME, Body=b"not an image",
                                    ContentType="image/jpeg")
        sent = len(answers)
        capture = _wait_written(endpoint, sent)
        assert (capture["percent"], capture["written"], capture["dropped"], capture["failed"]) \
            == (100, sent, 0, 0)
    finally:
        stop_endpoint(NAME, state_dir)

    # SageMaker's layout and format in the local store.
    root = local_capture_root(settings)
    files = sorted(root.rglob("*.jsonl"))
    today = datetime.now(UTC)
    assert files and all(f.relative_to(root).parts[:3] == (NAME, "AllTraffic", f"{today:%Y}")
                         for f in files)
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert len(lines) == sent
    first = lines[0]["captureData"]
    assert first["endpointInput"]["encoding"] == "BASE64"
    assert first["endpointInput"]["observedContentType"] == "image/jpeg"
    assert base64.b64decode(first["endpointInput"]["data"]) in {p.read_bytes() for p in images}
    assert first["endpointOutput"]["encoding"] == "JSON"
    assert [x["eventMetadata"].get("inferenceId") for x in lines].count("caller-id-1") == 1

    # About half of the answers under the threshold (within the setting's bounds).
    threshold = min(0.99, max(0.01, sorted(a["probability"] for a in answers)[sent // 2]))
    state = monitor_flow(backend="local", state_dir=str(state_dir),
                         endpoint={"name": NAME, "capture_percent": 100},
                         monitor_config={"low_confidence_threshold": threshold,
                                         "lookback_days": 2},
                         return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    probabilities = [a["probability"] for a in answers]
    predicted = Counter(a["label"] for a in answers)
    below = sum(p < threshold for p in probabilities)
    assert report.requests == report.predictions == sent
    assert report.requests_per_day[today.date().isoformat()] == sent
    assert report.mean_top1 == pytest.approx(sum(probabilities) / sent)
    print(f"threshold {threshold:.4f}: {below} of {sent} under it")
    assert report.below_threshold == below and report.share_below_threshold == pytest.approx(
        below / sent)

    # The artifacts a person reads carry the same figures, and no image bytes.
    run_id = state.state_details.flow_run_id
    per_day = json.loads(_artifact(run_id, "monitor-requests-per-day").data)
    assert {r["day"]: r["requests"] for r in per_day}[today.date().isoformat()] == sent
    table = json.loads(_artifact(run_id, "monitor-predicted-classes").data)
    classes = {r["class"]: r for r in table}
    assert {c: r["predicted"] for c, r in classes.items() if r["predicted"]} == dict(predicted)
    assert {c: r["test_images"] for c, r in classes.items()} == {
        d.name: 4 for d in (data_dir / "test").iterdir()}
    assert all(r["test_share"] == pytest.approx(1 / 3, abs=1e-4) for r in classes.values())
    summary = _artifact(run_id, "monitor").data
    assert f"captured requests: **{sent}**" in summary
    assert f"{report.mean_top1:.3f}" in summary and f"**{below}**" in summary
    plot = _artifact(run_id, "monitor-plot").data
    assert "data:image/png;base64," in plot
    image_b64 = {base64.b64encode(p.read_bytes()).decode()[:40] for p in images}
    for text in (summary, plot, json.dumps(per_day), json.dumps(classes)):
        assert not any(b in text for b in image_b64)
    # Nor in the endpoint server's log.
    log_text = "".join(p.read_text(errors="replace")
                       for p in (state_dir / "endpoints" / NAME).glob("server-*.log"))
    assert log_text and not any(b in log_text for b in image_b64)


def test_turning_capture_on_for_the_live_model_restarts_its_server_without_a_rollout(
    data_dir: Path, tmp_path: Path
) -> None:
    """Only the capture setting changed: the same model is served by a fresh server with the new
    option (before, it was rolled out onto itself, baked, and the old option stayed)."""
    from dogops.local.backend import LocalBackend
    from dogops.local.endpoint import read_endpoint_record, stop_endpoint

    state_dir = tmp_path / "state"
    settings = Settings(state_dir=state_dir).merged(
        endpoint={"name": NAME, "capture_percent": 0},
        scaling={"min_capacity": 1, "max_capacity": 1},
    )
    model = _train(data_dir, tmp_path / "models", "same", "--epochs", "1")
    try:
        first = LocalBackend(settings).deploy(model, "run-1")
        assert _status(first)["capture"]["percent"] == 0
        again = LocalBackend(settings.merged(endpoint={"capture_percent": 100})).deploy(
            model, "run-2")
        assert again.rollout is None and again.model_name == model.version
        assert _status(again)["capture"]["percent"] == 100
        record = read_endpoint_record(NAME, state_dir)
        assert record is not None and record["capture_percent"] == 100
    finally:
        stop_endpoint(NAME, state_dir)
