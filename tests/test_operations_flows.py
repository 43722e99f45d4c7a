"""Operations: the quality gate, retrain -> rollback -> idle guard -> teardown on the local backend
under the Prefect harness, the approval pause, and AWS teardown and idle checks on moto.

Two small models are trained in-process on a tiny generated data set (48 px, a few seconds each):
a good one and a deliberately bad one (learning rate 1e-5, one epoch).
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from dogops.errors import OperationFailedError
from dogops.evaluation import (
    Score,
    decide,
    evaluate_model_dir,
    gate_markdown,
    score_model,
    score_model_dir,
)
from dogops.local.training import make_model_archive, trained_model_record
from dogops.results import TrainedModel
from dogops.settings import Settings

pytestmark = pytest.mark.slow

IMAGE_SIZE = 48


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_code.demo_data import generate_demo_dataset

    return generate_demo_dataset(
        tmp_path_factory.mktemp("ops-data") / "dogs", classes=3, train_per_class=10,
        valid_per_class=4, test_per_class=4, image_size=IMAGE_SIZE, seed=7,
    )


def _train(data_dir: Path, out: Path, name: str, *args: str) -> TrainedModel:
    """Train with model_code.train in-process (no interpreter start), pack model.tar.gz."""
    from model_code import train

    model_dir = out / name / "model"
    code = train.main(["--data-dir", str(data_dir), "--model-dir", str(model_dir),
                       "--image-size", str(IMAGE_SIZE), "--batch-size", "8", "--num-threads", "1",
                       "--feature-cache-dir", str(out / "cache"), *args])
    assert code == 0
    archive = out / name / "model.tar.gz"
    version = make_model_archive(model_dir, archive)
    return trained_model_record(f"job-{name}", model_dir, archive, version, {}, False)


@pytest.fixture(scope="module")
def models(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedModel]:
    out = tmp_path_factory.mktemp("ops-models")
    return {
        "good": _train(data_dir, out, "good", "--learning-rate", "0.01", "--epochs", "2"),
        "bad": _train(data_dir, out, "bad", "--learning-rate", "0.00001", "--epochs", "1"),
    }


def model_dir(model: TrainedModel) -> Path:
    return Path(model.model_uri.removeprefix("file://")).parent / "model"


# -- the gate, driven directly ---------------------------------------------------------------------


def test_gate_promotes_a_better_candidate_and_refuses_a_worse_one(
    models: dict[str, TrainedModel], data_dir: Path
) -> None:
    test_dir = data_dir / "test"
    good = Score(**evaluate_model_dir(model_dir(models["good"]), test_dir))
    bad = Score(**evaluate_model_dir(model_dir(models["bad"]), test_dir))
    assert good.n == bad.n == 12  # the same held-out images for both
    assert good.accuracy >= 0.9 and bad.accuracy <= good.accuracy - 0.3, (good, bad)
    # The in-process evaluation matches what training measured on the same split.
    assert good.accuracy == pytest.approx(models["good"].metrics["test:accuracy"])

    promote = decide(good, bad, 0.01, models["good"].version, models["bad"].version)
    assert promote.promote and "beats" in promote.reason
    assert gate_markdown(promote).startswith("# Quality gate: PROMOTE")

    refuse = decide(bad, good, 0.01, models["bad"].version, models["good"].version)
    assert not refuse.promote and "below the margin" in refuse.reason
    markdown = gate_markdown(refuse)
    assert "KEEP THE LIVE MODEL" in markdown and f"`{models['good'].version}`" in markdown

    # Equal accuracy never clears a positive margin; the same model is never "promoted".
    assert not decide(good, good, 0.01, "other", models["good"].version).promote
    same = decide(good, good, 0.0, models["good"].version, models["good"].version)
    assert not same.promote and "is the live model" in same.reason
    assert decide(bad, None, 0.01, models["bad"].version).promote  # first model


def test_evaluation_runs_the_models_own_serving_code(
    models: dict[str, TrainedModel], data_dir: Path, tmp_path: Path
) -> None:
    """A model whose packed inference.py always answers its first class scores as such."""
    import shutil

    copy = tmp_path / "patched"
    shutil.copytree(model_dir(models["good"]), copy)
    inference = copy / "code" / "inference.py"
    inference.write_text(inference.read_text() + (
        "\n\ndef output_fn(prediction, accept):\n"
        "    names = prediction.class_names\n"
        "    return json.dumps({'label': names[0], 'probability': 1.0, 'predictions': "
        "[{'label': n, 'probability': 1.0 if i == 0 else 0.0} for i, n in enumerate(names)]})\n"
    ))
    result = evaluate_model_dir(copy, data_dir / "test")
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["per_class_accuracy"]["001.Synthetic_Beagle"] == 1.0


def test_scoring_runs_the_models_code_in_a_child_without_credentials(
    models: dict[str, TrainedModel], data_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gate's scoring: the model's own inference.py runs in a child process whose environment
    holds no AWS credentials, and the accuracy is the same as scoring it directly."""
    import shutil
    import sys

    for name, value in {"AWS_ACCESS_KEY_ID": "AKIAOPERATOR", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
                        "AWS_SESSION_TOKEN": "operator-session", "AWS_PROFILE": "admin",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/creds",
                        "PREFECT_API_KEY": "pnu_secret"}.items():
        monkeypatch.setenv(name, value)
    copy = tmp_path / "candidate"
    shutil.copytree(model_dir(models["good"]), copy)
    inference = copy / "code" / "inference.py"
    # What code in a model archive could try: read the environment and ask boto3 for credentials.
    inference.write_text(inference.read_text() + (
        "\n\n_model_fn = model_fn\n\n"
        "def model_fn(model_dir):\n"
        "    import json as _json, os as _os, sys as _sys\n"
        "    import boto3\n"
        "    found = boto3.Session().get_credentials()\n"
        "    with open(_os.path.join(model_dir, 'child.json'), 'w') as fh:\n"
        "        _json.dump({'env': dict(_os.environ), 'pid': _os.getpid(),\n"
        "                    'credentials': found is not None}, fh)\n"
        "    return _model_fn(model_dir)\n"
    ))
    uri = f"file://{models['good'].model_uri.removeprefix('file://')}"
    expected = evaluate_model_dir(model_dir(models["good"]), data_dir / "test")

    score = score_model_dir(copy, data_dir / "test")
    child = json.loads((copy / "child.json").read_text())
    assert child["pid"] != os.getpid()
    assert child["credentials"] is False
    leaked = {k for k in child["env"]
              if k.startswith("AWS_") and k not in ("AWS_EC2_METADATA_DISABLED", "AWS_CONFIG_FILE",
                                                    "AWS_SHARED_CREDENTIALS_FILE")}
    assert leaked == set() and "PREFECT_API_KEY" not in child["env"]
    assert not any(value in json.dumps(child["env"]) for value in
                   ("AKIAOPERATOR", "s3cr3t", "operator-session", "pnu_secret"))
    assert child["env"]["AWS_EC2_METADATA_DISABLED"] == "true"
    # Scoring still gives the right answer, and nothing of the model was imported here.
    assert (score.source, score.n) == ("evaluated", expected["n"])
    assert score.accuracy == pytest.approx(expected["accuracy"])
    assert score.accuracy == pytest.approx(models["good"].metrics["test:accuracy"])
    assert not any(str(copy) in str(getattr(m, "__file__", "") or "")
                   for m in list(sys.modules.values()))
    # The gate's own entry point takes the same path (file:// archive -> child process).
    gate = score_model(uri, "child-check", {}, data_dir / "test",
                       Settings(state_dir=tmp_path / "state"))
    assert gate.accuracy == pytest.approx(expected["accuracy"])


