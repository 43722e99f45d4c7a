"""The policy documents dogops generates: exact actions and resource ARNs, no stray wildcards."""

from __future__ import annotations

import json
from typing import Any

import pytest
from iam_tables import lambda_tables, lint, refusals, sagemaker_tables
from moto.iam.access_control import IAMPolicy, PermissionResult

from dogops.aws.iam import execution_images
from dogops.errors import UserInputError
from dogops.iam_policies import (
    FULL_ACCESS_MANAGED_POLICIES,
    ecr_repository_arn,
    is_aws_managed,
    is_full_access_policy,
    lambda_execution_policy,
    lambda_trust_policy,
    sagemaker_execution_policy,
    sagemaker_trust_policy,
)
from dogops.settings import Settings

REGION, ACCOUNT = "eu-west-1", "123456789012"


def _grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
    """(action, resource) pairs the policy allows."""
    pairs: set[tuple[str, str]] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        resources = statement["Resource"]
        for action in [actions] if isinstance(actions, str) else actions:
            for resource in [resources] if isinstance(resources, str) else resources:
                pairs.add((action, resource))
    return pairs


def test_lambda_policy_is_exactly_one_endpoint_and_own_logs() -> None:
    policy = lambda_execution_policy(REGION, ACCOUNT, "Dog-Classifier", "dogops-predict")
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/dogops-predict"
    assert policy["Version"] == "2012-10-17"
    assert _grants(policy) == {
        # AWS writes endpoint names lower-case in ARNs, and IAM compares ARNs case-sensitively.
        (
            "sagemaker:InvokeEndpoint",
            f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/dog-classifier",
        ),
        ("logs:CreateLogGroup", group),
        ("logs:CreateLogStream", f"{group}:log-stream:*"),
        ("logs:PutLogEvents", f"{group}:log-stream:*"),
    }
    wildcards = {r for _, r in _grants(policy) if "*" in r}
    assert wildcards == {f"{group}:log-stream:*"}
    assert not any("*" in action for action, _ in _grants(policy))
    assert all("Condition" not in s and "NotAction" not in s for s in policy["Statement"])


IMAGES = [
    f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-training:2.5-gpu-py311",
    f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-inference:2.5-cpu-py311",
]


