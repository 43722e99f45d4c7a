"""SageMaker hyperparameter tuning over `model_code/`, attach-or-create, with progress.

Why boto3 and not the SageMaker Python SDK 3 `HyperparameterTuner`
-------------------------------------------------------------------
The SDK 3 classes (`sagemaker.train.ModelTrainer` + `sagemaker.train.tuner.HyperparameterTuner`)
were read and tried first. We call `CreateHyperParameterTuningJob` directly because:

* The tuner cannot be pointed at our clients. It builds its own from a boto3 session (and
  `default_bucket()` / `account_id()` ignore any client passed in), so per-service endpoint URLs
  and the prefect-aws credentials block in `dogops.aws.clients` would be bypassed; against the moto
  server it only works with the process-global `AWS_ENDPOINT_URL`.
* It uploads `sourcedir.tar.gz` and a driver channel under `<base>/tuning-<unix time>/` in the
  SDK's default bucket. That key changes on every call, so the job definition of a retried task
  differs from the first attempt's, which defeats attach-by-deterministic-name; and it writes
  outside the bucket/prefix the user configured.
* Attaching to an existing job by name (what a retry after a crash must do) is a describe call
  either way; the SDK's `attach` adds nothing we need.

So this module builds the request itself (a plain dict, easy to test) and keeps the framework
container contract the SDK would use: the PyTorch training image for the region (from the SDK's
offline `image_uris` table), `sagemaker_program=train.py` and `sagemaker_submit_directory=` an S3
`sourcedir.tar.gz` (with `requirements.txt`, which the container pip-installs). The one SDK call
left is `image_uris.retrieve`, with a small fallback table when that import fails.

Idempotency: the job name is `<project>-hpo-<run key>-<hash of the request>` (<= 32 characters).
`run_tuning` describes that name first and attaches when it exists; only a missing job is created.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws import naming, spot
from dogops.aws.client_errors import error_code, http_status
from dogops.aws.clients import AwsClients
from dogops.aws.propagation import call_with_role
from dogops.aws.sagemaker_job import (
    DEFAULT_MAX_RUNTIME_S,
    DEFAULT_POLL_S,
    DEFAULT_TIMEOUT_S,
    data_channel,
    framework_image,
    metric_definitions,
    objective_type,
    parse_hyperparameters,
    static_hyperparameters,
    upload_source,
)
from dogops.aws.sagemaker_rules import check_request
from dogops.aws.warm_start import (  # noqa: F401 - latest_completed_job is part of this API
    DATA_MANIFEST_TAG,
    latest_completed_job,
    warm_start_config,
)
from dogops.aws.weights import ship_weights, weights_channel
from dogops.backends.base import ProgressFn
from dogops.errors import OperationFailedError, UserInputError
from dogops.hyperparameters import search_space
from dogops.progress import Progress
from dogops.results import SyncReport, TrialResult, TuningResult
from dogops.settings import Settings
from dogops.waiting import poll

logger = logging.getLogger(__name__)


TERMINAL = ("Completed", "Stopped", "Failed")


def parameter_ranges(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """`dogops.hyperparameters.search_space` in SageMaker's ParameterRanges shape."""
    space = search_space(settings.tuning)
    return {
        "ContinuousParameterRanges": [
            {
                "Name": "learning_rate",
                "MinValue": str(space.learning_rate_min),
                "MaxValue": str(space.learning_rate_max),
                "ScalingType": "Logarithmic" if space.learning_rate_log else "Linear",
            }
        ],
        "CategoricalParameterRanges": [
            {"Name": "batch_size", "Values": [str(b) for b in space.batch_sizes]}
        ],
        "IntegerParameterRanges": [],
    }


