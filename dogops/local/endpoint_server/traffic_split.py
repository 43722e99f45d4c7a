"""Canary traffic inside one endpoint server: a second worker pool for the new model, a share of
the requests sent to it, and each side's 5xx rate and latency measured, for the rollout controller
(`dogops.local.rollout`) to judge.

`TrafficSplit` stands where the server's `WorkerPool` stood (`EndpointState.pool`) and offers the
same calls, so the request handler does not change: `acquire` picks the side for each request
(exactly `percent` of every 100, interleaved, once the new workers have loaded), the worker it
returns times its call and records the status on its side, and `release` / `discard` give a worker
back to the pool it came from, even if the split changed meanwhile. Promoting makes the new pool
the primary and stops the old one after its requests in flight finish; rolling back stops the new
one the same way. No request in flight is dropped either way.

Commands arrive as `POST /dogops/rollout/{start,shift,promote,rollback}` (JSON bodies) on the
server's control channel, never on its serving port (`control.py`, `command`).
"""

from __future__ import annotations

import collections
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dogops.local.endpoint_server.pool import WorkerGone, WorkerPool, WorkerTimeout
from dogops.local.model_store import in_model_store

LATENCIES_KEPT = 5000


class ArmStats:
    """One side's answers: counts since the current step began, and in all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = self.total_5xx = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = self.errors_5xx = 0
            self.latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)

    def record(self, status: int, seconds: float) -> None:
        with self._lock:
            failed = status >= 500
            self.requests += 1
            self.total += 1
            self.errors_5xx += failed
            self.total_5xx += failed
            self.latencies_ms.append(seconds * 1000.0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            ordered = sorted(self.latencies_ms)

            def pct(q: float) -> float | None:
                if not ordered:
                    return None
                return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)

            return {
                "requests": self.requests, "errors_5xx": self.errors_5xx,
                "error_rate_percent": round(100.0 * self.errors_5xx / self.requests, 3)
                if self.requests else 0.0,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "total_requests": self.total, "total_errors_5xx": self.total_5xx,
            }


class RoutedWorker:
    """A borrowed worker that knows its pool and records its answers on its side."""

    def __init__(self, inner: Any, pool: WorkerPool, stats: ArmStats) -> None:
        self.inner, self.pool, self.stats = inner, pool, stats

    @property
    def pid(self) -> int:
        return int(self.inner.pid)

    def _counted(self, send: Callable[[], list[Any]], requests: int) -> list[Any]:
        """`send()`'s answers, each counted on this side with the call's time as its latency;
        a worker that dies or times out counts as a 500 for every request it had."""
        started = time.monotonic()
        try:
            answers = send()
        except (WorkerGone, WorkerTimeout):
            for _ in range(requests):
                self.stats.record(500, time.monotonic() - started)
            raise
        for answer in answers:
            self.stats.record(int(answer[0]), time.monotonic() - started)
        return answers

    def call(self, body: bytes, content_type: str, accept: str, timeout: float) -> Any:
        return self._counted(lambda: [self.inner.call(body, content_type, accept, timeout)], 1)[0]

    def call_batch(self, requests: list[tuple[bytes, str, str]], timeout: float) -> list[Any]:
        """A batch on this side's worker (the batcher's path): each answer counts on this side,
        with the batch's time as its latency."""
        return self._counted(lambda: self.inner.call_batch(requests, timeout), len(requests))


