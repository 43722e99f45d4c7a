"""The front's pool of worker processes: sized by the autoscaler, borrowed one request at a time."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from dogops.local.endpoint_server.worker import worker_main
from dogops.waiting import wait_until

log = logging.getLogger("dogops.endpoint")

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

    def _exchange(self, message: tuple[Any, ...], requests: int, timeout: float) -> Any:
        """Send `message` over the pipe and wait at most `timeout` for the worker's answer."""
        try:
            self.conn.send(message)
            if not self.conn.poll(timeout):
                raise WorkerTimeout
            answer = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerGone from exc
        self.invocations += requests
        return answer

    def call(self, body: bytes, content_type: str, accept: str, timeout: float) -> Any:
        return self._exchange(("invoke", body, content_type, accept), 1, timeout)

    def call_batch(self, requests: list[tuple[bytes, str, str]], timeout: float) -> list[Any]:
        """Send a batch over the pipe; its answers come back in the same order."""
        return list(self._exchange(("invoke_batch", requests), len(requests), timeout))

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
            target=worker_main,
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

    def _settled(self) -> bool:
        """No request in a worker and no worker still loading (what `close` waits for)."""
        with self._cond:
            return not self._busy and not self._starting

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            worker.stop()
        wait_until(self._settled, timeout_s=timeout, poll_s=0.05)
        with self._cond:
            busy = list(self._busy)
        for worker in busy:
            worker.stop(0.5)

