"""The IAM roles dogops creates: a Lambda role invoking one endpoint, a scoped SageMaker role.

Each role gets one customer-managed policy of the same name whose document comes from
`dogops.iam_policies`. Re-running compares what AWS holds with what is wanted and changes only the
difference: a changed document becomes a new default policy version (the oldest non-default
versions are pruned first, because AWS keeps at most five). Everything is tagged
`project=<project>` and `managed-by=dogops`, and the ownership rule (`dogops.aws.ownership`) holds
for every change: a same-named role or policy without both tags stops the run before anything is
created or changed, and `delete_project_roles` only ever touches what carries both tags. No
AWS-managed full-access policy is ever attached, and one found on our own role is detached (the
original project's Lambda role had `AmazonSageMakerFullAccess`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from dogops import iam_policies
from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.aws.ownership import (
    LAMBDA_ROLE_SETTING,
    SAGEMAKER_ROLE_SETTING,
    is_ours,
    require_ours,
)
from dogops.errors import UserInputError
from dogops.results import SecurityReport
from dogops.settings import Settings

log = logging.getLogger(__name__)

MANAGED_BY = "dogops"
MAX_POLICY_VERSIONS = 5  # AWS's limit per customer-managed policy
MAX_ROLE_NAME = 64


def lambda_role_name(settings: Settings) -> str:
    return _checked_role_name(f"{settings.project}-lambda-{settings.lambda_.function_name}")


def sagemaker_role_name(settings: Settings) -> str:
    return _checked_role_name(f"{settings.project}-sagemaker-execution")


def _checked_role_name(name: str) -> str:
    if len(name) > MAX_ROLE_NAME:
        raise UserInputError(
            f"IAM role name {name!r} is longer than {MAX_ROLE_NAME} characters: shorten "
            "settings.project or lambda.function_name."
        )
    return name


def project_tags(settings: Settings) -> list[dict[str, str]]:
    return [
        {"Key": "project", "Value": settings.project},
        {"Key": "managed-by", "Value": MANAGED_BY},
    ]


def _canonical(document: Any) -> str:
    """Documents compare equal regardless of key order or of arriving as a JSON string."""
    if isinstance(document, str):
        document = json.loads(document)
    return json.dumps(document, sort_keys=True)


def _paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def parse_endpoint_arn(arn: str) -> tuple[str, str, str]:
    """(region, account_id, endpoint_name) of `arn:aws:sagemaker:REGION:ACCOUNT:endpoint/NAME`."""
    parts = arn.split(":", 5) if arn else []
    if (
        len(parts) != 6
        or parts[0] != "arn"
        or parts[2] != "sagemaker"
        or not parts[5].startswith("endpoint/")
    ):
        raise UserInputError(
            f"{arn!r} is not a SageMaker endpoint ARN: expected "
            "'arn:aws:sagemaker:REGION:ACCOUNT:endpoint/NAME' (describe_endpoint's EndpointArn)."
        )
    return parts[3], parts[4], parts[5].split("/", 1)[1]


# --- roles -------------------------------------------------------------------------------------


def _ensure_role(
    iam: Any,
    name: str,
    trust: dict[str, Any],
    description: str,
    settings: Settings,
    notes: list[str],
) -> str:
    """Create the role, or bring its trust policy and tags in line. Returns its ARN."""
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=description,
            Tags=project_tags(settings),
        )["Role"]
        notes.append(f"created role {name}")
        log.info("Created IAM role %s", name)
        return str(role["Arn"])

    # `_require_names_ours` has checked the tags: this role is ours to change.
    if _canonical(role.get("AssumeRolePolicyDocument") or {}) != _canonical(trust):
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        notes.append(f"updated trust policy of role {name}")
    for attached in _attached(iam, name):
        if iam_policies.is_full_access_policy(attached["PolicyArn"]):
            iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
            notes.append(f"detached full-access policy {attached['PolicyArn']} from role {name}")
            log.warning("Detached %s from %s", attached["PolicyArn"], name)
    return str(role["Arn"])


# --- customer-managed policies -----------------------------------------------------------------


def _policy_arn(settings: Settings, account_id: str, name: str) -> str:
    return f"arn:{iam_policies.partition(settings.aws.region)}:iam::{account_id}:policy/{name}"


def _prune_versions(iam: Any, policy_arn: str, keep: int) -> list[str]:
    """Delete the oldest non-default versions until at most `keep` versions remain."""
    versions = iam.list_policy_versions(PolicyArn=policy_arn)["Versions"]
    old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
    deleted: list[str] = []
    while len(versions) - len(deleted) > keep and old:
        version = old.pop(0)["VersionId"]
        iam.delete_policy_version(PolicyArn=policy_arn, VersionId=version)
        deleted.append(version)
    return deleted


def _ensure_policy(
    iam: Any,
    arn: str,
    name: str,
    document: dict[str, Any],
    description: str,
    settings: Settings,
    notes: list[str],
) -> str:
    """Create the policy, or make `document` its default version. Returns its ARN."""
    try:
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        policy = iam.create_policy(
            PolicyName=name,
            PolicyDocument=json.dumps(document),
            Description=description,
            Tags=project_tags(settings),
        )["Policy"]
        notes.append(f"created policy {name}")
        log.info("Created IAM policy %s", name)
        return str(policy["Arn"])

    current = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
    if _canonical(current["PolicyVersion"]["Document"]) != _canonical(document):
        pruned = _prune_versions(iam, arn, keep=MAX_POLICY_VERSIONS - 1)
        created = iam.create_policy_version(
            PolicyArn=arn, PolicyDocument=json.dumps(document), SetAsDefault=True
        )["PolicyVersion"]
        notes.append(
            f"policy {name}: new default version {created['VersionId']}"
            + (f" (pruned {', '.join(pruned)})" if pruned else "")
        )
        log.info("Policy %s now at version %s", name, created["VersionId"])
    return str(policy["Arn"])


def _attached(iam: Any, role: str) -> Iterator[dict[str, Any]]:
    return _paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=role)


def _ensure_attached(iam: Any, role: str, policy_arn: str) -> None:
    if all(p["PolicyArn"] != policy_arn for p in _attached(iam, role)):
        iam.attach_role_policy(RoleName=role, PolicyArn=policy_arn)


def _require_names_ours(
    iam: Any, role: str, policy_arn: str, project: str, setting: str
) -> None:
    """Before any change: a same-named role or policy must carry our tags (`NotOwnedError`)."""
    try:
        found = iam.get_role(RoleName=role)["Role"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
    else:
        tags = found.get("Tags") or iam.list_role_tags(RoleName=role)["Tags"]
        require_ours(tags, project, f"IAM role {role}", setting)
    try:
        iam.get_policy(PolicyArn=policy_arn)
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
    else:
        tags = iam.list_policy_tags(PolicyArn=policy_arn)["Tags"]
        require_ours(tags, project, f"IAM policy {policy_arn}", setting)


def _ensure_role_with_policy(
    clients: AwsClients,
    settings: Settings,
    role: str,
    trust: dict[str, Any],
    document: dict[str, Any],
    account_id: str,
    description: str,
    notes: list[str],
    setting: str,
) -> str:
    iam = clients.client("iam")
    _require_names_ours(
        iam, role, _policy_arn(settings, account_id, role), settings.project, setting
    )
    role_arn = _ensure_role(iam, role, trust, description, settings, notes)
    policy_arn = _ensure_policy(
        iam, _policy_arn(settings, account_id, role), role, document, description, settings, notes
    )
    _ensure_attached(iam, role, policy_arn)
    return role_arn


def ensure_lambda_role(
    clients: AwsClients, settings: Settings, endpoint_arn: str
) -> SecurityReport:
    """Role `<project>-lambda-<function>` allowed to invoke exactly `endpoint_arn` and to write its
    own log group. Idempotent; the report carries the policy document and what changed."""
    region, account_id, endpoint_name = parse_endpoint_arn(endpoint_arn)
    document = iam_policies.lambda_execution_policy(
        region, account_id, endpoint_name, settings.lambda_.function_name
    )
    role = lambda_role_name(settings)
    notes: list[str] = []
    role_arn = _ensure_role_with_policy(
        clients,
        settings,
        role,
        iam_policies.lambda_trust_policy(),
        document,
        account_id,
        f"dogops: Lambda {settings.lambda_.function_name} invokes endpoint {endpoint_name} only",
        notes,
        LAMBDA_ROLE_SETTING,
    )
    if not notes:
        notes.append(f"role {role} and its policy already as wanted")
    return SecurityReport(lambda_role_arn=role_arn, lambda_policy=document, notes=notes)


def execution_images(settings: Settings) -> list[str]:
    """The images the execution role must pull: tuning, final training and hosting, from the
    same lookup that puts them in the requests (so the registry account is the image's own)."""
    from dogops.aws.sagemaker_job import framework_image

    region, training = settings.aws.region, settings.training
    return sorted({
        framework_image(region, training, training.tuning_instance_type),
        framework_image(region, training, training.training_instance_type),
        framework_image(region, training, settings.endpoint.instance_type, "inference"),
    })


def ensure_sagemaker_role(clients: AwsClients, settings: Settings) -> str:
    """The execution role for training and endpoints: `settings.aws.sagemaker_role_arn` when set,
    else `<project>-sagemaker-execution` scoped to the project's bucket and prefix."""
    if settings.aws.sagemaker_role_arn:
        return settings.aws.sagemaker_role_arn
    account_id = clients.account_id()
    document = iam_policies.sagemaker_execution_policy(
        settings.aws.region, account_id, settings.aws.bucket, settings.aws.prefix,
        execution_images(settings), endpoint_name=settings.endpoint.name,
    )
    notes: list[str] = []
    arn = _ensure_role_with_policy(
        clients,
        settings,
        sagemaker_role_name(settings),
        iam_policies.sagemaker_trust_policy(),
        document,
        account_id,
        f"dogops: SageMaker jobs and endpoints, s3://{settings.aws.bucket}/{settings.aws.prefix}",
        notes,
        SAGEMAKER_ROLE_SETTING,
    )
    for note in notes:
        log.info(note)
    return arn


# --- deletion ----------------------------------------------------------------------------------


def delete_policy_with_versions(iam: Any, policy_arn: str) -> None:
    """AWS refuses to delete a policy with non-default versions: those go first."""
    for version in iam.list_policy_versions(PolicyArn=policy_arn)["Versions"]:
        if not version["IsDefaultVersion"]:
            iam.delete_policy_version(PolicyArn=policy_arn, VersionId=version["VersionId"])
    iam.delete_policy(PolicyArn=policy_arn)


def _delete_role(iam: Any, name: str) -> None:
    for attached in _attached(iam, name):
        iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    for inline in _paginate(iam, "list_role_policies", "PolicyNames", RoleName=name):
        iam.delete_role_policy(RoleName=name, PolicyName=inline)
    for profile in _paginate(
        iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=name
    ):
        iam.remove_role_from_instance_profile(
            InstanceProfileName=profile["InstanceProfileName"], RoleName=name
        )
    iam.delete_role(RoleName=name)


def _foreign_attachments(iam: Any, policy_arn: str, project: str) -> list[str]:
    """Roles (not tagged as ours), users and groups the policy is attached to: detaching it from
    them would change something dogops does not own, so the policy then stays."""
    entities = iam.list_entities_for_policy(PolicyArn=policy_arn)
    foreign = [
        f"role {r['RoleName']}" for r in entities.get("PolicyRoles", [])
        if not is_ours(iam.list_role_tags(RoleName=r["RoleName"])["Tags"], project)
    ]
    foreign += [f"user {u['UserName']}" for u in entities.get("PolicyUsers", [])]
    foreign += [f"group {g['GroupName']}" for g in entities.get("PolicyGroups", [])]
    return foreign


def _detach_from_own_roles(iam: Any, policy_arn: str) -> None:
    for role in iam.list_entities_for_policy(PolicyArn=policy_arn).get("PolicyRoles", []):
        iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=policy_arn)