def tuning_request(
    settings: Settings,
    *,
    run_key: str,
    data: SyncReport,
    source_uri: str,
    image_uri: str,
    role_arn: str,
    output_uri: str,
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S,
    checkpoint_uri: str = "",
    weights_uri: str = "",
) -> dict[str, Any]:
    """The full `CreateHyperParameterTuningJob` request, named from its own content; with
    `training.spot`, managed spot trials checkpointing under `checkpoint_uri`/<tuning job name>,
    one folder for all trials, each in its own `<training job name>/` inside it (train.py,
    `model_code.checkpoint.default_dir`); a checkpoint written with other hyperparameters is
    never resumed either: train.py compares a fingerprint of them."""
    tuning = settings.tuning
    names = {d["Name"] for d in metric_definitions()}
    if tuning.objective not in names:
        raise UserInputError(
            f"tuning.objective {tuning.objective!r} is not a metric train.py prints; "
            f"choose one of {sorted(names)}."
        )
    config: dict[str, Any] = {
        "Strategy": "Bayesian" if tuning.strategy == "bayesian" else "Random",
        "HyperParameterTuningJobObjective": {
            "Type": objective_type(tuning.objective),
            "MetricName": tuning.objective,
        },
        "ResourceLimits": {
            "MaxNumberOfTrainingJobs": tuning.max_jobs,
            "MaxParallelTrainingJobs": tuning.max_parallel_jobs,
        },
        "ParameterRanges": parameter_ranges(settings),
        "TrainingJobEarlyStoppingType": "Auto" if tuning.early_stopping else "Off",
        "RandomSeed": tuning.seed,
    }
    definition: dict[str, Any] = {
        "StaticHyperParameters": static_hyperparameters(settings, source_uri),
        "AlgorithmSpecification": {
            "TrainingImage": image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
        },
        "RoleArn": role_arn,
        "InputDataConfig": data_channel(data) + weights_channel(weights_uri),
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "ResourceConfig": {
            "InstanceType": settings.training.tuning_instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": spot.stopping_condition(settings, max_runtime_s),
        # Only with spot, so the names (content hashes) of on-demand jobs stay as they were.
        **({"EnableManagedSpotTraining": True} if settings.training.spot else {}),
    }
    digest = naming.short_hash(config, definition, data.manifest_sha256)
    name = naming.resource_name(
        f"{naming.sanitize(settings.project)[:8]}-hpo", run_key, digest, naming.TUNING_JOB_MAX
    )
    definition.update(spot.spot_fields(settings, checkpoint_uri, name))
    # The data manifest's hash rides along as a tag: a later warm start compares it with its own
    # to decide between IDENTICAL_DATA_AND_ALGORITHM and TRANSFER_LEARNING.
    manifest = [{"Key": DATA_MANIFEST_TAG, "Value": data.manifest_sha256}]
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
        "Tags": naming.tags(settings, run_key) + (manifest if data.manifest_sha256 else []),
    }


_STATES = {
    "Completed": "Completed",
    "InProgress": "InProgress",
    "Stopping": "Stopped",
    "Stopped": "Stopped",
    "Failed": "Failed",
}


def _seconds(start: Any, end: Any) -> float:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return max((end - start).total_seconds(), 0.0)
    return 0.0


def trial_from_summary(summary: dict[str, Any], static: dict[str, Any]) -> TrialResult:
    """A `HyperParameterTrainingJobSummary` as a `TrialResult`."""
    metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    return TrialResult(
        name=summary["TrainingJobName"],
        hyperparameters={**static, **parse_hyperparameters(summary.get("TunedHyperParameters"))},
        objective=float(metric["Value"]) if "Value" in metric else None,
        state=_STATES.get(summary.get("TrainingJobStatus", ""), "Pending"),  # type: ignore[arg-type]
        seconds=_seconds(summary.get("TrainingStartTime"), summary.get("TrainingEndTime")),
        failure_reason=summary.get("FailureReason") or None,
    )


def _cannot_list(exc: ClientError) -> bool:
    """The service has no ListTrainingJobsForHyperParameterTuningJob (moto answers HTTP 500)."""
    code = error_code(exc)
    return code in ("NotImplemented", "UnknownOperationException", "InvalidAction") or (
        http_status(exc) >= 500
    )


