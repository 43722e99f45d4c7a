"""The worker process: load `inference.py` through the serving toolkits, then answer invocations.

The front sends `("invoke", body, content_type, accept)` over a pipe and gets back
`(status, payload, content_type)`, or `("invoke_batch", [(body, content_type, accept), ...])`
and gets one such answer per request, in order; `("stop",)` ends the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any


def worker_main(conn: Connection, model_dir: str, code_dir: str) -> None:
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
        if message[0] == "invoke":
            _, body, content_type, accept = message
            reply: object = _public(worker.invoke(body, content_type, accept), public_error)
        elif message[0] == "invoke_batch":
            reply = [_public(answer, public_error) for answer in worker.invoke_batch(message[1])]
        else:
            return
        try:
            conn.send(reply)
        except OSError:
            return


def _public(answer: tuple[int, bytes, str], public_error: Any) -> tuple[int, bytes, str]:
    """A 5xx body (the toolkit's traceback) goes to the log; the caller gets one line."""
    status, payload, out_type = answer
    if status >= 500:
        print(payload.decode(errors="replace"), file=sys.stderr, flush=True)
        return status, public_error(status, payload), "text/plain"
    return status, payload, out_type