def delete_project_roles(clients: AwsClients, settings: Settings, apply: bool) -> list[str]:
    """Roles and customer-managed policies tagged `project=<project>` and `managed-by=dogops`:
    returns what is deleted (`role:NAME`, `policy:ARN`), or would be when `apply` is False."""
    iam = clients.client("iam")
    prefix = f"{settings.project}-"
    done: list[str] = []
    for role in _paginate(iam, "list_roles", "Roles"):
        name = role["RoleName"]
        if not name.startswith(prefix):
            continue
        if not is_ours(iam.list_role_tags(RoleName=name)["Tags"], settings.project):
            log.info("Leaving role %s: not tagged as managed by dogops", name)
            continue
        if apply:
            _delete_role(iam, name)
            log.info("Deleted role %s", name)
        done.append(f"role:{name}")
    for policy in _paginate(iam, "list_policies", "Policies", Scope="Local"):
        arn = policy["Arn"]
        if not policy["PolicyName"].startswith(prefix) or iam_policies.is_aws_managed(arn):
            continue
        if not is_ours(iam.list_policy_tags(PolicyArn=arn)["Tags"], settings.project):
            log.info("Leaving policy %s: not tagged as managed by dogops", arn)
            continue
        foreign = _foreign_attachments(iam, arn, settings.project)
        if foreign:
            log.warning("Leaving policy %s: attached to %s, which dogops does not own",
                        arn, ", ".join(foreign))
            continue
        if apply:
            _detach_from_own_roles(iam, arn)
            delete_policy_with_versions(iam, arn)
            log.info("Deleted policy %s", arn)
        done.append(f"policy:{arn}")
    return done
