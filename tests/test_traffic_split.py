"""The endpoint server's traffic split, on its own: which pool each request goes to, where a
worker goes back, what each side counts, and the controller's judgement. The worker pools are
stand-ins here (no model processes): the split only borrows and returns their workers; the real
pools run in test_rollout_local.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from dogops.local.endpoint_server import traffic_split
from dogops.local.endpoint_server.batching import Batcher
from dogops.local.endpoint_server.pool import WorkerGone
from dogops.local.endpoint_server.traffic_split import TrafficSplit, command
from dogops.local.rollout import judge
from dogops.settings import RolloutConfig


class FakeWorker:
    def __init__(self, pool: FakePool, status: int) -> None:
        self.pool, self.status, self.pid = pool, status, id(self)

    def call(self, *_: Any) -> Any:
        if self.status == 0:
            raise WorkerGone
        return self.status, b"{}", "application/json"

    def call_batch(self, requests: list[Any], timeout: float) -> list[Any]:
        return [self.call() for _ in requests]


class FakePool:
    """A pool with one worker that answers `status`; records what it lends and gets back."""

    def __init__(self, *_: Any, status: int = 200) -> None:
        self.status = status
        self.lent = self.returned = 0
        self.target = 0
        self.closed = threading.Event()

    def scale_to(self, n: int) -> None:
        self.target = n

    def ready_count(self) -> int:
        return 1

    def acquire(self, timeout: float) -> FakeWorker | None:
        if self.closed.is_set():
            return None
        self.lent += 1
        return FakeWorker(self, self.status)

    def release(self, worker: FakeWorker) -> None:
        assert worker.pool is self
        self.returned += 1

    def close(self, timeout: float) -> None:
        self.closed.set()

    def snapshot(self) -> dict[str, Any]:
        return {"ready": 1, "starting": 0, "load_failures": []}


@pytest.fixture
def split(monkeypatch: pytest.MonkeyPatch) -> TrafficSplit:
    monkeypatch.setattr(traffic_split, "WorkerPool", lambda *a: FakePool(status=500))
    result = TrafficSplit(FakePool(), {"version": "old"}, 5, 5)  # type: ignore[arg-type]
    result.scale_to(2)
    return result


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """The model store, holding the new model the tests roll out (the split only checks paths)."""
    (tmp_path / "models" / "new" / "code").mkdir(parents=True)
    return tmp_path / "models"


def _start(split: TrafficSplit, store: Path, version: str = "new") -> tuple[int, dict[str, Any]]:
    model = store / "new"
    body = {"model_dir": str(model), "code_dir": str(model / "code"), "version": version}
    return command(split, "start", json.dumps(body).encode(), store)


def _serve(split: TrafficSplit, n: int) -> None:
    for _ in range(n):
        worker = split.acquire(1)
        assert worker is not None
        worker.call(b"", "image/jpeg", "", 1)
        split.release(worker)


def test_exact_share_and_each_side_counted(split: TrafficSplit, store: Path) -> None:
    old = split.primary
    assert _start(split, store)[0] == 200
    new = split.canary
    assert command(split, "shift", b'{"percent": 25}', store)[0] == 200
    _serve(split, 200)
    assert (new.lent, old.lent) == (50, 150)  # type: ignore[union-attr]
    assert (new.returned, old.returned) == (50, 150)  # type: ignore[union-attr]
    status = split.status()
    assert status["active"] and status["percent"] == 25
    assert (status["canary"]["requests"], status["canary"]["errors_5xx"]) == (50, 50)
    assert (status["baseline"]["requests"], status["baseline"]["errors_5xx"]) == (150, 0)
    assert status["canary"]["error_rate_percent"] == 100.0
    # A second rollout cannot start over this one; a bad percent is refused.
    assert _start(split, store, "v")[0] == 409
    assert command(split, "shift", b'{"percent": 101}', store)[0] == 400


def test_rollback_keeps_the_old_pool_and_a_late_worker_goes_home(
    split: TrafficSplit, store: Path,
) -> None:
    old = split.primary
    _start(split, store)
    new = split.canary
    command(split, "shift", b'{"percent": 100}', store)
    borrowed = split.acquire(1)  # a request in flight on the new model...
    assert borrowed is not None and borrowed.pool is new
    code, answer = command(split, "rollback", b'{"reason": "5xx"}', store)
    assert code == 200 and answer["last"]["decision"] == "rolled-back"
    split.release(borrowed)  # ...goes back to its own pool, which is closing
    assert new.returned == 1 and split.primary is old  # type: ignore[union-attr]
    assert new.closed.wait(2) and not old.closed.is_set()  # type: ignore[union-attr]
    worker = split.acquire(1)
    assert worker is not None and worker.pool is old


def test_promote_swaps_the_pools_and_the_model(split: TrafficSplit, store: Path) -> None:
    old = split.primary
    _start(split, store)
    new = split.canary
    command(split, "promote", b'{"reason": "fine"}', store)
    assert split.primary is new and split.model["version"] == "new"
    assert old.closed.wait(2) and new.target == 2  # type: ignore[union-attr]


def test_a_request_waiting_on_a_closed_pool_is_served_by_the_new_one(
    split: TrafficSplit, monkeypatch: pytest.MonkeyPatch, store: Path,
) -> None:
    old = split.primary
    _start(split, store)
    new = split.canary

    def promoted_while_waiting(timeout: float) -> None:
        split.finish(True, "promoted meanwhile")  # closes the pool this request waits on
        return None

    monkeypatch.setattr(old, "acquire", promoted_while_waiting)
    worker = split.acquire(1)
    assert worker is not None and worker.pool is new


def test_judge_thresholds() -> None:
    rollout = RolloutConfig(max_error_rate_percent=5, max_latency_p99_ms=100, min_requests=5)
    fine = {"requests": 100, "errors_5xx": 5, "error_rate_percent": 5.0, "p99_ms": 99.0}
    assert judge(fine, rollout) == []
    errors = {**fine, "errors_5xx": 6, "error_rate_percent": 6.0}
    assert judge(errors, rollout) == ["5xx rate 6.0 % > 5 % (6 of 100 requests)"]
    slow = {**fine, "p99_ms": 250.0}
    assert judge(slow, rollout) == ["p99 latency 250 ms > 100 ms"]
    # The p99 of 3 answers is noise; 3 of 3 failing is not.
    assert judge({"requests": 3, "errors_5xx": 0, "error_rate_percent": 0.0, "p99_ms": 900.0},
                 rollout) == []
    assert judge({"requests": 3, "errors_5xx": 3, "error_rate_percent": 100.0, "p99_ms": 1.0},
                 rollout)
    assert judge({"requests": 0, "errors_5xx": 0, "error_rate_percent": 0.0, "p99_ms": None},
                 rollout) == []


def test_batches_go_through_the_split_and_count_on_their_side(
    split: TrafficSplit, store: Path,
) -> None:
    """Dynamic batching borrows workers from the split: a batch runs on one side's worker and
    each of its requests counts on that side (a rollout is judged on batched traffic too)."""
    _start(split, store)
    command(split, "shift", b'{"percent": 50}', store)
    batcher = Batcher(split, batch_size=8, max_delay_s=0.05, invocation_timeout=5,
                      queue_timeout=5)
    batcher._recent.append(8)  # traffic has been concurrent: requests wait to be batched
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(
        batcher.call(b"", "image/jpeg", "")[0])) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    batcher.close()
    assert len(answers) == 32 and set(answers) <= {200, 500}
    assert batcher.stats()["mean_batch"] > 1
    status = split.status()
    assert status["canary"]["requests"] + status["baseline"]["requests"] == 32
    assert status["canary"]["errors_5xx"] == answers.count(500) == status["canary"]["requests"]


@pytest.mark.parametrize("percent", [b"1e400", b"-1e400", b"NaN", b"Infinity", b"12.5", b"true",
                                     b'"50"', b"-1", b"101", b"null"])
def test_a_percent_that_is_not_a_whole_number_0_to_100_is_a_400(
    split: TrafficSplit, store: Path, percent: bytes,
) -> None:
    """`int(1e400)` raised OverflowError, which no handler caught: the connection dropped."""
    _start(split, store)
    code, answer = command(split, "shift", b'{"percent": ' + percent + b"}", store)
    assert code == 400 and "percent must be" in answer["message"]
    assert split.percent == 0
    assert command(split, "shift", b'{"percent": 10.0}', store)[0] == 200 and split.percent == 10


def test_a_model_outside_the_store_is_refused_and_nothing_starts(
    split: TrafficSplit, store: Path, tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "code").mkdir(parents=True)
    (store / "escape").symlink_to(elsewhere)  # inside by name, outside once resolved
    inside = str(store / "new")
    for model_dir, code_dir in [(str(elsewhere), str(elsewhere / "code")),
                                (str(store / "escape"), str(store / "escape" / "code")),
                                (f"{inside}/../../elsewhere", f"{inside}/code"),
                                (inside, str(elsewhere / "code")), (str(store), inside)]:
        body = json.dumps({"model_dir": model_dir, "code_dir": code_dir, "version": "evil"})
        code, answer = command(split, "start", body.encode(), store)
        assert code == 400 and "is not inside the model store" in answer["message"], model_dir
        assert "\n" not in answer["message"]
        assert split.canary is None and split.status()["active"] is False
    assert command(split, "start", b"[1]", store)[0] == 400
    assert command(split, "start", b'{"version": "v"}', store)[0] == 400
    code, answer = _start(split, store)
    assert code == 200 and split.canary_model["model_dir"] == str((store / "new").resolve())
