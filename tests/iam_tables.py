"""Must-allow and must-refuse tables for the policies dogops writes, and the two checkers.

Policies are proven by evaluation, not by reading them: moto's IAM policy evaluator
(`moto.iam.access_control.IAMPolicy`) answers each (action, resource, condition values) row, and
`parliament` lints the document's form (actions that exist, resource ARNs of the right shape).
Used by test_iam_policies.py (per region) and by the flow tests (on the role the run left).
"""

from __future__ import annotations

import importlib.resources
import json
import re
import sys
import types
from typing import Any

from moto.iam import policy_conditions
from moto.iam.access_control import IAMPolicy, PermissionResult

from dogops.iam_policies import partition

Row = tuple[str, str, dict[str, str]]  # action, resource, condition values (may be empty)


def _string_like(expected: list[str] | str, actual: str) -> bool:
    """IAM's StringLike: case-sensitive, `*` any run of characters, `?` one character."""
    patterns = [expected] if isinstance(expected, str) else expected
    return any(
        re.fullmatch(re.escape(p).replace(r"\*", ".*").replace(r"\?", "."), actual)
        for p in patterns
    )


# moto 5.2.5's evaluator knows StringEquals only and treats every other operator as satisfied,
# which would let a condition-scoped grant (s3:prefix, cloudwatch:namespace) pass any value. Give
# it StringLike, the one other operator dogops's policies use.
policy_conditions.CONDITION_OPERATIONS.setdefault("StringLike", _string_like)


def _parliament() -> Any:
    # parliament 1.6.4 (the latest) still imports pkg_resources, which setuptools >= 81 no
    # longer ships; it only uses it to find two data files inside its own package.
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = (  # type: ignore[attr-defined]
                lambda package, name: str(importlib.resources.files(package) / name)
            )
            sys.modules["pkg_resources"] = shim
    import parliament

    return parliament


def lint(document: dict[str, Any]) -> list[str]:
    """parliament's findings for an identity policy, as `ISSUE: detail` lines."""
    parliament = _parliament()
    policy = parliament.analyze_policy_string(json.dumps(document))
    return [f"{f.issue}: {f.detail}" for f in policy.findings]


def refusals(document: dict[str, Any], must_allow: list[Row], must_refuse: list[Row]) -> list[str]:
    """Rows the policy gets wrong: an allow row not PERMITTED, a refuse row PERMITTED."""
    policy = IAMPolicy(json.dumps(document))
    wrong = []
    for action, resource, condition in must_allow:
        result = policy.is_action_permitted(action, resource, None, condition or None)
        if result != PermissionResult.PERMITTED:
            wrong.append(f"not allowed but must be: {action} on {resource} {condition or ''}")
    for action, resource, condition in must_refuse:
        result = policy.is_action_permitted(action, resource, None, condition or None)
        if result == PermissionResult.PERMITTED:
            wrong.append(f"allowed but must not be: {action} on {resource} {condition or ''}")
    return wrong


