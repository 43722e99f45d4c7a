"""The train-and-deploy flow end to end on the local backend, under a real Prefect server.

One module-scoped run on a tiny generated data set (so the whole file costs about a minute),
then a second run with the same inputs that must reuse the tuning, the model and the endpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from dogops.errors import DataLayoutError, UserInputError
from dogops.settings import TrainingConfig, TuningConfig

pytestmark = pytest.mark.slow

TUNING = {"max_jobs": 3, "max_parallel_jobs": 2, "epochs": 3, "batch_sizes": [8, 16]}
TRAINING = {"epochs": 3, "image_size": 64}


def trainings_run(state_dir: Path) -> int:
    """Each launched training process (trial or final) leaves one train.log."""
    return len(list((state_dir / "jobs").rglob("train.log")))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_code.demo_data import generate_demo_dataset

    return generate_demo_dataset(
        tmp_path_factory.mktemp("data") / "dogs", classes=3, train_per_class=12,
        valid_per_class=4, test_per_class=4, image_size=48, seed=1,
    )


@pytest.fixture(scope="module")
def first_run(prefect_harness: None, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from dogops.local.endpoint import stop_endpoint
    from flows.train_and_deploy import train_and_deploy

    state_dir = tmp_path_factory.mktemp("state")
    state = train_and_deploy(
        data_dir=str(data_dir), backend="local", state_dir=str(state_dir),
        tuning=TuningConfig(**TUNING), training=TrainingConfig(**TRAINING),
        endpoint={"name": "flow-test"},  # type: ignore[arg-type]
        return_state=True,
    )
    yield state, state_dir
    stop_endpoint("flow-test", state_dir)


def _artifacts(flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in artifacts}


def _all_artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return list(client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        ))


def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return list(client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        ))


def test_flow_completes_and_every_task_run_is_completed(first_run) -> None:  # type: ignore[no-untyped-def]
    state, _ = first_run
    assert state.is_completed(), state.message
    runs = _task_runs(state.state_details.flow_run_id)
    names = {r.name for r in runs}
    for step in ("upload-", "tune-", "train-best-", "deploy-", "register-autoscaling",
                 "secure", "deploy-lambda", "smoke-test", "evaluate"):
        assert any(n.startswith(step) for n in names), (step, names)
    assert all(r.state.is_completed() for r in runs), [(r.name, r.state.name) for r in runs]
    trials = sorted(n for n in names if n.startswith("tune-0"))
    assert len(trials) == TUNING["max_jobs"], names
    assert all("-lr" in n and "-bs" in n for n in trials), trials


def test_flow_leaves_the_artifacts_a_person_reads(first_run) -> None:  # type: ignore[no-untyped-def]
    state, _ = first_run
    artifacts = _artifacts(state.state_details.flow_run_id)
    for key in ("tuning-trials", "best-hyperparameters", "test-metrics", "per-class-accuracy",
                "tuning-and-confusion-plot", "endpoint", "run-summary", "cost-estimate",
                "model-registry"):
        assert key in artifacts, (key, sorted(artifacts))
    trials = artifacts["tuning-trials"].data
    rows = json.loads(trials) if isinstance(trials, str) else trials
    assert len(rows) == TUNING["max_jobs"]
    assert {"learning_rate", "batch_size", "state", "seconds"} <= set(rows[0])
    assert "data:image/png;base64," in artifacts["tuning-and-confusion-plot"].data
    assert "(http://127.0.0.1:" in artifacts["endpoint"].data


def test_long_steps_leave_finished_progress_artifacts(first_run) -> None:  # type: ignore[no-untyped-def]
    """The upload, the tuning job, each trial's feature extraction and epochs each kept a
    progress artifact, at 100 % once the run is over; the report has top-5 and confusions."""
    state, _ = first_run
    found = _all_artifacts(state.state_details.flow_run_id)
    progress = {a.description: a.data for a in found if a.type == "progress"}
    assert any(d.startswith("sync ") for d in progress), sorted(progress)
    assert any(d.startswith("tuning job ") for d in progress), sorted(progress)
    assert any(d.endswith(" features-train") for d in progress), sorted(progress)
    assert any(d.endswith(" epochs") for d in progress), sorted(progress)
    assert all(float(v) == 100.0 for v in progress.values()), progress
    by_key = {a.key: a for a in found if a.key}
    assert "most-confused" in by_key
    assert "top-5 accuracy" in by_key["test-metrics"].data


def test_model_learns_and_endpoint_answers_boto3(first_run, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    state, _ = first_run
    result = state.result()
    assert result.model.metrics["test:accuracy"] >= 0.75
    # The best trial trained on the final budget, so its model is packaged, not retrained:
    # no training time is billed in the cost estimate.
    assert result.model.training_seconds == 0.0
    assert result.smoke_test["predicted"] == result.smoke_test["expected"]

    client = boto3.client(
        "sagemaker-runtime", endpoint_url=result.endpoint.runtime_endpoint_url,
        region_name="us-east-1", config=Config(retries={"max_attempts": 1}),
    )
    correct = 0
    images = sorted((data_dir / "test").rglob("*.jpg"))
    for image in images:
        answer = json.loads(client.invoke_endpoint(
            EndpointName="flow-test", Body=image.read_bytes(), ContentType="image/jpeg",
        )["Body"].read())
        correct += answer["label"] == image.parent.name
        assert 0.0 <= answer["probability"] <= 1.0
    assert correct / len(images) >= 0.75


def test_second_run_reuses_tuning_model_and_endpoint(first_run, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from flows.train_and_deploy import train_and_deploy

    state, state_dir = first_run
    first = state.result()
    before = trainings_run(state_dir)
    assert before >= TUNING["max_jobs"]
    again = train_and_deploy(
        data_dir=str(data_dir), backend="local", state_dir=str(state_dir),
        tuning=TuningConfig(**TUNING), training=TrainingConfig(**TRAINING),
        endpoint={"name": "flow-test"},  # type: ignore[arg-type]
    )
    assert trainings_run(state_dir) == before
    assert again.data.uploaded == 0 and again.data.skipped == first.data.files_total
    assert again.tuning.reused and again.tuning.job_name == first.tuning.job_name
    assert again.model.version == first.model.version
    assert again.endpoint.runtime_endpoint_url == first.endpoint.runtime_endpoint_url


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"data_dir": "/nonexistent/dogs"}, DataLayoutError, "does not exist"),
        ({"tuning": {"learning_rate_min": 0.5, "learning_rate_max": 0.1}}, Exception,
         "learning_rate_min"),
        ({"tuning": {"max_jobs": 0}}, Exception, "max_jobs"),
    ],
)
def test_bad_inputs_fail_before_any_training(
    prefect_harness: None, tmp_path: Path, data_dir: Path, kwargs: dict[str, Any],
    error: type[Exception], words: str,
) -> None:
    from flows.train_and_deploy import train_and_deploy

    params: dict[str, Any] = {"data_dir": str(data_dir), "state_dir": str(tmp_path), **kwargs}
    with pytest.raises(error) as info:
        train_and_deploy(**params)
    assert words in str(info.value)
    assert trainings_run(tmp_path) == 0


def test_wrong_layout_names_the_missing_split(prefect_harness: None, tmp_path: Path) -> None:
    from flows.train_and_deploy import train_and_deploy

    (tmp_path / "dogs" / "train" / "a").mkdir(parents=True)
    (tmp_path / "dogs" / "train" / "a" / "x.jpg").write_bytes(b"x")
    with pytest.raises(UserInputError, match="valid, test"):
        train_and_deploy(data_dir=str(tmp_path / "dogs"), state_dir=str(tmp_path / "s"))
