"""The `aws` backend: each pipeline step on S3, SageMaker, Application Auto Scaling, IAM, Lambda.

A thin class over the one-concern modules of `dogops.aws`; it only picks names and locations from
the settings. Retries: botocore's standard mode retries throttling and 5xx inside each call, and
the Prefect tasks retry transient failures (`dogops.errors.retry_condition`); nothing here retries
a client error, and every step is safe to repeat (attach-or-create, update in place, skip
unchanged).

Where things live: `s3://<bucket>/<prefix>/data/` (the synced data set and its manifest),
`.../code/<hash>/sourcedir.tar.gz` (model_code), `.../tuning/` and `.../training/` (job outputs),
`.../captures/` (the endpoint's data capture, `endpoint.capture_percent`), `.../rollouts/`
(models `dogops rollout` stored) and `.../weights/<hash>/` (pretrained weights for the jobs).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from dogops import iam_policies
from dogops.aws import endpoint as endpoint_mod
from dogops.aws import s3_sync, sagemaker_job, training, weights
from dogops.aws import tuning as tuning_mod
from dogops.aws.clients import AwsClients
from dogops.aws.documents import S3Store
from dogops.aws.operations import AwsOperations
from dogops.backends.base import ProgressFn, StepNotSupported, TrialWrapper
from dogops.dataset import inspect_dataset
from dogops.errors import UserInputError
from dogops.results import (
    EndpointInfo,
    LambdaInfo,
    ScalingInfo,
    SecurityReport,
    SyncReport,
    TrainedModel,
    TuningResult,
)
from dogops.settings import Settings

logger = logging.getLogger(__name__)


def default_model_code_dir() -> Path:
    """The `model_code` package's folder (installed or in the checkout)."""
    spec = importlib.util.find_spec("model_code")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "model_code"