def sagemaker_tables(
    region: str, account: str, registry_account: str, bucket: str, prefix: str,
    endpoint_name: str = "dogops-classifier",
) -> tuple[list[Row], list[Row]]:
    """What SageMaker does with the execution role for tuning, training and hosting, and what
    the role must never do."""
    part = partition(region)
    s3 = f"arn:{part}:s3:::{bucket}"
    objects = f"{s3}/{prefix}"
    repo = f"arn:{part}:ecr:{region}:{registry_account}:repository"
    logs = f"arn:{part}:logs:{region}:{account}:log-group"
    job_logs = f"{logs}:/aws/sagemaker/TrainingJobs"
    allow: list[Row] = [
        ("s3:ListBucket", s3, {"s3:prefix": f"{prefix}/data/"}),
        ("s3:GetObject", f"{objects}/data/train/001.Beagle/dog 1.jpg", {}),
        ("s3:GetObject", f"{objects}/data/_manifest.json", {}),
        ("s3:GetObject", f"{objects}/code/0123456789abcdef/sourcedir.tar.gz", {}),
        # `dogops rollout` stores the model there; the endpoint loads it with this role.
        ("s3:GetObject", f"{objects}/rollouts/0123456789abcdef/model.tar.gz", {}),
        # The jobs' pretrained weights channel (dogops.aws.weights).
        ("s3:GetObject", f"{objects}/weights/0123456789abcdef/resnet50-11ad3fa6.pth", {}),
        ("s3:ListBucket", s3, {"s3:prefix": f"{prefix}/weights/0123456789abcdef/"}),
        ("s3:GetObject", f"{objects}/tuning/dogops-hpo-1-abc/output/model.tar.gz", {}),
        ("s3:GetObject", f"{objects}/training/dogops-train-1/output/model.tar.gz", {}),
        ("s3:PutObject", f"{objects}/tuning/dogops-hpo-1-abc/output/model.tar.gz", {}),
        ("s3:PutObject", f"{objects}/training/dogops-train-1/output/output.tar.gz", {}),
        # Managed spot: SageMaker syncs /opt/ml/checkpoints with the job's checkpoint folder
        # (dogops.aws.spot) both ways, and lists it to restore after an interruption.
        ("s3:PutObject", f"{objects}/checkpoints/dogops-train-1/checkpoint.pt", {}),
        ("s3:GetObject", f"{objects}/checkpoints/dogops-train-1/checkpoint.pt", {}),
        ("s3:PutObject", f"{objects}/checkpoints/dogops-hpo-1-abc/trial-1/checkpoint.pt", {}),
        ("s3:ListBucket", s3, {"s3:prefix": f"{prefix}/checkpoints/dogops-train-1/"}),
        # Data capture (DataCaptureConfig): the endpoint writes request/response lines there.
        ("s3:PutObject",
         f"{objects}/captures/dogops-classifier/AllTraffic/2026/12/01/05/00-01-002-x.jsonl", {}),
        ("logs:CreateLogGroup", job_logs, {}),
        ("logs:CreateLogStream", f"{job_logs}:log-stream:job/algo-1", {}),
        ("logs:PutLogEvents", f"{job_logs}:log-stream:job/algo-1", {}),
        ("logs:DescribeLogStreams", f"{logs}:/aws/sagemaker/Endpoints/ep", {}),
        ("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}),
        ("ecr:GetAuthorizationToken", "*", {}),
        # A guarded endpoint update's auto-rollback reads the endpoint's rollout alarms.
        ("cloudwatch:DescribeAlarms",
         f"arn:{part}:cloudwatch:{region}:{account}:alarm:{endpoint_name}-dogops-5xx-rate", {}),
    ]
    for name in ("pytorch-training", "pytorch-inference"):
        for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                       "ecr:BatchCheckLayerAvailability"):
            allow.append((action, f"{repo}/{name}", {}))
    own_repo = f"arn:{part}:ecr:{region}:{account}:repository"
    refuse: list[Row] = [
        ("s3:GetObject", f"arn:{part}:s3:::someone-elses-bucket/{prefix}/data/x.jpg", {}),
        ("s3:PutObject", f"arn:{part}:s3:::someone-elses-bucket/{prefix}/tuning/x", {}),
        ("s3:PutObject", f"arn:{part}:s3:::someone-elses-bucket/{prefix}/checkpoints/x", {}),
        ("s3:PutObject", f"{s3}/other-project/checkpoints/x", {}),
        ("s3:DeleteObject", f"{objects}/checkpoints/dogops-train-1/checkpoint.pt", {}),
        # Captures are written, never read back or deleted by the role; not elsewhere either.
        ("s3:GetObject", f"{objects}/captures/dogops-classifier/AllTraffic/x.jsonl", {}),
        ("s3:DeleteObject", f"{objects}/captures/dogops-classifier/AllTraffic/x.jsonl", {}),
        ("s3:PutObject", f"{s3}/other-project/captures/x.jsonl", {}),
        ("s3:PutObject", f"arn:{part}:s3:::someone-elses-bucket/{prefix}/captures/x.jsonl", {}),
        ("s3:GetObject", f"{s3}/other-project/data/x.jpg", {}),
        ("s3:GetObject", f"{objects}/registry.json", {}),
        ("s3:PutObject", f"{objects}/registry.json", {}),
        ("s3:PutObject", f"{objects}/code/0123456789abcdef/sourcedir.tar.gz", {}),
        ("s3:PutObject", f"{objects}/rollouts/0123456789abcdef/model.tar.gz", {}),
        ("s3:PutObject", f"{objects}/weights/0123456789abcdef/resnet50-11ad3fa6.pth", {}),
        ("s3:PutObject", f"{objects}/data/train/001.Beagle/dog 1.jpg", {}),
        ("s3:DeleteObject", f"{objects}/tuning/job/output/model.tar.gz", {}),
        ("s3:PutBucketPolicy", s3, {}),
        ("s3:ListBucket", s3, {"s3:prefix": "other-project/"}),
        ("s3:ListBucket", f"arn:{part}:s3:::someone-elses-bucket", {"s3:prefix": prefix}),
        ("s3:ListAllMyBuckets", "*", {}),
        ("ecr:BatchGetImage", f"{own_repo}/pytorch-training", {}),
        ("ecr:BatchGetImage", f"{repo}/tensorflow-training", {}),
        ("ecr:PutImage", f"{repo}/pytorch-training", {}),
        ("iam:PassRole", f"arn:{part}:iam::{account}:role/dogops-sagemaker-execution", {}),
        ("iam:CreateRole", "*", {}),
        ("iam:AttachRolePolicy", "*", {}),
        ("iam:PutRolePolicy", "*", {}),
        ("sts:AssumeRole", "*", {}),
        ("sagemaker:CreateTrainingJob", "*", {}),
        ("sagemaker:CreateHyperParameterTuningJob", "*", {}),
        ("sagemaker:CreateEndpoint", "*", {}),
        ("sagemaker:InvokeEndpoint", "*", {}),
        ("sagemaker:DescribeTrainingJob", "*", {}),
        ("lambda:InvokeFunction", "*", {}),
        ("logs:PutLogEvents", f"{logs}:/aws/lambda/dogops-predict:log-stream:x", {}),
        ("logs:CreateLogGroup", f"{logs}:/other/group", {}),
        ("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Billing/Custom"}),
        ("cloudwatch:DeleteAlarms", "*", {}),
        ("cloudwatch:DeleteAlarms",
         f"arn:{part}:cloudwatch:{region}:{account}:alarm:{endpoint_name}-dogops-5xx-rate", {}),
        ("cloudwatch:DescribeAlarms",
         f"arn:{part}:cloudwatch:{region}:{account}:alarm:other-team-alarm", {}),
        ("cloudwatch:PutMetricAlarm",
         f"arn:{part}:cloudwatch:{region}:{account}:alarm:{endpoint_name}-dogops-5xx-rate", {}),
    ]
    return allow, refuse