def test_scoring_child_failure_is_a_clear_error(
    models: dict[str, TrainedModel], data_dir: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "broken"
    shutil.copytree(model_dir(models["good"]), copy)
    (copy / "code" / "inference.py").write_text("raise RuntimeError('no model here')\n")
    with pytest.raises(OperationFailedError, match="no model here"):
        score_model_dir(copy, data_dir / "test")


def test_aws_score_falls_back_to_recorded_metrics(
    aws_settings: Settings, data_dir: Path
) -> None:
    """moto names a model.tar.gz it never writes: the gate says it used recorded metrics."""
    s3 = boto3.client("s3", endpoint_url=aws_settings.aws.endpoint_url, region_name="us-east-1",
                      config=Config(retries={"max_attempts": 1}))
    s3.create_bucket(Bucket=aws_settings.aws.bucket)
    uri = f"s3://{aws_settings.aws.bucket}/dogops/training/job/output/model.tar.gz"
    score = score_model(uri, "v1", {"test:accuracy": 0.8, "test:loss": 0.5}, data_dir / "test",
                        aws_settings)
    assert score.source == "recorded-metrics" and score.accuracy == 0.8
    decision = decide(score, Score(accuracy=0.7), 0.01, "v1", "v0")
    assert decision.promote and "approximate" in gate_markdown(decision)


# -- the flows on the local backend ---------------------------------------------------------------


def _artifact(flow_run_id: Any, key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            key=ArtifactFilterKey(any_=[key]),
        ))
    assert found, f"no artifact {key!r} on flow run {flow_run_id}"
    return found[0]


def _served_version(state_dir: Path, name: str) -> str | None:
    from dogops.local.endpoint import read_endpoint

    info = read_endpoint(name, state_dir)
    return info.model_name if info else None


