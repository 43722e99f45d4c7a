"""The aws backend's store: documents (the registry) as S3 objects under the project's prefix, and
model archives downloaded from `s3://` URIs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.aws.data_source import download_test_split, refresh_s3
from dogops.aws.objects import S3Objects
from dogops.aws.training import split_s3_uri
from dogops.errors import UserInputError
from dogops.results import SyncReport
from dogops.settings import Settings


class S3RegistryStore:
    """One object; S3 replaces an object atomically on PUT, so readers see old or new, not half."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.uri = f"s3://{bucket}/{key}"

    def read(self) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
                return None
            raise

    def write(self, body: bytes) -> None:
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json"
            )
        except ClientError as exc:
            if error_code(exc) == "NoSuchBucket":
                raise UserInputError(
                    f"bucket {self.bucket} does not exist, so the registry cannot be written to "
                    f"{self.uri}: run train-and-deploy first (it creates the bucket) or set "
                    "aws.bucket."
                ) from exc
            raise

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        # Promotions of one project are serialised by the flows (one endpoint, one run at a
        # time); a cross-host lock would need DynamoDB, which this project does not use.
        yield


class S3Store:
    """`dogops.backends.Store` on S3: documents under `<bucket>/<prefix>/`."""

    def __init__(self, settings: Settings, clients: AwsClients | None = None) -> None:
        self.settings = settings
        self.clients = clients or AwsClients(settings.aws)

    def document(self, name: str) -> S3RegistryStore:
        key = f"{self.settings.aws.prefix.strip('/')}/{name}".lstrip("/")
        return S3RegistryStore(self.clients.client("s3"), self.settings.aws.bucket, key)

    def objects(self, bucket: str) -> S3Objects:
        """The bucket read by key with the flow's own credentials."""
        return S3Objects(self.clients.client("s3"), bucket)

    def archive_file(self, uri: str, scratch: Path) -> Path | None:
        """Download the archive at an `s3://` URI to `scratch`; None when it does not exist (e.g.
        on moto, which never writes one)."""
        if not uri.startswith("s3://"):
            raise UserInputError(f"model URI {uri!r} is neither file:// nor s3://.")
        bucket, key = split_s3_uri(uri)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.clients.client("s3").download_file(bucket, key, str(scratch))
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                return None
            raise
        return scratch

    def data_now(self, uri: str) -> SyncReport:
        return refresh_s3(self.clients, uri)

    def test_split(self, data: SyncReport) -> Path:
        cache = self.settings.state_dir.expanduser().resolve() / "data-cache"
        return download_test_split(self.clients, data.uri, cache)
