"""All settings in one typed place.

Values come, lowest priority first, from the defaults below, a `.env` file, environment variables
prefixed `DOGOPS_` (nested with `__`, e.g. `DOGOPS_TUNING__MAX_JOBS=4`), and finally flow
parameters, which `Settings.merged()` applies so that a run triggered from the Prefect UI can
change any of them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dogops.errors import UserInputError, validation_message
from dogops.rollout_settings import RolloutConfig, RolloutStrategy  # noqa: F401 - re-exported

BackendName = Literal["local", "aws"]
Architecture = Literal["efficientnet_lite0", "resnet50"]
Objective = Literal["validation:loss", "validation:accuracy", "test:loss", "test:accuracy"]


class TuningConfig(BaseModel):
    """Hyperparameter search: the original's ranges by default."""

    learning_rate_min: float = Field(0.001, gt=0, description="Lower bound, continuous range.")
    learning_rate_max: float = Field(0.1, gt=0, description="Upper bound, continuous range.")
    batch_sizes: list[int] = Field(
        default_factory=lambda: [32, 64, 128, 256, 512],
        description="Categorical choices for batch size.",
    )
    max_jobs: int = Field(4, ge=1, le=500, description="Trial budget.")
    max_parallel_jobs: int = Field(2, ge=1, le=100, description="Trials running at once.")
    objective: Objective = Field(
        "validation:loss",
        description="Metric to optimise; loss is minimised, accuracy maximised. The test split "
        "stays untouched until the final report unless a test metric is chosen here.",
    )
    strategy: Literal["bayesian", "random"] = "bayesian"
    early_stopping: bool = Field(True, description="Stop hopeless trials early (median rule).")
    epochs: int = Field(8, ge=1, le=1000, description="Epochs per trial.")
    seed: int = 42
    warm_start: bool = Field(
        False, description="Seed the search with the previous tuning's trials."
    )

    @model_validator(mode="after")
    def _check(self) -> TuningConfig:
        if self.learning_rate_min > self.learning_rate_max:
            raise UserInputError(
                f"tuning.learning_rate_min ({self.learning_rate_min}) is greater than "
                f"tuning.learning_rate_max ({self.learning_rate_max}): swap them."
            )
        if not self.batch_sizes:
            raise UserInputError("tuning.batch_sizes is empty: give at least one batch size.")
        if any(b < 1 for b in self.batch_sizes):
            raise UserInputError(f"tuning.batch_sizes must be positive, got {self.batch_sizes}.")
        if self.max_parallel_jobs > self.max_jobs:
            self.max_parallel_jobs = self.max_jobs
        return self

    @property
    def minimize(self) -> bool:
        return self.objective.endswith("loss")


class TrainingConfig(BaseModel):
    """The model and how the final estimator trains."""

    architecture: Architecture = "efficientnet_lite0"
    image_size: int = Field(224, ge=32, le=1024, description="Square input size in pixels.")
    epochs: int = Field(8, ge=1, le=1000)
    patience: int = Field(3, ge=1, description="Early stopping on validation loss.")
    augment: bool = Field(
        False, description="Per-epoch augmentation; turns the backbone feature cache off."
    )
    seed: int = 42
    reuse_best_trial: bool = Field(
        True, description="Reuse the winning trial's model when it trained on the same budget."
    )
    spot: bool = Field(
        False, description="Managed spot training for tuning and final training (up to ~70 % "
        "cheaper); jobs checkpoint to S3 and resume after an interruption."
    )
    spot_max_wait_s: int = Field(
        6 * 3600, ge=1, le=28 * 24 * 3600,
        description="MaxWaitTimeInSeconds of a spot job: training plus waiting for capacity; "
        "at least the job's MaxRuntimeInSeconds (3 h).",
    )
    training_instance_type: str = "ml.m5.xlarge"
    tuning_instance_type: str = "ml.g4dn.xlarge"
    framework_version: str = "2.5"
    py_version: str = "py311"


