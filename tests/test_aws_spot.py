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
