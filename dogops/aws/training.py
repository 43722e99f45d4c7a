"""The final estimator on SageMaker: reuse the best trial's model, or train once more.

Plain boto3 `CreateTrainingJob` for the same reasons as `dogops.aws.tuning` (its docstring): our
clients, our bucket, and a request whose content names the job, so a retry attaches instead of
launching a second (billed) job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from dogops.aws import naming, spot
from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.aws.propagation import call_with_role
from dogops.aws.sagemaker_job import (
    DEFAULT_MAX_RUNTIME_S,
    DEFAULT_POLL_S,
    DEFAULT_TIMEOUT_S,
    TUNED_NAMES,
    data_channel,
    framework_image,
    metric_definitions,
    parse_hyperparameters,
    static_hyperparameters,
    upload_source,
)
from dogops.aws.sagemaker_rules import check_request
from dogops.aws.weights import ship_weights, weights_channel
from dogops.backends.base import ProgressFn
from dogops.errors import OperationFailedError
from dogops.hyperparameters import hp_value
from dogops.progress import Progress
from dogops.results import SyncReport, TrainedModel, TrialResult, TuningResult
from dogops.settings import Settings
from dogops.waiting import poll

logger = logging.getLogger(__name__)

METADATA_MAX_BYTES = 512 * 1024 * 1024  # stop looking for metadata.json in archives past this


def reusable_best(tuning: TuningResult, epochs: int) -> TrialResult | None:
    """The best trial when it finished with a model on the final training's epoch budget."""
    best = tuning.best
    if best is None or best.model_uri is None or best.state != "Completed":
        return None
    if int(best.hyperparameters.get("epochs", -1)) != epochs:
        return None
    return best


def final_hyperparameters(tuning: TuningResult) -> dict[str, Any]:
    """The tuned values of the best trial; `OperationFailedError` when it has none."""
    if tuning.best is None:
        raise OperationFailedError(
            f"tuning job {tuning.job_name} has no best training job to train from: see the "
            "trials' failure reasons in the SageMaker console."
        )
    best = tuning.best.hyperparameters
    missing = [n for n in TUNED_NAMES if n not in best]
    if missing:
        raise OperationFailedError(
            f"best training job {tuning.best.name} of {tuning.job_name} reports no "
            f"{', '.join(missing)} (it has {sorted(best)}): it was not one of this project's "
            "trials. Re-run the tuning with a new run key."
        )
    return {n: best[n] for n in TUNED_NAMES}