class EndpointConfig(BaseModel):
    """The prediction service."""

    name: str = Field(
        "dogops-classifier",
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="Stable endpoint name; the Lambda reads it from its environment.",
    )
    mode: Literal["instance", "serverless"] = Field(
        "instance", description="instance: always-on instances (auto-scaled); serverless: "
        "SageMaker Serverless Inference, billed per request duration, idle costs nothing.",
    )
    instance_type: str = "ml.m5.large"
    initial_instance_count: int = Field(1, ge=1)
    serverless_memory_mb: int = Field(
        2048, ge=1024, le=6144, description="Serverless MemorySizeInMB: 1024-6144 in 1 GB steps."
    )
    serverless_max_concurrency: int = Field(
        5, ge=1, le=200, description="Serverless MaxConcurrency: concurrent invocations."
    )
    serverless_provisioned_concurrency: int | None = Field(
        None, ge=1, le=200,
        description="Serverless ProvisionedConcurrency (kept warm, billed while idle); at most "
        "serverless_max_concurrency. None: off.",
    )
    host: str = Field("127.0.0.1", description="Local backend: address the endpoint binds to.")
    port: int = Field(0, ge=0, le=65535, description="Local backend: 0 picks a free port.")
    idle_timeout_s: float = Field(
        60.0, gt=0, le=3600,
        description="Local backend: seconds a keep-alive connection may idle (or a read or write "
        "stall) before the endpoint closes it. 60 s as a load balancer's default idle timeout: "
        "long enough that a client's next call reuses its connection, short enough that idle "
        "sockets do not pile up; boto3 sees a closed pooled connection and opens a new one.",
    )
    model_server_workers: int = Field(
        1, ge=1, le=64,
        description="SAGEMAKER_MODEL_SERVER_WORKERS: model processes per endpoint instance.",
    )
    model_server_timeout_s: int = Field(
        60, ge=1, le=3600,
        description="SAGEMAKER_MODEL_SERVER_TIMEOUT: seconds the model server gives a request.",
    )
    allowed_s3_buckets: list[str] = Field(
        default_factory=list,
        description="Buckets whose s3:// image URLs the model may read; empty: aws.bucket only.",
    )
    batch_size: int = Field(
        16, ge=1, le=256,
        description="Dynamic batching: most concurrent requests one forward pass serves "
        "(the local endpoint's batcher; SAGEMAKER_TS_BATCH_SIZE on AWS). 1 turns it off.",
    )
    max_batch_delay_ms: int = Field(
        5, ge=0, le=10_000,
        description="Dynamic batching: most milliseconds a request waits for others to join its "
        "batch (SAGEMAKER_TS_MAX_BATCH_DELAY on AWS). Locally a lone client never waits.",
    )
    container_batching: bool = Field(
        False,
        description="Also batch in the SageMaker PyTorch container on aws (SAGEMAKER_TS_BATCH_SIZE"
        " / _MAX_BATCH_DELAY from batch_size / max_batch_delay_ms). Off by default: the pinned "
        "sagemaker-inference 1.10.1 runs a batch one request at a time (no speed-up). (It would "
        "also decode every body with the first request's content type; inference.py takes that "
        "decoding over, so a JSON request and an image in one batch are each answered alone.)",
    )
    max_url_fetches: int = Field(
        8, ge=1, le=256,
        description="Local endpoint: image URLs fetched at once, in the front (never in a model "
        "worker, so a URL that never answers cannot hold one); one more is answered 429.",
    )
    capture_percent: int = Field(
        0, ge=0, le=100,
        description="Data capture: the share of requests (0-100 %) whose request and response "
        "the endpoint stores under <prefix>/captures/ in SageMaker's capture format "
        "(DataCaptureConfig on AWS); 0 turns capture off. The `monitor` flow reads them.",
    )

    @model_validator(mode="after")
    def _check_serverless(self) -> EndpointConfig:
        if self.serverless_memory_mb % 1024:
            raise UserInputError(
                f"endpoint.serverless_memory_mb ({self.serverless_memory_mb}) must be a whole "
                "number of GB: 1024, 2048, 3072, 4096, 5120 or 6144."
            )
        if self.mode == "serverless" and self.capture_percent > 0:
            # AWS: serverless-endpoints.html "feature exclusions"; both backends refuse alike.
            raise UserInputError(
                f"endpoint.mode=serverless with endpoint.capture_percent={self.capture_percent}: "
                "SageMaker serverless endpoints do not support data capture. Set DOGOPS_ENDPOINT__"
                "CAPTURE_PERCENT=0, or DOGOPS_ENDPOINT__MODE=instance to keep capturing.")
        provisioned = self.serverless_provisioned_concurrency
        if provisioned is not None and provisioned > self.serverless_max_concurrency:
            raise UserInputError(
                f"endpoint.serverless_provisioned_concurrency ({provisioned}) is greater than "
                f"endpoint.serverless_max_concurrency ({self.serverless_max_concurrency}): "
                "lower it or raise the maximum."
            )
        return self


