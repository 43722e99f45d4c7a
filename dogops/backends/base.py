"""The backend interface: as small as the steps of the pipeline.

Every method is idempotent: called twice with the same inputs, it reuses what the first call made
(attach to an existing job, update an endpoint in place, skip unchanged files) instead of
duplicating it or failing on "already exists". A step a backend cannot do raises
`StepNotSupported`, which the flow logs and shows as skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from dogops.errors import DogopsError
from dogops.results import (
    EndpointInfo,
    IdleStatus,
    LambdaInfo,
    ScalingInfo,
    SecurityReport,
    SyncReport,
    TrainedModel,
    TrialResult,
    TuningResult,
)
from dogops.settings import Settings

ProgressFn = Callable[[str], None]
"""Receives one human-readable progress line (the tasks forward it to the Prefect logger)."""

TrialWrapper = Callable[[str, Callable[[], TrialResult]], object]


class StepNotSupported(DogopsError):
    """This backend cannot do this step; the message says why."""


class DocumentStore(Protocol):
    """One document (the registry) in the backend's store; `read` returns None before the first
    write."""

    uri: str

    def read(self) -> bytes | None: ...

    def update(self, change: Callable[[bytes | None], bytes | None]) -> None:
        """Replace the document by `change(current body)` with no update lost to another writer
        (a file lock locally, a conditional PUT on S3); `change` returns None to leave it as it
        is, and may be called more than once (again on a fresh read after a conflict)."""
        ...


class ObjectReader(Protocol):
    """The project's bucket read by key (S3, or its folder in the local object store), for what
    both backends write in the same layout: the endpoint's data captures, the data manifest."""

    uri: str  # s3://<bucket>, or the folder's file:// URI

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix` (a plain string prefix, as S3 lists them), in key order."""
        ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...


class Store(Protocol):
    """Where the backend keeps documents, model archives and the data: the state dir, or S3."""

    def document(self, name: str) -> DocumentStore:
        """The document `name` (e.g. `registry.json`)."""
        ...

    def archive_file(self, uri: str, scratch: Path) -> Path | None:
        """A local file holding the model archive at `uri` (the file itself when it is already
        local, else a copy at `scratch`); None when there is no archive there."""
        ...

    def objects(self, bucket: str) -> ObjectReader:
        """The bucket `bucket` read by key (the captures the monitor reads)."""
        ...

    def data_now(self, uri: str) -> SyncReport:
        """The data set under `uri` in the object store as it is now, named by the hash of its
        listing (files added there count; nothing is written)."""
        ...

    def test_split(self, data: SyncReport) -> Path:
        """A local folder with the data's test split (downloaded when the store is remote)."""
        ...


class Operations(Protocol):
    """Operating the running service on the backend: where a person looks, what prices mean,
    whether there is IAM, how to reach the endpoint, and the idle guard's check, scale-in and
    sleep. The last four read or change the backend; every one is safe to re-run."""

    name: str

    def console_link(self, endpoint: EndpointInfo, region: str) -> str:
        """Where a person looks at the endpoint (the SageMaker console, the local status page)."""
        ...

    def price_basis(self, region: str, *, short: bool = False) -> str:
        """What the cost tables' prices stand for on this backend."""
        ...

    def no_iam_reason(self) -> str | None:
        """Why there is no IAM to audit here, or None when there is."""
        ...

    def endpoint_address(self, settings: Settings, name: str) -> EndpointInfo:
        """How to reach endpoint `name`: by name alone on AWS, the running server's URL locally
        (`UserInputError` naming the fix when it is not running)."""
        ...

    def idle_status(self, settings: Settings, max_idle_hours: float, now: datetime) -> IdleStatus:
        """How long since the endpoint's last invocation, and whether that is past the limit."""
        ...

    def scale_to_min(self, settings: Settings, status: IdleStatus, apply: bool) -> list[str]:
        """Lower the endpoint to the scaling minimum; what changed (or would, without `apply`)."""
        ...

    def put_to_sleep(self, settings: Settings, status: IdleStatus, apply: bool) -> list[str]:
        """Stop paying for the idle endpoint, keeping what `wake` needs; what changed (or would,
        without `apply`), [] when nothing did."""
        ...


@runtime_checkable
class Backend(Protocol):
    """The pipeline's steps on one backend, with its store and operations: a flow builds it once
    (`dogops.backends.get_backend`) and hands it to every task of the run."""

    name: str
    settings: Settings

    @property
    def store(self) -> Store:
        """Documents, model archives and the data of record on this backend."""
        ...

    @property
    def operations(self) -> Operations:
        """Operating the running service on this backend."""
        ...

    def upload_data(self, data_dir: Path, progress: ProgressFn | None = None) -> SyncReport:
        """Sync the train/valid/test folder to the object store; skip unchanged files."""
        ...

    def tune(
        self, data: SyncReport, run_key: str, progress: ProgressFn | None = None,
        trial_wrapper: TrialWrapper | None = None,
    ) -> TuningResult:
        """Run (or attach to) the tuning job named from `run_key` and return its trials.

        `trial_wrapper(name, run)` is called around each trial the backend runs itself (the
        local backend), so the caller can show it, e.g. as a Prefect task run.
        """
        ...

    def train_best(
        self, data: SyncReport, tuning: TuningResult, run_key: str,
        progress: ProgressFn | None = None,
    ) -> TrainedModel:
        """Train the final model with the best hyperparameters (or reuse the best trial's)."""
        ...

    def deploy(
        self, model: TrainedModel, run_key: str, progress: ProgressFn | None = None
    ) -> EndpointInfo:
        """Create the endpoint, or update it in place without downtime."""
        ...

    def store_model(self, archive: Path, version: str) -> str:
        """Put a packed model.tar.gz (`dogops rollout`'s) where `deploy` reads models from;
        returns its URI for `TrainedModel.model_uri`."""
        ...

    def register_autoscaling(self, endpoint: EndpointInfo) -> ScalingInfo:
        """Register the variant as a scalable target with a target-tracking policy."""
        ...

    def secure(self, endpoint: EndpointInfo) -> SecurityReport:
        """Create or update least-privilege roles for the Lambda (and SageMaker)."""
        ...

    def deploy_lambda(
        self, endpoint: EndpointInfo, security: SecurityReport
    ) -> LambdaInfo:
        """Package the handler, create or update the function, alias and concurrency."""
        ...

    def invoke_endpoint(
        self, endpoint: EndpointInfo, body: bytes, content_type: str,
        accept: str = "application/json",
    ) -> bytes:
        """Send one request to the endpoint through boto3's sagemaker-runtime client."""
        ...

    def teardown(self, apply: bool = False) -> list[str]:
        """What the project created for the endpoint, in the order AWS deletes it.

        Returns one line per resource; deletes only when `apply` is true. Safe to re-run.
        """
        ...
