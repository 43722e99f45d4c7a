"""The aws backend's store: documents (the registry) as S3 objects under the project's prefix, and
model archives downloaded from `s3://` URIs."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.aws.data_source import download_test_split, refresh_s3
from dogops.aws.objects import S3Objects
from dogops.aws.training import split_s3_uri
from dogops.errors import ConcurrentUpdateError, UserInputError
from dogops.results import SyncReport
from dogops.settings import Settings
from dogops.waiting import poll

# S3's answers when a conditional PUT loses: the ETag moved on (412), or another conditional
# write to the same key was in flight (409).
CONFLICTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
DEFAULT_ATTEMPTS = 5


class S3RegistryStore:
    """One object, changed only by conditional PUTs: a write names the ETag it read (If-Match),
    or If-None-Match: * for the first one, so two writers at once cannot silently lose one's
    change; the loser reads again and re-applies its change, a bounded number of times."""

    def __init__(self, s3: Any, bucket: str, key: str, attempts: int = DEFAULT_ATTEMPTS) -> None:
        self.s3, self.bucket, self.key, self.attempts = s3, bucket, key, attempts
        self.uri = f"s3://{bucket}/{key}"

    def read(self) -> bytes | None:
        return self._read()[0]

    def _read(self) -> tuple[bytes | None, str | None]:
        """The body and its ETag, or (None, None) before the first write."""
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
                return None, None
            raise
        return bytes(answer["Body"].read()), str(answer["ETag"])

    def update(self, change: Callable[[bytes | None], bytes | None]) -> None:
        tries = iter(range(1, self.attempts + 1))

        def attempt() -> bool | None:
            """True once written (or nothing to write); None when another writer got in first."""
            current, etag = self._read()
            body = change(current)
            if body is None:
                return True
            condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                   ContentType="application/json", **condition)
                return True
            except ClientError as exc:
                if error_code(exc) == "NoSuchBucket":
                    raise self._no_bucket() from exc
                if error_code(exc) not in CONFLICTS:
                    raise
            if next(tries, None) is None:
                raise self._lost()
            return None

        next(tries)
        # Jittered pauses, so two writers that just collided do not collide again in lock-step.
        poll(attempt, timeout_s=math.inf, poll_s=0.2, timed_out=self._lost,
             sleep=lambda s: time.sleep(s * random.random()))

    def _lost(self) -> ConcurrentUpdateError:
        return ConcurrentUpdateError(
            f"{self.uri} changed under us {self.attempts} times in a row (another run is "
            "writing the registry at the same time), so this change was NOT recorded: re-run "
            "the step (a Prefect retry does) once the other run has finished."
        )

    def _no_bucket(self) -> UserInputError:
        return UserInputError(
            f"bucket {self.bucket} does not exist, so the registry cannot be written to "
            f"{self.uri}: run train-and-deploy first (it creates the bucket) or set aws.bucket."
        )


class S3Store:
    """`dogops.backends.Store` on S3: documents under `<bucket>/<prefix>/`."""

    def __init__(self, settings: Settings, clients: AwsClients | None = None) -> None:
        self.settings = settings
        self.clients = clients or AwsClients(settings.aws)

    def document(self, name: str) -> S3RegistryStore:
        key = f"{self.settings.aws.prefix.strip('/')}/{name}".lstrip("/")
        return S3RegistryStore(self.clients.client("s3"), self.settings.aws.bucket, key,
                               self.settings.aws.registry_write_attempts)

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
