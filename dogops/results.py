"""What each pipeline step returns: small pydantic records that both backends produce alike.

They are what Prefect tasks pass between each other, what artifacts are rendered from, and what the
local backend writes to disk to resume after a crash.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class SyncReport(BaseModel):
    """Result of syncing the data folder to the object store (S3 or the local store)."""

    uri: str = Field(description="s3://bucket/prefix or file:///... of the synced folder.")
    files_total: int = 0
    uploaded: int = 0
    skipped: int = 0
    deleted: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0
    manifest_sha256: str = Field("", description="Hash of the manifest: identifies the data set.")


DATA_MANIFEST = "_manifest.json"  # the sync's own manifest, under the data prefix


def listing_report(uri: str, files: dict[str, dict[str, Any]], started: float) -> SyncReport:
    """The data under `uri` as listed now (`key -> size and hash`), named by its manifest's hash;
    both backends' data-of-record reads end here, so the same files hash the same."""
    body = json.dumps({"version": 1, "files": dict(sorted(files.items()))}, sort_keys=True,
                      indent=1).encode()
    return SyncReport(uri=uri, files_total=len(files), skipped=len(files),
                      seconds=round(time.perf_counter() - started, 3),
                      manifest_sha256=hashlib.sha256(body).hexdigest())


class IdleStatus(BaseModel):
    """Whether the endpoint is idle (`dogops.idle`), as either backend's check finds it."""

    endpoint_name: str
    backend: str
    exists: bool
    idle: bool = False
    max_idle_hours: float
    last_active_at: datetime | None = None
    idle_hours: float | None = None
    invocations_in_window: int | None = None
    current_instances: int | None = None
    min_instances: int = 1
    detail: str = ""

    def finish(self, last_active: datetime, now: datetime) -> IdleStatus:
        """Set the last activity, the hours since and whether that is past the limit."""
        hours = max(0.0, (now - last_active).total_seconds() / 3600)
        self.last_active_at = last_active
        self.idle_hours = round(hours, 3)
        self.idle = hours >= self.max_idle_hours
        return self


class TrialResult(BaseModel):
    """One tuning trial (a SageMaker training job, or a local subprocess)."""

    name: str
    hyperparameters: dict[str, Any]
    objective: float | None = None
    state: Literal["Completed", "Stopped", "Failed", "InProgress", "Pending"] = "Pending"
    seconds: float = 0.0
    billable_seconds: float | None = Field(
        None, description="SageMaker's BillableTimeInSeconds, read for managed spot trials only."
    )
    epochs_run: int = 0
    model_uri: str | None = None
    failure_reason: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class TuningResult(BaseModel):
    """A finished tuning job and its best trial."""

    job_name: str
    objective: str
    minimize: bool
    trials: list[TrialResult]
    best: TrialResult | None = None
    reused: bool = Field(False, description="True when an existing job was attached, not launched.")
    warm_start_type: str | None = Field(
        None, description="IDENTICAL_DATA_AND_ALGORITHM or TRANSFER_LEARNING when warm-started."
    )
    warm_start_parent: str | None = Field(None, description="The tuning job it started from.")

    @property
    def best_hyperparameters(self) -> dict[str, Any]:
        return dict(self.best.hyperparameters) if self.best else {}


class TrainedModel(BaseModel):
    """The final estimator's artifact."""

    job_name: str
    model_uri: str = Field(description="Where model.tar.gz lives (s3:// or file://).")
    hyperparameters: dict[str, Any]
    metrics: dict[str, float] = Field(default_factory=dict)
    per_class_accuracy: dict[str, float] = Field(default_factory=dict)
    confusion_matrix: list[list[int]] = Field(default_factory=list)
    class_names: list[str] = Field(default_factory=list)
    reused: bool = False
    version: str = Field("", description="Content hash of model.tar.gz (or the job name).")
    training_seconds: float = Field(
        0.0, description="Instance-seconds this step trained for: 0 when a model was reused."
    )
    billable_seconds: float | None = Field(
        None, description="BillableTimeInSeconds of the job (managed spot: less than trained)."
    )

    @classmethod
    def from_metadata(
        cls, metadata: dict[str, Any], metrics: dict[str, float] | None = None, **fields: Any
    ) -> TrainedModel:
        """A record from the `metadata.json` that `model_code/train.py` writes beside the model;
        `metrics` (e.g. a job's final metrics) are kept where the metadata has none."""
        merged = dict(metrics or {})
        merged.update({k: float(v) for k, v in metadata.get("metrics", {}).items()
                       if isinstance(v, (int, float))})
        return cls(
            metrics=merged,
            per_class_accuracy=metadata.get("per_class_accuracy", {}),
            confusion_matrix=metadata.get("confusion_matrix", []),
            class_names=metadata.get("class_names", []),
            **fields,
        )


class RolloutOutcome(BaseModel):
    """How a new model's rollout onto a live endpoint ended, and on what figures."""

    decision: Literal["promoted", "rolled-back"]
    strategy: str
    steps: list[int] = Field(default_factory=list, description="Traffic share per step, %.")
    bake_seconds: int = 0
    reason: str = ""
    figures: dict[str, Any] = Field(
        default_factory=dict, description="What the decision was made on (rates, p99, counts, "
        "alarm states), as the judge saw them.",
    )
    phases: list[str] = Field(default_factory=list, description="Each phase seen, in order.")
    old_version: str | None = None
    new_version: str | None = None
    alarms: list[str] = Field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"


class RolledBack(BaseModel):
    """A candidate a guarded rollout took off the endpoint again, and why; never live."""

    at: datetime
    endpoint_name: str
    model_version: str
    model_uri: str
    reason: str
    figures: dict[str, Any] = Field(default_factory=dict, description="What it was judged on.")
    source: str = ""
    flow_run_id: str | None = None


class EndpointInfo(BaseModel):
    """A live (or at least created) endpoint."""

    name: str
    url: str = Field(description="Where to send invocations (runtime endpoint URL or console).")
    runtime_endpoint_url: str | None = Field(
        None, description="endpoint_url for a boto3 sagemaker-runtime client (local backend)."
    )
    arn: str | None = None
    config_name: str | None = None
    model_name: str | None = None
    status: str = "InService"
    updated: bool = Field(False, description="True when an existing endpoint was updated in place.")
    rollout: RolloutOutcome | None = Field(
        None, description="Set when the update went through a guarded rollout; a rolled-back "
        "one leaves the endpoint on the previous model.",
    )


class ScalingInfo(BaseModel):
    resource_id: str
    min_capacity: int
    max_capacity: int
    policy_name: str
    target: float
    scale_in_cooldown_s: int
    scale_out_cooldown_s: int


class StepSkipped(BaseModel):
    """A step the backend cannot do, with the reason logged and shown in the summary."""

    step: str
    reason: str


class LambdaInfo(BaseModel):
    function_name: str
    alias: str
    version: str
    code_sha256: str
    package_bytes: int
    provisioned_concurrency: int = Field(description="What is in place (0 when skipped).")
    arn: str | None = None
    updated: bool = False
    skipped: list[StepSkipped] = Field(
        default_factory=list, description="Parts the service does not offer, with the reason."
    )


class SecurityReport(BaseModel):
    lambda_role_arn: str | None = None
    lambda_policy: dict[str, Any] = Field(default_factory=dict)
    sagemaker_role_arn: str | None = None
    notes: list[str] = Field(default_factory=list)

