"""Tuning, final training and endpoint deployment against the moto server.

moto stores what we create exactly (job definitions, models, configs, endpoints, tags), so those
are asserted against the server. It does not run anything: tuning jobs are "Completed" at once with
a fake best job, there is no ListTrainingJobsForHyperParameterTuningJob and no UpdateEndpoint.
Those outcomes are produced here in the ways each test names: botocore's `Stubber` with the exact
request, a patched client method, or by editing the in-process moto server's job objects.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from dogops.aws import naming, sagemaker_job, tuning
from dogops.aws.clients import AwsClients
from dogops.aws.endpoint import delete_endpoint_resources, deploy_endpoint
from dogops.aws.training import train_best
from dogops.errors import OperationFailedError
from dogops.reporting import best_hyperparameters_markdown
from dogops.results import SyncReport, TrainedModel, TrialResult, TuningResult
from dogops.settings import Settings
from model_code.metrics import METRIC_DEFINITIONS

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::123456789012:role/dogops-sagemaker-execution"
BUCKET = "dogops-test"


def no_sleep(_: float) -> None:
    return None


def calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """Every request of `operation` the client sends (a botocore event hook, nothing mocked)."""
    seen: list[dict[str, Any]] = []
    client.meta.events.register(
        f"before-parameter-build.sagemaker.{operation}", lambda params, **_: seen.append(params)
    )
    return seen


def moto_sagemaker() -> Any:
    """The in-process moto server's SageMaker state, for outcomes moto cannot produce itself."""
    if os.environ.get("DOGOPS_TEST_MOTO_URL"):
        pytest.skip("edits the in-process moto server; an external one is in use")
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


