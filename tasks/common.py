"""What every dogops task shares: retry policy, progress logging, skipped steps."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE

from dogops.backends import get_backend
from dogops.backends.base import Backend, StepNotSupported
from dogops.errors import retry_condition
from dogops.results import StepSkipped
from dogops.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

# Steps that call AWS (or start processes) retry transient failures only, with backoff and
# jitter; a user's mistake fails at once. The backends are idempotent, so a retry reuses what
# the failed attempt created instead of launching a duplicate. Results are not cached by
# Prefect: the backends' own checks decide what can be reused, across flow runs too.
RETRYING: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [5, 20, 60],
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_condition,
    "cache_policy": NO_CACHE,
}


def backend_for(settings: Settings) -> Backend:
    return get_backend(settings)


def progress() -> Callable[[str], None]:
    """A progress callback that writes to this task run's Prefect log."""
    return get_run_logger().info


def skippable(step: str) -> Callable[[Callable[P, R]], Callable[P, R | StepSkipped]]:
    """Turn `StepNotSupported` into a logged `StepSkipped` record: never skip silently."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R | StepSkipped]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | StepSkipped:
            try:
                return fn(*args, **kwargs)
            except StepNotSupported as exc:
                get_run_logger().warning("step %r skipped: %s", step, exc)
                return StepSkipped(step=step, reason=str(exc))

        return wrapper

    return decorate
