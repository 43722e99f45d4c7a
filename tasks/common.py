"""What every dogops task shares: retry policy, progress logging, skipped steps.

A flow builds its backend once (`dogops.backends.get_backend(settings)`) and hands it to its
tasks as their first argument, so a run's steps share one set of AWS clients (and the execution
role it resolved) and no task chooses a backend itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE

from dogops.backends.base import StepNotSupported
from dogops.errors import retry_condition
from dogops.results import StepSkipped

P = ParamSpec("P")
R = TypeVar("R")

# Steps that call AWS (or start processes) retry transient failures only, with backoff and
# jitter; a user's mistake fails at once. The backends are idempotent, so a retry reuses what
# the failed attempt created instead of launching a duplicate. Results are not cached by
# Prefect: the backends' own checks decide what can be reused, across flow runs too. (Nor could
# they be: the backend a task gets holds live clients, which have no stable hash.)
RETRYING: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [5, 20, 60],
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_condition,
    "cache_policy": NO_CACHE,
}


def flow_run_id() -> str | None:
    """The current flow run's id (what the registry records a change under), None outside one."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


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
