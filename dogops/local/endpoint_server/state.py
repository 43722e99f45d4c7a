"""What the front process knows: pool, admission, counters, autoscaler, status page."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Any

from dogops.local.autoscaler import InvocationCounter, TargetTrackingScaler
from dogops.local.endpoint_server.batching import Batcher
from dogops.local.endpoint_server.capture import writer_for
from dogops.local.endpoint_server.options import ServerOptions
from dogops.local.endpoint_server.pool import WorkerPool
from dogops.local.endpoint_server.traffic_split import TrafficSplit

log = logging.getLogger("dogops.endpoint")

class EndpointState:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        # A TrafficSplit offers WorkerPool's calls; during a rollout it also runs the new model's
        # pool beside this one (traffic_split.py).
        self.pool = TrafficSplit(
            WorkerPool(options.model_dir, options.code_dir, options.model_load_timeout),
            {"version": options.model_version, "model_dir": options.model_dir,
             "code_dir": options.code_dir},
            options.model_load_timeout, options.invocation_timeout,
        )
        self.counter = InvocationCounter(window_s=options.metric_window)
        self.batcher = Batcher(
            self.pool, batch_size=options.batch_size,
            max_delay_s=options.max_batch_delay_ms / 1000.0,
            invocation_timeout=options.invocation_timeout, queue_timeout=options.queue_timeout,
            on_dispatch=self.counter.record,  # counted when a worker takes them, as before
        )
        # A scale-to-zero pool (min 0) starts with one worker, to prove the model loads.
        self.scaler = TargetTrackingScaler(options.policy(), current=max(1, options.min_capacity))
        self.cold_starts: list[float] = []  # seconds from arrival to a loaded worker
        self.started = time.time()
        self.status = "Creating"
        self.draining = False
        self.errors = 0
        self.rejected = 0
        self._in_flight = 0
        self._answering = 0  # answers known, their slot given back, still being written
        self._lock = threading.Lock()
        self.capture = writer_for(options.name, options.capture_percent, options.capture_dir)

    @property
    def capacity(self) -> int:
        return self.options.max_capacity + self.options.max_queue

    def admit(self) -> bool:
        with self._lock:
            if self._in_flight >= self.capacity:
                self.rejected += 1
                return False
            self._in_flight += 1
            return True

    def done(self, ok: bool) -> None:
        """The answer is known: its admission slot is free; it is still written (`answered`)."""
        with self._lock:
            self._in_flight -= 1
            self._answering += 1
            if not ok:
                self.errors += 1

    def answered(self) -> None:
        with self._lock:
            self._answering -= 1

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def busy(self) -> int:
        """Requests admitted and answers still going out: what a drain waits for."""
        with self._lock:
            return self._in_flight + self._answering

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
            "model": dict(self.pool.model),  # the served one: a promoted rollout changes it
            "rollout": self.pool.status(),
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
            "batching": self.batcher.stats(),
            "capture": self.capture.status() if self.capture else {"percent": 0},
            "uptime_s": round(time.time() - self.started, 3),
        }
