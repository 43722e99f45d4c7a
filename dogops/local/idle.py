"""The local backend's idle check and sleep (`dogops.idle`): the endpoint server's invocation
count, and stopping its server and workers.

The server reports a total, not a time, so each check keeps what it saw in
`<state_dir>/idle-guard/<name>.json`: a total that grew means "active now"; an unchanged total
keeps the last active time; a server that never answered a request has been idle since it started.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dogops.local.endpoint import endpoint_status, stop_endpoint
from dogops.local.store import write_atomic
from dogops.results import IdleStatus
from dogops.settings import Settings


def _observation_path(state_dir: Path, name: str) -> Path:
    return state_dir / "idle-guard" / f"{name}.json"


def local_idle_status(settings: Settings, max_idle_hours: float, now: datetime) -> IdleStatus:
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
    return status.finish(last_active, now)


def scale_to_min(status: IdleStatus) -> list[str]:
    """Nothing to change: the local server scales its workers in to the minimum by itself."""
    if not status.exists:
        return []
    return ["local server scales its workers in to the minimum itself"]


def put_to_sleep(settings: Settings, status: IdleStatus, apply: bool) -> list[str]:
    """Stop the endpoint's server and workers (model and registry stay)."""
    if not status.exists:
        return []
    name = status.endpoint_name
    if apply:
        stop_endpoint(name, settings.state_dir.expanduser().resolve())
    workers = status.current_instances
    return [f"endpoint-workers:{name} ({workers} workers; model and registry kept)"]
