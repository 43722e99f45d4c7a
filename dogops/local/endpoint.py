"""Start, replace, find and stop local endpoint servers (the local backend's `deploy`).

Each endpoint is one detached `python -m dogops.local.endpoint_server` process (its own session,
so it outlives the flow that started it). Its record, `state_dir/endpoints/NAME.json`, is the one
source of truth for where it listens: callers read the record instead of remembering a port,
because a redeploy replaces the server without downtime, on a new port:

    start new server -> wait for /ping -> switch the record -> stop the old server (it drains)

If the new server fails its health check, it is stopped, the old one keeps serving, and
`OperationFailedError` carries the tail of the new server's log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dogops.errors import OperationFailedError, UserInputError
from dogops.local.endpoint_server import ServerOptions
from dogops.local.endpoint_server.control import control_socket_path
from dogops.local.model_store import model_store
from dogops.processes import pid_alive
from dogops.results import EndpointInfo
from dogops.settings import ScalingConfig
from dogops.waiting import poll, wait_until

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
SERVER_MODULE = "dogops.local.endpoint_server"
# Proxies never apply to our own loopback servers (the endpoint and its rollout controller).
LOOPBACK_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------
# Paths and records


def endpoints_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "endpoints"


def record_path(name: str, state_dir: Path) -> Path:
    return endpoints_dir(state_dir) / f"{name}.json"


def read_endpoint_record(name: str, state_dir: Path) -> dict[str, Any] | None:
    """The raw record (address, pid, model dir and version, log file), or None if never started."""
    path = record_path(name, state_dir)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OperationFailedError(
            f"Endpoint record {path} is unreadable ({exc}); delete it."
        ) from exc


def _write_record(name: str, state_dir: Path, record: dict[str, Any]) -> None:
    path = record_path(name, state_dir)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def _info(record: dict[str, Any], updated: bool = False) -> EndpointInfo:
    base = f"http://{record['host']}:{record['port']}"
    return EndpointInfo(
        name=record["name"],
        url=f"{base}/endpoints/{record['name']}/invocations",
        runtime_endpoint_url=base,
        model_name=record.get("model_version") or None,
        status="InService",
        updated=updated,
    )


@contextlib.contextmanager
def _name_lock(name: str, state_dir: Path) -> Iterator[None]:
    """Serialise starts/stops of one endpoint name across processes."""
    path = endpoints_dir(state_dir) / f".{name}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Processes


def _is_our_server(pid: int, name: str) -> bool:
    """Guard against pid reuse: the process must be this endpoint's server."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return SERVER_MODULE.encode() in argv and name.encode() in argv


def _stop_pid(pid: int, name: str, timeout_s: float) -> bool:
    """SIGTERM the server (it drains and stops its workers), SIGKILL its group if it hangs."""
    if not _is_our_server(pid, name):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_until(lambda: not pid_alive(pid), timeout_s=timeout_s, poll_s=0.05):
        return True
    log.warning("endpoint %s (pid %s) did not stop within %.0f s; killing it", name, pid, timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout_s=2.5, poll_s=0.05)
    return True