class TrafficSplit:
    """The primary pool, and during a rollout the candidate's pool beside it."""

    def __init__(self, primary: WorkerPool, model: dict[str, str], load_timeout: float,
                 drain_timeout: float) -> None:
        self.primary = primary
        self.model = dict(model)  # version, model_dir, code_dir of what the primary serves
        self.canary: WorkerPool | None = None
        self.canary_model: dict[str, str] = {}
        self.percent = 0
        self.baseline_stats, self.canary_stats = ArmStats(), ArmStats()
        self.phase = "idle"
        self.last: dict[str, Any] | None = None
        self._last_stats: dict[str, ArmStats] = {}
        self._load_timeout, self._drain_timeout = load_timeout, drain_timeout
        self._lock = threading.Lock()
        self._count = 0
        self._target = 0

    # -- the WorkerPool calls the server makes ---------------------------------------------

    def __getattr__(self, name: str) -> Any:  # ready, load_failures, starting: the primary's
        return getattr(self.primary, name)

    def scale_to(self, n: int) -> None:
        with self._lock:
            self._target = n
            self.primary.scale_to(n)
            if self.canary is not None:
                self.canary.scale_to(self._canary_size())

    def reconcile(self) -> None:
        self.primary.reconcile()
        if self.canary is not None:
            self.canary.reconcile()

    def acquire(self, timeout: float) -> RoutedWorker | None:
        deadline = time.monotonic() + timeout
        while True:
            pool, stats = self._choose()
            worker = pool.acquire(max(0.0, deadline - time.monotonic()))
            if worker is not None:
                return RoutedWorker(worker, pool, stats)
            with self._lock:
                left = pool is not self.primary and pool is not self.canary
            # A request waiting on a pool that a promotion or rollback just closed is not
            # dropped: it goes to the pool that serves now.
            if not left or time.monotonic() >= deadline:
                return None

    def _choose(self) -> tuple[WorkerPool, ArmStats]:
        with self._lock:
            to_canary = False
            if self.canary is not None and self.percent and self.canary.ready_count():
                n = self._count
                self._count += 1
                to_canary = (n + 1) * self.percent // 100 != n * self.percent // 100
            if to_canary and self.canary is not None:
                return self.canary, self.canary_stats
            return self.primary, self.baseline_stats

    def release(self, worker: RoutedWorker) -> None:
        worker.pool.release(worker.inner)

    def discard(self, worker: RoutedWorker) -> None:
        worker.pool.discard(worker.inner)

    def snapshot(self) -> dict[str, Any]:
        return self.primary.snapshot()

    def close(self, timeout: float) -> None:
        if self.canary is not None:
            self.canary.close(timeout)
        self.primary.close(timeout)

    # -- the rollout ------------------------------------------------------------------------

    def _canary_size(self) -> int:
        return max(1, math.ceil(self._target * max(self.percent, 1) / 100))

    def start(self, model_dir: str, code_dir: str, version: str) -> None:
        with self._lock:
            if self.canary is not None:
                raise RuntimeError(f"a rollout of {self.canary_model.get('version')} is under "
                                   "way; promote or roll it back first")
            self.canary = WorkerPool(model_dir, code_dir, self._load_timeout)
            self.canary_model = {"version": version, "model_dir": model_dir,
                                 "code_dir": code_dir}
            self.percent, self.phase = 0, "starting new workers"
            self.baseline_stats, self.canary_stats = ArmStats(), ArmStats()
            self.canary.scale_to(self._canary_size())

    def shift(self, percent: int) -> None:
        with self._lock:
            if self.canary is None:
                raise RuntimeError("no rollout under way")
            self.percent, self.phase = percent, f"{percent} % to {self.canary_model['version']}"
            self.baseline_stats.reset()
            self.canary_stats.reset()
            self.canary.scale_to(self._canary_size())

    def finish(self, promote: bool, reason: str) -> None:
        """Promote (the new pool becomes the primary) or roll back; the pool that leaves stops
        after its requests in flight are answered."""
        with self._lock:
            if self.canary is None:
                raise RuntimeError("no rollout under way")
            leaving = self.primary if promote else self.canary
            if promote:
                self.canary.scale_to(self._target)
                self.primary, self.model = self.canary, self.canary_model
            self.last = {"decision": "promoted" if promote else "rolled-back",
                         "version": self.canary_model["version"], "reason": reason,
                         "at": time.time()}
            # The finished rollout keeps its counters: requests still in flight (a whole batch,
            # say) record their answers there after the decision. New traffic counts afresh.
            self._last_stats = {"canary": self.canary_stats, "baseline": self.baseline_stats}
            self.canary_stats, self.baseline_stats = ArmStats(), ArmStats()
            self.canary, self.canary_model, self.percent, self.phase = None, {}, 0, "idle"
        threading.Thread(target=leaving.close, args=(self._drain_timeout,), daemon=True).start()

    def status(self) -> dict[str, Any]:
        with self._lock:
            canary = self.canary
            last = self.last and {
                **self.last, **{side: stats.snapshot() for side, stats in self._last_stats.items()}}
            document: dict[str, Any] = {
                "active": canary is not None, "phase": self.phase, "percent": self.percent,
                "new_model": dict(self.canary_model), "last": last,
            }
        if canary is not None:
            document["canary"] = {**self.canary_stats.snapshot(), "workers": canary.snapshot()}
            document["baseline"] = self.baseline_stats.snapshot()
        return document


def _percent(value: Any) -> int:
    """A step's share: a whole number 0-100. JSON admits 1e400 (inf) and NaN, which `int()`
    would turn into an exception that drops the connection; they are a 400 like any bad value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"percent must be a number 0-100, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 100 or value != int(value):
        raise ValueError(f"percent must be a whole number 0-100, got {value!r}")
    return int(value)


def command(split: TrafficSplit, action: str, body: bytes,
            model_store: Path) -> tuple[int, dict[str, Any]]:
    """One `POST /dogops/rollout/<action>` from the control channel: (HTTP status, JSON answer).
    A model to start must lie inside `model_store` (`in_model_store`)."""
    try:
        args = json.loads(body or b"{}")
        if not isinstance(args, dict):
            raise ValueError("the body must be a JSON object")
        if action == "start":
            model_dir = in_model_store(str(args["model_dir"]), model_store, "model_dir")
            code_dir = in_model_store(str(args["code_dir"]), model_store, "code_dir")
            split.start(str(model_dir), str(code_dir), str(args["version"]))
        elif action == "shift":
            split.shift(_percent(args["percent"]))
        elif action in ("promote", "rollback"):
            split.finish(action == "promote", str(args.get("reason", "")))
        else:
            return 404, {"message": f"No rollout action {action!r}."}
    except KeyError as exc:
        return 400, {"message": f"bad rollout request: {exc.args[0]!r} is missing"}
    except (ValueError, TypeError) as exc:  # UserInputError is a ValueError
        return 400, {"message": f"bad rollout request: {exc}"}
    except RuntimeError as exc:
        return 409, {"message": str(exc)}
    return 200, split.status()
