"""Endpoint auto-scaling against the moto server (Application Auto Scaling is real enough there:
targets and policies are stored and echoed exactly)."""

from __future__ import annotations

from typing import Any

import pytest

from dogops.aws.autoscaling import (
    DIMENSION,
    deregister_autoscaling,
    policy_name,
    register_autoscaling,
)
from dogops.aws.clients import AwsClients
from dogops.errors import UserInputError
from dogops.settings import ScalingConfig

pytestmark = pytest.mark.aws

ENDPOINT = "dogops-classifier"
RID = f"endpoint/{ENDPOINT}/variant/AllTraffic"


def _scaling(**fields: Any) -> ScalingConfig:
    """A validated config (model_validate keeps mypy happy without the pydantic plugin)."""
    return ScalingConfig.model_validate(fields)


def _record_calls(client: Any) -> list[str]:
    """Operation names the client sends from now on (botocore's own event hook, not a mock)."""
    calls: list[str] = []
    client.meta.events.register(
        "before-call.application-autoscaling.*",
        lambda model, **_: calls.append(model.name),
    )
    return calls


def _state(client: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    targets = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    return targets, policies


def test_register_leaves_target_and_policy(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    info = register_autoscaling(clients, ENDPOINT, _scaling())

    targets, policies = _state(clients.client("application-autoscaling"))
    assert [
        (t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"])
        for t in targets
    ] == [(RID, DIMENSION, 1, 2)]
    assert len(policies) == 1
    policy = policies[0]
    assert policy["PolicyName"] == policy_name(ENDPOINT) == info.policy_name
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 50.0,
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "ScaleInCooldown": 30,
        "ScaleOutCooldown": 30,
    }
    assert info.resource_id == RID
    assert (info.min_capacity, info.max_capacity, info.target) == (1, 2, 50.0)


def test_rerun_changes_nothing_and_new_values_update(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    client = clients.client("application-autoscaling")
    register_autoscaling(clients, ENDPOINT, _scaling())
    before = _state(client)

    calls = _record_calls(client)
    register_autoscaling(clients, ENDPOINT, _scaling())
    assert _state(client) == before
    assert not {"RegisterScalableTarget", "PutScalingPolicy"} & set(calls)

    calls.clear()
    changed = _scaling(
        min_capacity=2,
        max_capacity=4,
        target_invocations_per_instance=120,
        scale_in_cooldown_s=300,
        scale_out_cooldown_s=60,
    )
    info = register_autoscaling(clients, ENDPOINT, changed)
    assert {"RegisterScalableTarget", "PutScalingPolicy"} <= set(calls)
    targets, policies = _state(client)
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(2, 4)]
    assert len(policies) == 1  # updated in place, not a second policy
    config = policies[0]["TargetTrackingScalingPolicyConfiguration"]
    assert (config["TargetValue"], config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (
        120.0,
        300,
        60,
    )
    assert info.target == 120.0


class _NoCallClients(AwsClients):
    """Fails the test if any AWS client is even built: validation must come first."""

    def client(self, service: str) -> Any:
        raise AssertionError(f"an AWS call was attempted ({service}) before validation")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"min_capacity": 3, "max_capacity": 2}, "greater than"),
        ({"target_invocations_per_instance": 0.0}, "positive"),
        ({"target_invocations_per_instance": float("nan")}, "positive"),
        ({"scale_in_cooldown_s": -1}, "between 0 and 3600"),
        ({"scale_out_cooldown_s": 86400}, "between 0 and 3600"),
    ],
)
def test_bad_values_fail_before_any_call(
    aws_settings: Any, fields: dict[str, Any], message: str
) -> None:
    # model_construct skips ScalingConfig's own checks, as a caller building it by hand could.
    scaling = ScalingConfig.model_construct(**{**_scaling().model_dump(), **fields})
    with pytest.raises(UserInputError, match=message):
        register_autoscaling(_NoCallClients(aws_settings.aws), ENDPOINT, scaling)


def test_min_greater_than_max_rejected_by_config_too() -> None:
    with pytest.raises(ValueError, match="greater than"):
        _scaling(min_capacity=3, max_capacity=2)


def test_deregister_removes_policy_and_target_and_tolerates_absence(aws_settings: Any) -> None:
    clients = AwsClients(aws_settings.aws)
    client = clients.client("application-autoscaling")
    register_autoscaling(clients, ENDPOINT, _scaling())

    assert deregister_autoscaling(clients, ENDPOINT) is True
    assert _state(client) == ([], [])
    assert deregister_autoscaling(clients, ENDPOINT) is False
