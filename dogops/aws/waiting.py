"""The one way dogops waits for AWS: a boto3 waiter where botocore has one for the state we want
(as prefect-aws's `client_waiter` does), else `poll` (`dogops.waiting`, the backend-neutral loop
both backends share), for waits that report progress on every look or that no waiter covers.
"""

from __future__ import annotations

import math
from typing import Any

from botocore.exceptions import WaiterError

from dogops.errors import OperationFailedError


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
