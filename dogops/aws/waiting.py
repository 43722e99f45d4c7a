"""The one way dogops waits for AWS: a boto3 waiter where botocore has one for the state we want
(as prefect-aws's `client_waiter` does), else `poll`, for waits that report progress on every
look or that no waiter covers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import WaiterError

from dogops.errors import OperationFailedError

T = TypeVar("T")


def poll(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    poll_s: float,
    timed_out: Callable[[], Exception],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `probe` until it returns something other than None and return that; sleep `poll_s`
    between looks; raise `timed_out()` once `timeout_s` has passed. `probe` raises to fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise timed_out()
        sleep(poll_s)


def wait_with_waiter(
    client: Any, waiter_name: str, *, timeout_s: float, poll_s: float, failure: str,
    **request: Any,
) -> None:
    """Run boto3's waiter `waiter_name` with `request`, looking every `poll_s` for about
    `timeout_s`; a waiter that gives up or sees a failure state raises `OperationFailedError`
    starting with `failure`."""
    attempts = max(1, math.ceil(timeout_s / poll_s)) if poll_s > 0 else max(1, int(timeout_s))
    waiter = client.get_waiter(waiter_name)
    try:
        waiter.wait(WaiterConfig={"Delay": poll_s, "MaxAttempts": attempts}, **request)
    except WaiterError as exc:
        raise OperationFailedError(f"{failure} ({exc})") from exc
