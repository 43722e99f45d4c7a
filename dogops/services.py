"""The local Prefect server that `make demo` and `make serve` start (or reuse) on 127.0.0.1.

Its database and logs live under `<state_dir>/prefect/`, so the project never touches a user's
own `~/.prefect`. Started detached, so the UI stays up after the demo finishes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from dogops.errors import OperationFailedError
from dogops.processes import pid_alive
from dogops.waiting import poll, wait_until

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


def api_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}/api"


def is_healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def prefect_env(state_dir: Path) -> dict[str, str]:
    home = (state_dir / "prefect").resolve()
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }


def start_prefect_server(
    state_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout_s: float = 120
) -> str:
    """Start (or reuse) the Prefect server; return its API URL once healthy."""
    url = api_url(host, port)
    if is_healthy(url):
        return url
    home = state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("ab")
    env = {**os.environ, **prefect_env(state_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (home / "server.pid").write_text(str(proc.pid))

    def healthy_url() -> str | None:
        if proc.poll() is not None:
            raise OperationFailedError(
                f"Prefect server exited with code {proc.returncode}; see {home / 'server.log'}"
            )
        return url if is_healthy(url) else None

    return poll(healthy_url, timeout_s=timeout_s, poll_s=1, timed_out=lambda: OperationFailedError(
        f"Prefect server not healthy at {url} after {timeout_s:.0f} s; see {home / 'server.log'}"
    ))


def stop_prefect_server(state_dir: Path) -> bool:
    pid_file = state_dir / "prefect" / "server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    if not wait_until(lambda: not pid_alive(pid), timeout_s=10, poll_s=0.2):
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def configured_api_url() -> str | None:
    """The Prefect API this process would report to now (env, profile or a test harness)."""
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


@contextlib.contextmanager
def project_prefect(state_dir: Path) -> Iterator[str]:
    """Report flow runs to the Prefect server this process is configured for, else to the
    project's server on 127.0.0.1:4200 (started when it is not running, as `make demo` does), so
    an engineer's `dogops run` shows in the same UI as the deployments' runs. Yields the API URL.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = configured_api_url()
    if url:
        yield url
        return
    root = Path(state_dir).expanduser().resolve()
    for key, value in prefect_env(root).items():
        os.environ.setdefault(key, value)
    url = start_prefect_server(root)
    os.environ["PREFECT_API_URL"] = url  # for the subprocesses the flows start
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def export_hint(url: str) -> str:
    """The line to paste into another shell so plain `prefect` commands reach the same server."""
    return f"export PREFECT_API_URL={url}"


def prefect_command_hint(url: str, *args: str) -> str:
    """A `prefect` command line that works as printed in a fresh shell (it carries the URL)."""
    import shlex

    prefect = Path(sys.executable).with_name("prefect")
    return " ".join([f"PREFECT_API_URL={url}", shlex.quote(str(prefect)),
                     *(shlex.quote(a) for a in args)])