def _ping(base_url: str, timeout: float = 2.0) -> bool:
    try:
        with LOOPBACK_HTTP.open(f"{base_url}/ping", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def model_version_of(model_dir: Path) -> str:
    """`version` from metadata.json when present, else a short hash of model.pth."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        version = json.loads((model_dir / "metadata.json").read_text()).get("version")
        if version:
            return str(version)
    weights = model_dir / "model.pth"
    if weights.is_file():
        digest = hashlib.sha256()
        with weights.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()[:12]
    return "unknown"


def _validate(name: str, model_dir: Path) -> Path:
    if not NAME_PATTERN.match(name):
        raise UserInputError(
            f"Endpoint name {name!r} is invalid: use 1-63 letters, digits and single hyphens "
            "(SageMaker's rule)."
        )
    if not model_dir.is_dir():
        raise UserInputError(f"Model dir {model_dir} does not exist: train or unpack a model.")
    code_dir = model_dir / "code"
    if not (code_dir / "inference.py").is_file():
        raise UserInputError(
            f"{code_dir / 'inference.py'} is missing: a model dir must hold code/inference.py "
            "(SageMaker's layout) next to model.pth."
        )
    return code_dir


# --------------------------------------------------------------------------------------------
# Public API


def start_endpoint(
    name: str,
    model_dir: Path,
    state_dir: Path,
    scaling: ScalingConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
    *,
    model_version: str | None = None,
    options: dict[str, Any] | None = None,
) -> EndpointInfo:
    """Start the endpoint detached, or replace the running one without downtime.

    `model_version` defaults to `metadata.json`'s `version` (or a hash of model.pth). `options`
    overrides other `ServerOptions` fields (e.g. `{"metric_window": 5}` in tests). `env` adds
    environment variables for the server and its workers.
    """
    model_dir = Path(model_dir).resolve()
    state_dir = Path(state_dir).resolve()
    code_dir = _validate(name, model_dir)
    version = model_version or model_version_of(model_dir)
    run_dir = endpoints_dir(state_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)

    with _name_lock(name, state_dir):
        old, port = _running_server(name, state_dir, port)
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
        server = _server_options(
            name, model_dir, code_dir, host, port, run_dir / f"server-{stamp}.json", version,
            scaling, {"control_socket": str(control_socket_path(run_dir, stamp)),
                      "model_store": str(model_store(state_dir)), **(options or {})},
        )
        log_file = run_dir / f"server-{stamp}.log"
        process, address = _start_healthy(server, log_file, env, timeout_s, old)
        record = {
            "name": name,
            "pid": process.pid,
            "host": address[0],
            "port": address[1],
            "model_dir": str(model_dir),
            "code_dir": str(code_dir),
            "model_version": version,
            "log_file": str(log_file),
            "state_file": server.state_file,
            "control_socket": server.control_socket,  # the rollout commands' only way in
            "started_at": time.time(),
            "scaling": scaling.model_dump(),
            "capture_percent": server.capture_percent,
        }
        _switch_to(record, old, state_dir, server.drain_seconds)
        _prune_run_files(run_dir)
        return _info(record, updated=old is not None)


def _running_server(name: str, state_dir: Path, port: int) -> tuple[dict[str, Any] | None, int]:
    """The record of the endpoint's server still running (if any), and the port to ask for."""
    old = read_endpoint_record(name, state_dir)
    if old and not _is_our_server(int(old["pid"]), name):
        old = None
    if old and port and int(old["port"]) == port:
        # The old server holds the fixed port until the new one is healthy: take a free
        # port now, so there is no gap; the record tells callers where to go.
        log.warning("port %s is held by the running %s; the new server takes a free port",
                    port, name)
        port = 0
    return old, port


def _server_options(
    name: str, model_dir: Path, code_dir: Path, host: str, port: int, state_file: Path,
    version: str, scaling: ScalingConfig, options: dict[str, Any] | None,
) -> ServerOptions:
    """The new server's options: the scaling settings (same names), then `options`."""
    return ServerOptions(
        name=name,
        model_dir=str(model_dir),
        code_dir=str(code_dir),
        host=host,
        port=port,
        state_file=str(state_file),
        model_version=version,
        min_capacity=scaling.min_capacity,
        max_capacity=(scaling.max_capacity if scaling.enabled
                      else max(1, scaling.min_capacity)),
        target_invocations_per_instance=scaling.target_invocations_per_instance,
        scale_in_cooldown_s=scaling.scale_in_cooldown_s,
        scale_out_cooldown_s=scaling.scale_out_cooldown_s,
        **(options or {}),
    )


def _start_healthy(
    server: ServerOptions, log_file: Path, env: dict[str, str] | None, timeout_s: float,
    old: dict[str, Any] | None,
) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    """Launch the new server and wait for /ping; if it fails, stop it and say why (the old
    server, if any, is left serving)."""
    process = _launch(server, log_file, env)
    try:
        return process, _wait_healthy(process, server, timeout_s)
    except OperationFailedError as exc:
        _stop_pid(process.pid, server.name, timeout_s=10)
        with contextlib.suppress(ChildProcessError, OSError):
            process.wait(timeout=1)
        keep = f" The previous server ({old['model_version']}) keeps serving." if old else ""
        raise OperationFailedError(
            f"Endpoint {server.name}: the new server for model {server.model_version} failed its "
            f"health check: {exc}.{keep} Last lines of {log_file}:\n{_log_tail(log_file)}"
        ) from None


def _switch_to(
    record: dict[str, Any], old: dict[str, Any] | None, state_dir: Path, drain_seconds: float
) -> None:
    """Point the record at the new server, then stop the old one (it drains its requests)."""
    _write_record(record["name"], state_dir, record)
    if old:
        log.info("endpoint %s: switched to %s; stopping the old server (pid %s)",
                 record["name"], record["model_version"], old["pid"])
        _stop_pid(int(old["pid"]), record["name"], timeout_s=drain_seconds + 30)


def _prune_run_files(run_dir: Path, keep: int = 10) -> None:
    """Keep the logs and state files of the last `keep` server starts (they sort by time)."""
    for pattern in ("server-*.log", "server-*.json", "server-*.sock"):
        for stale in sorted(run_dir.glob(pattern))[:-keep]:
            stale.unlink(missing_ok=True)


def _launch(
    server: ServerOptions, log_file: Path, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    package_root = str(Path(__file__).resolve().parents[2])
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    # One share of the cores per worker (as the tuner gives each trial): torch's default of every
    # core in every worker oversubscribes the CPU and made 2 workers 5x slower than 1.
    threads = max(1, (os.cpu_count() or 1) // max(1, server.max_capacity))
    child_env.setdefault("OMP_NUM_THREADS", str(threads))
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, child_env.get("PYTHONPATH", "")) if p
    )
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, *server.to_args()],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,  # survives the caller and its Ctrl-C
            close_fds=True,
        )