class AwsBackend:
    """`dogops.backends.base.Backend` on AWS. `poll_s` / `timeout_s` bound every wait."""

    name = "aws"

    def __init__(
        self,
        settings: Settings,
        *,
        clients: AwsClients | None = None,
        model_code_dir: Path | None = None,
        poll_s: float = sagemaker_job.DEFAULT_POLL_S,
        timeout_s: float = sagemaker_job.DEFAULT_TIMEOUT_S,
        endpoint_timeout_s: float = endpoint_mod.DEFAULT_ENDPOINT_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.clients = clients or AwsClients(settings.aws)
        # One set of clients for the steps, the store and the operations of a flow run.
        self.store = S3Store(settings, self.clients)
        self.operations = AwsOperations(self.clients)
        self.model_code_dir = model_code_dir or default_model_code_dir()
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.endpoint_timeout_s = endpoint_timeout_s
        self._role_arn: str | None = settings.aws.sagemaker_role_arn

    @property
    def data_prefix(self) -> str:
        return f"{self.settings.aws.prefix.strip('/')}/data"

    def sagemaker_role_arn(self) -> str:
        """The configured execution role, else the project's scoped role (created once)."""
        if self._role_arn is None:
            from dogops.aws.iam import ensure_sagemaker_role

            self._role_arn = ensure_sagemaker_role(self.clients, self.settings)
        return self._role_arn

    @property
    def hash_cache_path(self) -> Path:
        return self.settings.state_dir / "hash-cache" / f"s3-{self.settings.aws.bucket}.json"

    # -- steps ------------------------------------------------------------------------------
    def upload_data(self, data_dir: Path, progress: ProgressFn | None = None) -> SyncReport:
        inspect_dataset(data_dir)  # the same fail-fast layout check as the local backend
        weights.local_weights_file(self.settings)  # resnet50 without its weights: before the sync
        return s3_sync.sync_folder(
            self.clients,
            Path(data_dir),
            self.settings.aws.bucket,
            self.data_prefix,
            create_bucket=self.settings.aws.create_bucket,
            progress=progress,
            hash_cache=self.hash_cache_path,
        )

    def tune(
        self, data: SyncReport, run_key: str, progress: ProgressFn | None = None,
        trial_wrapper: TrialWrapper | None = None,
    ) -> TuningResult:
        """`trial_wrapper` is not called: SageMaker runs the trials, not this process; they show
        up in the trials table of the result instead."""
        parent = None
        if self.settings.tuning.warm_start:
            parent = tuning_mod.latest_completed_job(self.clients, self.settings, exclude="")
        return tuning_mod.run_tuning(
            self.clients,
            self.settings,
            data,
            role_arn=self.sagemaker_role_arn(),
            run_key=run_key,
            source_dir=self.model_code_dir,
            progress=progress,
            parent_job_name=parent,
            timeout_s=self.timeout_s,
            poll_s=self.poll_s,
        )

    def train_best(
        self, data: SyncReport, tuning: TuningResult, run_key: str,
        progress: ProgressFn | None = None,
    ) -> TrainedModel:
        return training.train_best(
            self.clients,
            self.settings,
            data,
            tuning,
            role_arn=self.sagemaker_role_arn(),
            run_key=run_key,
            source_dir=self.model_code_dir,
            progress=progress,
            timeout_s=self.timeout_s,
            poll_s=self.poll_s,
        )

    def _require_readable(self, model_uri: str) -> None:
        """The endpoint loads the model with the execution role. The role dogops creates reads
        only its project's folders: a model elsewhere would fail on AWS ("Failed to download
        model data") once the endpoint update had begun, and pass on moto, which enforces no
        IAM. A role of the user's own (aws.sagemaker_role_arn) is theirs to judge."""
        if self.settings.aws.sagemaker_role_arn:
            return
        base = f"s3://{self.settings.aws.bucket}/{self.settings.aws.prefix.strip('/')}"
        readable = [f"{base}/{folder}/" for folder in (*iam_policies.READ_ONLY_FOLDERS,
                                                       *iam_policies.OUTPUT_FOLDERS)]
        if not model_uri.startswith(tuple(readable)):
            raise UserInputError(
                f"model {model_uri} is not where the execution role dogops creates may read "
                f"({', '.join(readable)}): SageMaker would fail with 'Failed to download model "
                "data'. Roll it out from its folder with `dogops rollout --model-dir DIR` (which "
                f"stores it under {base}/{iam_policies.ROLLOUT_FOLDER}/), or set "
                "DOGOPS_AWS__SAGEMAKER_ROLE_ARN to a role that can read it."
            )

    def deploy(
        self, model: TrainedModel, run_key: str, progress: ProgressFn | None = None
    ) -> EndpointInfo:
        self._require_readable(model.model_uri)
        return endpoint_mod.deploy_endpoint(
            self.clients,
            self.settings,
            model,
            self.sagemaker_role_arn(),
            run_key,
            progress,
            timeout_s=self.endpoint_timeout_s,
            poll_s=self.poll_s,
        )

    def register_autoscaling(self, endpoint: EndpointInfo) -> ScalingInfo:
        if not self.settings.scaling.enabled:
            raise StepNotSupported("auto-scaling is disabled in the settings (scaling.enabled)")
        if self.settings.endpoint.mode == "serverless":
            raise StepNotSupported(
                "serverless endpoint: SageMaker scales it per request up to "
                f"{self.settings.endpoint.serverless_max_concurrency} concurrent invocations "
                "(endpoint.serverless_max_concurrency); Application Auto Scaling does not apply"
            )
        from dogops.aws.autoscaling import register_autoscaling

        return register_autoscaling(
            self.clients, endpoint.name, self.settings.scaling, endpoint_mod.VARIANT,
            project=self.settings.project,
        )

    def secure(self, endpoint: EndpointInfo) -> SecurityReport:
        from dogops.aws.iam import ensure_lambda_role

        if not endpoint.arn:
            raise UserInputError(
                f"endpoint {endpoint.name} has no ARN: deploy it with the aws backend first."
            )
        report = ensure_lambda_role(self.clients, self.settings, endpoint.arn)
        if report.sagemaker_role_arn is None:
            report = report.model_copy(update={"sagemaker_role_arn": self.sagemaker_role_arn()})
        return report

    def store_model(self, archive: Path, version: str) -> str:
        # A folder the execution role dogops creates may read: the endpoint loads it with that
        # role (tests/test_aws_s3_access.py checks every URI handed to SageMaker).
        folder = f"{self.settings.aws.prefix.strip('/')}/{iam_policies.ROLLOUT_FOLDER}"
        key = f"{folder}/{version}/model.tar.gz".lstrip("/")
        self.clients.client("s3").upload_file(str(archive), self.settings.aws.bucket, key)
        return f"s3://{self.settings.aws.bucket}/{key}"

    def deploy_lambda(self, endpoint: EndpointInfo, security: SecurityReport) -> LambdaInfo:
        if not self.settings.lambda_.enabled:
            raise StepNotSupported("the Lambda step is disabled in the settings (lambda.enabled)")
        if not security.lambda_role_arn:
            raise UserInputError(
                "no Lambda role in the security report: run the secure step before the Lambda."
            )
        from dogops.aws.lambda_deploy import deploy_lambda

        return deploy_lambda(self.clients, self.settings, endpoint.name, security.lambda_role_arn)

    def invoke_endpoint(
        self, endpoint: EndpointInfo, body: bytes, content_type: str,
        accept: str = "application/json",
    ) -> bytes:
        response = self.clients.client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint.name, Body=body, ContentType=content_type, Accept=accept
        )
        return bytes(response["Body"].read())

    def teardown(self, apply: bool = False) -> list[str]:
        """Everything the project made for the endpoint, in the order AWS needs (see
        `dogops.aws.teardown`). The data in S3 is kept. Without `apply`, only lists."""
        from dogops.aws.teardown import teardown_aws

        return teardown_aws(self.clients, self.settings, apply, poll_s=self.poll_s)
