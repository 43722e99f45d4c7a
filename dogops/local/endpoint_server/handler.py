"""HTTP: the container contract and the runtime API on one port, with AWS-shaped errors.

The serving port changes nothing about what it serves: the rollout commands are answered only on
the control channel (control.py), and here fall through to 404 like any unknown route."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from dogops.local.endpoint_server.batching import NoWorker
from dogops.local.endpoint_server.options import ServerOptions
from dogops.local.endpoint_server.pool import WorkerGone, WorkerTimeout
from dogops.local.endpoint_server.state import EndpointState
from dogops.local.endpoint_server.url_front import FetchBusy
from model_code.url_fetch import FetchError

log = logging.getLogger("dogops.endpoint")

RUNTIME_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
WRITE_CHUNK = 1 << 16
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # Host a status request may name
ROLLOUT_PATH = "/dogops/rollout/"  # the rollout controller's commands: control.py only


class EndpointHandler(BaseHTTPRequestHandler):
    """One request of the endpoint; `make_handler` binds the server's shared state."""

    state: EndpointState
    # `timeout` (StreamRequestHandler): make_handler sets it to `options.idle_timeout`, so an idle
    # keep-alive connection, or a stalled read or write, is closed instead of holding a thread.
    _holds_slot = False  # this request holds an admission slot (`_invoke`, `_release_slot`)

    @property
    def options(self) -> ServerOptions:
        return self.state.options

    protocol_version = "HTTP/1.1"  # keep-alive, so boto3's connection pool is used
    # Headers and body go out in two writes: with Nagle's algorithm on, the second waits for
    # the client's delayed ACK, adding ~40 ms to every answer on a keep-alive connection.
    disable_nagle_algorithm = True
    server_version = "dogops-endpoint"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("%s " + format, self.address_string(), *args)

    # -- routing ------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if path == "/ping":
            # Scaled to zero is healthy: the next request starts a worker.
            healthy = self.state.status == "InService" and (
                self.state.pool.ready_count() > 0 or self.options.min_capacity == 0)
            self._send(200 if healthy else 503, b"", "application/json")
        elif path == "/dogops/status":
            if self._host_is_local():
                self._json(200, self.state.status_document())
            else:  # a page that rebound its DNS name to 127.0.0.1 must not read model paths
                self._json(403, {"message": "GET /dogops/status answers only Host 127.0.0.1, "
                                            "localhost or [::1]."})
        else:
            self._json(404, {"message": f"No route for GET {path}."})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        match = RUNTIME_PATH.match(path)
        if path == "/invocations":
            self._invoke(runtime_api=False)
        elif match:
            if match.group(1) != self.options.name:
                self._drain_body()
                self._aws_error(
                    400,
                    "ValidationError",
                    f"Endpoint {match.group(1)} of account local not found. "
                    f"This server hosts {self.options.name!r}.",
                )
            else:
                self._invoke(runtime_api=True)
        else:
            self._drain_body()
            self._json(404, {"message": f"No route for POST {path}."})

    def _host_is_local(self) -> bool:
        """The Host header names this machine, or the address the server binds to (the one
        dogops's own callers use), or is absent, as HTTP/1.0 allows."""
        host = (self.headers.get("Host") or "127.0.0.1").strip().lower()
        name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        return name in LOCAL_HOSTS or name == self.options.host.lower()

    # -- invocations --------------------------------------------------------------

    def _invoke(self, runtime_api: bool) -> None:
        body = self._read_body()
        if body is None:
            return
        body = self._fetch_image_url(body, runtime_api)  # before it holds capacity or a worker
        if body is None:
            return
        if not self.state.admit():
            self._aws_error(
                503, "ServiceUnavailable",
                f"Endpoint {self.options.name} is at capacity ({self.state.capacity} requests in "
                "flight); retry later.",
            )
            return
        self._holds_slot = True
        ok = False
        try:
            ok = self._dispatch(body, runtime_api)
        finally:
            self._release_slot(ok)  # if no answer was sent (an exception)
            self.state.answered()

    def _release_slot(self, ok: bool) -> None:
        """Give the admission slot back once the answer is known, before it is written (`_send`):
        a client slow to read its answer must not make a new request 503 (the state still counts
        the answer as going out until `answered`, so a drain waits for it)."""
        if self._holds_slot:
            self._holds_slot = False
            self.state.done(ok)

    def _fetch_image_url(self, body: bytes, runtime_api: bool) -> bytes | None:
        """A `{"url": ...}` body with the image fetched inline (url_front.py), None once a
        refused fetch is answered: as the model answers it, or 429 when every slot is taken."""
        content_type = self.headers.get("Content-Type") or ""
        try:
            return self.state.url_front.resolve(body, content_type)
        except FetchError as exc:
            self._model_error(runtime_api, exc.status_code, str(exc))
        except FetchBusy:
            self._aws_error(
                429, "ThrottlingException",
                f"Endpoint {self.options.name} is fetching {self.options.max_url_fetches} image "
                "URLs already (max_url_fetches); retry later or send the image inline.",
            )
        return None

    def _dispatch(self, body: bytes, runtime_api: bool) -> bool:
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        # No Accept or */* means the default accept type: the toolkit applies that rule.
        accept = self.headers.get("Accept") or ""
        cold, waited = self.state.wake(), time.monotonic()
        try:
            status, payload, out_type = self.state.batcher.call(body, content_type, accept)
        except NoWorker:
            self._aws_error(
                503, "ServiceUnavailable",
                f"No worker of endpoint {self.options.name} became free within "
                f"{self.options.queue_timeout:g} s; retry later.",
            )
            return False
        except WorkerTimeout:
            message = (
                f"Your invocation timed out while waiting for a response from the model "
                f"(limit {self.options.invocation_timeout:g} s)."
            )
            self._model_error(runtime_api, 504, message)
            return False
        except WorkerGone:
            self._aws_error(500, "InternalFailure", "The model worker exited unexpectedly.")
            return False
        if cold:
            self.state.cold_starts.append(time.monotonic() - waited)
            log.info("cold start: a worker answered after %.2f s", self.state.cold_starts[-1])
        if status == 200:
            self._send(200, payload, out_type)
            if self.state.capture is not None:  # after the answer went out; never blocks
                self.state.capture.offer(body, content_type, payload, out_type,
                                         self.headers.get("X-Amzn-SageMaker-Inference-Id"))
            return True
        self._model_error(runtime_api, status, payload.decode(errors="replace"))
        return False

    def _model_error(self, runtime_api: bool, status: int, message: str) -> None:
        if not runtime_api:
            # Container contract: the model's own status and message.
            self._json(status, {"message": message})
            return
        kind = "client" if status < 500 else "server"
        self._aws_error(
            424,
            "ModelError",
            f'Received {kind} error ({status}) from primary with message "{message}". '
            f"See the endpoint log for more information.",
            OriginalStatusCode=status,
            OriginalMessage=message,
        )

    # -- body and responses -------------------------------------------------------

    def _read_body(self) -> bytes | None:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._aws_error(411, "ValidationError", "Send a Content-Length header.")
                return None
            return b""
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._aws_error(400, "ValidationError", "Invalid Content-Length header.")
            return None
        if length > self.options.max_body_bytes:
            # Read and discard a moderately oversized body so the client sees the 413
            # instead of a reset connection; refuse to read absurd ones.
            if length <= 4 * self.options.max_body_bytes:
                self._discard(length)
            self.close_connection = True
            self._aws_error(
                413,
                "ValidationError",
                f"Request body of {length} bytes exceeds the endpoint's limit of "
                f"{self.options.max_body_bytes} bytes; send a smaller payload.",
            )
            return None
        return self.rfile.read(length)

    def _drain_body(self) -> None:
        with contextlib.suppress(ValueError, TypeError):
            length = int(self.headers.get("Content-Length") or 0)
            if length > 4 * self.options.max_body_bytes:
                self.close_connection = True
            else:
                self._discard(length)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _aws_error(self, status: int, error_type: str, message: str, **extra: Any) -> None:
        body = json.dumps({"message": message, **extra}).encode()
        self._send(status, body, "application/json", {"x-amzn-ErrorType": error_type})

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _send(
        self, status: int, body: bytes, content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._release_slot(status == 200)  # an invocation's answer is known: see _release_slot
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.state.draining or self.close_connection:
            # While draining, make clients open fresh connections (to the new server).
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # In chunks: the socket timeout then bounds a stall, not the whole answer (sendall's
            # timeout is for the whole call), so a slow but steady reader is not cut off.
            view = memoryview(body)
            for start in range(0, max(1, len(view)), WRITE_CHUNK):
                self.wfile.write(view[start:start + WRITE_CHUNK])


def make_handler(state: EndpointState) -> type[EndpointHandler]:
    return type("Handler", (EndpointHandler,), {"state": state,
                                                "timeout": state.options.idle_timeout})