def test_retrain_rollback_idle_guard_and_teardown_on_the_local_backend(
    prefect_harness: None, models: dict[str, TrainedModel], data_dir: Path, tmp_path: Path
) -> None:
    from dogops.local.endpoint import list_endpoints, stop_endpoint
    from dogops.registry import registry_for
    from flows.idle_guard import idle_guard
    from flows.retrain import retrain
    from flows.rollback import rollback
    from flows.teardown import teardown

    name = "ops-test"
    state_dir = tmp_path / "state"
    settings = Settings(state_dir=state_dir).merged(
        endpoint={"name": name}, scaling={"min_capacity": 1, "max_capacity": 1},
    )
    common: dict[str, Any] = {"backend": "local", "state_dir": str(state_dir),
                              "endpoint": {"name": name}}
    # Live before the retrain: the bad model, in the registry (the retrain's deploy starts the
    # endpoint; the rollback then replaces the running server).
    bad = models["bad"]
    registry = registry_for(settings)
    registry.record(bad, name, "local", source="train-and-deploy")
    try:
        state = retrain(
            data_dir=str(data_dir), margin=0.05,
            tuning={"max_jobs": 1, "max_parallel_jobs": 1, "epochs": 2, "batch_sizes": [8],
                    "learning_rate_min": 0.005, "learning_rate_max": 0.02},
            training={"epochs": 2, "image_size": IMAGE_SIZE},
            scaling={"min_capacity": 1, "max_capacity": 1},
            return_state=True, **common,
        )
        assert state.is_completed(), state.message
        result = state.result()
        assert result.promoted, result.reason
        assert result.live_before.model_version == bad.version
        assert result.gate.live is not None and result.gate.live.source == "evaluated"
        assert result.gate.candidate.n == result.gate.live.n == 12
        candidate = result.candidate.version
        assert _served_version(state_dir, name) == candidate
        live = registry.live(name)
        assert live is not None and (live.version, live.model_version) == (2, candidate)
        assert live.source == "retrain" and live.flow_run_id == str(state.state_details.flow_run_id)
        flow_run_id = state.state_details.flow_run_id
        assert "PROMOTE" in _artifact(flow_run_id, "quality-gate").data
        assert _artifact(flow_run_id, "cost-estimate").data

        # Rollback: the previous version serves again and is live in the registry.
        back = rollback(return_state=True, **common)
        assert back.is_completed(), back.message
        assert back.result().restored.version == 1
        assert _served_version(state_dir, name) == bad.version
        live = registry.live(name)
        assert live is not None and live.version == 1
        assert [e.version for e in registry.history(name)] == [1, 2]

        # Idle guard: never invoked since (re)start, so idle past a tiny limit; dry run first.
        time.sleep(0.5)
        dry = idle_guard(max_idle_hours=0.0001, action="teardown", **common)
        assert dry.status.idle and not dry.applied
        pid = _pid(state_dir, name)
        assert dry.changes == [f"endpoint:{name} (pid {pid}, model {bad.version})"]
        assert _served_version(state_dir, name) == bad.version  # still running

        # Teardown: dry run lists, apply stops the server, a re-run finds nothing.
        listed = teardown(**common)
        assert listed == dry.changes
        removed = teardown(apply=True, **common)
        assert removed == listed
        assert list_endpoints(state_dir) == [] and not _alive(pid)
        assert teardown(apply=True, **common) == []
    finally:
        stop_endpoint(name, state_dir)


def _pid(state_dir: Path, name: str) -> int:
    from dogops.local.endpoint import read_endpoint_record

    record = read_endpoint_record(name, state_dir)
    assert record is not None
    return int(record["pid"])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- approval --------------------------------------------------------------------------------------


def _run_paused_flow(answer: dict[str, Any] | None, timeout_s: int) -> tuple[bool, str]:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.runtime import flow_run

    from tasks.operations import request_approval

    run_ids: list[Any] = []

    @flow(name="approval-probe")
    def probe() -> tuple[bool, str]:
        run_ids.append(flow_run.id)
        return request_approval("candidate v2 beats v1", timeout_s, poll_s=1)

    def approve() -> None:
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                if run_ids:
                    state = client.read_flow_run(run_ids[0]).state
                    if state is not None and state.is_paused():
                        resume_flow_run(run_ids[0], run_input=answer)
                        return
                time.sleep(0.2)

    helper = threading.Thread(target=approve, daemon=True) if answer is not None else None
    if helper:
        helper.start()
    result = probe()
    if helper:
        helper.join(5)
    return result


def test_approval_resumes_with_the_answer_given_in_the_ui(prefect_harness: None) -> None:
    approved, note = _run_paused_flow({"approve": True, "reason": "looks good"}, timeout_s=60)
    assert approved and note == "approved in the UI: looks good"


