"""IAM against the moto server: the roles dogops creates, the audit, and the audit flow.

moto is real for roles, customer-managed policies, versions, attachments and tags. It does not
implement IAM's service-last-accessed reports, so "unused for N days" is "unknown" here, and it
lets an attached policy be deleted (AWS would refuse): the tests check that our code detaches
or keeps it itself instead of relying on AWS to refuse.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from dogops.aws.clients import AwsClients
from dogops.aws.iam import (
    MAX_POLICY_VERSIONS,
    delete_project_roles,
    ensure_lambda_role,
    ensure_sagemaker_role,
    execution_images,
    lambda_role_name,
)
from dogops.aws.iam_audit import apply_cleanup, audit_policies, planned_deletions
from dogops.errors import UserInputError
from dogops.iam_policies import (
    lambda_execution_policy,
    lambda_trust_policy,
    sagemaker_execution_policy,
)
from dogops.settings import AwsConfig

pytestmark = pytest.mark.aws

ACCOUNT = "123456789012"  # moto's account
ENDPOINT_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/dogops-classifier"
SM_FULL = "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"
LAMBDA_BASIC = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
JOB_ID = "8c9a2b4e-1f3d-4a5b-9c6d-7e8f9a0b1c2d"
CONSOLE_POLICY = "AWSLambdaBasicExecutionRole-3f6b1c0e-8a2d-4e5f-9b7a-1c2d3e4f5a6b"


def _doc(*actions: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
        }
    )


def _record_calls(iam: Any) -> list[tuple[str, dict[str, Any]]]:
    """(operation, params) the client sends from now on (botocore's event hook, not a mock)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    iam.meta.events.register(
        "provide-client-params.iam.*",
        lambda params, model, **_: calls.append((model.name, dict(params))),
    )
    return calls


# --- roles ---------------------------------------------------------------------------------------


def test_ensure_lambda_role_twice_leaves_one_role_and_one_policy(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    iam = clients.client("iam")
    first = ensure_lambda_role(clients, aws_settings, ENDPOINT_ARN)
    second = ensure_lambda_role(clients, aws_settings, ENDPOINT_ARN)

    name = lambda_role_name(aws_settings)
    assert name == "dogops-lambda-dogops-predict"
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == [name]
    assert first.lambda_role_arn == second.lambda_role_arn == f"arn:aws:iam::{ACCOUNT}:role/{name}"
    role = iam.get_role(RoleName=name)["Role"]
    assert role["AssumeRolePolicyDocument"] == lambda_trust_policy()
    assert {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name)["Tags"]} == {
        "project": "dogops",
        "managed-by": "dogops",
    }

    policies = iam.list_policies(Scope="Local")["Policies"]
    assert [p["PolicyName"] for p in policies] == [name]
    arn = policies[0]["Arn"]
    expected = lambda_execution_policy("us-east-1", ACCOUNT, "dogops-classifier", "dogops-predict")
    assert [v["VersionId"] for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]] == ["v1"]
    assert iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]["Document"] == (
        expected
    )
    assert first.lambda_policy == second.lambda_policy == expected
    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [arn]  # ours only, no AWS full-access policy


