"""Backends: one interface (`Backend`), two implementations (`local`, `aws`)."""

from __future__ import annotations

from dogops.backends.base import Backend
from dogops.settings import Settings


def get_backend(settings: Settings) -> Backend:
    """The backend named by `settings.backend`; flows never branch on it."""
    if settings.backend == "aws":
        from dogops.aws.backend import AwsBackend

        return AwsBackend(settings)
    from dogops.local.backend import LocalBackend

    return LocalBackend(settings)


__all__ = ["Backend", "get_backend"]