def lambda_tables(
    region: str, account: str, endpoint: str, function: str
) -> tuple[list[Row], list[Row]]:
    part = partition(region)
    group = f"arn:{part}:logs:{region}:{account}:log-group:/aws/lambda/{function}"
    ep = f"arn:{part}:sagemaker:{region}:{account}:endpoint"
    allow: list[Row] = [
        ("sagemaker:InvokeEndpoint", f"{ep}/{endpoint.lower()}", {}),
        ("logs:CreateLogGroup", group, {}),
        ("logs:CreateLogStream", f"{group}:log-stream:2026/12/02/[$LATEST]abc", {}),
        ("logs:PutLogEvents", f"{group}:log-stream:2026/12/02/[$LATEST]abc", {}),
    ]
    refuse: list[Row] = [
        ("sagemaker:InvokeEndpoint", f"{ep}/someone-elses-endpoint", {}),
        ("sagemaker:InvokeEndpoint", f"{ep}/{endpoint.lower()}-2", {}),
        ("sagemaker:CreateEndpoint", "*", {}),
        ("sagemaker:UpdateEndpoint", f"{ep}/{endpoint.lower()}", {}),
        ("logs:PutLogEvents", f"arn:{part}:logs:{region}:{account}:log-group:/aws/lambda/other:"
                              "log-stream:x", {}),
        ("s3:GetObject", "*", {}),
        ("iam:PassRole", "*", {}),
        ("lambda:InvokeFunction", "*", {}),
        ("sts:AssumeRole", "*", {}),
    ]
    return allow, refuse