def test_changed_endpoint_makes_new_default_version_and_prunes(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    iam = clients.client("iam")
    for i in range(MAX_POLICY_VERSIONS + 2):  # more changes than AWS keeps versions
        ensure_lambda_role(clients, aws_settings, f"{ENDPOINT_ARN[: -len('classifier')]}v{i}")
    arn = iam.list_policies(Scope="Local")["Policies"][0]["Arn"]
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert len(versions) == MAX_POLICY_VERSIONS
    default = next(v for v in versions if v["IsDefaultVersion"])
    document = iam.get_policy_version(PolicyArn=arn, VersionId=default["VersionId"])
    assert document["PolicyVersion"]["Document"]["Statement"][0]["Resource"].endswith(
        f"endpoint/dogops-v{MAX_POLICY_VERSIONS + 1}"
    )


def test_full_access_found_on_our_role_is_detached(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    iam = clients.client("iam")
    ensure_lambda_role(clients, aws_settings, ENDPOINT_ARN)
    name = lambda_role_name(aws_settings)
    iam.attach_role_policy(RoleName=name, PolicyArn=SM_FULL)  # as the original project had it

    report = ensure_lambda_role(clients, aws_settings, ENDPOINT_ARN)
    attached = [
        p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    ]
    assert SM_FULL not in attached and len(attached) == 1
    assert any("AmazonSageMakerFullAccess" in note for note in report.notes)


def test_sagemaker_role_scoped_or_given(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    iam = clients.client("iam")
    arn = ensure_sagemaker_role(clients, aws_settings)
    assert arn == ensure_sagemaker_role(clients, aws_settings)
    assert arn.endswith(":role/dogops-sagemaker-execution")
    policy = iam.list_policies(Scope="Local")["Policies"][0]
    document = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId="v1")["PolicyVersion"]
    assert document["Document"] == sagemaker_execution_policy(
        "us-east-1", ACCOUNT, "dogops-test", "dogops", execution_images(aws_settings),
        endpoint_name=aws_settings.endpoint.name,  # it may read that endpoint's rollout alarms
    )
    assert SM_FULL not in [
        p["PolicyArn"]
        for p in iam.list_attached_role_policies(RoleName="dogops-sagemaker-execution")[
            "AttachedPolicies"
        ]
    ]

    given = aws_settings.merged(aws={"sagemaker_role_arn": "arn:aws:iam::1:role/mine"})
    assert ensure_sagemaker_role(AwsClients(given.aws), given) == "arn:aws:iam::1:role/mine"


def test_delete_project_roles_only_touches_ours(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    iam = clients.client("iam")
    ensure_lambda_role(clients, aws_settings, ENDPOINT_ARN)
    ensure_lambda_role(clients, aws_settings, ENDPOINT_ARN.replace("classifier", "other"))  # v2
    ensure_sagemaker_role(clients, aws_settings)
    # Same name prefix but not tagged as ours: must survive.
    iam.create_role(
        RoleName="dogops-hand-made",
        AssumeRolePolicyDocument=_doc("sts:AssumeRole").replace(
            '"Action"', '"Principal": {"Service": "lambda.amazonaws.com"}, "Action"'
        ),
    )
    iam.create_policy(PolicyName="dogops-hand-made", PolicyDocument=_doc("s3:GetObject"))

    planned = delete_project_roles(clients, aws_settings, apply=False)
    assert sorted(planned) == sorted(
        [
            "role:dogops-lambda-dogops-predict",
            "role:dogops-sagemaker-execution",
            f"policy:arn:aws:iam::{ACCOUNT}:policy/dogops-lambda-dogops-predict",
            f"policy:arn:aws:iam::{ACCOUNT}:policy/dogops-sagemaker-execution",
        ]
    )
    assert len(iam.list_roles()["Roles"]) == 3  # dry run deleted nothing

    calls = _record_calls(iam)
    assert sorted(delete_project_roles(clients, aws_settings, apply=True)) == sorted(planned)
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["dogops-hand-made"]
    assert [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]] == [
        "dogops-hand-made"
    ]
    names = [name for name, _ in calls]
    assert names.index("DetachRolePolicy") < names.index("DeleteRole")
    assert names.index("DeletePolicyVersion") < names.index("DeletePolicy")


# --- audit ---------------------------------------------------------------------------------------


@pytest.fixture
def mixed_iam(aws_settings: Any) -> dict[str, str]:
    """Attached, unattached, multi-version, console-made and AWS-managed full-access policies."""
    iam = AwsClients(aws_settings.aws).client("iam")
    trust = json.dumps(lambda_trust_policy())
    iam.create_role(RoleName="app", AssumeRolePolicyDocument=trust)
    iam.create_role(RoleName="legacy-lambda", AssumeRolePolicyDocument=trust)

    attached = iam.create_policy(PolicyName="app-policy", PolicyDocument=_doc("s3:GetObject"))
    iam.create_policy_version(
        PolicyArn=attached["Policy"]["Arn"],
        PolicyDocument=_doc("s3:GetObject", "s3:PutObject"),
        SetAsDefault=True,
    )
    iam.attach_role_policy(RoleName="app", PolicyArn=attached["Policy"]["Arn"])

    orphan = iam.create_policy(PolicyName="old-experiment", PolicyDocument=_doc("s3:ListBucket"))
    for extra in ("s3:GetObject", "s3:PutObject"):
        iam.create_policy_version(
            PolicyArn=orphan["Policy"]["Arn"],
            PolicyDocument=_doc("s3:ListBucket", extra),
            SetAsDefault=True,
        )
    # What the Lambda console leaves behind: customer-managed despite its AWS-like name.
    console = iam.create_policy(
        PolicyName=CONSOLE_POLICY, Path="/service-role/", PolicyDocument=_doc("logs:CreateLogGroup")
    )
    iam.create_policy_version(
        PolicyArn=console["Policy"]["Arn"],
        PolicyDocument=_doc("logs:CreateLogGroup", "logs:PutLogEvents"),
        SetAsDefault=False,
    )

    iam.attach_role_policy(RoleName="legacy-lambda", PolicyArn=SM_FULL)
    iam.attach_role_policy(RoleName="legacy-lambda", PolicyArn=LAMBDA_BASIC)
    return {
        "attached": attached["Policy"]["Arn"],
        "orphan": orphan["Policy"]["Arn"],
        "console": console["Policy"]["Arn"],
    }


def test_dry_run_reports_the_right_ones_and_apply_deletes_only_those(
    aws_settings: Any, mixed_iam: dict[str, str]
) -> None:
    clients = AwsClients(aws_settings.aws)
    iam = clients.client("iam")
    report = audit_policies(clients, unused_days=30)

    assert report.policies_checked == 3
    unattached = {f.policy_arn: f for f in report.of_kind("unattached-policy")}
    assert set(unattached) == {mixed_iam["orphan"], mixed_iam["console"]}
    assert unattached[mixed_iam["orphan"]].versions == 3
    assert unattached[mixed_iam["console"]].versions == 2
    assert all(f.deletable and f.reason and f.action for f in unattached.values())

    full = report.of_kind("full-access-role")
    assert [(f.role_name, f.policy_arn, f.aws_managed) for f in full] == [
        ("legacy-lambda", SM_FULL, True)
    ]  # AWSLambdaBasicExecutionRole is attached too, but it is not full access
    assert not full[0].deletable

    # moto lacks generate/get_service_last_accessed_details: unknown, and said so.
    assert report.last_access == "unknown"
    assert "last-accessed" in report.last_access_note
    assert report.of_kind("unused-policy") == []
    assert {f.policy_arn for f in planned_deletions(report)} == set(unattached)
    assert {row["finding"] for row in report.rows()} == {"unattached-policy", "full-access-role"}

    assert len(iam.list_policies(Scope="Local")["Policies"]) == 3  # the audit only reads

    calls = _record_calls(iam)
    deleted = apply_cleanup(clients, report)

    assert sorted(deleted) == sorted([mixed_iam["orphan"], mixed_iam["console"]])
    assert [p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"]] == [
        mixed_iam["attached"]
    ]
    assert iam.get_policy(PolicyArn=SM_FULL)["Policy"]["AttachmentCount"] == 1
    assert {
        p["PolicyArn"]
        for p in iam.list_attached_role_policies(RoleName="legacy-lambda")["AttachedPolicies"]
    } == {SM_FULL, LAMBDA_BASIC}
    # Non-default versions go before the policy, as AWS requires; nothing AWS-managed touched.
    for arn in deleted:
        ops = [
            (op, p.get("VersionId"))
            for op, p in calls
            if p.get("PolicyArn") == arn and op.startswith("Delete")
        ]
        assert ops[-1] == ("DeletePolicy", None)
        assert all(op == "DeletePolicyVersion" for op, _ in ops[:-1]) and len(ops) > 1
    assert not any(
        p.get("PolicyArn", "").startswith("arn:aws:iam::aws:")
        for op, p in calls
        if op.startswith(("Delete", "Detach"))
    )
    assert apply_cleanup(clients, report) == []  # re-run: already gone, nothing else touched


def test_policy_attached_after_the_audit_is_kept_unless_detach(
    aws_settings: Any, mixed_iam: dict[str, str]
) -> None:
    clients = AwsClients(aws_settings.aws)
    iam = clients.client("iam")
    report = audit_policies(clients)
    iam.attach_role_policy(RoleName="app", PolicyArn=mixed_iam["orphan"])  # report now stale

    assert apply_cleanup(clients, report) == [mixed_iam["console"]]
    assert iam.get_policy(PolicyArn=mixed_iam["orphan"])["Policy"]["AttachmentCount"] == 1

    assert apply_cleanup(clients, report, detach=True) == [mixed_iam["orphan"]]
    attached = iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [mixed_iam["attached"]]


def test_bad_unused_days() -> None:
    # Rejected before any call: the clients point nowhere.
    with pytest.raises(UserInputError, match="unused_days"):
        audit_policies(AwsClients(AwsConfig.model_validate({})), unused_days=0)


class _StubbedClients(AwsClients):
    """Clients whose calls go to botocore Stubbers: moto cannot answer last-access questions."""

    def __init__(self) -> None:
        super().__init__(AwsConfig.model_validate({}))
        self.stubs: dict[str, Stubber] = {}
        for service in ("iam", "sts"):
            client = boto3.client(service, region_name="us-east-1")
            self._clients[service] = client
            self.stubs[service] = Stubber(client)


def test_attached_policy_unused_for_n_days_when_aws_reports_last_access() -> None:
    clients = _StubbedClients()
    iam, sts = clients.stubs["iam"], clients.stubs["sts"]
    arn = f"arn:aws:iam::{ACCOUNT}:policy/stale"
    now = datetime.now(UTC)
    sts.add_response("get_caller_identity", {"Account": ACCOUNT})
    policy = {"PolicyName": "stale", "Arn": arn, "DefaultVersionId": "v1"}
    iam.add_response("list_policies", {"Policies": [policy]}, {"Scope": "Local"})
    version = {"VersionId": "v1", "IsDefaultVersion": True, "CreateDate": now}
    iam.add_response("list_policy_versions", {"Versions": [version]}, {"PolicyArn": arn})
    iam.add_response(
        "list_entities_for_policy", {"PolicyRoles": [{"RoleName": "app"}]}, {"PolicyArn": arn}
    )
    iam.add_response("generate_service_last_accessed_details", {"JobId": JOB_ID}, {"Arn": arn})
    iam.add_response(
        "get_service_last_accessed_details",
        {
            "JobStatus": "COMPLETED",
            "JobCreationDate": now,
            "JobCompletionDate": now,
            "ServicesLastAccessed": [
                {
                    "ServiceName": "Amazon S3",
                    "ServiceNamespace": "s3",
                    "LastAuthenticated": now - timedelta(days=200),
                },
                {"ServiceName": "AWS Lambda", "ServiceNamespace": "lambda"},  # never
            ],
        },
        {"JobId": JOB_ID},
    )
    iam.add_response("list_policies", {"Policies": []}, {"Scope": "AWS", "OnlyAttached": True})

    with iam, sts:
        report = audit_policies(clients, unused_days=90)
    iam.assert_no_pending_responses()

    assert report.last_access == "available"
    [finding] = report.findings
    assert finding.kind == "unused-policy" and finding.attachments == 1
    assert finding.last_accessed == now - timedelta(days=200)
    assert "90 days" in finding.reason
    assert planned_deletions(report) == []  # attached: only with detach=True
    assert planned_deletions(report, detach=True) == [finding]


# --- the flow ------------------------------------------------------------------------------------


def test_flow_dry_run_leaves_table_artifact(
    prefect_harness: None, mixed_iam: dict[str, str], moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.artifacts import Artifact

    from flows.iam_audit import ACTIONS_KEY, TABLE_KEY, iam_audit

    monkeypatch.setenv("DOGOPS_AWS__ENDPOINT_URL", moto)
    monkeypatch.setenv("DOGOPS_AWS__REGION", "us-east-1")
    monkeypatch.setenv("DOGOPS_AWS__MAX_ATTEMPTS", "1")
    report = iam_audit(backend="aws")

    assert {f.policy_arn for f in report.of_kind("unattached-policy")} == {
        mixed_iam["orphan"],
        mixed_iam["console"],
    }
    iam = AwsClients(report_settings(moto).aws).client("iam")
    assert len(iam.list_policies(Scope="Local")["Policies"]) == 3  # dry run deleted nothing

    table: Any = Artifact.get(TABLE_KEY)
    assert table is not None and table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {r["policy_arn"] for r in rows if r["finding"] == "unattached-policy"} == {
        mixed_iam["orphan"],
        mixed_iam["console"],
    }
    actions: Any = Artifact.get(ACTIONS_KEY)
    assert actions is not None and "Would delete 2" in str(actions.data)


def test_flow_apply_deletes_the_unused_policies_on_one_boto3_session(
    prefect_harness: None, mixed_iam: dict[str, str], moto: str, monkeypatch: pytest.MonkeyPatch,
    aws_clients_built: list[AwsClients],
) -> None:
    """The audit and the cleanup share one set of clients: one credentials lookup (one load of
    an `AwsCredentials` block when one is named) and one boto3 session for the run."""
    from flows.iam_audit import iam_audit

    monkeypatch.setenv("DOGOPS_AWS__ENDPOINT_URL", moto)
    monkeypatch.setenv("DOGOPS_AWS__REGION", "us-east-1")
    monkeypatch.setenv("DOGOPS_AWS__MAX_ATTEMPTS", "1")
    report = iam_audit(backend="aws", apply=True)
    during_the_run = list(aws_clients_built)

    assert {f.policy_arn for f in report.of_kind("unattached-policy")} == {
        mixed_iam["orphan"], mixed_iam["console"]}
    iam = AwsClients(report_settings(moto).aws).client("iam")
    assert [p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"]] == [
        mixed_iam["attached"]]
    sessions = [c for c in during_the_run if c._session is not None]  # those that called AWS
    assert len(sessions) == 1, f"{len(sessions)} boto3 sessions in one iam-audit run"


def test_flow_on_local_backend_says_why_it_does_nothing(prefect_harness: None) -> None:
    from flows.iam_audit import iam_audit

    report = iam_audit(backend="local")
    assert report.findings == []
    assert any("no IAM" in note for note in report.notes)


def report_settings(moto: str) -> Any:
    from dogops.settings import Settings

    return Settings.model_validate(
        {"backend": "aws", "aws": {"endpoint_url": moto, "max_attempts": 1}}
    )
