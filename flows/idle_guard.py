"""idle-guard: an endpoint nobody called for `max_idle_hours` is put to sleep (default), scaled to
its minimum, or torn down.

`sleep` stops paying: on AWS the endpoint is deleted (models, configs, Lambda and the registry
stay; the registry says it is asleep), locally its server and workers stop. `dogops wake` (the
`wake` flow), a rollback or the next train-and-deploy brings the live version back under the same
name, so the Lambda needs no edit. Scheduled hourly by the deployments (which apply). Called
directly it is a dry run by default (`apply=False`): the `idle-guard` artifact says what it found
and what it would do; a sleep also leaves a `cost-estimate` table of what it saves. Idleness
comes from CloudWatch's `Invocations` metric on AWS and from the endpoint server's invocation
count locally (see `dogops.idle`).
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from dogops.backends import get_backend
from dogops.idle import IdleStatus
from dogops.settings import DEFAULT_ENDPOINT, BackendName, EndpointConfig, load_settings
from tasks.live_lock import live_model_lock
from tasks.operations import (
    IDLE_KEY,
    check_idle,
    mark_asleep,
    put_to_sleep,
    report_teardown,
    run_namer,
    scale_to_min,
    teardown_resources,
)

IdleAction = Literal["sleep", "scale-to-min", "teardown"]


class IdleGuardResult(BaseModel):
    status: IdleStatus
    action: IdleAction
    applied: bool
    changes: list[str]


def _markdown(status: IdleStatus, action: IdleAction, apply: bool, changes: list[str]) -> str:
    lines = [f"# Idle guard: `{status.endpoint_name}` ({status.backend})", ""]
    if not status.exists:
        return "\n".join([*lines, f"No endpoint to guard: {status.detail}."])
    state = "idle" if status.idle else "in use"
    lines.append(
        f"**{state}**: last activity {status.last_active_at:%Y-%m-%d %H:%M} UTC, "
        f"{status.idle_hours:.2f} h ago (limit {status.max_idle_hours:g} h); {status.detail}."
    )
    if status.idle:
        verb = "Done" if apply else "Would do (dry run; apply=True acts)"
        lines += ["", f"{verb}: {action}"]
        lines += [f"- {c}" for c in changes] or ["- nothing to change"]
        if action == "sleep":
            lines += ["", "Asleep: `dogops wake` (or a rollback, or the next train-and-deploy) "
                      "brings the live model back under the same name; see the `cost-estimate` "
                      "artifact for what sleeping saves."]
    return "\n".join(lines)


@flow(name="idle-guard", flow_run_name=run_namer("idle-guard"), log_prints=True)
def idle_guard(
    max_idle_hours: Annotated[float, Field(ge=0)] = 24,
    action: IdleAction = "sleep",
    apply: bool = False,
    backend: BackendName | None = None,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    state_dir: str | None = None,
) -> IdleGuardResult:
    """Put to sleep (default), scale to the minimum, or tear down an endpoint idle for
    `max_idle_hours` (0: now)."""
    settings = load_settings(backend=backend, endpoint=endpoint, state_dir=state_dir)
    platform = get_backend(settings)  # built once; every task of this run gets it
    status = check_idle(platform, max_idle_hours)
    changes: list[str] = []
    # A dry run changes nothing, so it need not wait for a run that changes the endpoint.
    with live_model_lock(settings) if apply and status.idle else contextlib.nullcontext():
        if apply and status.idle:
            # The slot may have been another run's (a deploy, a wake) while this one waited:
            # judge again on what serves now, so a model just deployed is not put to sleep.
            status = check_idle(platform, max_idle_hours)
        if status.idle and action == "sleep":
            changes = put_to_sleep(platform, status, apply)
            if apply and changes:
                mark_asleep(platform, status)
        elif status.idle and action == "teardown":
            changes = teardown_resources(platform, apply)
            report_teardown(changes, apply, settings.backend)
        elif status.idle:
            changes = scale_to_min(platform, status, apply)
    get_run_logger().info("idle=%s action=%s apply=%s changes=%s", status.idle, action, apply,
                          changes)
    create_markdown_artifact(key=IDLE_KEY, markdown=_markdown(status, action, apply, changes),
                             description="Idle check of the endpoint")
    return IdleGuardResult(status=status, action=action, applied=apply and status.idle,
                           changes=changes)


if __name__ == "__main__":
    idle_guard()
