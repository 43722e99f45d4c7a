"""What a botocore error says, read in one place: its code, its message, and whether retrying
may help.

This module imports botocore only (no other dogops module), so `dogops.errors` can ask it whether
an exception is transient without an import circle.
"""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)

# A service that cannot assume a (new) role yet answers one of these codes with one of these
# phrases (see `dogops.aws.propagation`).
_NOT_ASSUMABLE = ("could not assume role", "cannot be assumed", "unable to assume role")
_NOT_ASSUMABLE_CODES = ("ValidationException", "InvalidParameterValueException")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a `ClientError` (`""` for anything else or when absent)."""
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def error_message(exc: BaseException) -> str:
    """The AWS error message of a `ClientError` (`""` for anything else or when absent)."""
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Message", "") or "")


def http_status(exc: BaseException) -> int:
    """The HTTP status of a `ClientError`'s response (0 when unknown)."""
    if not isinstance(exc, ClientError):
        return 0
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def says_role_not_assumable(exc: BaseException) -> bool:
    """The service answered that it cannot assume the role (yet)."""
    return error_code(exc) in _NOT_ASSUMABLE_CODES and any(
        phrase in error_message(exc).lower() for phrase in _NOT_ASSUMABLE
    )


def is_transient_aws_error(exc: BaseException) -> bool:
    """Throttling, 5xx, connection failures and a role not assumable yet (IAM propagation) are
    transient; every other client error is not."""
    if isinstance(
        exc, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)
    ):
        return True
    if isinstance(exc, ClientError):
        if says_role_not_assumable(exc):
            return True
        return error_code(exc) in TRANSIENT_ERROR_CODES or http_status(exc) >= 500
    return False
