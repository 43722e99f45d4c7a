"""Dynamic batching in the front: concurrent requests go to a worker together, one forward pass.

What TorchServe does in the SageMaker PyTorch container with `SAGEMAKER_TS_BATCH_SIZE` and
`SAGEMAKER_TS_MAX_BATCH_DELAY` (the aws backend sets both from the same settings): requests wait
in one queue; when a worker is free, it takes up to `batch_size` of them, waiting at most
`max_delay_s` (counted from the moment the worker is free, as TorchServe's maxBatchDelay) for more
to join. One difference, so a lone client pays nothing: the wait happens only while traffic is
concurrent, i.e. when one of the last few batches held more than one request; a request with no
company in sight and an idle worker is answered in its own thread at once.

Each request gets its own answer; the worker decodes a batch's requests in parallel and runs one
forward pass (`dogops.local.serving_toolkit.ToolkitWorker.invoke_batch`), and a request that fails
(bad input, say) fails alone. A worker that times out or dies fails the requests of its batch,
with the same errors as a single request had.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from dogops.local.endpoint_server.pool import WorkerGone, WorkerTimeout

log = logging.getLogger("dogops.endpoint")

# How many recent batch sizes say "traffic is concurrent" (worth waiting for company).
RECENT_BATCHES = 8

Answer = tuple[int, bytes, str]


class NoWorker(Exception):
    """No worker became free within the queue timeout."""


class _Pending:
    __slots__ = ("request", "arrived", "done", "answer", "error")

    def __init__(self, request: tuple[bytes, str, str]) -> None:
        self.request = request
        self.arrived = time.monotonic()
        self.done = threading.Event()
        self.answer: Answer | None = None
        self.error: Exception | None = None

    def finish(self, answer: Answer | None = None, error: Exception | None = None) -> None:
        self.answer, self.error = answer, error
        self.done.set()


class BatchWorker(Protocol):
    """A borrowed worker: the pool's `BatchWorker`, or the traffic split's `RoutedWorker`."""

    @property
    def pid(self) -> int: ...

    def call(self, body: bytes, content_type: str, accept: str, timeout: float) -> Any: ...

    def call_batch(self, requests: list[tuple[bytes, str, str]], timeout: float) -> list[Any]: ...


class WorkerSource(Protocol):
    """Where the batcher borrows workers: the server's `TrafficSplit` (or a bare `WorkerPool`)."""

    def acquire(self, timeout: float) -> Any: ...

    def release(self, worker: Any) -> None: ...

    def discard(self, worker: Any) -> None: ...


class Batcher:
    """The queue between HTTP threads and the worker pool; `call` answers one request."""

    def __init__(self, pool: WorkerSource, *, batch_size: int, max_delay_s: float,
                 invocation_timeout: float, queue_timeout: float,
                 on_dispatch: Callable[[int], None] | None = None) -> None:
        if batch_size < 1 or max_delay_s < 0:
            raise ValueError(f"batch size {batch_size} must be >= 1 and delay {max_delay_s} >= 0")
        self.pool = pool
        self.batch_size = batch_size
        self.max_delay_s = max_delay_s
        self.invocation_timeout = invocation_timeout
        self.queue_timeout = queue_timeout
        self._on_dispatch = on_dispatch
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_BATCHES)
        self.batches = 0
        self.batched_requests = 0
        self._closed = False
        threading.Thread(target=self._dispatch_loop, name="batcher", daemon=True).start()

    def call(self, body: bytes, content_type: str, accept: str) -> Answer:
        """(status, payload, content type) of this request; raises NoWorker, WorkerTimeout or
        WorkerGone like the pool's own calls."""
        request = (body, content_type, accept)
        if self._alone():
            # No traffic to batch with and a worker idle: answer in this thread (no hand-offs
            # between threads, which a lone client would pay for on every request).
            worker = self.pool.acquire(0)
            if worker is not None:
                with self._cond:
                    self._count(1)
                return self._run(worker, [request])[0]
        pending = _Pending(request)
        with self._cond:
            self._queue.append(pending)
            self._cond.notify_all()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.answer is not None
        return pending.answer

    def close(self) -> None:
        """Stop dispatching; requests still queued get NoWorker (503) rather than hanging."""
        with self._cond:
            self._closed = True
            while self._queue:
                self._queue.popleft().finish(error=NoWorker())
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "max_delay_ms": self.max_delay_s * 1000,
                "batches": self.batches,
                "mean_batch": round(self.batched_requests / self.batches, 2) if self.batches
                else None}

    # -- the dispatcher thread ------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                oldest = self._queue[0].arrived
            left = self.queue_timeout - (time.monotonic() - oldest)
            worker = self.pool.acquire(max(0.0, left)) if left > 0 else None
            if worker is None:
                self._expire()
                continue
            batch = self._take_batch()
            if not batch:
                self.pool.release(worker)
                continue
            threading.Thread(target=self._answer, args=(worker, batch), daemon=True).start()

    def _alone(self) -> bool:
        with self._cond:
            return not self._queue and max(self._recent, default=1) <= 1

    def _count(self, size: int) -> None:
        self._recent.append(size)
        self.batches += 1
        self.batched_requests += size

    def _expire(self) -> None:
        """Fail the requests that waited longer than the queue timeout for a worker."""
        now = time.monotonic()
        with self._cond:
            while self._queue and now - self._queue[0].arrived >= self.queue_timeout:
                self._queue.popleft().finish(error=NoWorker())

    def _take_batch(self) -> list[_Pending]:
        with self._cond:
            # Wait for company only while traffic is concurrent (one of the last batches held
            # more than one request), at most max_delay_s from the moment a worker is free, as
            # TorchServe's maxBatchDelay: the clients just answered are sending again.
            expected = min(self.batch_size, max(self._recent, default=1))
            deadline = time.monotonic() + self.max_delay_s
            while len(self._queue) < expected and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            size = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            if batch:
                self._count(len(batch))
        return batch

    def _answer(self, worker: BatchWorker, batch: list[_Pending]) -> None:
        try:
            answers = self._run(worker, [p.request for p in batch])
        except (WorkerTimeout, WorkerGone) as exc:
            for pending in batch:
                pending.finish(error=exc)
            return
        except Exception:  # noqa: BLE001 - no request may wait forever for this thread
            log.exception("a batch of %d failed in the front", len(batch))
            for pending in batch:
                pending.finish(error=WorkerGone())
            return
        for pending, answer in zip(batch, answers, strict=True):
            pending.finish(answer=answer)

    def _run(self, worker: BatchWorker, requests: list[tuple[bytes, str, str]]) -> list[Answer]:
        """The worker's answers; a worker that times out or dies is replaced, and raises."""
        if self._on_dispatch is not None:
            self._on_dispatch(len(requests))
        try:
            if len(requests) == 1:
                answers = [tuple(worker.call(*requests[0], self.invocation_timeout))]
            else:
                answers = [tuple(a) for a in worker.call_batch(requests,
                                                               self.invocation_timeout)]
        except (WorkerTimeout, WorkerGone) as exc:
            what = "timed out" if isinstance(exc, WorkerTimeout) else "died during a request"
            log.error("worker %s %s (batch of %d); replacing it", worker.pid, what,
                      len(requests))
            self.pool.discard(worker)
            raise
        self.pool.release(worker)
        return answers  # type: ignore[return-value]
