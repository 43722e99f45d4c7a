"""IAM audit: customer-managed policies nobody uses, and roles holding full-access AWS policies.

`audit_policies` only reads. `apply_cleanup` deletes, and only customer-managed policies: never an
AWS-managed one, never one that is still attached unless `detach=True` was asked for explicitly.
Attachment is re-checked right before each deletion (the report may be minutes old), and
non-default versions are deleted before the policy, as AWS requires.

"Unused for N days" needs IAM's service-last-accessed reports. Where they are unavailable (moto
does not implement them; a caller may lack `iam:GenerateServiceLastAccessedDetails`), last access
is "unknown": the report says so instead of guessing, and no policy is judged unused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.aws.iam import delete_policy_with_versions
from dogops.errors import UserInputError
from dogops.iam_policies import is_aws_managed, is_full_access_policy
from dogops.waiting import poll

log = logging.getLogger(__name__)

FindingKind = Literal["unattached-policy", "unused-policy", "full-access-role"]
LastAccess = Literal["available", "unknown", "not-needed"]
LAST_ACCESSED_TIMEOUT_S = 60.0
LAST_ACCESSED_POLL_S = 1.0
_sleep: Callable[[float], None] = time.sleep


class AuditFinding(BaseModel):
    """One thing worth a look, why, and what to do about it."""

    kind: FindingKind
    policy_arn: str
    policy_name: str
    role_name: str | None = None
    aws_managed: bool = False
    versions: int = 1
    attachments: int = 0
    last_accessed: datetime | None = None
    reason: str
    action: str

    @property
    def deletable(self) -> bool:
        """Only customer-managed policies attached to nothing may be deleted without detaching."""
        return self.kind == "unattached-policy" and not self.aws_managed


class AuditReport(BaseModel):
    """What `audit_policies` found; `rows()` is the artifact table."""

    generated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    account_id: str | None = None
    unused_days: int = 90
    policies_checked: int = 0
    last_access: LastAccess = "not-needed"
    last_access_note: str = ""
    findings: list[AuditFinding] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def of_kind(self, kind: FindingKind) -> list[AuditFinding]:
        return [f for f in self.findings if f.kind == kind]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "finding": f.kind,
                "policy": f.policy_name,
                "policy_arn": f.policy_arn,
                "role": f.role_name or "",
                "versions": f.versions,
                "attachments": f.attachments,
                "last_accessed": f.last_accessed.isoformat() if f.last_accessed else "",
                "reason": f.reason,
                "action": f.action,
            }
            for f in self.findings
        ]


def _paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def _entities(iam: Any, policy_arn: str, **kwargs: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {
        "PolicyRoles": [],
        "PolicyUsers": [],
        "PolicyGroups": [],
    }
    for page in iam.get_paginator("list_entities_for_policy").paginate(
        PolicyArn=policy_arn, **kwargs
    ):
        for key in found:
            found[key].extend(page.get(key, []))
    return found


def _attachment_count(iam: Any, policy_arn: str) -> int:
    return sum(len(v) for v in _entities(iam, policy_arn).values())


class _LastAccessUnavailable(Exception):
    pass


def _last_accessed(iam: Any, policy_arn: str) -> datetime | None:
    """Latest time any principal used a service this policy grants; None when never.
    Raises `_LastAccessUnavailable` when IAM cannot answer (not implemented, no permission)."""
    try:
        job = iam.generate_service_last_accessed_details(Arn=policy_arn)["JobId"]

        def look() -> dict[str, Any] | None:
            details: dict[str, Any] = iam.get_service_last_accessed_details(JobId=job)
            if details["JobStatus"] == "COMPLETED":
                return details
            if details["JobStatus"] == "FAILED":
                raise _LastAccessUnavailable(
                    f"last-accessed job FAILED: {details.get('Error', {}).get('Message', '')}"
                )
            return None

        details = poll(
            look, timeout_s=LAST_ACCESSED_TIMEOUT_S, poll_s=LAST_ACCESSED_POLL_S, sleep=_sleep,
            timed_out=lambda: _LastAccessUnavailable("last-accessed job timed out"),
        )
    except _LastAccessUnavailable:
        raise
    except Exception as exc:  # ClientError, BotoCoreError, botocore's ResponseParserError (moto)
        raise _LastAccessUnavailable(f"{type(exc).__name__}: {exc}") from exc
    dates = [
        s["LastAuthenticated"]
        for s in details.get("ServicesLastAccessed", [])
        if s.get("LastAuthenticated")
    ]
    return max(dates) if dates else None


def audit_policies(clients: AwsClients, unused_days: int = 90) -> AuditReport:
    """Read-only audit of customer-managed policies and of roles with full-access policies."""
    if unused_days < 1:
        raise UserInputError(f"unused_days must be at least 1, got {unused_days}.")
    iam = clients.client("iam")
    report = AuditReport(unused_days=unused_days, account_id=clients.account_id())
    cutoff = datetime.now(UTC) - timedelta(days=unused_days)
    last_access_works: bool | None = None

    for policy in _paginate(iam, "list_policies", "Policies", Scope="Local"):
        arn, name = policy["Arn"], policy["PolicyName"]
        if is_aws_managed(arn):  # defensive: Scope='Local' should never return these
            continue
        report.policies_checked += 1
        versions = len(iam.list_policy_versions(PolicyArn=arn)["Versions"])
        attachments = _attachment_count(iam, arn)
        if attachments == 0:
            report.findings.append(
                AuditFinding(
                    kind="unattached-policy",
                    policy_arn=arn,
                    policy_name=name,
                    versions=versions,
                    reason="customer-managed policy attached to no role, user or group",
                    action="delete (apply=True): non-default versions first, then the policy",
                )
            )
            continue
        if last_access_works is False:
            continue
        try:
            last = _last_accessed(iam, arn)
        except _LastAccessUnavailable as exc:
            last_access_works = False
            report.last_access = "unknown"
            report.last_access_note = (
                "IAM service-last-accessed details are unavailable here "
                f"({exc}); attached policies were not judged unused."
            )
            log.warning(report.last_access_note)
            continue
        last_access_works = True
        report.last_access = "available"
        if last is None or last < cutoff:
            when = f"last used {last:%Y-%m-%d}" if last else "never used"
            report.findings.append(
                AuditFinding(
                    kind="unused-policy",
                    policy_arn=arn,
                    policy_name=name,
                    versions=versions,
                    attachments=attachments,
                    last_accessed=last,
                    reason=f"{when}: nothing it grants was accessed in {unused_days} days",
                    action="review; apply=True with detach=True detaches and deletes it",
                )
            )

    for policy in _paginate(iam, "list_policies", "Policies", Scope="AWS", OnlyAttached=True):
        arn = policy["Arn"]
        if not is_full_access_policy(arn):
            continue
        for role in _entities(iam, arn, EntityFilter="Role")["PolicyRoles"]:
            report.findings.append(
                AuditFinding(
                    kind="full-access-role",
                    policy_arn=arn,
                    policy_name=policy["PolicyName"],
                    role_name=role["RoleName"],
                    aws_managed=True,
                    attachments=1,
                    reason=f"role {role['RoleName']} has AWS-managed "
                    f"{policy['PolicyName']} attached",
                    action="replace with a least-privilege policy (dogops.iam_policies), "
                    "then detach; never deleted by this audit",
                )
            )
    if report.last_access == "not-needed" and report.of_kind("unattached-policy"):
        report.notes.append("no attached customer-managed policy needed a last-access check")
    return report


def planned_deletions(report: AuditReport, detach: bool = False) -> list[AuditFinding]:
    """Findings `apply_cleanup` would act on: unattached customer-managed policies, plus the
    unused (still attached) ones when `detach` is True. Never an AWS-managed policy."""
    kinds = {"unattached-policy", "unused-policy"} if detach else {"unattached-policy"}
    return [
        f
        for f in report.findings
        if f.kind in kinds and not f.aws_managed and not is_aws_managed(f.policy_arn)
    ]


def _detach_all(iam: Any, policy_arn: str) -> None:
    entities = _entities(iam, policy_arn)
    for role in entities["PolicyRoles"]:
        iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=policy_arn)
    for user in entities["PolicyUsers"]:
        iam.detach_user_policy(UserName=user["UserName"], PolicyArn=policy_arn)
    for group in entities["PolicyGroups"]:
        iam.detach_group_policy(GroupName=group["GroupName"], PolicyArn=policy_arn)


def apply_cleanup(clients: AwsClients, report: AuditReport, detach: bool = False) -> list[str]:
    """Delete what `planned_deletions` lists; returns the ARNs deleted. Safe to re-run: a policy
    already gone is skipped, and one attached since the audit is kept unless `detach`."""
    iam = clients.client("iam")
    deleted: list[str] = []
    for finding in planned_deletions(report, detach):
        arn = finding.policy_arn
        try:
            attachments = _attachment_count(iam, arn)  # re-check: the report may be stale
            if attachments:
                if not detach:
                    log.warning(
                        "Keeping %s: attached to %d entities since the audit", arn, attachments
                    )
                    continue
                _detach_all(iam, arn)
                log.info("Detached %s from %d entities", arn, attachments)
            delete_policy_with_versions(iam, arn)
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                log.info("Policy %s already gone", arn)
                continue
            raise
        log.info("Deleted policy %s", arn)
        deleted.append(arn)
    return deleted
