"""What each pipeline step returns: small pydantic records that both backends produce alike.

They are what Prefect tasks pass between each other, what artifacts are rendered from, and what the
local backend writes to disk to resume after a crash.
"""

from __future__ import annotations

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

