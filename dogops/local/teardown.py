"""Teardown on the local backend: stop the endpoint servers and remove the Lambda packages.

What the local backend runs for an endpoint is one detached server process per endpoint (with its
worker processes) and, for the Lambda, a packaged zip plus its record under `lambda/<function>/`
(the local Lambda runs on demand, so no process stays up). Teardown lists those, and with
`apply=True` stops and removes them. The data store, trained models and the registry stay, so a
rollback or a redeploy can bring the endpoint back. Safe to re-run: what is gone is not listed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dogops.local import endpoint as local_endpoint
from dogops.settings import Settings


def _endpoint_names(state_dir: Path) -> list[str]:
    """Every endpoint with a record, running or not (a stale record is cleaned up too)."""
    folder = local_endpoint.endpoints_dir(state_dir)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))


def teardown_local(settings: Settings, apply: bool = False) -> list[str]:
    """`endpoint:NAME ...` and `lambda-package:NAME ...` lines; deletes them when `apply`."""
    state_dir = settings.state_dir.expanduser().resolve()
    done: list[str] = []
    for name in _endpoint_names(state_dir):
        record = local_endpoint.read_endpoint_record(name, state_dir) or {}
        running = local_endpoint.read_endpoint(name, state_dir) is not None
        what = (f"endpoint:{name} (pid {record.get('pid')}, model {record.get('model_version')})"
                if running else f"endpoint-record:{name} (process already gone)")
        if apply:
            local_endpoint.stop_endpoint(name, state_dir)
        done.append(what)
    lambda_root = state_dir / "lambda"
    if lambda_root.is_dir():
        for folder in sorted(p for p in lambda_root.iterdir() if p.is_dir()):
            if apply:
                shutil.rmtree(folder, ignore_errors=True)
            done.append(f"lambda-package:{folder.name}")
    return done
