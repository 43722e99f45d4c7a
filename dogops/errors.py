"""The one exception tree of dogops.

    DogopsError
    ├── UserInputError        the caller's mistake: bad data, bad ranges, bad event. Never retried.
    │   ├── DataLayoutError   the data folder does not have the train/valid/test class layout.
    │   ├── NotOwnedError     a same-named AWS resource exists without dogops's ownership tags:
    │   │                     nothing about it is changed; pick another name in the settings.
    │   ├── PermissionDeniedError  AWS refused a call (AccessDenied): names the role and the
    │   │                     missing permission. Never retried.
    │   └── SageMakerRuleError  a request breaks one of SageMaker's documented rules
    │                         (`dogops.aws.sagemaker_rules`): refused before it is sent, since
    │                         the test server would accept it and AWS would not. Never retried.
    ├── TransientError        throttling, 5xx, connection resets, a server still starting. Retried.
    │   ├── RoleNotAssumableYet  a role made seconds ago that a service cannot assume yet (IAM
    │   │                     propagates in seconds): retried with backoff for about two minutes.
    │   └── ConcurrentUpdateError  another run changed the registry (or holds the endpoint's
    │                         live-model lock) each time we tried: nothing was lost, try again.
    └── OperationFailedError  a job or endpoint ended in a failed state: retrying will not help.

Tasks pass `retry_condition_fn=is_transient` so that only `TransientError` (and botocore's
transient errors, see `dogops.aws.client_errors.is_transient_aws_error`, which imports
botocore only) are retried.
"""

from __future__ import annotations

from typing import Any

from dogops.aws.client_errors import is_transient_aws_error


class DogopsError(Exception):
    """Base class of every error dogops raises on purpose."""


class UserInputError(DogopsError, ValueError):
    """The input is wrong; the message names the problem and the fix."""


class DataLayoutError(UserInputError):
    """The data folder is missing, empty or not in the train/valid/test ImageFolder layout."""


class NotOwnedError(UserInputError):
    """A resource with dogops's name exists but does not carry dogops's ownership tags."""


class PermissionDeniedError(UserInputError):
    """AWS refused a call for lack of a permission; the message names the role and the action."""


class SageMakerRuleError(UserInputError):
    """A SageMaker request breaking a documented AWS rule; names the rule, its page, the fix."""


class TransientError(DogopsError):
    """A failure that may pass if the same call is made again a little later."""


class RoleNotAssumableYet(TransientError):
    """A service cannot assume a (new) role yet: IAM is eventually consistent."""


class ConcurrentUpdateError(TransientError):
    """Other writers kept changing a document between our read and our write (or another run
    held the endpoint's live-model lock too long): our change was not applied, loudly."""


class OperationFailedError(DogopsError):
    """A job, endpoint or process ended in a failed state."""


def validation_message(exc: Any) -> str:
    """A pydantic `ValidationError` as one line: each bad field, what is wrong with it and the
    value given (shortened), instead of pydantic's multi-line report."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ())) or "value"
        given = repr(error.get("input"))
        given = given if len(given) <= 60 else given[:57] + "..."
        parts.append(f"{field}: {error.get('msg', 'invalid')} (got {given})")
    return f"invalid {exc.title}: " + "; ".join(parts)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same call may succeed."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, (UserInputError, OperationFailedError)):
        return False
    return is_transient_aws_error(exc)


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry only transient failures, never the user's mistakes."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify every exception
        return is_transient(exc)
    return False