class ScalingConfig(BaseModel):
    """Application Auto Scaling: the original's numbers by default."""

    enabled: bool = True
    min_capacity: int = Field(
        1, ge=0, description="0: the local endpoint's workers scale to zero when idle (the first "
        "request starts one); a SageMaker instance endpoint needs at least 1 (serverless scales "
        "to zero by itself).",
    )
    max_capacity: int = Field(2, ge=1)
    target_invocations_per_instance: float = Field(50.0, gt=0)
    scale_in_cooldown_s: int = Field(30, ge=0, le=3600)
    scale_out_cooldown_s: int = Field(30, ge=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> ScalingConfig:
        if self.min_capacity > self.max_capacity:
            raise UserInputError(
                f"scaling.min_capacity ({self.min_capacity}) is greater than "
                f"scaling.max_capacity ({self.max_capacity}): lower min or raise max."
            )
        if not math.isfinite(self.target_invocations_per_instance):
            raise UserInputError(
                "scaling.target_invocations_per_instance must be a positive (finite) number, got "
                f"{self.target_invocations_per_instance}."
            )
        return self


def _range_text(name: str) -> str:
    """A field's bounds in words, from its own `Field(...)` (so they are written down once)."""
    low = high = None
    positive = False
    for rule in ScalingConfig.model_fields[name].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
        positive = positive or getattr(rule, "gt", None) == 0
    unit = " seconds" if name.endswith("_s") else ""
    if positive:
        return "a positive number"
    if low is not None and high is not None:
        return f"between {low} and {high}{unit}"
    return f"at least {low}{unit}"


def check_scaling(scaling: ScalingConfig) -> None:
    """The one check of the scaling knobs, for a config that may have skipped it (built with
    `model_construct`, or changed after): `UserInputError` naming the knob, its bounds and the
    value, as `ScalingConfig` itself would refuse it."""
    try:
        ScalingConfig.model_validate(scaling.model_dump())
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, UserInputError):
            raise cause from None  # a rule between knobs, already worded (e.g. min > max)
        name = str(error["loc"][0]) if error["loc"] else ""
        if name not in ScalingConfig.model_fields:
            raise UserInputError(f"scaling settings are not valid: {error['msg']}.") from None
        raise UserInputError(
            f"scaling.{name} must be {_range_text(name)}, got {getattr(scaling, name)}."
        ) from None


class LambdaConfig(BaseModel):
    """The Lambda front door."""

    enabled: bool = True
    function_name: str = Field("dogops-predict", pattern=r"^[a-zA-Z0-9-_]{1,64}$")
    alias: str = "live"
    provisioned_concurrency: int = Field(2, ge=0, le=1000, description="0 turns it off.")
    reserved_concurrency: int | None = Field(None, ge=0)
    timeout_s: int = Field(30, ge=1, le=900)
    memory_mb: int = Field(256, ge=128, le=10240)


