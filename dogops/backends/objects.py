"""Reading a backend's object store (the project's bucket, or its local folder) by key.

One small protocol, `ObjectReader`, for readers that take objects either backend wrote in the
same layout (the endpoint's data captures, the data manifest); `objects_for` picks the
implementation, so callers never branch on the backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from dogops.settings import Settings


class ObjectReader(Protocol):
    """Read-only view of the project's bucket: S3, or its folder in the local object store."""

    uri: str  # s3://<bucket>, or the folder's file:// URI

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix` (a plain string prefix, as S3 lists them), in key order."""
        ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...


def objects_for(settings: Settings) -> ObjectReader:
    """The bucket of `settings.backend`."""
    if settings.backend == "aws":
        from dogops.aws.clients import AwsClients
        from dogops.aws.objects import S3Objects

        return S3Objects(AwsClients(settings.aws).client("s3"), settings.aws.bucket)
    from dogops.local.objects import LocalObjects

    return LocalObjects(settings.state_dir.expanduser().resolve() / "store" / settings.aws.bucket)
