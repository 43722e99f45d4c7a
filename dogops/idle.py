"""Is the endpoint idle? How long since its last invocation, on either backend.

    aws:   CloudWatch `AWS/SageMaker` `Invocations` (Sum) for EndpointName/VariantName over the
           last `max_idle_hours`; with no invocation in that window the endpoint has been idle
           since it was last created or updated (so a fresh deploy is never "idle").
    local: the endpoint server's `/dogops/status` invocation count. The server reports a total,
           not a time, so each check keeps what it saw in `<state_dir>/idle-guard/<name>.json`:
           a total that grew means "active now"; an unchanged total keeps the last active time; a
           server that never answered a request has been idle since it started.

`put_to_sleep` is the default action, the one that stops paying: on AWS it deletes the endpoint
(only one tagged as dogops's; its scaling target first, as AWS needs) and keeps the models,
endpoint configs, Lambda and registry, so `wake` (or the next deploy) brings it back under the same
name; locally it stops the endpoint's server and workers. `scale_to_min` is the gentler action: on
AWS it sets the variant's desired instance count to the scaling minimum (which still costs that
minimum); the local server already scales its workers in to the minimum by itself.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dogops.errors import UserInputError
from dogops.settings import Settings

VARIANT = "AllTraffic"
MAX_DATAPOINTS = 1440  # CloudWatch's limit per GetMetricStatistics call


class IdleStatus(BaseModel):
    endpoint_name: str
    backend: str
    exists: bool
    idle: bool = False
    max_idle_hours: float
    last_active_at: datetime | None = None
    idle_hours: float | None = None
    invocations_in_window: int | None = None
    current_instances: int | None = None
    min_instances: int = 1
    detail: str = ""


def _check_hours(max_idle_hours: float) -> None:
    if not (math.isfinite(max_idle_hours) and max_idle_hours >= 0):
        raise UserInputError(
            f"max_idle_hours must be a number >= 0 (0: idle now), got {max_idle_hours}."
        )


def _finish(status: IdleStatus, last_active: datetime, now: datetime) -> IdleStatus:
    hours = max(0.0, (now - last_active).total_seconds() / 3600)
    status.last_active_at = last_active
    status.idle_hours = round(hours, 3)
    status.idle = hours >= status.max_idle_hours
    return status


# --------------------------------------------------------------------------------------------
# local


def _observation_path(state_dir: Path, name: str) -> Path:
    return state_dir / "idle-guard" / f"{name}.json"


def local_idle_status(settings: Settings, max_idle_hours: float, now: datetime) -> IdleStatus:
    from dogops.local.endpoint import endpoint_status
    from dogops.local.store import write_atomic

    name = settings.endpoint.name
    state_dir = settings.state_dir.expanduser().resolve()
    status = IdleStatus(endpoint_name=name, backend="local", exists=False,
                        max_idle_hours=max_idle_hours, min_instances=settings.scaling.min_capacity)
    live = endpoint_status(name, state_dir)
    server: dict[str, Any] | None = live.get("server")
    record: dict[str, Any] = live.get("record") or {}
    if not live.get("running") or not server:
        status.detail = live.get("error") or f"endpoint {name} is not running"
        return status
    status.exists = True
    total = int(server.get("invocations", {}).get("total", 0))
    status.invocations_in_window = total
    status.current_instances = int(server.get("workers", {}).get("ready", 0))
    started = datetime.fromtimestamp(float(record.get("started_at", now.timestamp())), UTC)

    path = _observation_path(state_dir, name)
    try:
        seen = json.loads(path.read_text())
    except (OSError, ValueError):
        seen = {}
    reported = server.get("invocations", {}).get("last_invocation_at")
    if reported:
        last_active, how = datetime.fromtimestamp(float(reported), UTC), "reported by the server"
    elif seen.get("pid") == record.get("pid") and "total" in seen:
        if total > int(seen["total"]):
            last_active, how = now, f"{total - int(seen['total'])} invocations since last check"
        else:
            last_active = datetime.fromisoformat(seen["last_active_at"])
            how = "no invocations since the last check"
    elif total == 0:
        last_active, how = started, "never invoked since the server started"
    else:
        last_active, how = now, "first check of this server; it has answered requests"
    write_atomic(path, json.dumps({"pid": record.get("pid"), "total": total,
                                   "last_active_at": last_active.isoformat()}).encode())
    status.detail = f"{total} invocations in total; {how}"
    return _finish(status, last_active, now)


# --------------------------------------------------------------------------------------------
# aws


def _period_s(window_s: float) -> int:
    """A whole-minute period that keeps the window under CloudWatch's datapoint limit."""
    minutes = max(1, math.ceil(window_s / MAX_DATAPOINTS / 60))
    return max(60, minutes * 60) if window_s < 86400 else max(3600, minutes * 60)