class AwsConfig(BaseModel):
    """Where AWS calls go. Credentials never live here: boto3's chain or a Prefect block."""

    region: str = "us-east-1"
    profile: str | None = None
    credentials_block: str | None = Field(
        None, description="Name of a prefect-aws AwsCredentials block to use instead of the chain."
    )
    endpoint_url: str | None = Field(
        None, description="One endpoint URL for every service (a moto server in tests)."
    )
    service_endpoint_urls: dict[str, str] = Field(
        default_factory=dict, description="Per-service overrides, e.g. {'s3': 'http://...'}."
    )
    bucket: str = "dogops-data"
    create_bucket: bool = True
    prefix: str = "dogops"
    sagemaker_role_arn: str | None = Field(
        None, description="Execution role for training and endpoints; created when empty."
    )
    max_attempts: int = Field(5, ge=1, le=20)
    registry_write_attempts: int = Field(
        5, ge=1, le=20, description="Read-modify-write tries of the S3 registry document when "
        "another run wrote it in between (conditional PUT) before the change fails loudly.")


class MonitorConfig(BaseModel):
    """The `monitor` flow: what it reads of the captures and what counts as unsure."""

    low_confidence_threshold: float = Field(
        0.5, gt=0, lt=1,
        description="A prediction whose top-1 probability is under this counts as unsure; the "
        "monitor reports the share of such predictions.",
    )
    lookback_days: int = Field(
        7, ge=1, le=366, description="Days of captures (UTC, today included) the monitor reads."
    )


class ScheduleConfig(BaseModel):
    """When the scheduled deployments run (`deployments/serve.py`); cron in `timezone`."""

    retrain_cron: str = Field("0 3 * * 1", description="Retrain: default Mondays 03:00.")
    idle_guard_cron: str = Field("0 * * * *", description="Idle guard: default hourly.")
    monitor_cron: str = Field("0 6 * * *", description="Monitor: default daily at 06:00.")
    timezone: str = "UTC"


class Settings(BaseSettings):
    """dogops settings. See the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="DOGOPS_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    backend: BackendName = "local"
    data_dir: Path | None = Field(
        None, description="Image folder with train/, valid/, test/; the demo set when empty."
    )
    state_dir: Path = Field(
        Path(".dogops"), description="Local backend: object store, jobs, endpoints, registry."
    )
    project: str = "dogops"
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    lambda_: LambdaConfig = Field(default_factory=LambdaConfig, alias="lambda")
    aws: AwsConfig = Field(default_factory=AwsConfig)
    schedules: ScheduleConfig = Field(default_factory=ScheduleConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    live_lock_timeout_s: int = Field(
        4 * 3600, ge=1, le=7 * 86400, description="How long a run waits for another run that "
        "is changing the same endpoint's live model (deploy, rollout, rollback, promotion, "
        "wake, sleep, teardown) before it fails; they take turns, never overlap.")

    def merged(self, **overrides: Any) -> Settings:
        """A copy with flow parameters applied; `None` means "keep the setting"."""
        data = self.model_dump(by_alias=True)
        for key, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, BaseModel):
                # Only the fields the caller set: the rest keep their env/.env values.
                value = value.model_dump(exclude_unset=True)
            name = "lambda" if key in ("lambda_", "lambda_config") else key
            if isinstance(value, dict) and isinstance(data.get(name), dict):
                data[name] = {**data[name], **value}
            else:
                data[name] = value
        return Settings.model_validate(data)


# Flow parameter defaults: instances with no field set, so `Settings.merged` keeps the
# environment's values for a run with no parameters, while the deployments' forms show every
# field (deployments/serve.py fills in the effective values as the forms' defaults).
DEFAULT_TUNING = TuningConfig()
DEFAULT_TRAINING = TrainingConfig()
DEFAULT_ENDPOINT = EndpointConfig()
DEFAULT_SCALING = ScalingConfig()
DEFAULT_LAMBDA = LambdaConfig()
DEFAULT_MONITOR = MonitorConfig()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with `overrides` on top, or a `UserInputError`."""
    from pydantic import ValidationError

    try:
        return Settings().merged(**overrides)
    except ValidationError as exc:
        raise UserInputError(validation_message(exc)) from exc
