"""Backends: the interfaces (`Backend`, the pipeline's steps; `Store`, documents and model
archives, and the data of record; `Operations`, the running service) and the one factory that
picks `local` or `aws` for them (`get_backend`, `store_for`, `operations_for`).
Nothing outside `dogops/local/`, `dogops/aws/` and this factory should choose a backend.

A flow calls `get_backend` once and hands the result (steps, `.store`, `.operations`) to its
tasks; `store_for` and `operations_for` serve callers outside a flow run (the CLI, the plain
functions' defaults)."""

from __future__ import annotations

from typing import Any

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


def operations_for(backend: str, clients: Any = None) -> Operations:
    """Operating the service on backend `backend` ("local" or "aws"); `clients` are AWS clients
    to reuse (the aws backend's own, or a test's), else each call builds them from its settings."""
    if backend == "aws":
        from dogops.aws.operations import AwsOperations

        return AwsOperations(clients)
    from dogops.local.operations import LocalOperations

    return LocalOperations()


__all__ = [
    "Backend", "DocumentStore", "ObjectReader", "Operations", "Store", "get_backend",
    "operations_for", "store_for",
]
