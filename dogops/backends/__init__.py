"""Backends: the interfaces (`Backend`, the pipeline's steps; `Store`, documents and model
archives) and the one factory that picks `local` or `aws` for them (`get_backend`, `store_for`).
Nothing outside `dogops/local/`, `dogops/aws/` and this factory should choose a backend."""

from __future__ import annotations

from dogops.backends.base import Backend, DocumentStore, ObjectReader, Operations, Store
from dogops.settings import Settings


def get_backend(settings: Settings) -> Backend:
    """The backend named by `settings.backend`; flows never branch on it."""
    if settings.backend == "aws":
        from dogops.aws.backend import AwsBackend

        return AwsBackend(settings)
    from dogops.local.backend import LocalBackend

    return LocalBackend(settings)


def store_for(settings: Settings) -> Store:
    """The document and model-archive store of `settings.backend`."""
    if settings.backend == "aws":
        from dogops.aws.documents import S3Store

        return S3Store(settings)
    from dogops.local.documents import LocalStore

    return LocalStore(settings.state_dir)


def operations_for(backend: str) -> Operations:
    """What operating the service on backend `backend` ("local" or "aws") needs to know."""
    if backend == "aws":
        from dogops.aws.operations import AwsOperations

        return AwsOperations()
    from dogops.local.operations import LocalOperations

    return LocalOperations()


__all__ = [
    "Backend", "DocumentStore", "ObjectReader", "Operations", "Store", "get_backend",
    "operations_for", "store_for",
]