@pytest.fixture
def clients(aws_settings) -> AwsClients:  # type: ignore[no-untyped-def]
    clients = AwsClients(aws_settings.aws)
    clients.client("s3").create_bucket(Bucket=BUCKET)  # one call; the sync tests cover the rest
    return clients


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    src = tmp_path / "model_code"
    src.mkdir()
    (src / "train.py").write_text("print('Validation Loss: 0.5')\n")
    (src / "requirements.txt").write_text("efficientnet-lite-pytorch==0.1.0\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    return src


DATA = SyncReport(uri=f"s3://{BUCKET}/dogops/data", files_total=4, manifest_sha256="ab" * 32)


def tune(clients: AwsClients, settings: Any, source_dir: Path, run_key: str = "run1",
         lines: list[str] | None = None, **kwargs: Any) -> TuningResult:
    return tuning.run_tuning(
        clients, settings, DATA, role_arn=ROLE, run_key=run_key, source_dir=source_dir,
        progress=(lines.append if lines is not None else None), poll_s=0, sleep=no_sleep,
        **kwargs,
    )


# -- tuning -------------------------------------------------------------------------------------

def test_tuning_job_definition_as_moto_stores_it(clients, aws_settings, source_dir):
    lines: list[str] = []
    result = tune(clients, aws_settings, source_dir, lines=lines)
    sm = clients.client("sagemaker")
    job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=result.job_name)

    assert len(result.job_name) <= 32 and result.job_name.startswith("dogops-hpo-run1-")
    config = job["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize", "MetricName": "validation:loss"
    }
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["ParameterRanges"]["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1",
         "ScalingType": "Logarithmic"}
    ]
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [
        {"Name": "batch_size", "Values": ["32", "64", "128", "256", "512"]}
    ]
    definition = job["TrainingJobDefinition"]
    spec = definition["AlgorithmSpecification"]
    assert spec["MetricDefinitions"] == METRIC_DEFINITIONS
    assert spec["TrainingImage"].endswith(".amazonaws.com/pytorch-training:2.5-gpu-py311")
    static = definition["StaticHyperParameters"]
    assert static["sagemaker_program"] == "train.py"
    assert static["epochs"] == "8" and static["architecture"] == "efficientnet_lite0"
    assert static["augment"] == "false"
    assert definition["InputDataConfig"][0]["ChannelName"] == "training"
    assert definition["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{BUCKET}/dogops/data/"
    )
    assert definition["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert definition["RoleArn"] == ROLE

    # The source archive the container downloads: train.py and requirements.txt, no caches.
    key = static["sagemaker_submit_directory"].removeprefix(f"s3://{BUCKET}/")
    assert key.startswith("dogops/code/") and key.endswith("/sourcedir.tar.gz")
    archive = clients.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert sorted(tar.getnames()) == ["requirements.txt", "train.py"]

    tags = sm.list_tags(ResourceArn=job["HyperParameterTuningJobArn"])["Tags"]
    assert {"Key": "project", "Value": "dogops"} in tags
    assert {"Key": "flow-run", "Value": "run1"} in tags

    # moto has no ListTrainingJobsForHyperParameterTuningJob: the result falls back to the
    # best job only, and says so.
    assert any("could not list the training jobs" in line for line in lines)
    assert [t.name for t in result.trials] == ["FakeTrainingJobName"]
    assert result.objective == "validation:loss" and result.minimize and not result.reused


def test_rerun_attaches_instead_of_launching_a_duplicate(clients, aws_settings, source_dir):
    sm = clients.client("sagemaker")
    creates = calls(sm, "CreateHyperParameterTuningJob")
    first = tune(clients, aws_settings, source_dir)
    lines: list[str] = []
    second = tune(clients, aws_settings, source_dir, lines=lines)

    assert second.job_name == first.job_name and second.reused and not first.reused
    assert len(creates) == 1
    assert any("already exists" in line for line in lines)
    listed = sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
    assert len(listed) == 1

    # Changed inputs make a new job (and name); so does a new flow run.
    changed = aws_settings.merged(tuning={"max_jobs": 6})
    assert tune(clients, changed, source_dir).job_name != first.job_name
    assert tune(clients, aws_settings, source_dir, run_key="run2").job_name != first.job_name
    assert len(creates) == 3


def test_warm_start_from_the_previous_job(clients, aws_settings, source_dir):
    parent = tune(clients, aws_settings, source_dir, run_key="run1")
    lines: list[str] = []
    child = tune(clients, aws_settings, source_dir, run_key="run2", lines=lines,
                 parent_job_name=parent.job_name)
    job = clients.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=child.job_name
    )
    assert job["WarmStartConfig"] == {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": parent.job_name}],
        "WarmStartType": "IDENTICAL_DATA_AND_ALGORITHM",
    }
    assert (child.warm_start_type, child.warm_start_parent) == (
        "IDENTICAL_DATA_AND_ALGORITHM", parent.job_name)
    assert any("warm start IDENTICAL_DATA_AND_ALGORITHM" in line for line in lines)
    # The tuning artifact says which.
    assert "Warm start: **IDENTICAL_DATA_AND_ALGORITHM**" in best_hyperparameters_markdown(child)
    latest = tuning.latest_completed_job(clients, aws_settings, exclude=child.job_name)
    assert latest == parent.job_name


def test_warm_start_after_the_data_changed_is_transfer_learning(clients, aws_settings, source_dir):
    """Same S3 prefix, same code and settings, but a different data manifest."""
    parent = tune(clients, aws_settings, source_dir, run_key="run1")
    changed = DATA.model_copy(update={"manifest_sha256": "cd" * 32})
    child = tuning.run_tuning(
        clients, aws_settings, changed, role_arn=ROLE, run_key="run2", source_dir=source_dir,
        parent_job_name=parent.job_name, poll_s=0, sleep=no_sleep,
    )
    job = clients.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=child.job_name
    )
    assert job["TrainingJobDefinition"]["InputDataConfig"] == (
        clients.client("sagemaker").describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=parent.job_name
        )["TrainingJobDefinition"]["InputDataConfig"])  # the channel alone cannot tell
    assert job["WarmStartConfig"]["WarmStartType"] == "TRANSFER_LEARNING"
    assert child.warm_start_type == "TRANSFER_LEARNING"
    markdown = best_hyperparameters_markdown(child)
    assert "Warm start: **TRANSFER_LEARNING**" in markdown and "data (manifest)" in markdown
    # Attaching to the job later reads the same type back.
    again = tuning.run_tuning(
        clients, aws_settings, changed, role_arn=ROLE, run_key="run2", source_dir=source_dir,
        poll_s=0, sleep=no_sleep,
    )
    assert again.reused and again.warm_start_type == "TRANSFER_LEARNING"


