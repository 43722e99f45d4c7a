"""The endpoint process: listen, wait for a worker to load the model, scale, drain on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from dogops.local.endpoint_server.control import start_control, stop_control
from dogops.local.endpoint_server.handler import make_handler
from dogops.local.endpoint_server.options import ServerOptions, parse_args
from dogops.local.endpoint_server.state import EndpointState
from dogops.waiting import wait_until

log = logging.getLogger("dogops.endpoint")

EXIT_MODEL_LOAD_FAILED = 3

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

    server = Server((options.host, options.port), make_handler(state))
    control = start_control(state)
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
            stop_control(control)
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
    stop_control(control)
    wait_until(lambda: not state.busy(), timeout_s=options.invocation_timeout, poll_s=0.05)
    state.batcher.close()
    state.pool.close(timeout=5)
    if state.capture is not None:
        state.capture.close()  # the captures still queued are written before the process ends
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
