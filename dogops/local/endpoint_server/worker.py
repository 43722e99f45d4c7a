"""The worker process: load `inference.py` through the serving toolkits, then answer invocations.

The front sends `("invoke", body, content_type, accept)` over a pipe and gets back
`(status, payload, content_type)`; `("stop",)` ends the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection


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