def training_request(
    settings: Settings,
    *,
    run_key: str,
    data: SyncReport,
    tuned: dict[str, Any],
    source_uri: str,
    image_uri: str,
    role_arn: str,
    output_uri: str,
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S,
    checkpoint_uri: str = "",
    weights_uri: str = "",
) -> dict[str, Any]:
    """The `CreateTrainingJob` request, named from its own content; with `training.spot`, a
    managed spot job checkpointing under `checkpoint_uri`/<job name>."""
    hyperparameters = {
        **static_hyperparameters(settings, source_uri),
        "epochs": hp_value(settings.training.epochs),
        **{k: hp_value(v) for k, v in tuned.items()},
    }
    body: dict[str, Any] = {
        "AlgorithmSpecification": {
            "TrainingImage": image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
        },
        "RoleArn": role_arn,
        "HyperParameters": hyperparameters,
        "InputDataConfig": data_channel(data) + weights_channel(weights_uri),
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "ResourceConfig": {
            "InstanceType": settings.training.training_instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": spot.stopping_condition(settings, max_runtime_s),
        # Only with spot, so the names (content hashes) of on-demand jobs stay as they were.
        **({"EnableManagedSpotTraining": True} if settings.training.spot else {}),
    }
    digest = naming.short_hash(body, data.manifest_sha256)
    name = naming.resource_name(f"{naming.sanitize(settings.project)[:8]}-train", run_key, digest)
    body.update(spot.spot_fields(settings, checkpoint_uri, name))
    return {"TrainingJobName": name, **body, "Tags": naming.tags(settings, run_key)}


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def model_version(clients: AwsClients, model_uri: str, job_name: str) -> str:
    """A short content version: from the archive's ETag when it exists, else the job name."""
    bucket, key = split_s3_uri(model_uri)
    try:
        etag = str(clients.client("s3").head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')
    except ClientError:
        etag = ""  # the archive is not there (the test server never writes one)
    return hashlib.sha256(f"{job_name}|{model_uri}|{etag}".encode()).hexdigest()[:16]


def read_model_metadata(clients: AwsClients, model_uri: str) -> dict[str, Any]:
    """metadata.json from model.tar.gz, streamed; {} when the archive or the file is absent."""
    bucket, key = split_s3_uri(model_uri)
    try:
        body = clients.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        logger.info("no model archive at %s (%s): metrics come from the job only", model_uri, exc)
        return {}
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as tar:
            for member in tar:
                if member.offset > METADATA_MAX_BYTES:
                    break
                if member.name.lstrip("./") == "metadata.json" and member.isfile():
                    handle = tar.extractfile(member)
                    return dict(json.loads(handle.read())) if handle else {}
    except (tarfile.TarError, OSError, ValueError, BotoCoreError) as exc:
        logger.warning("could not read metadata.json from %s: %s", model_uri, exc)
    finally:
        body.close()
    return {}


def trained_model(
    clients: AwsClients,
    job_name: str,
    model_uri: str,
    hyperparameters: dict[str, Any],
    job_metrics: dict[str, float],
    reused: bool,
) -> TrainedModel:
    return TrainedModel.from_metadata(
        read_model_metadata(clients, model_uri),
        job_metrics,
        job_name=job_name,
        model_uri=model_uri,
        hyperparameters=hyperparameters,
        reused=reused,
        version=model_version(clients, model_uri, job_name),
    )


_STAGES = ("Starting", "Downloading", "Training", "Uploading", "Completed")


def wait_for_training(
    clients: AwsClients,
    job_name: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    progress: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the job ends; raise `OperationFailedError` on failure, stop or timeout."""
    sm = clients.client("sagemaker")
    last = ""
    # SageMaker says which stage a job is in, not how far: the share done is by stage.
    tracker = Progress(f"training job {job_name}", len(_STAGES), "stages", say=progress)

    def look() -> dict[str, Any] | None:
        nonlocal last
        job: dict[str, Any] = sm.describe_training_job(TrainingJobName=job_name)
        status = job["TrainingJobStatus"]
        line = f"training job {job_name}: {status} ({job.get('SecondaryStatus', '')})"
        if progress and line != last:
            progress(line)
        last = line
        secondary = str(job.get("SecondaryStatus", ""))
        tracker.update(_STAGES.index(secondary) if secondary in _STAGES else tracker.done,
                       note=f"{status} ({secondary})")
        if status == "Completed":
            tracker.finish()
            return job
        if status in ("Failed", "Stopped"):
            raise OperationFailedError(
                f"training job {job_name} ended {status}: "
                f"{job.get('FailureReason') or 'no reason given'}. See its CloudWatch logs."
            )
        return None

    return poll(
        look, timeout_s=timeout_s, poll_s=poll_s, sleep=sleep,
        timed_out=lambda: OperationFailedError(
            f"training job {job_name} did not finish within {timeout_s:.0f} s; it keeps "
            "running on SageMaker: re-run the flow to attach to it."
        ),
    )


def train_best(
    clients: AwsClients,
    settings: Settings,
    data: SyncReport,
    tuning: TuningResult,
    *,
    role_arn: str,
    run_key: str,
    source_dir: Path,
    progress: ProgressFn | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> TrainedModel:
    """Reuse the best trial's model (when configured and it trained on the same epochs), else
    attach to or create this run's training job with the best hyperparameters."""
    trial = reusable_best(tuning, settings.training.epochs)
    if trial is not None and settings.training.reuse_best_trial:
        assert trial.model_uri is not None
        if progress:
            progress(f"reusing best trial {trial.name}'s model {trial.model_uri}")
        return trained_model(
            clients, trial.name, trial.model_uri, trial.hyperparameters, trial.metrics, True
        )

    tuned = final_hyperparameters(tuning)
    bucket, prefix = settings.aws.bucket, settings.aws.prefix.strip("/")
    source_uri = upload_source(clients, source_dir, bucket, prefix)
    request = training_request(
        settings,
        run_key=run_key,
        data=data,
        tuned=tuned,
        source_uri=source_uri,
        image_uri=framework_image(
            settings.aws.region, settings.training, settings.training.training_instance_type
        ),
        role_arn=role_arn,
        output_uri=f"s3://{bucket}/{prefix}/training",
        checkpoint_uri=spot.checkpoint_base(bucket, prefix),
        weights_uri=ship_weights(clients, settings),
    )
    name = request["TrainingJobName"]
    sm = clients.client("sagemaker")
    reused = True
    try:
        sm.describe_training_job(TrainingJobName=name)
        if progress:
            progress(f"training job {name} already exists: attaching instead of launching again")
    except ClientError as exc:
        if error_code(exc) not in (
            "ValidationException", "ResourceNotFound",
        ):
            raise
        check_request("CreateTrainingJob", request)
        call_with_role(sm.create_training_job, role_arn, "CreateTrainingJob", **request)
        reused = False
        if progress:
            progress(f"training job {name} created with {tuned}")
    job = wait_for_training(
        clients, name, timeout_s=timeout_s, poll_s=poll_s, progress=progress, sleep=sleep
    )
    uri = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not uri:
        raise OperationFailedError(f"training job {name} completed without ModelArtifacts.")
    job_metrics = {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", [])}
    hyperparameters = parse_hyperparameters(
        job.get("HyperParameters") or request["HyperParameters"]
    )
    model = trained_model(clients, name, uri, hyperparameters, job_metrics, reused)
    if not reused:
        model.training_seconds = float(
            job.get("TrainingTimeInSeconds") or job.get("BillableTimeInSeconds") or 0
        )
        # Managed spot bills less than it trains: the cost artifact shows both.
        billable = job.get("BillableTimeInSeconds")
        model.billable_seconds = None if billable is None else float(billable)
    return model
