"""The endpoint server's control channel (issue 23): rollout commands only on a private Unix
socket, only from the local host, only for models in the state dir's model store.

One real toy endpoint (a detached server process, `tests/fixtures/toy_inference`) for the module;
the attacks come first, the legitimate rollout (which changes the served model) last. Nothing is
mocked.
"""

from __future__ import annotations

import http.client
import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.toy_inference import make_model_dir

from dogops.errors import UserInputError
from dogops.local.endpoint import read_endpoint_record, start_endpoint, stop_endpoint
from dogops.local.endpoint_server.control import (
    _UnixConnection,
    control_call,
    control_socket_path,
)
from dogops.local.model_store import model_store
from dogops.local.rollout import rollout_local
from dogops.results import EndpointInfo
from dogops.settings import RolloutConfig, ScalingConfig

NAME = "control-test"


class Served:
    def __init__(self, info: EndpointInfo, state_dir: Path, evil: Path) -> None:
        self.info, self.state_dir, self.evil = info, state_dir, evil
        self.record = read_endpoint_record(NAME, state_dir) or {}
        self.socket = str(self.record["control_socket"])
        self.marker = evil.parent / "evil-code-ran"

    def status(self) -> dict[str, Any]:
        return control_call(self.socket, "/dogops/status")[1]

    def start_body(self, model: Path | None = None) -> bytes:
        model = model or self.evil
        return json.dumps({"model_dir": str(model), "code_dir": str(model / "code"),
                           "version": "evil"}).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("control")
    state_dir = root / "state"
    info = start_endpoint(NAME, make_model_dir(root), state_dir, ScalingConfig(),
                          options={"drain_seconds": 0.3})
    # A model in the store whose code leaves a mark when it is imported: the attacks below must
    # never get a worker to import it.
    evil = make_model_dir(model_store(state_dir), "evil")
    inference = evil / "code" / "inference.py"
    marker = evil.parent / "evil-code-ran"
    inference.write_text(inference.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    yield Served(info, state_dir, evil)
    stop_endpoint(NAME, state_dir)


def _public(served: Served, method: str, path: str, body: bytes | None,
            headers: dict[str, str]) -> int:
    host, port = str(served.info.runtime_endpoint_url).removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _raw_control(served: Served, request: bytes) -> tuple[int, dict[str, Any]]:
    """One hand-written request on the control socket (any headers, or none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(served.socket)
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def _assert_untouched(served: Served) -> None:
    time.sleep(0.5)
    status = served.status()
    assert status["rollout"]["active"] is False and status["model"]["version"] == "v1"
    assert not served.marker.exists()


def test_the_serving_port_takes_no_rollout_command(served: Served) -> None:
    """A cross-site form POST (text/plain) or a DNS-rebound page's JSON POST to the serving
    port: before, `start` + `shift 100` + `promote` made the server import and serve the code."""
    for content_type, host in [("text/plain", "evil.example"), ("application/json", None)]:
        headers = {"Content-Type": content_type, **({"Host": host} if host else {})}
        assert _public(served, "POST", "/dogops/rollout/start", served.start_body(),
                       headers) == 404
        for path, body in [("/dogops/rollout/shift", b'{"percent": 100}'),
                           ("/dogops/rollout/promote", b'{"reason": "pwned"}')]:
            assert _public(served, "POST", path, body, headers) == 404
    _assert_untouched(served)
    # The read-only status stays on the serving port, for health checks, idle-guard and the CLI.
    assert _public(served, "GET", "/dogops/status", None, {}) == 200


@pytest.mark.parametrize(("host", "status"), [
    ("evil.example", 403), ("evil.example:8080", 403), ("127.0.0.1.evil.example", 403),
    ("localhost", 200), ("LOCALHOST:1234", 200), ("[::1]:80", 200), ("127.0.0.1", 200),
])
def test_the_public_status_answers_only_a_local_host(served: Served, host: str,
                                                     status: int) -> None:
    """A page that rebinds its DNS name to 127.0.0.1 reads the status document (model paths,
    pids) as same-origin, naming its own host: that Host is refused."""
    assert _public(served, "GET", "/dogops/status", None, {"Host": host}) == status


def test_the_control_socket_is_private_to_its_owner(served: Served) -> None:
    path = Path(served.socket)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_control_socket_path_stays_within_a_unix_sockets_limit(tmp_path: Path) -> None:
    assert control_socket_path(tmp_path, "s") == tmp_path / "server-s.sock"
    deep = control_socket_path(tmp_path / ("d" * 120), "s")
    assert len(str(deep)) <= 100 and stat.S_IMODE(deep.parent.stat().st_mode) == 0o700
    deep.parent.rmdir()


@pytest.mark.parametrize("headers", [
    b"Host: evil.example\r\nContent-Type: application/json\r\n",  # DNS rebinding
    b"Content-Type: application/json\r\n",  # no Host at all
    b"Host: localhost\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\n",
    b"Host: localhost\r\nOrigin: null\r\nContent-Type: application/json\r\n",
    b"Host: localhost\r\nContent-Type: text/plain\r\n",  # a form's simple request
    b"Host: localhost\r\n",
])
def test_a_control_request_from_a_foreign_host_or_origin_is_refused(
    served: Served, headers: bytes,
) -> None:
    body = served.start_body()
    request = (b"POST /dogops/rollout/start HTTP/1.1\r\n" + headers
               + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status, answer = _raw_control(served, request)
    assert status == 403 and answer["message"].startswith("Control request refused: ")
    _assert_untouched(served)


def test_a_model_outside_the_store_is_refused(served: Served, tmp_path: Path) -> None:
    outside = make_model_dir(tmp_path, "outside")
    for model in (outside, served.evil.parent / ".." / ".." / outside.parent.name / outside.name):
        status, answer = control_call(served.socket, "/dogops/rollout/start",
                                      json.loads(served.start_body(model)))
        assert status == 400 and "is not inside the model store" in answer["message"]
    _assert_untouched(served)
    # The controller says so itself, before it sends anything.
    with pytest.raises(UserInputError, match="not inside the model store"):
        rollout_local(NAME, served.state_dir, outside, RolloutConfig())


def test_a_percent_of_1e400_is_a_400_and_the_connection_stays_usable(served: Served) -> None:
    """Before, `int(1e400)` raised in the handler and the connection was dropped unanswered."""
    connection = _UnixConnection(served.socket, timeout=10)  # the controller's own client
    try:
        for body in (b'{"percent": 1e400}', b'{"percent": NaN}'):
            connection.request("POST", "/dogops/rollout/shift", body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 400
            assert "percent must be" in json.loads(response.read())["message"]
        connection.request("GET", "/dogops/status")  # the same connection, still in step
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["name"] == NAME
    finally:
        connection.close()


def test_the_legitimate_rollout_goes_through_the_control_channel(served: Served) -> None:
    good = make_model_dir(model_store(served.state_dir), "v2")
    rollout = RolloutConfig(strategy="all-at-once", bake_seconds=0, min_requests=1)
    outcome = rollout_local(NAME, served.state_dir, good, rollout, sleep=lambda s: time.sleep(
        min(s, 0.2)))
    assert outcome.promoted, outcome
    status = served.status()
    assert status["model"]["version"] == "v2" and status["rollout"]["last"]["decision"] == (
        "promoted")
    assert (read_endpoint_record(NAME, served.state_dir) or {})["model_version"] == "v2"
    assert not served.marker.exists()
