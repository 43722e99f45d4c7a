"""The local endpoint: an HTTP server hosting a SageMaker-style `inference.py` in worker processes.

It speaks two protocols on one port, so code written against SageMaker runs unchanged:

- the container contract: `GET /ping` (200 once a worker has loaded the model), `POST /invocations`;
- the runtime API: `POST /endpoints/{name}/invocations` with `Content-Type` / `Accept` headers, so
  `boto3.client("sagemaker-runtime", endpoint_url="http://host:port").invoke_endpoint(...)` works.
  Errors use the rest-json shape botocore parses (`x-amzn-ErrorType` header, `{"message": ...}`
  body), with SageMaker's codes: `ValidationError` (400, e.g. unknown endpoint name; 413 for an
  oversized body), `ModelError` (424, the model code failed; `OriginalStatusCode` and
  `OriginalMessage` carry its own status and message, as on AWS), `ServiceUnavailable` (503, every
  worker busy and the queue full) and `InternalFailure` (500).

Model code runs in `spawn`ed worker processes, each of which serves `code_dir/inference.py` through
SageMaker's own serving toolkits (`dogops.local.serving_toolkit`: `sagemaker-pytorch-inference`'s
`HandlerService` and `sagemaker-inference`'s `Transformer`, the Python side of the PyTorch inference
container), so content types, Accept defaults, default handlers and error statuses are the
container's. A 5xx body (the toolkit's traceback) goes to the log; the caller gets one line. The
front process (stdlib `ThreadingHTTPServer`) hands each
request to an idle worker over a pipe, bounds the number of requests in flight, and runs a
target-tracking autoscaler (`dogops.local.autoscaler`) that keeps between min and max workers.
`GET /dogops/status` shows workers, invocations, rates and scaling events.

Run: `python -m dogops.local.endpoint_server --name NAME --model-dir DIR --code-dir DIR ...`
(`dogops.local.endpoint.start_endpoint` does this, detached). SIGTERM drains: the server keeps
answering for `--drain-seconds` (with `Connection: close`), then stops accepting, lets in-flight
requests finish and stops its workers.

The front imports only the stdlib and `dogops.local.autoscaler`; workers import the toolkits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dogops.local.autoscaler import (
    InvocationCounter,
    ScalingPolicy,
    TargetTrackingScaler,
)

log = logging.getLogger("dogops.endpoint")

RUNTIME_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
EXIT_MODEL_LOAD_FAILED = 3


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class ServerOptions:
    """Every knob of the server; `to_args()` / `parse_args()` make it a command line and back."""

    name: str
    model_dir: str
    code_dir: str
    host: str = "127.0.0.1"
    port: int = 0
    state_file: str | None = None
    model_version: str = ""
    min_workers: int = 1
    max_workers: int = 2
    target_invocations: float = 50.0
    scale_in_cooldown: float = 30.0
    scale_out_cooldown: float = 30.0
    # SageMaker real-time endpoints accept payloads up to 6 MB.
    max_body_bytes: int = 6 * 1024 * 1024
    # Requests allowed to wait for a worker beyond those being served; more get 503 at once.
    max_queue: int = 16
    # SageMaker gives a container 60 s per invocation.
    invocation_timeout: float = 60.0
    # How long a queued request waits for a free worker before 503.
    queue_timeout: float = 30.0
    # Window over which invocations are counted for the per-minute rate (60 = CloudWatch minute).
    metric_window: float = 60.0
    scaling_interval: float = 1.0
    drain_seconds: float = 2.0
    model_load_timeout: float = 300.0

    def policy(self) -> ScalingPolicy:
        return ScalingPolicy(
            min_capacity=self.min_workers,
            max_capacity=self.max_workers,
            target_per_worker_per_minute=self.target_invocations,
            scale_in_cooldown_s=self.scale_in_cooldown,
            scale_out_cooldown_s=self.scale_out_cooldown,
        )

    def to_args(self) -> list[str]:
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            args += [f"--{f.name.replace('_', '-')}", str(value)]
        return args


def parse_args(argv: list[str] | None = None) -> ServerOptions:
    parser = argparse.ArgumentParser(
        prog="python -m dogops.local.endpoint_server",
        description="Serve a SageMaker-style inference.py over the container and runtime APIs.",
    )
    casts = {"int": int, "float": float, "str": str, "str | None": str}
    for f in fields(ServerOptions):
        required = f.name in ("name", "model_dir", "code_dir")
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=casts[str(f.type)],
            required=required,
            default=None if required else f.default,
        )
    ns = parser.parse_args(argv)
    options = ServerOptions(**vars(ns))
    options.policy()  # validates min/max/target/cooldowns before anything starts
    return options


# --------------------------------------------------------------------------------------------
# Worker side: load the model code and answer one invocation at a time


def _worker_main(conn: Connection, model_dir: str, code_dir: str) -> None:
    """Entry point of a worker process: load once, then serve invocations until told to stop."""
    # SIGINT goes to the whole process group; the front process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = time.monotonic()
    try:
        from dogops.local.serving_toolkit import ToolkitWorker, public_error

        worker = ToolkitWorker(model_dir, code_dir)
    except BaseException as exc:  # noqa: BLE001 - report any load failure to the front
        traceback.print_exc()
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid(), time.monotonic() - started))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the front process is gone: so are we
            return
        if message[0] != "invoke":
            return
        _, body, content_type, accept = message
        status, payload, out_type = worker.invoke(body, content_type, accept)
        if status >= 500:
            print(payload.decode(errors="replace"), file=sys.stderr, flush=True)
            payload, out_type = public_error(status, payload), "text/plain"
        try:
            conn.send((status, payload, out_type))
        except OSError:
            return


# --------------------------------------------------------------------------------------------
# Front side: the worker pool


class WorkerGone(Exception):
    """The worker died or was killed mid-request."""


class WorkerTimeout(Exception):
    """The model did not answer within the invocation timeout."""


class WorkerHandle:
    def __init__(self, process: Any, conn: Connection, load_s: float) -> None:
        self.process = process
        self.conn = conn
        self.load_s = load_s
        self.invocations = 0

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def call(self, body: bytes, content_type: str, accept: str, timeout: float) -> Any:
        try:
            self.conn.send(("invoke", body, content_type, accept))
            if not self.conn.poll(timeout):
                raise WorkerTimeout
            result = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerGone from exc
        self.invocations += 1
        return result

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        with contextlib.suppress(OSError):
            self.conn.close()


class WorkerPool:
    """Between min and max worker processes; requests borrow an idle one.

    `scale_to(n)` sets the target: missing workers start in the background (they join the idle
    list once their model is loaded), surplus idle workers stop at once and busy ones when they
    finish their request.
    """

    def __init__(self, model_dir: str, code_dir: str, load_timeout: float) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._model_dir = model_dir
        self._code_dir = code_dir
        self._load_timeout = load_timeout
        self._cond = threading.Condition()
        self._idle: list[WorkerHandle] = []
        self._busy: set[WorkerHandle] = set()
        self._starting = 0
        self._target = 0
        self._closed = False
        self.load_failures: list[str] = []
        self.ready = threading.Event()

    # -- sizing ---------------------------------------------------------------------------

    def scale_to(self, n: int) -> None:
        with self._cond:
            self._target = n
            self._reconcile()

    def reconcile(self) -> None:
        """Drop dead idle workers and start or stop workers to meet the target."""
        with self._cond:
            dead = [w for w in self._idle if not w.process.is_alive()]
            for w in dead:
                log.warning("worker %s exited unexpectedly; replacing it", w.pid)
                self._idle.remove(w)
            self._reconcile()

    def _live(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def _reconcile(self) -> None:
        if self._closed:
            return
        missing = self._target - self._live()
        for _ in range(max(0, missing)):
            self._starting += 1
            threading.Thread(target=self._start_worker, daemon=True).start()
        while self._live() > self._target and self._idle:
            self._retire(self._idle.pop())

    def _retire(self, worker: WorkerHandle) -> None:
        log.info("stopping worker %s", worker.pid)
        threading.Thread(target=worker.stop, daemon=True).start()

    def _start_worker(self) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self._model_dir, self._code_dir),
            name="dogops-endpoint-worker",
        )
        process.start()
        child.close()
        message: Any = None
        try:
            if parent.poll(self._load_timeout):
                message = parent.recv()
        except (EOFError, OSError):
            message = None
        with self._cond:
            self._starting -= 1
            if message and message[0] == "ready":
                worker = WorkerHandle(process, parent, float(message[2]))
                log.info("worker %s loaded the model in %.2f s", worker.pid, worker.load_s)
                self.ready.set()
                self._place(worker)
            else:
                reason = message[1] if message else (
                    f"no answer within {self._load_timeout:g} s"
                    if process.is_alive() else f"exit code {process.exitcode}"
                )
                log.error("worker failed to load the model: %s", reason)
                self.load_failures.append(str(reason))
                threading.Thread(
                    target=WorkerHandle(process, parent, 0.0).stop, daemon=True
                ).start()
            self._cond.notify_all()

    # -- borrowing ------------------------------------------------------------------------

    def acquire(self, timeout: float) -> WorkerHandle | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._idle:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            worker = self._idle.pop(0)  # round robin: the longest idle worker goes first
            self._busy.add(worker)
            return worker

    def release(self, worker: WorkerHandle) -> None:
        with self._cond:
            self._busy.discard(worker)
            self._place(worker)
            self._cond.notify()

    def discard(self, worker: WorkerHandle) -> None:
        """Forget a dead or stuck worker (killing it) and start a replacement."""
        with self._cond:
            self._busy.discard(worker)
            threading.Thread(target=worker.stop, args=(0.1,), daemon=True).start()
            self._reconcile()

    def _place(self, worker: WorkerHandle) -> None:
        # Called with the lock held and `worker` counted nowhere.
        if self._closed or self._live() >= self._target:
            self._retire(worker)
        else:
            self._idle.append(worker)

    # -- reporting and shutdown -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            workers = [
                {"pid": w.pid, "state": "idle", "invocations": w.invocations} for w in self._idle
            ] + [{"pid": w.pid, "state": "busy", "invocations": w.invocations} for w in self._busy]
            return {
                "desired": self._target,
                "ready": len(self._idle) + len(self._busy),
                "idle": len(self._idle),
                "busy": len(self._busy),
                "starting": self._starting,
                "processes": workers,
                "load_failures": list(self.load_failures[-5:]),
            }

    def ready_count(self) -> int:
        with self._cond:
            return len(self._idle) + len(self._busy)

    def starting(self) -> int:
        with self._cond:
            return self._starting

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            worker.stop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._busy and not self._starting:
                    break
            time.sleep(0.05)
        with self._cond:
            busy = list(self._busy)
        for worker in busy:
            worker.stop(0.5)


# --------------------------------------------------------------------------------------------
# Front side: shared state, the autoscaler loop, HTTP


class EndpointState:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.pool = WorkerPool(options.model_dir, options.code_dir, options.model_load_timeout)
        self.counter = InvocationCounter(window_s=options.metric_window)
        # A scale-to-zero pool (min 0) starts with one worker, to prove the model loads.
        self.scaler = TargetTrackingScaler(options.policy(), current=max(1, options.min_workers))
        self.cold_starts: list[float] = []  # seconds from arrival to a loaded worker
        self.started = time.time()
        self.status = "Creating"
        self.draining = False
        self.errors = 0
        self.rejected = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self.options.max_workers + self.options.max_queue

    def admit(self) -> bool:
        with self._lock:
            if self._in_flight >= self.capacity:
                self.rejected += 1
                return False
            self._in_flight += 1
            return True

    def done(self, ok: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            if not ok:
                self.errors += 1

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wake(self) -> bool:
        """Start a worker for a request that found the pool scaled to zero; True if it did."""
        with self._lock:
            event = self.scaler.wake(self.counter.rate_per_minute())
            if event is None:
                return False
            log.info("%s -> 1 worker", event.reason)
            self.pool.scale_to(1)
            return True

    def scaling_tick(self) -> None:
        rate = self.counter.rate_per_minute()
        if rate == 0 and self.in_flight():
            # A request still waiting for a cold worker is traffic the window has not counted
            # yet: never scale the pool away under it.
            self.pool.reconcile()
            return
        with self._lock:  # one decision at a time: a request may be waking the pool
            event = self.scaler.evaluate(rate)
            if event is not None:
                log.info("%s -> %d workers", event.reason, event.to_workers)
                self.pool.scale_to(event.to_workers)
        self.pool.reconcile()

    def status_document(self) -> dict[str, Any]:
        o = self.options
        workers = self.pool.snapshot()
        rate = self.counter.rate_per_minute()
        return {
            "name": o.name,
            "status": self.status,
            "pid": os.getpid(),
            "model": {"version": o.model_version, "model_dir": o.model_dir, "code_dir": o.code_dir},
            "workers": workers,
            "invocations": {
                "total": self.counter.total,
                "in_window": self.counter.count(),
                "errors": self.errors,
                "rejected": self.rejected,
                "in_flight": self.in_flight(),
            },
            "rate_per_minute": round(rate, 3),
            "per_worker_rate_per_minute": round(rate / max(1, workers["ready"]), 3),
            "cold_starts": {
                "count": len(self.cold_starts),
                "last_s": round(self.cold_starts[-1], 3) if self.cold_starts else None,
                "max_s": round(max(self.cold_starts), 3) if self.cold_starts else None,
            },
            "scaling": {
                "policy": asdict(o.policy()),
                "metric_window_s": o.metric_window,
                "events": [e.to_dict() for e in self.scaler.events[-50:]],
            },
            "limits": {
                "max_body_bytes": o.max_body_bytes,
                "max_in_flight": self.capacity,
                "invocation_timeout_s": o.invocation_timeout,
            },
            "uptime_s": round(time.time() - self.started, 3),
        }


def _make_handler(state: EndpointState) -> type[BaseHTTPRequestHandler]:
    options = state.options

    class Handler(BaseHTTPRequestHandler):
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
                healthy = state.status == "InService" and (
                    state.pool.ready_count() > 0 or options.min_workers == 0)
                self._send(200 if healthy else 503, b"", "application/json")
            elif path == "/dogops/status":
                self._json(200, state.status_document())
            else:
                self._json(404, {"message": f"No route for GET {path}."})

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0]
            match = RUNTIME_PATH.match(path)
            if path == "/invocations":
                self._invoke(runtime_api=False)
            elif match:
                if match.group(1) != options.name:
                    self._drain_body()
                    self._aws_error(
                        400,
                        "ValidationError",
                        f"Endpoint {match.group(1)} of account local not found. "
                        f"This server hosts {options.name!r}.",
                    )
                else:
                    self._invoke(runtime_api=True)
            else:
                self._drain_body()
                self._json(404, {"message": f"No route for POST {path}."})

        # -- invocations --------------------------------------------------------------

        def _invoke(self, runtime_api: bool) -> None:
            body = self._read_body()
            if body is None:
                return
            if not state.admit():
                self._aws_error(
                    503, "ServiceUnavailable",
                    f"Endpoint {options.name} is at capacity ({state.capacity} requests in "
                    "flight); retry later.",
                )
                return
            ok = False
            try:
                ok = self._dispatch(body, runtime_api)
            finally:
                state.done(ok)

        def _dispatch(self, body: bytes, runtime_api: bool) -> bool:
            content_type = self.headers.get("Content-Type") or "application/octet-stream"
            # No Accept or */* means the default accept type: the toolkit applies that rule.
            accept = self.headers.get("Accept") or ""
            cold, waited = state.wake(), time.monotonic()
            worker = state.pool.acquire(options.queue_timeout)
            if cold and worker is not None:
                state.cold_starts.append(time.monotonic() - waited)
                log.info("cold start: a worker answered after %.2f s", state.cold_starts[-1])
            if worker is None:
                self._aws_error(
                    503, "ServiceUnavailable",
                    f"No worker of endpoint {options.name} became free within "
                    f"{options.queue_timeout:g} s; retry later.",
                )
                return False
            state.counter.record()
            try:
                status, payload, out_type = worker.call(
                    body, content_type, accept, options.invocation_timeout
                )
            except WorkerTimeout:
                log.error("worker %s timed out; replacing it", worker.pid)
                state.pool.discard(worker)
                message = (
                    f"Your invocation timed out while waiting for a response from the model "
                    f"(limit {options.invocation_timeout:g} s)."
                )
                self._model_error(runtime_api, 504, message)
                return False
            except WorkerGone:
                log.error("worker %s died during a request; replacing it", worker.pid)
                state.pool.discard(worker)
                self._aws_error(500, "InternalFailure", "The model worker exited unexpectedly.")
                return False
            state.pool.release(worker)
            if status == 200:
                self._send(200, payload, out_type)
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
            if length > options.max_body_bytes:
                # Read and discard a moderately oversized body so the client sees the 413
                # instead of a reset connection; refuse to read absurd ones.
                if length <= 4 * options.max_body_bytes:
                    self._discard(length)
                self.close_connection = True
                self._aws_error(
                    413,
                    "ValidationError",
                    f"Request body of {length} bytes exceeds the endpoint's limit of "
                    f"{options.max_body_bytes} bytes; send a smaller payload.",
                )
                return None
            return self.rfile.read(length)

        def _drain_body(self) -> None:
            with contextlib.suppress(ValueError, TypeError):
                length = int(self.headers.get("Content-Length") or 0)
                if length > 4 * options.max_body_bytes:
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
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if state.draining or self.close_connection:
                # While draining, make clients open fresh connections (to the new server).
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

    return Handler


# --------------------------------------------------------------------------------------------
# Process entry point


def _write_state_file(options: ServerOptions, server: ThreadingHTTPServer, status: str) -> None:
    if not options.state_file:
        return
    host, port = server.server_address[:2]
    document = {
        "name": options.name,
        "pid": os.getpid(),
        "host": host,
        "port": port,
        "status": status,
        "model_version": options.model_version,
        "updated_at": time.time(),
    }
    path = Path(options.state_file)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


def serve(options: ServerOptions) -> int:
    """Run the endpoint until SIGTERM/SIGINT; return the process exit code."""
    state = EndpointState(options)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server((options.host, options.port), _make_handler(state))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    host, port = server.server_address[:2]
    log.info("endpoint %s listening on http://%s:%s (model %s)",
             options.name, host, port, options.model_version or "?")
    _write_state_file(options, server, "Creating")

    state.pool.scale_to(state.scaler.current)  # min, or 1 for a scale-to-zero pool
    while not state.pool.ready.is_set():
        if stop.wait(0.1):
            break
        failed = state.pool.ready_count() == 0 and state.pool.starting() == 0
        if failed and state.pool.load_failures:
            log.error("no worker could load the model: %s", state.pool.load_failures[-1])
            state.status = "Failed"
            _write_state_file(options, server, "Failed")
            server.shutdown()
            state.pool.close(1)
            return EXIT_MODEL_LOAD_FAILED

    if not stop.is_set():
        state.status = "InService"
        _write_state_file(options, server, "InService")
        log.info("endpoint %s is InService", options.name)
    while not stop.wait(options.scaling_interval):
        try:
            state.scaling_tick()
        except Exception:  # noqa: BLE001 - the scaler must never take the server down
            log.exception("scaling evaluation failed")

    log.info("draining for %.1f s", options.drain_seconds)
    state.status = "Deleting"
    state.draining = True
    time.sleep(options.drain_seconds)
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + options.invocation_timeout
    while state.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    state.pool.close(timeout=5)
    _write_state_file(options, server, "Deleted")
    log.info("endpoint %s stopped", options.name)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    try:
        options = parse_args(argv)
    except ValueError as exc:
        log.error("invalid options: %s", exc)
        return 2
    return serve(options)


if __name__ == "__main__":
    # Import the module by its package name so that the worker function pickles as
    # `dogops.local.endpoint_server._worker_main`, which spawned workers can import.
    from dogops.local.endpoint_server import main as _main

    sys.exit(_main())
