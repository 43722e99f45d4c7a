"""One mechanism for create calls that pass a (possibly brand-new) IAM role to a service.

IAM is eventually consistent: for some seconds after a role is created (or its trust policy
changed) the service cannot assume it yet and refuses the call. SageMaker answers
`ValidationException: Could not assume role <arn>` (CreateHyperParameterTuningJob,
CreateTrainingJob, CreateModel), Lambda `InvalidParameterValueException: The role defined for the
function cannot be assumed by Lambda`. Both mean "not yet": the error is transient in the
exception tree (`RoleNotAssumableYet`), and `call_with_role` retries it with backoff for about two
minutes. A role still refused after that has a wrong trust policy: `OperationFailedError` says so.

A real permission error (`AccessDenied`, e.g. the caller may not `iam:PassRole` the role) is the
operator's to fix and never passes by waiting: it fails at once with `PermissionDeniedError`
naming the role and the missing permission. Everything else is raised as is.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws.client_errors import error_code, error_message, says_role_not_assumable
from dogops.errors import OperationFailedError, PermissionDeniedError, RoleNotAssumableYet

log = logging.getLogger(__name__)

# ~2 minutes in all: IAM usually propagates within seconds, rarely within a minute.
ROLE_RETRY_DELAYS_S: tuple[float, ...] = (2, 4, 8, 15, 30, 30, 30)
_sleep: Callable[[float], None] = time.sleep  # tests replace this to avoid real waits

_ACCESS_DENIED_CODES = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")
_ACTION = re.compile(r"not authorized to perform:?\s*([A-Za-z0-9-]+:[A-Za-z0-9*]+)")


def is_role_not_assumable(exc: BaseException) -> bool:
    """The service says it cannot assume the role (yet)."""
    if isinstance(exc, RoleNotAssumableYet):
        return True
    return says_role_not_assumable(exc)


def permission_denied(exc: ClientError, operation: str, role_arn: str) -> PermissionDeniedError:
    """A clear, non-retried error for AccessDenied: the role and the missing action."""
    code, message = error_code(exc), error_message(exc)
    found = _ACTION.search(message)
    action = found.group(1) if found else f"the permission {operation} needs"
    return PermissionDeniedError(
        f"AWS refused {operation} with role {role_arn}: the caller lacks {action} ({code}: "
        f"{message}). Grant {action} to the identity running dogops (for iam:PassRole, on that "
        "role), or point DOGOPS_AWS__SAGEMAKER_ROLE_ARN at a role you may pass."
    )


def call_with_role(
    call: Callable[..., Any], role_arn: str, operation: str, **kwargs: Any
) -> Any:
    """`call(**kwargs)`, retried while the service cannot assume `role_arn` yet (see above)."""
    for delay in (*ROLE_RETRY_DELAYS_S, None):
        try:
            return call(**kwargs)
        except ClientError as exc:
            if error_code(exc) in _ACCESS_DENIED_CODES:
                raise permission_denied(exc, operation, role_arn) from exc
            if not is_role_not_assumable(exc):
                raise
            if delay is None:
                raise OperationFailedError(
                    f"{operation}: the service still cannot assume role {role_arn} after "
                    f"{sum(ROLE_RETRY_DELAYS_S):.0f} s, longer than IAM takes to propagate. "
                    "Check the role's trust policy names the service "
                    "(dogops.iam_policies.sagemaker_trust_policy / lambda_trust_policy)."
                ) from exc
            log.info("%s: role %s not assumable yet; retrying in %s s", operation, role_arn, delay)
            _sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
