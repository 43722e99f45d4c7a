"""The `local` backend: the whole pipeline on one machine, no AWS account, no Docker.

Everything lives under `settings.state_dir`:

    store/<bucket>/<prefix>/data/      the synced data set (same keys as S3) + _manifest.json
    store/<bucket>/<prefix>/captures/  the endpoint's data capture (SageMaker's layout and format)
    feature-cache/                     backbone features shared by trials on the same data
    jobs/tuning/<job>/                 one tuning job: optuna journal, trials/, result.json
    jobs/training/<job>/               the final estimator: model/, model.tar.gz
    models/<version>/                  an unpacked model.tar.gz that an endpoint serves
    endpoints/<name>.json              the live endpoint's address and pid
    lambda/<function>/                 the packaged Lambda zip and its record
"""

from __future__ import annotations

from pathlib import Path

import boto3
from botocore.config import Config

from dogops.backends.base import ProgressFn, StepNotSupported, TrialWrapper
from dogops.capture import local_capture_root
from dogops.errors import UserInputError
from dogops.local import endpoint as local_endpoint
from dogops.local.data_source import local_path
from dogops.local.documents import LocalStore
from dogops.local.model_store import model_store
from dogops.local.operations import LocalOperations
from dogops.local.store import sync_folder, write_atomic
from dogops.local.training import (
    extract_model_archive,
    package_trial,
    reusable_trial,
    train_final,
)
from dogops.local.tuner import LocalTuner
from dogops.results import (
    EndpointInfo,
    LambdaInfo,
    ScalingInfo,
    SecurityReport,
    SyncReport,
    TrainedModel,
    TuningResult,
)
from dogops.serving_env import serving_environment
from dogops.settings import Settings

