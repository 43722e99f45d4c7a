"""The policy documents dogops generates: exact actions and resource ARNs, no stray wildcards."""

from __future__ import annotations

from typing import Any

import pytest

from dogops.errors import UserInputError
from dogops.iam_policies import (
    FULL_ACCESS_MANAGED_POLICIES,
    is_aws_managed,
    is_full_access_policy,
    lambda_execution_policy,
    lambda_trust_policy,
    sagemaker_execution_policy,
    sagemaker_trust_policy,
)

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


def test_sagemaker_policy_scoped_to_bucket_prefix() -> None:
    policy = sagemaker_execution_policy(REGION, ACCOUNT, "dogops-data", "/dogops/")
    grants = _grants(policy)
    s3 = {(a, r) for a, r in grants if a.startswith("s3:")}
    assert s3 == {
        ("s3:ListBucket", "arn:aws:s3:::dogops-data"),
        ("s3:GetObject", "arn:aws:s3:::dogops-data/dogops/*"),
        ("s3:PutObject", "arn:aws:s3:::dogops-data/dogops/*"),
    }
    listing = next(s for s in policy["Statement"] if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["dogops", "dogops/*"]}}

    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/*"
    assert {r for a, r in grants if a.startswith("logs:")} == {logs, f"{logs}:log-stream:*"}
    metrics = next(s for s in policy["Statement"] if s["Action"] == "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}
    ecr = {(a, r) for a, r in grants if a.startswith("ecr:")}
    assert ("ecr:GetAuthorizationToken", "*") in ecr
    assert {r for a, r in ecr if a != "ecr:GetAuthorizationToken"} == {
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/*"
    }
    # "*" only where AWS offers no resource-level permission, and no action wildcards at all.
    assert {a for a, r in grants if r == "*"} == {
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
    }
    assert not any("*" in action for action, _ in grants)
    assert not any(a.startswith(("iam:", "sagemaker:", "lambda:")) for a, _ in grants)


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
        sagemaker_execution_policy(REGION, ACCOUNT, "dogops-data", prefix)


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
