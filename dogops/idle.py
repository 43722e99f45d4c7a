"""Is the endpoint idle? How long since its last invocation, on either backend; and the two
actions that stop (or lower) its cost.

Each backend answers through its `dogops.backends.Operations`:
    aws:   CloudWatch `AWS/SageMaker` `Invocations` over the last `max_idle_hours`; a fresh
           deploy is never "idle" (`dogops.aws.idle`).
    local: the endpoint server's `/dogops/status` invocation count, compared with what the last
           check saw (`dogops.local.idle`).

`put_to_sleep` is the default action, the one that stops paying: on AWS it deletes the endpoint
(only one tagged as dogops's; its scaling target first, as AWS needs) and keeps the models,
endpoint configs, Lambda and registry, so `wake` (or the next deploy) brings it back under the same
name; locally it stops the endpoint's server and workers. `scale_to_min` is the gentler action: on
AWS it sets the variant's desired instance count to the scaling minimum (which still costs that
minimum); the local server already scales its workers in to the minimum by itself.

`operations` is the flow run's `backend.operations`; without it, the factory builds them from
`settings.backend`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from dogops.backends import Operations, operations_for
from dogops.errors import UserInputError
from dogops.results import IdleStatus
from dogops.settings import Settings

__all__ = ["IdleStatus", "idle_status", "put_to_sleep", "scale_to_min"]


def _check_hours(max_idle_hours: float) -> None:
    if not (math.isfinite(max_idle_hours) and max_idle_hours >= 0):
        raise UserInputError(
            f"max_idle_hours must be a number >= 0 (0: idle now), got {max_idle_hours}."
        )


def idle_status(
    settings: Settings, max_idle_hours: float, now: datetime | None = None,
    operations: Operations | None = None,
) -> IdleStatus:
    """The endpoint's idle status on `settings.backend`."""
    _check_hours(max_idle_hours)
    return (operations or operations_for(settings.backend)).idle_status(
        settings, max_idle_hours, now or datetime.now(UTC)
    )


def scale_to_min(
    settings: Settings, status: IdleStatus, apply: bool, operations: Operations | None = None
) -> list[str]:
    """Lower the variant to the scaling minimum; what changed (or would, without `apply`)."""
    return (operations or operations_for(settings.backend)).scale_to_min(settings, status, apply)


def put_to_sleep(
    settings: Settings, status: IdleStatus, apply: bool, operations: Operations | None = None
) -> list[str]:
    """Stop paying for an idle endpoint: delete it on AWS (only if tagged as dogops's), stop its
    server and workers locally. What changed (or would, without `apply`); [] when nothing did."""
    return (operations or operations_for(settings.backend)).put_to_sleep(settings, status, apply)