LOCAL_ACCOUNT_ID = "000000000000"


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state_dir.expanduser().resolve()
        self.store = LocalStore(self.root)
        self.operations = LocalOperations()

    # -- paths -----------------------------------------------------------------------------
    @property
    def data_store(self) -> Path:
        return self.root / "store" / self.settings.aws.bucket / self.settings.aws.prefix / "data"

    @property
    def feature_cache(self) -> Path | None:
        return None if self.settings.training.augment else self.root / "feature-cache"

    def tuning_dir(self, job_name: str) -> Path:
        return self.root / "jobs" / "tuning" / job_name

    def training_dir(self, job_name: str) -> Path:
        return self.root / "jobs" / "training" / job_name

    def job_name(self, kind: str, run_key: str) -> str:
        return f"{self.settings.project}-{kind}-{run_key}"[:63]

    # -- steps -----------------------------------------------------------------------------
    def upload_data(self, data_dir: Path, progress: ProgressFn | None = None) -> SyncReport:
        return sync_folder(
            Path(data_dir), self.data_store, progress, self.root / "hash-cache" / "local.json"
        )

    def tune(
        self, data: SyncReport, run_key: str, progress: ProgressFn | None = None,
        trial_wrapper: TrialWrapper | None = None,
    ) -> TuningResult:
        job_name = self.job_name("tune", run_key)
        latest = self.root / "jobs" / "tuning" / "LATEST"
        previous = None
        if self.settings.tuning.warm_start and latest.exists():
            name = latest.read_text().strip()
            previous = self.tuning_dir(name) if name != job_name else None
        tuner = LocalTuner(
            job_name=job_name,
            job_dir=self.tuning_dir(job_name),
            data_dir=self.data_store,
            tuning=self.settings.tuning,
            training=self.settings.training,
            feature_cache_dir=self.feature_cache,
            previous_job_dir=previous,
            progress=progress,
            trial_wrapper=trial_wrapper,
        )
        result = tuner.run()
        write_atomic(latest, job_name.encode())
        return result

    def train_best(
        self, data: SyncReport, tuning: TuningResult, run_key: str,
        progress: ProgressFn | None = None,
    ) -> TrainedModel:
        if tuning.best is None:
            raise UserInputError(
                f"tuning job {tuning.job_name} has no completed trial to train from: "
                "see the trials table for each trial's failure reason."
            )
        job_name = self.job_name("train", run_key)
        job_dir = self.training_dir(job_name)
        trial = reusable_trial(tuning, self.settings.training.epochs)
        if trial is not None and self.settings.training.reuse_best_trial:
            return package_trial(trial, job_name, job_dir, progress)
        hyperparameters = {**tuning.best_hyperparameters, "epochs": self.settings.training.epochs}
        return train_final(
            job_name, job_dir, self.data_store, hyperparameters, self.feature_cache, progress
        )

    def deploy(
        self, model: TrainedModel, run_key: str, progress: ProgressFn | None = None
    ) -> EndpointInfo:
        archive = local_path(model.model_uri)
        model_dir = model_store(self.root) / model.version
        if not (model_dir / "metadata.json").exists():
            extract_model_archive(archive, model_dir)
        current = local_endpoint.read_endpoint(self.settings.endpoint.name, self.root)
        record = local_endpoint.read_endpoint_record(self.settings.endpoint.name, self.root)
        capture_percent = self.settings.endpoint.capture_percent
        same_capture = record is not None and record.get("capture_percent", 0) == capture_percent
        if current is not None and current.model_name == model.version and same_capture:
            if progress:
                progress(f"endpoint {current.name} already serves model {model.version}")
            return current
        if current is not None and current.model_name != model.version:
            # A new model on a live endpoint: the guarded rollout, inside its server.
            from dogops.local.rollout import rollout_local

            outcome = rollout_local(current.name, self.root, model_dir, self.settings.rollout,
                                    progress, version=model.version)
            served = local_endpoint.read_endpoint(current.name, self.root) or current
            return served.model_copy(update={"updated": outcome.promoted, "rollout": outcome})
        # No endpoint yet, or the same model with other server options (capture): a fresh
        # server, swapped in without downtime; a rollout of a model onto itself proves nothing
        # and would keep the old server's options.
        if progress:
            verb = "replacing" if current else "starting"
            progress(f"{verb} endpoint {self.settings.endpoint.name} with model {model.version}")
        return local_endpoint.start_endpoint(
            self.settings.endpoint.name,
            model_dir,
            self.root,
            self.settings.scaling,
            host=self.settings.endpoint.host,
            port=self.settings.endpoint.port,
            env=serving_environment(self.settings),
            model_version=model.version,
            options={"batch_size": self.settings.endpoint.batch_size,
                     "idle_timeout": self.settings.endpoint.idle_timeout_s,
                     "max_batch_delay_ms": self.settings.endpoint.max_batch_delay_ms,
                     # Data capture as SageMaker's DataCaptureConfig does it, into the local
                     # store (off at 0).
                     **({"capture_percent": capture_percent,
                         "capture_dir": str(local_capture_root(self.settings))}
                        if capture_percent else {})},
        )

    def store_model(self, archive: Path, version: str) -> str:
        stored = self.root / "rollouts" / version / "model.tar.gz"
        stored.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(stored, archive.read_bytes())
        return stored.as_uri()

    def register_autoscaling(self, endpoint: EndpointInfo) -> ScalingInfo:
        """The local endpoint scales its worker processes itself, on the same policy."""
        scaling = self.settings.scaling
        if not scaling.enabled:
            raise StepNotSupported("auto-scaling is disabled in the settings (scaling.enabled)")
        status = local_endpoint.endpoint_status(endpoint.name, self.root)
        server = status.get("server") if isinstance(status, dict) else None
        # The running server's policy (`/dogops/status`), under the settings' names.
        policy = ((server or {}).get("scaling") or {}).get("policy") or {}
        return ScalingInfo(
            resource_id=f"endpoint/{endpoint.name}/variant/AllTraffic",
            min_capacity=int(policy.get("min_capacity", scaling.min_capacity)),
            max_capacity=int(policy.get("max_capacity", scaling.max_capacity)),
            policy_name=f"{endpoint.name}-invocations-target-tracking",
            target=float(policy.get("target_invocations_per_instance",
                                    scaling.target_invocations_per_instance)),
            scale_in_cooldown_s=int(policy.get("scale_in_cooldown_s", scaling.scale_in_cooldown_s)),
            scale_out_cooldown_s=int(
                policy.get("scale_out_cooldown_s", scaling.scale_out_cooldown_s)
            ),
        )

    def secure(self, endpoint: EndpointInfo) -> SecurityReport:
        """No IAM here: show the policy the aws backend would attach, and say it is not applied."""
        from dogops.iam_policies import lambda_execution_policy

        policy = lambda_execution_policy(
            self.settings.aws.region, LOCAL_ACCOUNT_ID, endpoint.name,
            self.settings.lambda_.function_name,
        )
        return SecurityReport(
            lambda_policy=policy,
            notes=[
                "local backend: no IAM to apply; this is the least-privilege policy the aws "
                "backend attaches to the Lambda role (account id shown as a placeholder).",
                "the local endpoint listens on "
                f"{self.settings.endpoint.host} only.",
            ],
        )

    def deploy_lambda(self, endpoint: EndpointInfo, security: SecurityReport) -> LambdaInfo:
        """Package the handler zip; `dogops invoke-lambda` runs it in a separate process."""
        from dogops.lambda_package import build_package

        config = self.settings.lambda_
        if not config.enabled:
            raise StepNotSupported("the Lambda step is disabled in the settings (lambda.enabled)")
        package = build_package()
        folder = self.root / "lambda" / config.function_name
        zip_path = folder / f"{package.sha256[:16]}.zip"
        updated = not zip_path.exists()
        if updated:
            write_atomic(zip_path, package.zip_bytes)
        info = LambdaInfo(
            function_name=config.function_name,
            alias=config.alias,
            version=package.sha256[:16],
            code_sha256=package.code_sha256_b64,
            package_bytes=package.size_bytes,
            provisioned_concurrency=0,
            arn=zip_path.as_uri(),
            updated=updated,
        )
        write_atomic(folder / "function.json", info.model_dump_json(indent=1).encode())
        return info

    def invoke_endpoint(
        self, endpoint: EndpointInfo, body: bytes, content_type: str,
        accept: str = "application/json",
    ) -> bytes:
        current = local_endpoint.read_endpoint(endpoint.name, self.root) or endpoint
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=current.runtime_endpoint_url,
            region_name=self.settings.aws.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - the local endpoint checks no signature
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=60),
        )
        response = client.invoke_endpoint(
            EndpointName=endpoint.name, Body=body, ContentType=content_type, Accept=accept
        )
        return bytes(response["Body"].read())

    def teardown(self, apply: bool = False) -> list[str]:
        """Stop the endpoint servers and remove the Lambda packages; data, models and the
        registry stay. Without `apply`, only lists them (see `dogops.local.teardown`)."""
        from dogops.local.teardown import teardown_local

        return teardown_local(self.settings, apply)