def _wait_healthy(
    process: subprocess.Popen[bytes], server: ServerOptions, timeout_s: float
) -> tuple[str, int]:
    assert server.state_file is not None
    state_file = Path(server.state_file)

    def answering() -> tuple[str, int] | None:
        code = process.poll()
        if code is not None:
            raise OperationFailedError(f"the server exited with code {code}")
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            host = "127.0.0.1" if state["host"] in ("0.0.0.0", "") else state["host"]
            if _ping(f"http://{host}:{state['port']}"):
                return host, int(state["port"])
        return None

    return poll(answering, timeout_s=timeout_s, poll_s=0.1, timed_out=lambda: OperationFailedError(
        f"/ping did not answer 200 within {timeout_s:g} s"))


def read_endpoint(name: str, state_dir: Path) -> EndpointInfo | None:
    """The running endpoint `name`, or None when it was never started or its process is gone."""
    record = read_endpoint_record(name, Path(state_dir))
    if record is None or not _is_our_server(int(record["pid"]), name):
        return None
    return _info(record)


def update_record(name: str, state_dir: Path, **fields: Any) -> None:
    """Change fields of a running endpoint's record (a promoted rollout: its model)."""
    with _name_lock(name, Path(state_dir)):
        record = read_endpoint_record(name, Path(state_dir))
        if record is not None:
            _write_record(name, Path(state_dir), {**record, **fields})


def stop_endpoint(name: str, state_dir: Path, timeout_s: float = 30) -> bool:
    """Stop the endpoint and delete its record; True if a running server was stopped."""
    state_dir = Path(state_dir)
    if not endpoints_dir(state_dir).is_dir():
        return False
    with _name_lock(name, state_dir):
        record = read_endpoint_record(name, state_dir)
        if record is None:
            return False
        stopped = _stop_pid(int(record["pid"]), name, timeout_s)
        record_path(name, state_dir).unlink(missing_ok=True)
        return stopped


def list_endpoints(state_dir: Path) -> list[EndpointInfo]:
    """Running endpoints, by name."""
    directory = endpoints_dir(Path(state_dir))
    if not directory.is_dir():
        return []
    found = (read_endpoint(p.stem, state_dir) for p in sorted(directory.glob("*.json")))
    return [info for info in found if info is not None]


def endpoint_status(name: str, state_dir: Path) -> dict[str, Any]:
    """The record, whether the server runs, and its live `/dogops/status` document."""
    record = read_endpoint_record(name, Path(state_dir))
    info = read_endpoint(name, state_dir)
    status: dict[str, Any] = {"name": name, "running": info is not None, "record": record}
    if info is not None and info.runtime_endpoint_url:
        try:
            url = f"{info.runtime_endpoint_url}/dogops/status"
            with LOOPBACK_HTTP.open(url, timeout=5) as response:
                status["server"] = json.loads(response.read())
        except (OSError, ValueError) as exc:
            status["server"] = None
            status["error"] = f"status request failed: {exc}"
    return status
