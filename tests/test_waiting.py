"""dogops.waiting: the one poll loop both backends wait with (AWS jobs and endpoints, the local
server's start, stop and drain, a rollout's new workers). Driven by a fake clock whose sleep moves
it, so the timings are exact and nothing really waits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dogops.waiting import poll, wait_until


class FakeTime:
    """A monotonic clock that only `sleep` moves; records each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Gone(Exception):
    pass


def answers(*values: object) -> Callable[[], object]:
    """A probe that returns `values` one per look, then keeps returning the last one."""
    queue = list(values)

    def probe() -> object:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return probe


def test_returns_the_first_answer_and_sleeps_poll_s_between_looks() -> None:
    t = FakeTime()
    looks: list[float] = []

    def probe() -> str | None:
        looks.append(t.now)
        return "InService" if len(looks) == 4 else None

    result = poll(probe, timeout_s=60, poll_s=5, timed_out=lambda: Gone("late"),
                  sleep=t.sleep, clock=t.clock)
    assert result == "InService"
    assert t.sleeps == [5, 5, 5]  # three sleeps between four looks, none after the answer
    assert looks == [1000, 1005, 1010, 1015]


def test_an_answer_at_once_never_sleeps() -> None:
    t = FakeTime()
    assert poll(lambda: 0, timeout_s=10, poll_s=1, timed_out=lambda: Gone("late"),
                sleep=t.sleep, clock=t.clock) == 0  # a falsy answer is still an answer
    assert t.sleeps == []


def test_raises_timed_out_once_the_timeout_has_passed() -> None:
    t = FakeTime()
    looks: list[float] = []

    def probe() -> None:
        looks.append(t.now)

    with pytest.raises(Gone, match="not ready after 10 s"):
        poll(probe, timeout_s=10, poll_s=3, timed_out=lambda: Gone("not ready after 10 s"),
             sleep=t.sleep, clock=t.clock)
    # Looks at 0, 3, 6, 9 and 12 s: the last one after the deadline, then the error, no sleep.
    assert [round(x - 1000) for x in looks] == [0, 3, 6, 9, 12]
    assert t.sleeps == [3, 3, 3, 3]


def test_a_zero_timeout_still_looks_once() -> None:
    t = FakeTime()
    assert poll(answers("ok"), timeout_s=0, poll_s=1, timed_out=lambda: Gone("late"),
                sleep=t.sleep, clock=t.clock) == "ok"
    with pytest.raises(Gone):
        poll(answers(None), timeout_s=0, poll_s=1, timed_out=lambda: Gone("late"),
             sleep=t.sleep, clock=t.clock)
    assert t.sleeps == []


def test_an_exception_from_the_probe_leaves_poll_as_it_is() -> None:
    """How a wait fails early: the probe raises (the process exited, the job failed)."""
    t = FakeTime()
    looks = 0

    def probe() -> None:
        nonlocal looks
        looks += 1
        if looks == 3:
            raise RuntimeError("the server exited with code 3")

    with pytest.raises(RuntimeError, match="exited with code 3"):
        poll(probe, timeout_s=60, poll_s=1, timed_out=lambda: Gone("late"),
             sleep=t.sleep, clock=t.clock)
    assert looks == 3 and t.sleeps == [1, 1]


def test_wait_until_says_whether_the_condition_came_true_in_time() -> None:
    t = FakeTime()
    assert wait_until(answers(False, False, True), timeout_s=1, poll_s=0.2,
                      sleep=t.sleep, clock=t.clock) is True
    assert t.sleeps == [0.2, 0.2]
    t.sleeps.clear()
    assert wait_until(answers(False), timeout_s=1, poll_s=0.25, sleep=t.sleep,
                      clock=t.clock) is False
    assert t.sleeps == [0.25] * 4  # looks at 0, .25, .5, .75 and 1 s, then gives up


def test_wait_until_lets_the_conditions_own_errors_through() -> None:
    def condition() -> bool:
        raise PermissionError("not our process")

    with pytest.raises(PermissionError):
        wait_until(condition, timeout_s=1, poll_s=0.1, sleep=FakeTime().sleep)


def test_real_clock_and_sleep_by_default() -> None:
    """No clock given: the real ones (a short real wait, a condition that comes true)."""
    calls = iter([False, True])
    assert wait_until(lambda: next(calls), timeout_s=5, poll_s=0.01) is True
