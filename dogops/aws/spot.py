"""Managed spot training: the request fields a tuning or training job needs to run on spot
capacity and resume after an interruption.

SageMaker keeps `/opt/ml/checkpoints` (CheckpointConfig.LocalPath, where `model_code/train.py`
checkpoints after every epoch) in sync with `CheckpointConfig.S3Uri` and copies it back when a
spot job restarts; `MaxWaitTimeInSeconds` bounds training plus waiting for capacity, so it must be
at least `MaxRuntimeInSeconds`. A tuning job's CheckpointConfig is one folder for all its trials:
train.py checkpoints under the trial's TRAINING_JOB_NAME inside it, so they never overwrite each
other (tests/test_spot_checkpoints.py).
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws.clients import AwsClients
from dogops.errors import UserInputError
from dogops.iam_policies import CHECKPOINT_FOLDER
from dogops.results import TrialResult
from dogops.settings import Settings

logger = logging.getLogger(__name__)

LOCAL_PATH = "/opt/ml/checkpoints"


def checkpoint_base(bucket: str, prefix: str) -> str:
    """Where every job's checkpoints live: one folder per job under the project prefix."""
    return f"s3://{bucket}/{prefix.strip('/')}/{CHECKPOINT_FOLDER}"


def stopping_condition(settings: Settings, max_runtime_s: int) -> dict[str, int]:
    """StoppingCondition; with spot, MaxWaitTimeInSeconds too (checked against the runtime)."""
    condition = {"MaxRuntimeInSeconds": max_runtime_s}
    if settings.training.spot:
        wait = settings.training.spot_max_wait_s
        if wait < max_runtime_s:
            raise UserInputError(
                f"training.spot_max_wait_s ({wait}) is shorter than the job's maximum runtime "
                f"({max_runtime_s} s): SageMaker requires MaxWaitTimeInSeconds >= "
                f"MaxRuntimeInSeconds; set DOGOPS_TRAINING__SPOT_MAX_WAIT_S={max_runtime_s} "
                "or more."
            )
        condition["MaxWaitTimeInSeconds"] = wait
    return condition


def spot_fields(settings: Settings, checkpoint_uri: str, job_name: str) -> dict[str, Any]:
    """CheckpointConfig for job `job_name` ({} without spot). Added after the job is named
    (its S3 folder carries the name), so it is not part of the name's content hash."""
    if not settings.training.spot:
        return {}
    if not checkpoint_uri:
        raise ValueError("a spot job needs a checkpoint_uri")
    return {"CheckpointConfig": {"S3Uri": f"{checkpoint_uri}/{job_name}", "LocalPath": LOCAL_PATH}}


def with_billable_seconds(clients: AwsClients, trials: list[TrialResult]) -> list[TrialResult]:
    """Each managed spot trial's BillableTimeInSeconds (one DescribeTrainingJob per trial: the
    tuning job's trial summaries do not carry it), so the cost prices what spot billed."""
    sm = clients.client("sagemaker")
    out: list[TrialResult] = []
    for trial in trials:
        if trial.billable_seconds is not None:
            out.append(trial)
            continue
        try:
            billable = sm.describe_training_job(TrainingJobName=trial.name).get(
                "BillableTimeInSeconds")
        except ClientError as exc:
            logger.warning("could not describe training job %s: %s", trial.name, exc)
            billable = None
        out.append(trial.model_copy(update={
            "billable_seconds": float(billable) if billable is not None else None}))
    return out