def list_trials(
    clients: AwsClients, job_name: str, static: dict[str, Any], progress: ProgressFn | None = None
) -> list[TrialResult] | None:
    """Every training job of the tuning job, oldest first; None when the service cannot list."""
    sm = clients.client("sagemaker")
    summaries: list[dict[str, Any]] = []
    try:
        paginator = sm.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
        for page in paginator.paginate(HyperParameterTuningJobName=job_name):
            summaries.extend(page.get("TrainingJobSummaries", []))
    except ClientError as exc:
        if not _cannot_list(exc):
            raise
        why = (
            f"could not list the training jobs of {job_name} "
            f"({error_code(exc)}, HTTP {http_status(exc)}): the trials table "
            "shows the best training job only"
        )
        logger.warning(why)
        if progress:
            progress(why)
        return None
    summaries.sort(key=lambda s: (s.get("CreationTime") or datetime.min, s["TrainingJobName"]))
    return [trial_from_summary(s, static) for s in summaries]


def enrich_from_training_job(clients: AwsClients, trial: TrialResult) -> TrialResult:
    """Add the model URI, final metrics and epochs from DescribeTrainingJob (best effort)."""
    try:
        job = clients.client("sagemaker").describe_training_job(TrainingJobName=trial.name)
    except ClientError as exc:
        logger.warning("could not describe training job %s: %s", trial.name, exc)
        return trial
    metrics = {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList", [])}
    epochs = int(metrics.get("epoch", 0))
    uri = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    complete = job.get("TrainingJobStatus") == "Completed"
    billable = job.get("BillableTimeInSeconds")
    return trial.model_copy(
        update={
            "metrics": metrics,
            "epochs_run": epochs,
            "model_uri": uri if complete else None,
            "seconds": trial.seconds or _seconds(
                job.get("TrainingStartTime"), job.get("TrainingEndTime")
            ),
            "billable_seconds": float(billable) if billable is not None else None,
        }
    )


def tuning_result(
    clients: AwsClients,
    described: dict[str, Any],
    *,
    reused: bool,
    progress: ProgressFn | None = None,
) -> TuningResult:
    """The finished job as a `TuningResult` (trials, best trial with its model URI)."""
    name = described["HyperParameterTuningJobName"]
    objective = described["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    definition = described.get("TrainingJobDefinition") or {}
    static = parse_hyperparameters(definition.get("StaticHyperParameters"))
    trials = list_trials(clients, name, static, progress)
    best_summary = described.get("BestTrainingJob")
    best = None
    if best_summary:
        best = enrich_from_training_job(clients, trial_from_summary(best_summary, static))
    if trials is None:
        trials = [best] if best else []
    elif best:
        trials = [best if t.name == best.name else t for t in trials]
    if definition.get("EnableManagedSpotTraining") and not reused:
        trials = spot.with_billable_seconds(clients, trials)
    warm = described.get("WarmStartConfig") or {}
    parents = [p["HyperParameterTuningJobName"]
               for p in warm.get("ParentHyperParameterTuningJobs", [])]
    return TuningResult(
        job_name=name,
        objective=objective["MetricName"],
        minimize=objective["Type"] == "Minimize",
        trials=trials,
        best=best,
        reused=reused,
        warm_start_type=warm.get("WarmStartType"),
        warm_start_parent=parents[0] if parents else None,
    )


def progress_line(described: dict[str, Any]) -> str:
    counters = described.get("TrainingJobStatusCounters") or {}
    limits = described["HyperParameterTuningJobConfig"]["ResourceLimits"]
    failed = counters.get("RetryableError", 0) + counters.get("NonRetryableError", 0)
    line = (
        f"tuning job {described['HyperParameterTuningJobName']} "
        f"{described['HyperParameterTuningJobStatus']}: "
        f"{counters.get('Completed', 0)} done, {counters.get('InProgress', 0)} running, "
        f"{failed} failed, {counters.get('Stopped', 0)} stopped "
        f"of {limits['MaxNumberOfTrainingJobs']}"
    )
    best = described.get("BestTrainingJob") or {}
    metric = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    if "Value" in metric:
        line += f"; best {metric.get('MetricName')}={metric['Value']} ({best['TrainingJobName']})"
    return line


def wait_for_tuning(
    clients: AwsClients,
    job_name: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    progress: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the job ends; progress on every change; `OperationFailedError` on timeout."""
    sm = clients.client("sagemaker")
    last = ""
    tracker: Progress | None = None

    def look() -> dict[str, Any] | None:
        nonlocal last, tracker
        described: dict[str, Any] = sm.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=job_name
        )
        line = progress_line(described)
        if progress and line != last:
            progress(line)
        last = line
        counters = described.get("TrainingJobStatusCounters") or {}
        ended = sum(int(counters.get(k, 0)) for k in ("Completed", "NonRetryableError", "Stopped"))
        limit = described["HyperParameterTuningJobConfig"]["ResourceLimits"]
        if tracker is None:
            tracker = Progress(f"tuning job {job_name}", limit["MaxNumberOfTrainingJobs"],
                               "trials", say=progress)
        tracker.update(ended, note=described["HyperParameterTuningJobStatus"])
        if described["HyperParameterTuningJobStatus"] in TERMINAL:
            tracker.finish()
            return described
        return None

    return poll(
        look, timeout_s=timeout_s, poll_s=poll_s, sleep=sleep,
        timed_out=lambda: OperationFailedError(
            f"tuning job {job_name} did not finish within {timeout_s:.0f} s. It keeps running "
            "on SageMaker: re-run the flow to attach to it, or stop it with `aws sagemaker "
            f"stop-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name {job_name}`."
        ),
    )


def _describe(clients: AwsClients, job_name: str) -> dict[str, Any] | None:
    try:
        return dict(
            clients.client("sagemaker").describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=job_name
            )
        )
    except ClientError as exc:
        if error_code(exc) in ("ResourceNotFound", "ValidationException"):
            return None
        raise


def run_tuning(
    clients: AwsClients,
    settings: Settings,
    data: SyncReport,
    *,
    role_arn: str,
    run_key: str,
    source_dir: Path,
    progress: ProgressFn | None = None,
    parent_job_name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> TuningResult:
    """Attach to this run's tuning job or create it, wait for it, and return its trials.

    `parent_job_name` turns on warm start from that job (see `warm_start_config`).
    """
    bucket, prefix = settings.aws.bucket, settings.aws.prefix.strip("/")
    source_uri = upload_source(clients, source_dir, bucket, prefix)
    request = tuning_request(
        settings,
        run_key=run_key,
        data=data,
        source_uri=source_uri,
        image_uri=framework_image(
            settings.aws.region, settings.training, settings.training.tuning_instance_type
        ),
        role_arn=role_arn,
        output_uri=f"s3://{bucket}/{prefix}/tuning",
        checkpoint_uri=spot.checkpoint_base(bucket, prefix),
        weights_uri=ship_weights(clients, settings),
    )
    name = request["HyperParameterTuningJobName"]
    existing = _describe(clients, name)
    if existing is not None:
        if progress:
            status = existing["HyperParameterTuningJobStatus"]
            progress(f"tuning job {name} already exists ({status}): attaching, not relaunching")
    else:
        if parent_job_name and parent_job_name != name:
            warm_start = warm_start_config(clients, request, parent_job_name, data)
            if warm_start:
                request["WarmStartConfig"] = warm_start
            elif progress:
                progress(f"no warm start from {parent_job_name}: its objective differs")
        check_request("CreateHyperParameterTuningJob", request)
        call_with_role(
            clients.client("sagemaker").create_hyper_parameter_tuning_job, role_arn,
            "CreateHyperParameterTuningJob", **request,
        )
        if progress:
            warm = request.get("WarmStartConfig", {}).get("WarmStartType")
            extra = f", warm start {warm} from {parent_job_name}" if warm else ""
            progress(
                f"tuning job {name} created: {settings.tuning.max_jobs} trials, "
                f"{settings.tuning.max_parallel_jobs} at a time, objective "
                f"{settings.tuning.objective}{extra}"
            )
    described = wait_for_tuning(
        clients, name, timeout_s=timeout_s, poll_s=poll_s, progress=progress, sleep=sleep
    )
    status = described["HyperParameterTuningJobStatus"]
    if status == "Failed" or (status == "Stopped" and not described.get("BestTrainingJob")):
        raise OperationFailedError(
            f"tuning job {name} ended {status}: {described.get('FailureReason') or 'no reason'}. "
            "Fix the cause (see the trial logs in CloudWatch) and re-run; a changed setting or "
            "new data gives the job a new name."
        )
    return tuning_result(clients, described, reused=existing is not None, progress=progress)