def test_sagemaker_policy_scoped_to_bucket_prefix() -> None:
    policy = sagemaker_execution_policy(REGION, ACCOUNT, "dogops-data", "/dogops/", IMAGES)
    grants = _grants(policy)
    s3 = {(a, r) for a, r in grants if a.startswith("s3:")}
    objects = "arn:aws:s3:::dogops-data/dogops"
    assert s3 == {
        ("s3:ListBucket", "arn:aws:s3:::dogops-data"),
        ("s3:GetObject", f"{objects}/data/*"),
        ("s3:GetObject", f"{objects}/code/*"),
        ("s3:GetObject", f"{objects}/rollouts/*"),
        ("s3:GetObject", f"{objects}/weights/*"),
        ("s3:GetObject", f"{objects}/tuning/*"),
        ("s3:GetObject", f"{objects}/training/*"),
        ("s3:GetObject", f"{objects}/checkpoints/*"),
        ("s3:PutObject", f"{objects}/tuning/*"),
        ("s3:PutObject", f"{objects}/training/*"),
        ("s3:PutObject", f"{objects}/checkpoints/*"),
        ("s3:PutObject", f"{objects}/captures/*"),
    }
    listing = next(s for s in policy["Statement"] if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["dogops", "dogops/*"]}}

    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/*"
    assert {r for a, r in grants if a.startswith("logs:")} == {logs, f"{logs}:log-stream:*"}
    metrics = next(s for s in policy["Statement"] if s["Action"] == "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}
    ecr = {(a, r) for a, r in grants if a.startswith("ecr:")}
    assert ("ecr:GetAuthorizationToken", "*") in ecr
    # The images' own repositories, in the registry account the image URIs name.
    assert {r for a, r in ecr if a != "ecr:GetAuthorizationToken"} == {
        f"arn:aws:ecr:{REGION}:763104351884:repository/pytorch-training",
        f"arn:aws:ecr:{REGION}:763104351884:repository/pytorch-inference",
    }
    # "*" only where AWS offers no resource-level permission, and no action wildcards at all.
    assert {a for a, r in grants if r == "*"} == {
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
    }
    assert not any("*" in action for action, _ in grants)
    assert not any(a.startswith(("iam:", "sagemaker:", "lambda:")) for a, _ in grants)


@pytest.mark.parametrize(
    ("image", "arn"),
    [
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311",
         "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-training"),
        ("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-inference:2.5-cpu-py311",
         "arn:aws-cn:ecr:cn-north-1:727897471807:repository/pytorch-inference"),
        (f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/team/dogs@sha256:{'a' * 64}",
         f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/team/dogs"),
    ],
)
def test_ecr_repository_arn(image: str, arn: str) -> None:
    assert ecr_repository_arn(image) == arn


@pytest.mark.parametrize("image", ["pytorch:latest", "docker.io/library/python:3.12", ""])
def test_non_ecr_images_are_refused(image: str) -> None:
    with pytest.raises(UserInputError, match="not an ECR image URI"):
        ecr_repository_arn(image)


# --- proven by evaluation (moto's IAM evaluator) and linted (parliament), per region ------------

# ap-east-1's Deep Learning Containers live in another account than most regions' 763104351884.
REGIONS = [("us-east-1", "763104351884"), ("ap-east-1", "871362719292")]


def _settings(region: str) -> Settings:
    return Settings(aws={"region": region, "bucket": "dogops-data", "prefix": "dogops"})


@pytest.mark.parametrize(("region", "registry_account"), REGIONS)
def test_sagemaker_role_policy_passes_both_tables(region: str, registry_account: str) -> None:
    settings = _settings(region)
    images = execution_images(settings)  # the lookup that also picks the jobs' image URIs
    assert {image.split(".", 1)[0] for image in images} == {registry_account}
    document = sagemaker_execution_policy(region, ACCOUNT, "dogops-data", "dogops", images,
                                          endpoint_name="dogops-classifier")
    allow, refuse = sagemaker_tables(region, ACCOUNT, registry_account, "dogops-data", "dogops")
    assert refusals(document, allow, refuse) == []
    assert lint(document) == []


@pytest.mark.parametrize(("region", "_registry"), REGIONS)
def test_lambda_role_policy_passes_both_tables(region: str, _registry: str) -> None:
    document = lambda_execution_policy(region, ACCOUNT, "Dog-Classifier", "dogops-predict")
    allow, refuse = lambda_tables(region, ACCOUNT, "Dog-Classifier", "dogops-predict")
    assert refusals(document, allow, refuse) == []
    assert lint(document) == []


def test_the_checkers_catch_a_too_broad_and_a_malformed_policy() -> None:
    """The tables and the linter can fail: the original project's kind of policy fails both."""
    broad = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*", "ecr:*", "iam:PassRole"], "Resource": "*"}]}
    allow, refuse = sagemaker_tables("us-east-1", ACCOUNT, "763104351884", "dogops-data", "dogops")
    wrong = refusals(broad, allow, refuse)
    assert "allowed but must not be: iam:PassRole" in " ".join(wrong)
    assert any("not allowed but must be: logs:CreateLogGroup" in w for w in wrong)
    misspelt = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObjekt", "Resource": "arn:aws:s3:::b/*"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b"}]}
    issues = " ".join(lint(misspelt))
    assert "UNKNOWN_ACTION" in issues and "RESOURCE_MISMATCH" in issues


def test_trust_policies_allow_assume_role_only() -> None:
    for policy in (lambda_trust_policy(), sagemaker_trust_policy()):
        evaluator = IAMPolicy(json.dumps(policy))
        assert evaluator.is_action_permitted("sts:AssumeRole") == PermissionResult.PERMITTED
        for action in ("sts:AssumeRoleWithWebIdentity", "iam:PassRole", "s3:GetObject"):
            assert evaluator.is_action_permitted(action) != PermissionResult.PERMITTED


def test_trust_policies_name_only_their_service() -> None:
    for policy, service in [
        (lambda_trust_policy(), "lambda.amazonaws.com"),
        (sagemaker_trust_policy(), "sagemaker.amazonaws.com"),
    ]:
        assert policy["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ]


def test_other_partitions() -> None:
    policy = lambda_execution_policy("cn-north-1", ACCOUNT, "ep", "fn")
    arn = policy["Statement"][0]["Resource"]
    assert arn == f"arn:aws-cn:sagemaker:cn-north-1:{ACCOUNT}:endpoint/ep"


@pytest.mark.parametrize(
    "args",
    [
        ("us-east-1", "12345", "ep", "fn"),  # account id
        ("nowhere", ACCOUNT, "ep", "fn"),  # region
        ("us-east-1", ACCOUNT, "ep*", "fn"),  # wildcard smuggled into the name
        ("us-east-1", ACCOUNT, "ep", "fn/*"),
    ],
)
def test_bad_inputs_rejected(args: tuple[str, str, str, str]) -> None:
    with pytest.raises(UserInputError):
        lambda_execution_policy(*args)


@pytest.mark.parametrize("prefix", ["", "/", "data/*"])
def test_sagemaker_policy_refuses_whole_bucket(prefix: str) -> None:
    with pytest.raises(UserInputError, match="prefix"):
        sagemaker_execution_policy(REGION, ACCOUNT, "dogops-data", prefix, IMAGES)


def test_full_access_list() -> None:
    assert "arn:aws:iam::aws:policy/AmazonSageMakerFullAccess" in FULL_ACCESS_MANAGED_POLICIES
    assert all(is_aws_managed(arn) for arn in FULL_ACCESS_MANAGED_POLICIES)
    assert is_full_access_policy("arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")
    assert is_full_access_policy("arn:aws:iam::aws:policy/AdministratorAccess")
    assert not is_full_access_policy(
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    )
    # A customer-managed policy named like an AWS one is still the customer's.
    console_made = f"arn:aws:iam::{ACCOUNT}:policy/service-role/AWSLambdaBasicExecutionRole-1a2b"
    assert not is_aws_managed(console_made)
    assert not is_full_access_policy(f"arn:aws:iam::{ACCOUNT}:policy/MyFullAccess")


# -- the ECS task role of the flows (deployments/prefect.yaml's `-ecs` set) ----------------------

ECS_ARGS = ("us-east-1", ACCOUNT, "dogops-data", "dogops", "Dog-Classifier", "dogops-predict")
SM = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}"
FN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dogops-predict"
IAM = f"arn:aws:iam::{ACCOUNT}"
CW = f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}"

ECS_MUST_ALLOW = [
    ("s3:ListBucket", "arn:aws:s3:::dogops-data"),
    ("s3:PutObject", "arn:aws:s3:::dogops-data/dogops/data/train/a/1.jpg"),
    ("s3:GetObject", "arn:aws:s3:::dogops-data/dogops/registry.json"),
    ("s3:DeleteObject", "arn:aws:s3:::dogops-data/dogops/data/train/a/1.jpg"),
    # The monitor flow reads the endpoint's data captures with the flows' own credentials.
    ("s3:GetObject",
     "arn:aws:s3:::dogops-data/dogops/captures/dog-classifier/AllTraffic/2026/12/01/05/a.jsonl"),
    ("sagemaker:CreateHyperParameterTuningJob",
     f"{SM}:hyper-parameter-tuning-job/dogops-hpo-abc-123"),
    ("sagemaker:DescribeTrainingJob", f"{SM}:training-job/dogops-hpo-abc-123-001-x"),
    ("sagemaker:CreateTrainingJob", f"{SM}:training-job/dogops-train-abc-123"),
    ("sagemaker:CreateEndpoint", f"{SM}:endpoint/dog-classifier"),
    ("sagemaker:DeleteEndpoint", f"{SM}:endpoint/dog-classifier"),
    ("sagemaker:InvokeEndpoint", f"{SM}:endpoint/dog-classifier"),
    ("sagemaker:CreateEndpointConfig", f"{SM}:endpoint-config/dog-classifier-c-0123456789ab"),
    ("sagemaker:DeleteModel", f"{SM}:model/dog-classifier-m-0123456789ab"),
    ("sagemaker:ListModels", "*"),
    ("cloudwatch:GetMetricStatistics", "*"),
    ("cloudwatch:PutMetricAlarm", f"{CW}:alarm:Dog-Classifier-dogops-5xx-rate"),
    ("cloudwatch:DescribeAlarms", f"{CW}:alarm:Dog-Classifier-dogops-latency-p99"),
    ("cloudwatch:DeleteAlarms", f"{CW}:alarm:Dog-Classifier-dogops-5xx-rate"),
    ("cloudwatch:TagResource", f"{CW}:alarm:Dog-Classifier-dogops-5xx-rate"),
    ("cloudwatch:ListTagsForResource", f"{CW}:alarm:Dog-Classifier-dogops-latency-p99"),
    ("application-autoscaling:RegisterScalableTarget", "*"),
    ("lambda:UpdateFunctionCode", FN),
    ("lambda:PutProvisionedConcurrencyConfig", f"{FN}:live"),
    ("iam:CreateRole", f"{IAM}:role/dogops-sagemaker-execution"),
    ("iam:PassRole", f"{IAM}:role/dogops-sagemaker-execution"),
    ("iam:CreatePolicyVersion", f"{IAM}:policy/dogops-lambda-dogops-predict"),
    ("iam:ListRoles", "*"),
]
ECS_MUST_REFUSE = [
    ("s3:GetObject", "arn:aws:s3:::dogops-data/other-team/secret.csv"),
    ("s3:GetObject", "arn:aws:s3:::dogops-data/other-team/captures/x/AllTraffic/a.jsonl"),
    ("s3:PutObject", "arn:aws:s3:::someone-elses-bucket/dogops/x"),
    ("s3:DeleteBucket", "arn:aws:s3:::dogops-data"),
    ("sagemaker:DeleteEndpoint", f"{SM}:endpoint/their-endpoint"),
    ("sagemaker:InvokeEndpoint", f"{SM}:endpoint/dog-classifier-2"),
    ("sagemaker:DeleteModel", f"{SM}:model/their-model"),
    ("sagemaker:CreateTrainingJob", f"{SM}:training-job/their-job"),
    ("sagemaker:CreateNotebookInstance", f"{SM}:notebook-instance/dogops-x"),
    ("lambda:DeleteFunction", f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:other"),
    ("lambda:InvokeFunction", FN),
    ("iam:CreateRole", f"{IAM}:role/admin"),
    ("iam:PassRole", f"{IAM}:role/admin"),
    ("iam:AttachRolePolicy", f"{IAM}:role/other-team-role"),
    ("iam:DeletePolicy", f"{IAM}:policy/other-team-policy"),
    ("iam:CreateUser", f"{IAM}:user/dogops-x"),
    ("iam:CreateAccessKey", f"{IAM}:user/anyone"),
    ("sts:AssumeRole", f"{IAM}:role/dogops-sagemaker-execution"),
    ("ec2:RunInstances", "*"),
    ("cloudwatch:DeleteAlarms", f"{CW}:alarm:their-alarm"),
    ("cloudwatch:PutMetricAlarm", f"{CW}:alarm:Other-Endpoint-dogops-5xx-rate"),
    ("cloudwatch:DeleteAlarms", "*"),
]


@pytest.mark.parametrize(("action", "resource"), ECS_MUST_ALLOW)
def test_ecs_task_policy_allows_what_the_flows_do(action: str, resource: str) -> None:
    from moto.iam.access_control import IAMPolicy, PermissionResult

    from dogops.iam_policies import ecs_flow_task_policy

    policy = IAMPolicy(json.dumps(ecs_flow_task_policy(*ECS_ARGS)))
    assert policy.is_action_permitted(action, resource) == PermissionResult.PERMITTED


@pytest.mark.parametrize(("action", "resource"), ECS_MUST_REFUSE)
def test_ecs_task_policy_refuses_the_rest(action: str, resource: str) -> None:
    from moto.iam.access_control import IAMPolicy, PermissionResult

    from dogops.iam_policies import ecs_flow_task_policy

    policy = IAMPolicy(json.dumps(ecs_flow_task_policy(*ECS_ARGS)))
    assert policy.is_action_permitted(action, resource) != PermissionResult.PERMITTED


def test_ecs_task_policy_shape() -> None:
    from dogops.iam_policies import ecs_flow_task_policy, ecs_task_trust_policy

    policy = ecs_flow_task_policy(*ECS_ARGS)
    grants = _grants(policy)
    assert not any("*" in action for action, _ in grants)
    # "*" only for actions without resource-level permissions.
    assert {a for a, r in grants if r == "*"} == {
        "sagemaker:ListEndpointConfigs", "sagemaker:ListModels", "cloudwatch:GetMetricStatistics",
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:PutScalingPolicy", "application-autoscaling:DeleteScalingPolicy",
        "application-autoscaling:DescribeScalingPolicies", "iam:ListRoles", "iam:ListPolicies",
        "iam:GenerateServiceLastAccessedDetails", "iam:GetServiceLastAccessedDetails",
    }
    passing = next(s for s in policy["Statement"] if s["Action"] == ["iam:PassRole"])
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": [
        "sagemaker.amazonaws.com", "lambda.amazonaws.com"]}}
    assert len(json.dumps(policy, separators=(",", ":"))) < 6144  # IAM's managed-policy limit
    assert ecs_task_trust_policy()["Statement"][0]["Principal"] == {
        "Service": "ecs-tasks.amazonaws.com"}
    with pytest.raises(UserInputError, match="prefix"):
        ecs_flow_task_policy("us-east-1", ACCOUNT, "dogops-data", "", "ep", "fn")