def test_no_answer_within_the_timeout_means_not_approved(prefect_harness: None) -> None:
    approved, note = _run_paused_flow(None, timeout_s=2)
    assert not approved and "no approval within 2 s" in note


# -- AWS teardown and idle check on moto -----------------------------------------------------------


def _aws_world(aws_settings: Settings) -> tuple[Any, Settings]:
    """Endpoint (2 instances), scaling, Lambda and roles made by the project's own functions."""
    from dogops.aws.autoscaling import register_autoscaling
    from dogops.aws.clients import AwsClients
    from dogops.aws.endpoint import deploy_endpoint
    from dogops.aws.iam import ensure_lambda_role, ensure_sagemaker_role
    from dogops.aws.lambda_deploy import deploy_lambda

    settings = aws_settings.merged(lambda_config={"provisioned_concurrency": 0},
                                   endpoint={"initial_instance_count": 2})
    clients = AwsClients(settings.aws)
    role = ensure_sagemaker_role(clients, settings)
    model = TrainedModel(job_name="job", hyperparameters={}, version="v1",
                         model_uri=f"s3://{settings.aws.bucket}/dogops/training/job/output/model.tar.gz")
    info = deploy_endpoint(clients, settings, model, role, "run1", poll_s=0, sleep=lambda _: None)
    register_autoscaling(clients, info.name, settings.scaling)
    assert info.arn
    security = ensure_lambda_role(clients, settings, info.arn)
    assert security.lambda_role_arn
    deploy_lambda(clients, settings, info.name, security.lambda_role_arn)
    return clients, settings


def test_aws_teardown_leaves_nothing_behind(aws_settings: Settings) -> None:
    from dogops.aws.teardown import teardown_aws

    clients, settings = _aws_world(aws_settings)
    sm = clients.client("sagemaker")
    # Someone else's model with a look-alike name, untagged: must survive.
    sm.create_model(ModelName="dogops-classifier-m-0123456789ab", PrimaryContainer={"Image": "x"},
                    ExecutionRoleArn="arn:aws:iam::123456789012:role/other")

    planned = teardown_aws(clients, settings, apply=False, poll_s=0, sleep=lambda _: None)
    kinds = [line.split(":", 1)[0] for line in planned]
    assert kinds.index("scaling-policy") < kinds.index("scalable-target") < kinds.index(
        "function") < kinds.index("endpoint") < kinds.index("endpoint-config") < kinds.index(
        "model") < kinds.index("role")
    assert "model:dogops-classifier-m-0123456789ab" not in planned
    assert sm.list_endpoints()["Endpoints"]  # a dry run deletes nothing

    done = teardown_aws(clients, settings, apply=True, poll_s=0, sleep=lambda _: None)
    assert done == planned
    scaling = clients.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert clients.client("lambda").list_functions()["Functions"] == []
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [
        "dogops-classifier-m-0123456789ab"]
    iam = clients.client("iam")
    assert [r for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("dogops-")] == []
    assert iam.list_policies(Scope="Local")["Policies"] == []
    assert teardown_aws(clients, settings, apply=True, poll_s=0, sleep=lambda _: None) == []


def test_aws_idle_check_and_scale_to_min(aws_settings: Settings) -> None:
    from dogops.backends import operations_for
    from dogops.idle import idle_status, scale_to_min

    clients, settings = _aws_world(aws_settings)
    operations = operations_for("aws", clients)
    now = datetime.now(UTC)
    fresh = idle_status(settings, 24, now=now, operations=operations)
    assert fresh.exists and not fresh.idle and fresh.current_instances == 2

    later = now + timedelta(hours=30)  # no invocations at all, 30 h after the deploy
    quiet = idle_status(settings, 24, now=later, operations=operations)
    assert quiet.idle and quiet.invocations_in_window == 0 and quiet.idle_hours >= 29.9

    clients.client("cloudwatch").put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
        "MetricName": "Invocations", "Value": 5.0, "Timestamp": later - timedelta(hours=2),
        "Dimensions": [{"Name": "EndpointName", "Value": settings.endpoint.name},
                       {"Name": "VariantName", "Value": "AllTraffic"}],
    }])
    busy = idle_status(settings, 24, now=later, operations=operations)
    assert not busy.idle and busy.invocations_in_window == 5 and busy.idle_hours <= 2

    assert scale_to_min(settings, quiet, apply=False, operations=operations) == [
        f"endpoint-capacity:{settings.endpoint.name}:2->1"]
    scale_to_min(settings, quiet, apply=True, operations=operations)
    variant = clients.client("sagemaker").describe_endpoint(
        EndpointName=settings.endpoint.name)["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 1
