"""Managed spot training on the aws backend: the request fields SageMaker needs to run tuning
trials and the final training on spot capacity and resume them from their checkpoints, asserted on
the requests sent and on what the moto server stores; the cost line that shows what spot saved.
(That train.py really resumes from /opt/ml/checkpoints: tests/test_checkpoint_resume.py.)
"""

from __future__ import annotations

import pytest
import test_aws_sagemaker as base
from test_aws_sagemaker import BUCKET, DATA, ROLE, calls, no_sleep, tune, tuning_with_best

from dogops import cost
from dogops.aws import sagemaker_job, spot
from dogops.aws.training import train_best
from dogops.errors import UserInputError

pytestmark = pytest.mark.aws
clients, source_dir = base.clients, base.source_dir  # the same fixtures as there


def _spot_fields(definition: dict, job_name: str) -> None:
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/dogops/checkpoints/{job_name}",
        "LocalPath": "/opt/ml/checkpoints",
    }
    stop = definition["StoppingCondition"]
    assert stop["MaxRuntimeInSeconds"] == sagemaker_job.DEFAULT_MAX_RUNTIME_S
    assert stop["MaxWaitTimeInSeconds"] == 6 * 3600 >= stop["MaxRuntimeInSeconds"]


def test_spot_tuning_request(clients, aws_settings, source_dir):
    settings = aws_settings.merged(training={"spot": True})
    sent = calls(clients.client("sagemaker"), "CreateHyperParameterTuningJob")
    result = tune(clients, settings, source_dir)
    assert len(sent) == 1
    _spot_fields(sent[0]["TrainingJobDefinition"], result.job_name)
    stored = clients.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=result.job_name)["TrainingJobDefinition"]
    assert stored["StoppingCondition"] == sent[0]["TrainingJobDefinition"]["StoppingCondition"]
    for field in ("EnableManagedSpotTraining", "CheckpointConfig"):  # where moto keeps them
        if field in stored:
            assert stored[field] == sent[0]["TrainingJobDefinition"][field]
    # An on-demand job is a different job (its own name), without any spot field.
    plain = tune(clients, aws_settings, source_dir)
    assert plain.job_name != result.job_name
    definition = clients.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=plain.job_name)["TrainingJobDefinition"]
    assert "MaxWaitTimeInSeconds" not in definition["StoppingCondition"]
    assert not definition.get("EnableManagedSpotTraining") and "CheckpointConfig" not in definition


def test_spot_final_training_request_as_moto_stores_it(clients, aws_settings, source_dir):
    settings = aws_settings.merged(training={"epochs": 12, "spot": True})
    sm = clients.client("sagemaker")
    sent = calls(sm, "CreateTrainingJob")
    model = train_best(clients, settings, DATA, tuning_with_best("s3://x/y"), role_arn=ROLE,
                       run_key="run1", source_dir=source_dir, poll_s=0, sleep=no_sleep)
    assert len(sent) == 1
    _spot_fields(sent[0], model.job_name)
    job = sm.describe_training_job(TrainingJobName=model.job_name)
    assert job["StoppingCondition"] == sent[0]["StoppingCondition"]
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"] == sent[0]["CheckpointConfig"]


def test_max_wait_shorter_than_the_runtime_is_refused_naming_the_setting(aws_settings):
    settings = aws_settings.merged(training={"spot": True, "spot_max_wait_s": 600})
    with pytest.raises(UserInputError, match="DOGOPS_TRAINING__SPOT_MAX_WAIT_S=10800"):
        spot.stopping_condition(settings, sagemaker_job.DEFAULT_MAX_RUNTIME_S)


def test_cost_shows_what_spot_saved(aws_settings):
    settings = aws_settings.merged(training={"spot": True})
    price = cost.load_prices().sagemaker_training_per_hour[settings.training.training_instance_type]
    estimate = cost.estimate_cost(settings, 0.0, 1000.0, training_billable_s=300.0)
    line = next(line for line in estimate.lines if line.item == "training")
    assert line.quantity == pytest.approx(300 / 3600)  # billed seconds are what is priced
    assert line.cost == pytest.approx(300 / 3600 * price)
    assert line.note == (f"billed 300 of 1,000 training seconds (managed spot: 70% saved, "
                         f"{700 / 3600 * price:,.2f})")
    assert "billed 300 of 1,000 training seconds" in estimate.text()
    on_demand = cost.estimate_cost(aws_settings, 0.0, 1000.0)
    assert next(x for x in on_demand.lines if x.item == "training").quantity == pytest.approx(
        1000 / 3600)


def _described_job(name: str, billable: int | None) -> dict[str, object]:
    job = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:1:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/m.tar.gz"},
        "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed",
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 10800},
        "CreationTime": __import__("datetime").datetime(2026, 12, 1),
        "TrainingTimeInSeconds": 1000,
    }
    if billable is not None:
        job["BillableTimeInSeconds"] = billable
    return job


def test_tuning_cost_prices_the_trials_billable_seconds(aws_settings):
    """moto's DescribeTrainingJob has no BillableTimeInSeconds: botocore's Stubber answers with
    the shape SageMaker returns for a managed spot trial (one describe per trial)."""
    import boto3
    from botocore.stub import Stubber

    from dogops.results import TrialResult, TuningResult

    sm = boto3.client("sagemaker", region_name="us-east-1")
    stub = Stubber(sm)
    stub.add_response("describe_training_job", _described_job("t1", 300),
                      {"TrainingJobName": "t1"})
    stub.add_response("describe_training_job", _described_job("t2", None),
                      {"TrainingJobName": "t2"})

    class Clients:
        def client(self, name: str) -> object:
            assert name == "sagemaker"
            return sm

    trials = [TrialResult(name="t1", hyperparameters={}, seconds=1000.0),
              TrialResult(name="t2", hyperparameters={}, seconds=500.0),
              TrialResult(name="t3", hyperparameters={}, seconds=200.0, billable_seconds=50.0)]
    with stub:
        billed = spot.with_billable_seconds(Clients(), trials)  # type: ignore[arg-type]
        stub.assert_no_pending_responses()
    assert [t.billable_seconds for t in billed] == [300.0, None, 50.0]

    result = TuningResult(job_name="hpo", objective="validation:loss", minimize=True,
                          trials=billed)
    # t2 reported nothing: counted at its run time.
    assert cost.tuning_billable_seconds(result) == 300.0 + 500.0 + 50.0
    assert cost.tuning_billable_seconds(result.model_copy(update={"reused": True})) is None
    on_demand = result.model_copy(update={"trials": trials[:2]})
    assert cost.tuning_billable_seconds(on_demand) is None

    settings = aws_settings.merged(training={"spot": True})
    price = cost.load_prices().sagemaker_training_per_hour[settings.training.tuning_instance_type]
    estimate = cost.estimate_cost(settings, cost.tuning_seconds(result), 0.0,
                                  tuning_billable_s=cost.tuning_billable_seconds(result))
    line = next(line for line in estimate.lines if line.item == "tuning")
    assert line.quantity == pytest.approx(850 / 3600)
    assert line.cost == pytest.approx(850 / 3600 * price)
    assert line.note.startswith("billed 850 of 1,700 tuning seconds (managed spot: 50% saved")