@pytest.mark.parametrize(
    ("objective", "kind"),
    [("validation:loss", "Minimize"), ("validation:accuracy", "Maximize"),
     ("test:loss", "Minimize"), ("test:accuracy", "Maximize")],
)
def test_objective_type(objective: str, kind: str):
    settings = Settings().merged(tuning={"objective": objective, "early_stopping": False})
    request = tuning.tuning_request(
        settings, run_key="r", data=DATA, source_uri="s3://b/k", image_uri="img",
        role_arn=ROLE, output_uri="s3://b/o",
    )
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": kind, "MetricName": objective}
    assert config["TrainingJobEarlyStoppingType"] == "Off"


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [('"64"', 64), ("64", 64), ("0.01", 0.01), ('"0.0123"', 0.0123), ("true", True),
     ('"resnet50"', "resnet50"), ("efficientnet_lite0", "efficientnet_lite0")],
)
def test_parse_quoted_hyperparameters(raw: str, parsed: Any):
    assert sagemaker_job.parse_hp(raw) == parsed


def test_trials_listed_with_stubber():
    """moto lacks ListTrainingJobsForHyperParameterTuningJob, so botocore's Stubber answers it,
    checking that the code sends exactly this request (no server is contacted)."""
    clients = AwsClients(Settings(aws={"max_attempts": 1}).aws)
    sm = clients.client("sagemaker")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def summary(name: str, lr: str, bs: str, status: str, value: float | None, minute: int):
        item: dict[str, Any] = {
            "TrainingJobName": name,
            "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            "CreationTime": t0 + timedelta(minutes=minute),
            "TrainingStartTime": t0 + timedelta(minutes=minute),
            "TrainingEndTime": t0 + timedelta(minutes=minute, seconds=90),
            "TrainingJobStatus": status,
            "TunedHyperParameters": {"learning_rate": lr, "batch_size": bs},
        }
        if value is not None:
            item["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "MetricName": "validation:loss", "Value": value
            }
        if status == "Failed":
            item["FailureReason"] = "AlgorithmError: out of memory"
        return item

    with Stubber(sm) as stub:
        stub.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            {"TrainingJobSummaries": [
                summary("job-002", "0.05", '"512"', "Failed", None, 2),
                summary("job-001", "0.0123", '"64"', "Completed", 0.42, 1),
            ]},
            {"HyperParameterTuningJobName": "dogops-hpo-run1-abcdef12"},
        )
        trials = tuning.list_trials(clients, "dogops-hpo-run1-abcdef12", {"epochs": 8})
        stub.assert_no_pending_responses()

    assert trials is not None
    assert [t.name for t in trials] == ["job-001", "job-002"]
    assert trials[0].hyperparameters == {"epochs": 8, "learning_rate": 0.0123, "batch_size": 64}
    assert (trials[0].state, trials[0].objective, trials[0].seconds) == ("Completed", 0.42, 90.0)
    assert trials[1].state == "Failed" and trials[1].objective is None
    assert trials[1].failure_reason == "AlgorithmError: out of memory"