def aws_idle_status(
    clients: Any, settings: Settings, max_idle_hours: float, now: datetime
) -> IdleStatus:
    from dogops.aws.endpoint import describe_endpoint

    name = settings.endpoint.name
    status = IdleStatus(endpoint_name=name, backend="aws", exists=False,
                        max_idle_hours=max_idle_hours, min_instances=settings.scaling.min_capacity)
    described = describe_endpoint(clients, name)
    if described is None:
        status.detail = f"endpoint {name} does not exist"
        return status
    status.exists = True
    variants = described.get("ProductionVariants") or []
    variant = next((v for v in variants if v.get("VariantName") == VARIANT), None)
    if variant is not None and variant.get("CurrentInstanceCount") is not None:
        status.current_instances = int(variant["CurrentInstanceCount"])
    # CloudWatch needs StartTime < EndTime: max_idle_hours=0 ("idle now") still looks back a
    # minute, which only decides the detail text (0 h idle is always past the limit).
    window = timedelta(hours=max(max_idle_hours, 1 / 60))
    period = _period_s(window.total_seconds())
    points = clients.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="Invocations",
        Dimensions=[{"Name": "EndpointName", "Value": name},
                    {"Name": "VariantName", "Value": VARIANT}],
        StartTime=now - window, EndTime=now, Period=period, Statistics=["Sum"],
    ).get("Datapoints", [])
    used = [p for p in points if float(p.get("Sum", 0)) > 0]
    status.invocations_in_window = int(sum(float(p["Sum"]) for p in used))
    changed = described.get("LastModifiedTime") or described.get("CreationTime") or now
    if used:
        # A datapoint's timestamp starts its period: the last call was at most a period later.
        last_active = min(now, max(p["Timestamp"] for p in used) + timedelta(seconds=period))
        how = f"{status.invocations_in_window} invocations in the last {max_idle_hours:g} h"
    else:
        last_active = changed
        how = f"no invocations in the last {max_idle_hours:g} h (CloudWatch)"
    status.detail = how
    return _finish(status, max(last_active, changed), now)


# --------------------------------------------------------------------------------------------
# either


def idle_status(
    settings: Settings, max_idle_hours: float, now: datetime | None = None, clients: Any = None
) -> IdleStatus:
    """The endpoint's idle status on `settings.backend`."""
    _check_hours(max_idle_hours)
    now = now or datetime.now(UTC)
    if settings.backend == "aws":
        from dogops.aws.clients import AwsClients

        return aws_idle_status(clients or AwsClients(settings.aws), settings, max_idle_hours, now)
    return local_idle_status(settings, max_idle_hours, now)


def scale_to_min(
    settings: Settings, status: IdleStatus, apply: bool, clients: Any = None
) -> list[str]:
    """Lower the variant to the scaling minimum; what changed (or would, without `apply`)."""
    if not status.exists:
        return []
    target = settings.scaling.min_capacity
    if status.backend == "local":
        return []  # the local server scales its workers in to the minimum by itself
    if settings.endpoint.mode == "serverless":
        return []  # no instances: an idle serverless endpoint costs nothing already
    if status.current_instances is not None and status.current_instances <= target:
        return []
    if apply:
        from dogops.aws.clients import AwsClients
        from dogops.aws.ownership import require_endpoint_ours

        sm = (clients or AwsClients(settings.aws)).client("sagemaker")
        # The ownership rule: only an endpoint tagged as this project's is changed.
        require_endpoint_ours(
            sm, sm.describe_endpoint(EndpointName=status.endpoint_name), settings.project
        )
        sm.update_endpoint_weights_and_capacities(
            EndpointName=status.endpoint_name,
            DesiredWeightsAndCapacities=[{"VariantName": VARIANT, "DesiredInstanceCount": target}],
        )
    return [f"endpoint-capacity:{status.endpoint_name}:{status.current_instances}->{target}"]


def put_to_sleep(
    settings: Settings, status: IdleStatus, apply: bool, clients: Any = None
) -> list[str]:
    """Stop paying for an idle endpoint: delete it on AWS (only if tagged as dogops's), stop its
    server and workers locally. What changed (or would, without `apply`); [] when nothing did."""
    name = status.endpoint_name
    if not status.exists:
        return []
    if status.backend == "local":
        from dogops.local.endpoint import stop_endpoint

        if apply:
            stop_endpoint(name, settings.state_dir.expanduser().resolve())
        workers = status.current_instances
        return [f"endpoint-workers:{name} ({workers} workers; model and registry kept)"]
    from dogops.aws import autoscaling
    from dogops.aws.clients import AwsClients
    from dogops.aws.endpoint import describe_endpoint
    from dogops.aws.ownership import require_endpoint_ours

    clients = clients or AwsClients(settings.aws)
    sm = clients.client("sagemaker")
    described = describe_endpoint(clients, name)
    if described is None:
        return []
    # The ownership rule: idle-guard deletes only an endpoint tagged as this project's.
    require_endpoint_ours(sm, described, settings.project)
    if apply:
        autoscaling.deregister_autoscaling(clients, name, VARIANT)
        if described["EndpointStatus"] != "Deleting":
            sm.delete_endpoint(EndpointName=name)
    return [f"scalable-target:{name}", f"endpoint:{name} (config, model and registry kept)"]
