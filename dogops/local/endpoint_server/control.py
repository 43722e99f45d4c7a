"""The control channel: the rollout controller's commands, on a Unix socket, off the serving port.

The serving port speaks the SageMaker container contract, and nothing on it changes what the
server serves. The commands that do (`POST /dogops/rollout/{start,shift,promote,rollback}`) are
answered only here, on a Unix domain socket in the endpoint's run folder (folder 0700, socket
0600): only processes of the user who runs dogops can connect, so neither a web page the
operator visits (a cross-site POST, DNS rebinding: a browser cannot open a Unix socket) nor
another local user can reach it. `GET /dogops/status` answers here too (the controller reads its
figures here); the serving port keeps a read-only copy for health checks, idle-guard and the CLI.

As defence in depth a command must also say `Host: localhost`, carry no `Origin` (dogops's client
never sends one; a browser always does) and `Content-Type: application/json`, and a model it
starts must lie inside the state dir's model store (`dogops.local.model_store`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import socketserver
import tempfile
import threading
from pathlib import Path
from typing import Any

from dogops.local.endpoint_server.handler import ROLLOUT_PATH, EndpointHandler
from dogops.local.endpoint_server.state import EndpointState
from dogops.local.endpoint_server.traffic_split import command as rollout_command

log = logging.getLogger("dogops.endpoint")

CONTROL_HOST = "localhost"  # the Host the client sends; a rebound DNS name is refused
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
# sun_path holds 108 bytes on Linux, 104 on macOS; a deeper state dir takes a private temp dir.
MAX_SOCKET_PATH = 100
TEMP_PREFIX = "dogops-ctl-"


def control_socket_path(run_dir: Path, stamp: str) -> Path:
    """Where a new server listens for commands: its run folder, or, when that path is too long
    for a Unix socket, a fresh private (0700) temp folder; the endpoint record names it."""
    path = Path(run_dir) / f"server-{stamp}.sock"
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX)) / "control.sock"


class ControlHandler(EndpointHandler):
    """A request on the control socket: status and the rollout commands, nothing else."""

    disable_nagle_algorithm = False  # TCP_NODELAY does not exist on a Unix socket

    def address_string(self) -> str:
        return "control"  # a Unix socket's peer has no address

    def _refusal(self, needs_json: bool) -> str | None:
        """Why this request is refused, or None."""
        host = (self.headers.get("Host") or "").strip().lower()
        if host.rsplit(":", 1)[0] not in LOCAL_HOSTS and host not in LOCAL_HOSTS:
            return f"Host {host!r} is not this machine's; send Host: {CONTROL_HOST}."
        if self.headers.get("Origin") is not None:
            return "requests from a web page (with an Origin header) are refused."
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if needs_json and content_type != "application/json":
            return "send Content-Type: application/json."
        return None

    def _refused(self, needs_json: bool) -> bool:
        reason = self._refusal(needs_json)
        if reason is None:
            return False
        self._drain_body()
        self._json(403, {"message": f"Control request refused: {reason}"})
        return True

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if self._refused(needs_json=False):
            return
        if path == "/dogops/status":
            self._json(200, self.state.status_document())
        else:
            self._json(404, {"message": f"No control route for GET {path}."})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if self._refused(needs_json=True):
            return
        if not path.startswith(ROLLOUT_PATH):
            self._drain_body()
            self._json(404, {"message": f"No control route for POST {path}."})
            return
        body = self._read_body()
        if body is not None:
            store = Path(str(self.options.model_store))  # start_control made sure there is one
            self._json(*rollout_command(self.state.pool, path[len(ROLLOUT_PATH):], body, store))


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def server_bind(self) -> None:
        path = Path(str(self.server_address))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # before the socket exists: no one else can reach it
        path.unlink(missing_ok=True)  # a crashed server's socket of the same name
        super().server_bind()
        os.chmod(path, 0o600)


def start_control(state: EndpointState) -> ControlServer | None:
    """Listen on `options.control_socket` (none: this server takes no commands)."""
    if not state.options.control_socket:
        return None
    if not state.options.model_store:
        raise ValueError("--control-socket needs --model-store: the one folder a rollout may "
                         "load a model from")
    handler = type("ControlRequest", (ControlHandler,), {
        "state": state, "timeout": state.options.idle_timeout})
    server = ControlServer(state.options.control_socket, handler)
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server


def stop_control(server: ControlServer | None) -> None:
    """Stop listening and remove the socket (and its private temp folder, if it had one)."""
    if server is None:
        return
    server.shutdown()
    server.server_close()
    path = Path(str(server.server_address))
    path.unlink(missing_ok=True)
    if path.parent.name.startswith(TEMP_PREFIX):
        with contextlib.suppress(OSError):
            path.parent.rmdir()


# --------------------------------------------------------------------------------------------
# The client (the rollout controller)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__(CONTROL_HOST, timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def control_call(socket_path: str | Path, path: str, body: dict[str, Any] | None = None,
                 timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """One request on a server's control socket: (HTTP status, JSON answer). GET without a
    body, POST (JSON) with one. OSError when no server listens there."""
    connection = _UnixConnection(str(socket_path), timeout)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            connection.request("POST", path, body=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, dict(json.loads(raw))
    except ValueError:
        return response.status, {"message": raw.decode(errors="replace")}
