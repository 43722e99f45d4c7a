"""The one loop that waits for something to happen, for both backends: `poll` looks, sleeps and
gives up at a deadline; `wait_until` is the same loop for a yes/no condition whose caller carries
on (or falls back) when time runs out.

Stdlib only: the local endpoint server's front process imports it, and so do the AWS waits
(`dogops.aws.waiting` adds boto3's own waiters, as prefect-aws's `client_waiter` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class _TimedOut(Exception):
    """`wait_until`'s own signal that `poll` reached its deadline (never leaves this module)."""


def poll(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    poll_s: float,
    timed_out: Callable[[], Exception],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call `probe` until it returns something other than None and return that; sleep `poll_s`
    between looks; raise `timed_out()` once `timeout_s` has passed (a look at least, even with no
    time left). `probe` raises to fail (a process that exited, a job that failed): that exception
    leaves `poll` as it is."""
    deadline = clock() + timeout_s
    while True:
        result = probe()
        if result is not None:
            return result
        if clock() >= deadline:
            raise timed_out()
        sleep(poll_s)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """True as soon as `condition()` holds, False once `timeout_s` has passed without it (the
    caller decides what a timeout means: kill the process, stop waiting for a drain...)."""
    try:
        return poll(lambda: True if condition() else None, timeout_s=timeout_s, poll_s=poll_s,
                    timed_out=_TimedOut, sleep=sleep, clock=clock)
    except _TimedOut:
        return False