def make_outcome(clients: AwsClients, name: str = "trial-007") -> str:
    """A real (moto) training job to stand in as the tuning job's best trial."""
    clients.client("sagemaker").create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        HyperParameters={"epochs": "8", "learning_rate": "0.0123", "batch_size": '"64"'},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/dogops/tuning"},
        ResourceConfig={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1,
                        "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    return name


def test_wait_progress_and_best_trial(clients, aws_settings, source_dir):
    """moto completes tuning jobs at once with a fake best job. Edit the in-process server's job
    object so that it is first running, then completes with a real training job as its best."""
    backend = moto_sagemaker()
    best = make_outcome(clients)
    backend.training_jobs[best].final_metric_data_list = [
        {"MetricName": "validation:loss", "Value": 0.42, "Timestamp": datetime.now()},
        {"MetricName": "epoch", "Value": 8.0, "Timestamp": datetime.now()},
    ]

    def start_running(**kwargs: Any) -> None:
        for job in backend.hyper_parameter_tuning_jobs.values():
            job.hyper_parameter_tuning_job_status = "InProgress"
            job.training_job_status_counters = {
                "Completed": 1, "InProgress": 1, "RetryableError": 0, "NonRetryableError": 1,
                "Stopped": 0,
            }

    def finish(_: float) -> None:
        for job in backend.hyper_parameter_tuning_jobs.values():
            job.hyper_parameter_tuning_job_status = "Completed"
            job.training_job_status_counters["InProgress"] = 0
            job.training_job_status_counters["Completed"] = 2
            job.best_training_job = {
                **job.best_training_job,
                "TrainingJobName": best,
                "TunedHyperParameters": {"learning_rate": "0.0123", "batch_size": '"64"'},
                "FinalHyperParameterTuningJobObjectiveMetric": {
                    "Type": "Minimize", "MetricName": "validation:loss", "Value": 0.42
                },
            }

    clients.client("sagemaker").meta.events.register(
        "after-call.sagemaker.CreateHyperParameterTuningJob", start_running
    )
    lines: list[str] = []
    result = tuning.run_tuning(
        clients, aws_settings, DATA, role_arn=ROLE, run_key="run1", source_dir=source_dir,
        progress=lines.append, poll_s=0, sleep=finish,
    )
    assert any("1 done, 1 running, 1 failed" in line for line in lines)
    assert any("best validation:loss=0.42 (trial-007)" in line for line in lines)
    assert result.best is not None and result.best.name == best
    assert result.best_hyperparameters["learning_rate"] == 0.0123
    assert result.best_hyperparameters["batch_size"] == 64
    assert result.best_hyperparameters["epochs"] == 8  # static ones merged in
    assert result.best.model_uri == f"s3://{BUCKET}/dogops/tuning/{best}/output/model.tar.gz"
    assert result.best.epochs_run == 8


def test_failed_tuning_job_raises(clients, aws_settings, source_dir):
    """A failed job cannot happen on moto: the in-process job object is edited to Failed."""
    backend = moto_sagemaker()

    def fail(**kwargs: Any) -> None:
        for job in backend.hyper_parameter_tuning_jobs.values():
            job.hyper_parameter_tuning_job_status = "Failed"
            job.failure_reason = "All training jobs failed"

    clients.client("sagemaker").meta.events.register(
        "after-call.sagemaker.CreateHyperParameterTuningJob", fail
    )
    with pytest.raises(OperationFailedError, match="All training jobs failed"):
        tune(clients, aws_settings, source_dir)


def test_wait_timeout_says_the_job_keeps_running(clients, aws_settings, source_dir):
    backend = moto_sagemaker()

    def keep_running(**kwargs: Any) -> None:
        for job in backend.hyper_parameter_tuning_jobs.values():
            job.hyper_parameter_tuning_job_status = "InProgress"

    clients.client("sagemaker").meta.events.register(
        "after-call.sagemaker.CreateHyperParameterTuningJob", keep_running
    )
    with pytest.raises(OperationFailedError, match="re-run the flow to attach"):
        tune(clients, aws_settings, source_dir, timeout_s=0)


# -- final training -----------------------------------------------------------------------------

def tuning_with_best(model_uri: str | None, epochs: int = 8) -> TuningResult:
    best = TrialResult(
        name="trial-007", state="Completed", objective=0.42, model_uri=model_uri,
        hyperparameters={"learning_rate": 0.0123, "batch_size": 64, "epochs": epochs},
        metrics={"validation:loss": 0.42},
    )
    return TuningResult(
        job_name="dogops-hpo-run1-abcdef12", objective="validation:loss", minimize=True,
        trials=[best], best=best,
    )


def test_train_best_reuses_the_best_trial(clients, aws_settings, source_dir):
    creates = calls(clients.client("sagemaker"), "CreateTrainingJob")
    uri = f"s3://{BUCKET}/dogops/tuning/trial-007/output/model.tar.gz"
    model = train_best(clients, aws_settings, DATA, tuning_with_best(uri), role_arn=ROLE,
                       run_key="run1", source_dir=source_dir, poll_s=0, sleep=no_sleep)
    assert model.reused and model.model_uri == uri and model.job_name == "trial-007"
    assert model.metrics == {"validation:loss": 0.42} and len(model.version) == 16
    assert creates == []


def put_model_archive(clients: AwsClients, uri: str, metadata: dict[str, Any]) -> None:
    """moto never writes model.tar.gz; write one so the metadata reader has something real."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("model.pth", b"weights"), ("metadata.json",
                                                      json.dumps(metadata).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    clients.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def test_train_best_creates_then_attaches(clients, aws_settings, source_dir):
    settings = aws_settings.merged(training={"epochs": 12})  # not the trials' 8: cannot reuse
    sm = clients.client("sagemaker")
    creates = calls(sm, "CreateTrainingJob")
    lines: list[str] = []
    first = train_best(clients, settings, DATA, tuning_with_best("s3://x/y"), role_arn=ROLE,
                       run_key="run1", source_dir=source_dir, progress=lines.append,
                       poll_s=0, sleep=no_sleep)
    job = sm.describe_training_job(TrainingJobName=first.job_name)
    hps = job["HyperParameters"]
    assert (hps["learning_rate"], hps["batch_size"], hps["epochs"]) == ("0.0123", "64", "12")
    assert hps["sagemaker_program"] == "train.py"
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert first.hyperparameters["batch_size"] == 64 and not first.reused
    assert first.model_uri == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert first.class_names == []  # moto wrote no model.tar.gz: tolerated
    assert {"Key": "flow-run", "Value": "run1"} in sm.list_tags(
        ResourceArn=job["TrainingJobArn"])["Tags"]

    put_model_archive(clients, first.model_uri, {
        "metrics": {"test:accuracy": 0.9}, "class_names": ["a", "b"],
        "per_class_accuracy": {"a": 1.0, "b": 0.8}, "confusion_matrix": [[1, 0], [1, 4]],
    })
    second = train_best(clients, settings, DATA, tuning_with_best("s3://x/y"), role_arn=ROLE,
                        run_key="run1", source_dir=source_dir, poll_s=0, sleep=no_sleep)
    assert second.job_name == first.job_name and second.reused
    assert len(creates) == 1
    assert second.metrics["test:accuracy"] == 0.9 and second.class_names == ["a", "b"]
    assert second.confusion_matrix == [[1, 0], [1, 4]]
    assert second.version != first.version  # the archive now exists: its ETag is in the version


def test_train_best_without_tuned_values_fails(clients, aws_settings, source_dir):
    result = tuning_with_best(None)
    assert result.best is not None
    result.best.hyperparameters = {"string": "TunedHyperParameters"}  # moto's fake best job
    with pytest.raises(OperationFailedError, match="learning_rate, batch_size"):
        train_best(clients, aws_settings, DATA, result, role_arn=ROLE, run_key="run1",
                   source_dir=source_dir, poll_s=0, sleep=no_sleep)


# -- endpoint -----------------------------------------------------------------------------------

def trained(version: str) -> TrainedModel:
    return TrainedModel(
        job_name=f"job-{version}", hyperparameters={}, version=version,
        model_uri=f"s3://{BUCKET}/dogops/training/job-{version}/output/model.tar.gz",
    )


def deploy(clients: AwsClients, settings: Any, model: TrainedModel, run_key: str = "run1",
           lines: list[str] | None = None):  # type: ignore[no-untyped-def]
    return deploy_endpoint(
        clients, settings, model, ROLE, run_key, lines.append if lines is not None else None,
        poll_s=0, sleep=no_sleep,
    )


def tag_dict(sm: Any, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


def test_create_model_gives_the_inference_container_what_its_toolkits_read(clients, aws_settings):
    """The PyTorch inference image serves inference.py through sagemaker-inference: it needs the
    program and its folder, the model server's workers and timeout; inference.py reads the S3
    bucket allow-list (the project's bucket unless configured)."""
    sm = clients.client("sagemaker")
    aws_settings.endpoint.model_server_workers = 2
    aws_settings.endpoint.model_server_timeout_s = 90
    aws_settings.endpoint.batch_size = 8
    aws_settings.endpoint.max_batch_delay_ms = 7
    aws_settings.endpoint.container_batching = True
    info = deploy(clients, aws_settings, trained("v1"))
    environment = sm.describe_model(ModelName=info.model_name)["PrimaryContainer"]["Environment"]
    assert environment == {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_REGION": "us-east-1",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90",
        "SAGEMAKER_TS_BATCH_SIZE": "8",
        "SAGEMAKER_TS_MAX_BATCH_DELAY": "7",
        "SAGEMAKER_TS_MIN_WORKERS": "2",
        "SAGEMAKER_TS_MAX_WORKERS": "2",
        "SAGEMAKER_TS_RESPONSE_TIMEOUT": "90",
        "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/json",
        "DOGOPS_ALLOWED_S3_BUCKETS": BUCKET,
    }


def test_the_pytorch_container_reads_the_batch_settings_with_workers_and_timeout(
    aws_settings, monkeypatch
):
    """The container's own reader (sagemaker-pytorch-inference's ts_environment.py, as pinned;
    torchserve.py writes TorchServe's per-model batchSize / maxBatchDelay / workers / timeout
    from it) sees the batch size and delay, and the workers and timeout are not reset to its
    defaults (1 worker, 60 s) by the per-model block that the batch settings switch on."""
    from sagemaker_pytorch_serving_container.ts_environment import TorchServeEnvironment

    from dogops.aws.endpoint import container_environment

    aws_settings.endpoint.model_server_workers = 3
    aws_settings.endpoint.model_server_timeout_s = 90
    aws_settings.endpoint.batch_size = 12
    aws_settings.endpoint.max_batch_delay_ms = 4
    aws_settings.endpoint.container_batching = True
    for key, value in container_environment(aws_settings).items():
        monkeypatch.setenv(key, value)
    ts = TorchServeEnvironment()
    assert ts.is_env_set()
    assert (ts.batch_size, ts.max_batch_delay) == (12, 4)
    assert (ts.min_workers, ts.max_workers, ts.response_timeout) == (3, 3, 90)


def test_container_batching_is_off_unless_asked(aws_settings, monkeypatch):
    """By default the container gets no TorchServe batch block: the pinned sagemaker-inference
    would decode an image with a JSON neighbour's content type (the Lambda sends both), failing
    both. The local batcher still uses batch_size; only the container's copy is opt-in."""
    from sagemaker_pytorch_serving_container.ts_environment import TorchServeEnvironment

    from dogops.aws.endpoint import container_environment

    assert aws_settings.endpoint.batch_size > 1 and not aws_settings.endpoint.container_batching
    environment = container_environment(aws_settings)
    assert not [key for key in environment if key.startswith("SAGEMAKER_TS_")]
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert not TorchServeEnvironment().is_env_set()


def test_deploy_creates_tagged_resources_and_redeploy_creates_nothing(clients, aws_settings):
    sm = clients.client("sagemaker")
    info = deploy(clients, aws_settings, trained("v1"))

    assert info.name == "dogops-classifier" and info.status == "InService" and not info.updated
    endpoint = sm.describe_endpoint(EndpointName="dogops-classifier")
    assert endpoint["EndpointConfigName"] == info.config_name
    config = sm.describe_endpoint_config(EndpointConfigName=info.config_name)
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["ModelName"], variant["InstanceType"],
            variant["InitialInstanceCount"]) == ("AllTraffic", info.model_name, "ml.m5.large", 1)
    model = sm.describe_model(ModelName=info.model_name)
    container = model["PrimaryContainer"]
    assert container["ModelDataUrl"] == trained("v1").model_uri
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert container["Image"].endswith("/pytorch-inference:2.5-cpu-py311")
    for arn in (endpoint["EndpointArn"], config["EndpointConfigArn"], model["ModelArn"]):
        tags = tag_dict(sm, arn)
        assert (tags["project"], tags["flow-run"], tags["model-version"]) == (
            "dogops", "run1", "v1")

    creates = [calls(sm, op) for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint",
                                        "UpdateEndpoint")]
    lines: list[str] = []
    again = deploy(clients, aws_settings, trained("v1"), run_key="run2", lines=lines)
    assert again.config_name == info.config_name and not again.updated
    assert all(c == [] for c in creates)
    assert any("already serves model v1" in line for line in lines)


