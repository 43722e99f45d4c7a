"""Prefect flow `iam-audit`: find unused customer-managed policies and full-access roles.

Dry run by default: the findings become a table artifact (`iam-audit`) and a markdown artifact
(`iam-audit-actions`) says what `apply=True` would delete. Deleting needs `apply=True`; deleting a
policy that is still attached additionally needs `detach=True`. AWS-managed policies are never
deleted. The tasks are thin wrappers over `dogops.aws.iam_audit`, retried only on transient errors.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dogops.aws.clients import AwsClients
from dogops.aws.iam_audit import AuditReport, apply_cleanup, audit_policies, planned_deletions
from dogops.backends import get_backend
from dogops.errors import retry_condition
from dogops.settings import load_settings

TABLE_KEY = "iam-audit"
ACTIONS_KEY = "iam-audit-actions"


# Retried only on transient errors (throttling, 5xx, connection); never cached: an audit must
# always look at IAM as it is now.
@task(
    name="audit-iam-policies",
    retries=3,
    retry_delay_seconds=[2, 8, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
)
def audit_task(clients: AwsClients, unused_days: int) -> AuditReport:
    return audit_policies(clients, unused_days=unused_days)


@task(
    name="delete-unused-policies",
    retries=3,
    retry_delay_seconds=[2, 8, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
)
def cleanup_task(clients: AwsClients, report: AuditReport, detach: bool) -> list[str]:
    # Safe to retry: apply_cleanup re-checks each policy and skips those already gone.
    return apply_cleanup(clients, report, detach=detach)


def _actions_markdown(report: AuditReport, apply: bool, detach: bool, deleted: list[str]) -> str:
    planned = planned_deletions(report, detach)
    lines = [f"# IAM audit ({'apply' if apply else 'dry run'})", ""]
    if apply:
        lines.append(f"Deleted {len(deleted)} customer-managed policies:")
        lines += [f"- `{arn}`" for arn in deleted] or ["- none"]
        kept = [f.policy_arn for f in planned if f.policy_arn not in deleted]
        if kept:
            lines += ["", "Kept (attached since the audit; `detach=True` to remove):"]
            lines += [f"- `{arn}`" for arn in kept]
    else:
        lines.append(f"Would delete {len(planned)} customer-managed policies with `apply=True`:")
        lines += [f"- `{f.policy_arn}` ({f.versions} versions)" for f in planned] or ["- none"]
    full = report.of_kind("full-access-role")
    if full:
        lines += ["", "Roles with full-access AWS-managed policies (never changed here):"]
        lines += [f"- {f.role_name}: `{f.policy_name}`" for f in full]
    if report.last_access == "unknown":
        lines += ["", f"Last access: unknown. {report.last_access_note}"]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines)


@flow(name="iam-audit", log_prints=True)
def iam_audit(
    apply: bool = False, detach: bool = False, unused_days: int = 90, backend: str | None = None
) -> AuditReport:
    """Audit IAM policies; delete unused customer-managed ones only when `apply` is True."""
    logger = get_run_logger()
    settings = load_settings(backend=backend)
    reason = get_backend(settings).operations.no_iam_reason()
    if reason is not None:
        logger.warning(reason)
        create_markdown_artifact(key=ACTIONS_KEY, markdown=f"# IAM audit skipped\n\n{reason}")
        return AuditReport(unused_days=unused_days, notes=[reason])

    # Past the gate the backend is AWS: one set of clients (one credentials lookup) for the run.
    clients = AwsClients(settings.aws)
    report = audit_task(clients, unused_days)
    create_table_artifact(
        key=TABLE_KEY,
        table=report.rows(),
        description=f"IAM audit: {len(report.findings)} findings in "
        f"{report.policies_checked} customer-managed policies; last access {report.last_access}",
    )
    if detach and not apply:
        logger.info("detach=True has no effect without apply=True (dry run)")
    deleted = cleanup_task(clients, report, detach) if apply else []
    create_markdown_artifact(
        key=ACTIONS_KEY, markdown=_actions_markdown(report, apply, detach, deleted)
    )
    for finding in report.findings:
        logger.info(
            "%s %s: %s -> %s", finding.kind, finding.policy_name, finding.reason, finding.action
        )
    return report


if __name__ == "__main__":
    iam_audit()
