"""The endpoint server's connections (issue 23): idle keep-alive connections are closed after
`idle_timeout`, boto3's pooled connections survive that, and a client slow to read its answer does
not hold an admission slot.

One real toy endpoint (`tests/fixtures/toy_inference`) with one worker and no queue, so a single
held slot makes the next request a 503. Nothing is mocked.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from fixtures.toy_inference import make_model_dir

from dogops.local.endpoint import start_endpoint, stop_endpoint
from dogops.results import EndpointInfo
from dogops.settings import ScalingConfig

NAME = "connections-test"
IDLE_TIMEOUT = 3.0  # the slow reader below must finish reading within it


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointInfo]:
    root = tmp_path_factory.mktemp("connections")
    state_dir = root / "state"
    info = start_endpoint(
        NAME, make_model_dir(root), state_dir, ScalingConfig(min_capacity=1, max_capacity=1),
        options={"drain_seconds": 0.3, "idle_timeout": IDLE_TIMEOUT, "max_queue": 0,
                 "batch_size": 1})
    yield info
    stop_endpoint(NAME, state_dir)


def _address(info: EndpointInfo) -> tuple[str, int]:
    host, port = str(info.runtime_endpoint_url).removeprefix("http://").split(":")
    return host, int(port)


def _request(body: bytes, content_type: str = "image/jpeg") -> bytes:
    return (b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
            b"Content-Type: " + content_type.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def _read_answer(sock: socket.socket, pause: float = 0.0) -> tuple[int, bytes]:
    """One whole answer (status, body) read off a raw socket, pausing after each read."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(1 << 18)
        assert chunk, f"the server closed the connection after {len(body)} of {length} bytes"
        body += chunk
        time.sleep(pause)
    return int(head.split(b" ", 2)[1]), body


def _status(info: EndpointInfo) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{info.runtime_endpoint_url}/dogops/status", timeout=10) as r:
        return dict(json.loads(r.read()))


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(served: EndpointInfo) -> None:
    with socket.create_connection(_address(served), timeout=10) as sock:
        sock.sendall(_request(b"abc"))
        assert _read_answer(sock)[0] == 200  # kept alive (HTTP/1.1, no Connection: close)
        started = time.monotonic()
        assert sock.recv(1) == b""  # before: no timeout, the server kept it open for ever
        assert IDLE_TIMEOUT * 0.8 <= time.monotonic() - started < IDLE_TIMEOUT + 5
    with socket.create_connection(_address(served), timeout=10) as sock:
        assert sock.recv(1) == b""  # a connection that never sends a request, too


def test_boto3_calls_again_after_its_pooled_connection_timed_out(served: EndpointInfo) -> None:
    """urllib3 sees the server's close on the pooled connection and opens a new one: no error
    reaches the caller, with botocore's retries off."""
    client = boto3.client(
        "sagemaker-runtime", endpoint_url=served.runtime_endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=20))
    for attempt in range(2):
        if attempt:
            time.sleep(IDLE_TIMEOUT * 2)  # the server closes the pooled connection meanwhile
        response = client.invoke_endpoint(EndpointName=NAME, Body=b"abcd",
                                          ContentType="image/jpeg", Accept="application/json")
        assert json.loads(response["Body"].read())["image_bytes"] == 4


def test_a_slow_reader_does_not_hold_its_admission_slot(served: EndpointInfo) -> None:
    """A client that does not read its (large) answer blocks the server's write; its slot is
    free once the answer is known, so the next request is served rather than 503 (capacity 1)."""
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # a small window: writes block
    slow.settimeout(30)
    try:
        slow.connect(_address(served))
        pad = 16 * 1024 * 1024  # beyond what the socket buffers hold
        slow.sendall(_request(json.dumps({"pad": pad}).encode(), "application/json"))
        deadline = time.monotonic() + 20
        while _status(served)["invocations"]["total"] < 1 or _status(served)["invocations"][
                "in_flight"]:
            assert time.monotonic() < deadline, "the slow reader's slot was never given back"
            time.sleep(0.1)
        with socket.create_connection(_address(served), timeout=20) as other:
            other.sendall(_request(b"abc"))
            assert _read_answer(other)[0] == 200  # before: 503 ServiceUnavailable
        # The slow reader still gets all of its answer. (Had its slot been held until the write
        # ended, the write would have stalled past the idle timeout and been cut off.)
        status, body = _read_answer(slow)
        assert status == 200 and len(json.loads(body)["pad"]) == pad
    finally:
        slow.close()
    assert _status(served)["invocations"]["rejected"] == 0


def test_a_slow_but_steady_reader_gets_all_of_an_answer_longer_than_the_timeout(
    served: EndpointInfo,
) -> None:
    """The timeout bounds a stall, not the whole answer: before, one sendall of the answer had
    `idle_timeout` in all, and a reader taking ~6 s over 16 MB was cut off."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        sock.settimeout(30)
        sock.connect(_address(served))
        pad = 16 * 1024 * 1024
        sock.sendall(_request(json.dumps({"pad": pad}).encode(), "application/json"))
        started = time.monotonic()
        status, body = _read_answer(sock, pause=0.1)  # at most 256 KB every 0.1 s
        assert status == 200 and len(json.loads(body)["pad"]) == pad
        assert time.monotonic() - started > IDLE_TIMEOUT


def test_idle_timeout_is_a_setting_with_a_safe_default() -> None:
    """`endpoint.idle_timeout_s`, which the local backend hands its server as `idle_timeout`."""
    from dogops.settings import Settings

    assert Settings().endpoint.idle_timeout_s == 60
    with pytest.raises(ValueError):
        Settings(endpoint={"idle_timeout_s": 0})