class FakeUpdates:
    """moto has no UpdateEndpoint (HTTP 500): the client's update_endpoint is replaced by this
    recorder, and describe_endpoint reports the state the update set on top of moto's real answer.
    Updates to any config but `healthy_config` fail the way SageMaker reports it: status Failed
    with a reason, still running the old config."""

    def __init__(
        self, sm: Any, monkeypatch: pytest.MonkeyPatch, healthy_config: str | None = None
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.override: dict[str, str] = {}
        real_describe = sm.describe_endpoint

        def describe_endpoint(**kwargs: Any) -> dict[str, Any]:
            return {**real_describe(**kwargs), **self.override}

        def update_endpoint(**kwargs: Any) -> dict[str, Any]:
            self.requests.append(kwargs)
            current = describe_endpoint(EndpointName=kwargs["EndpointName"])
            if healthy_config is None or kwargs["EndpointConfigName"] == healthy_config:
                self.override = {
                    "EndpointStatus": "InService",
                    "EndpointConfigName": kwargs["EndpointConfigName"],
                }
            else:
                self.override = {
                    "EndpointStatus": "Failed",
                    "EndpointConfigName": current["EndpointConfigName"],
                    "FailureReason": "ping health check failed",
                }
            return {"EndpointArn": current["EndpointArn"]}

        monkeypatch.setattr(sm, "describe_endpoint", describe_endpoint)
        monkeypatch.setattr(sm, "update_endpoint", update_endpoint)


def test_new_model_version_updates_the_endpoint_in_place(clients, aws_settings, monkeypatch):
    sm = clients.client("sagemaker")
    first = deploy(clients, aws_settings, trained("v1"))
    fake = FakeUpdates(sm, monkeypatch)

    second = deploy(clients, aws_settings, trained("v2"), run_key="run2")

    assert second.updated and second.config_name != first.config_name
    assert [{k: v for k, v in r.items() if k != "DeploymentConfig"} for r in fake.requests] == [
        {"EndpointName": "dogops-classifier", "EndpointConfigName": second.config_name}
    ]  # the DeploymentConfig (guarded rollout) is checked in test_aws_rollout.py
    tags = tag_dict(sm, second.arn)
    assert (tags["flow-run"], tags["model-version"]) == ("run2", "v2")
    assert len(sm.list_endpoints()["Endpoints"]) == 1


def test_failed_update_rolls_back_to_the_previous_config(clients, aws_settings, monkeypatch):
    sm = clients.client("sagemaker")
    first = deploy(clients, aws_settings, trained("v1"))
    fake = FakeUpdates(sm, monkeypatch, healthy_config=first.config_name)

    with pytest.raises(OperationFailedError, match="ping health check failed") as caught:
        deploy(clients, aws_settings, trained("v2"), run_key="run2")

    assert f"rolled back to {first.config_name}" in str(caught.value)
    new_config = fake.requests[0]["EndpointConfigName"]
    assert new_config != first.config_name
    assert [r["EndpointConfigName"] for r in fake.requests] == [new_config, first.config_name]
    endpoint = sm.describe_endpoint(EndpointName="dogops-classifier")
    assert (endpoint["EndpointConfigName"], endpoint["EndpointStatus"]) == (
        first.config_name, "InService")
    assert tag_dict(sm, endpoint["EndpointArn"])["model-version"] == "v1"


def test_delete_endpoint_resources(clients, aws_settings):
    sm = clients.client("sagemaker")
    info = deploy(clients, aws_settings, trained("v1"))
    # Someone else's model whose name merely starts like ours must survive; so must an untagged
    # one named exactly like ours (prefix + 12 hex digits).
    sm.create_model(ModelName="dogops-classifier-m-other", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "img"})
    sm.create_model(ModelName="dogops-classifier-m-0123456789ab", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "img"})
    project = aws_settings.project
    planned = delete_endpoint_resources(clients, info.name, project, poll_s=0, sleep=no_sleep)
    assert planned == [f"endpoint:{info.name}", f"endpoint-config:{info.config_name}",
                       f"model:{info.model_name}"]
    assert sm.list_endpoints()["Endpoints"]  # the default is a dry run: nothing deleted yet

    done = delete_endpoint_resources(clients, info.name, project, apply=True, poll_s=0,
                                     sleep=no_sleep)
    assert done == planned
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sorted(m["ModelName"] for m in sm.list_models()["Models"]) == [
        "dogops-classifier-m-0123456789ab", "dogops-classifier-m-other"]
    assert delete_endpoint_resources(clients, info.name, project, apply=True, poll_s=0,
                                     sleep=no_sleep) == []


def test_names_fit_sagemaker_limits():
    name = naming.resource_name("dogops-hpo", "a-very-long-flow-run-name-indeed", "0123abcd", 32)
    assert len(name) <= 32 and name.endswith("-0123abcd")
    assert naming.resource_name("x", "run/with spaces", "ff") == "x-run-with-spaces-ff"
