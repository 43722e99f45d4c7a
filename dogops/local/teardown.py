"""Teardown on the local backend: stop the endpoint servers and remove the Lambda packages.

What the local backend runs for an endpoint is one detached server process per endpoint (with its
worker processes) and, for the Lambda, a packaged zip plus its record under `lambda/<function>/`
(the local Lambda runs on demand, so no process stays up). Teardown lists those, and with
`apply=True` stops and removes them. The data store, trained models and the registry stay, so a
rollback or a redeploy can bring the endpoint back. Safe to re-run: what is gone is not listed.

Only what dogops made and recorded is touched, whatever state dir a run is given (a teardown from
the UI may name any folder): an endpoint record must be dogops's (its own name and a pid inside;
the pid is signalled only when it is our server), and under `lambda/` only a folder holding the
`function.json` that `deploy_lambda` writes for that function, and in it only that record and the
`<sha256[:16]>.zip` packages, are deleted. Anything else there, links included, is listed as left
alone; a folder is removed only once nothing else is left in it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from dogops.errors import DogopsError
from dogops.local import endpoint as local_endpoint
from dogops.results import LambdaInfo
from dogops.settings import Settings

log = logging.getLogger(__name__)


PACKAGE_NAME = re.compile(r"^[0-9a-f]{16}\.zip$")  # deploy_lambda's `<sha256[:16]>.zip`
FUNCTION_RECORD = "function.json"


def _endpoint_names(state_dir: Path) -> list[str]:
    """Every endpoint with a record of ours, running or not (a stale record is cleaned up too)."""
    folder = local_endpoint.endpoints_dir(state_dir)
    if not folder.is_dir() or folder.is_symlink():
        return []
    names = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".") or path.is_symlink():
            continue
        with contextlib.suppress(DogopsError):
            record = local_endpoint.read_endpoint_record(path.stem, state_dir)
            if record and record.get("name") == path.stem and isinstance(record.get("pid"), int):
                names.append(path.stem)
    return names


def _our_lambda_files(folder: Path) -> list[Path] | None:
    """The files `deploy_lambda` wrote in `folder` (packages, then its record), or None when
    `folder` is not one of its function folders."""
    record = folder / FUNCTION_RECORD
    if folder.is_symlink() or not folder.is_dir() or record.is_symlink():
        return None
    try:
        info = LambdaInfo.model_validate_json(record.read_bytes())
    except (OSError, ValueError):
        return None
    if info.function_name != folder.name:
        return None
    packages = sorted(p for p in folder.iterdir()
                      if PACKAGE_NAME.match(p.name) and p.is_file() and not p.is_symlink())
    return [*packages, record]


def _teardown_lambdas(lambda_root: Path, apply: bool) -> list[str]:
    done: list[str] = []
    if lambda_root.is_symlink() or not lambda_root.is_dir():
        return done
    for folder in sorted(lambda_root.iterdir()):
        ours = _our_lambda_files(folder)
        if ours is None:
            if folder.is_dir() or folder.is_symlink():
                log.info("left %s alone: no dogops function record in it", folder)
            continue
        if apply:
            for path in ours:
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: someone else's files stay
                folder.rmdir()
        done.append(f"lambda-package:{folder.name}")
    return done


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
    return done + _teardown_lambdas(state_dir / "lambda", apply)
