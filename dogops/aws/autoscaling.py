"""Endpoint auto-scaling with Application Auto Scaling: scalable target plus target tracking.

Everything is checked before the first call (moto, unlike AWS, accepts min > max, so the check must
be ours), and each call is made only when what AWS has differs from what is asked, so a re-run
leaves the target and the policy untouched. Deregister before deleting an endpoint: AWS refuses
to delete an endpoint whose variant is still a registered scalable target.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws import ownership
from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.errors import UserInputError
from dogops.results import ScalingInfo
from dogops.settings import ScalingConfig, check_scaling

log = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def resource_id(endpoint_name: str, variant: str = "AllTraffic") -> str:
    """`endpoint/<name>/variant/<variant>`, the id Application Auto Scaling knows a variant by."""
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str, variant: str = "AllTraffic") -> str:
    """One deterministic policy name per variant, so a re-run finds (and updates) its policy."""
    return f"{endpoint_name}-{variant}-invocations-per-instance"


def validate_scaling(endpoint_name: str, scaling: ScalingConfig, variant: str) -> None:
    """Raise `UserInputError` for anything AWS would reject (or, worse, moto would accept): the
    names, the variant's floor of one instance, then the knobs' bounds (`check_scaling`)."""
    if not _NAME.match(endpoint_name or ""):
        raise UserInputError(
            f"Endpoint name {endpoint_name!r} is not valid: use letters, digits and single hyphens."
        )
    if not variant or "/" in variant:
        raise UserInputError(f"Variant name {variant!r} is not valid: e.g. 'AllTraffic'.")
    if scaling.min_capacity < 1:
        raise UserInputError(
            f"scaling.min_capacity must be at least 1 (got {scaling.min_capacity}): "
            "a SageMaker endpoint variant cannot scale to zero instances here."
        )
    check_scaling(scaling)  # the knobs' own bounds, as the settings check them


def _policy_config(scaling: ScalingConfig) -> dict[str, Any]:
    return {
        "TargetValue": float(scaling.target_invocations_per_instance),
        "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
        "ScaleInCooldown": scaling.scale_in_cooldown_s,
        "ScaleOutCooldown": scaling.scale_out_cooldown_s,
    }


def _same_policy(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Compare only the fields we set; AWS adds others (e.g. DisableScaleIn) on its side."""
    config = existing.get("TargetTrackingScalingPolicyConfiguration") or {}
    return (
        existing.get("PolicyType") == "TargetTrackingScaling"
        and float(config.get("TargetValue", math.nan)) == wanted["TargetValue"]
        and config.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType") == METRIC
        and config.get("ScaleInCooldown") == wanted["ScaleInCooldown"]
        and config.get("ScaleOutCooldown") == wanted["ScaleOutCooldown"]
        and not config.get("DisableScaleIn", False)
    )


def _describe_target(client: Any, rid: str) -> dict[str, Any] | None:
    targets = client.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION
    )["ScalableTargets"]
    return targets[0] if targets else None


def _describe_policies(client: Any, rid: str) -> list[dict[str, Any]]:
    pages = client.get_paginator("describe_scaling_policies").paginate(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
    )
    return [policy for page in pages for policy in page.get("ScalingPolicies", [])]


def _require_endpoint_ours(clients: AwsClients, endpoint_name: str, project: str) -> None:
    """The scaling of an endpoint is changed only when the endpoint is ours (the ownership rule);
    a missing endpoint is left to AWS to refuse."""
    sm = clients.client("sagemaker")
    try:
        described = sm.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        if error_code(exc) in ("ValidationException", "ResourceNotFound"):
            return
        raise
    ownership.require_endpoint_ours(sm, described, project)


def register_autoscaling(
    clients: AwsClients, endpoint_name: str, scaling: ScalingConfig, variant: str = "AllTraffic",
    *, project: str | None = None,
) -> ScalingInfo:
    """Register the variant as a scalable target and put target tracking on invocations/instance.

    Idempotent: each call is skipped when AWS already has the same values. `scaling.enabled` is
    the caller's switch (the flow skips this step when it is off). With `project`, an endpoint
    not tagged as that project's stops it before any change (`NotOwnedError`).
    """
    validate_scaling(endpoint_name, scaling, variant)
    if project is not None:
        _require_endpoint_ours(clients, endpoint_name, project)
    client = clients.client("application-autoscaling")
    rid = resource_id(endpoint_name, variant)
    name = policy_name(endpoint_name, variant)

    target = _describe_target(client, rid)
    if (
        target is None
        or target.get("MinCapacity") != scaling.min_capacity
        or target.get("MaxCapacity") != scaling.max_capacity
    ):
        client.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            MinCapacity=scaling.min_capacity,
            MaxCapacity=scaling.max_capacity,
        )
        log.info(
            "Registered scalable target %s (min %d, max %d)",
            rid,
            scaling.min_capacity,
            scaling.max_capacity,
        )
    else:
        log.info("Scalable target %s already as configured", rid)

    wanted = _policy_config(scaling)
    existing = next((p for p in _describe_policies(client, rid) if p["PolicyName"] == name), None)
    if existing is None or not _same_policy(existing, wanted):
        client.put_scaling_policy(
            PolicyName=name,
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=wanted,
        )
        log.info("Put target-tracking policy %s (target %s)", name, wanted["TargetValue"])
    else:
        log.info("Scaling policy %s already as configured", name)

    return ScalingInfo(
        resource_id=rid,
        min_capacity=scaling.min_capacity,
        max_capacity=scaling.max_capacity,
        policy_name=name,
        target=wanted["TargetValue"],
        scale_in_cooldown_s=scaling.scale_in_cooldown_s,
        scale_out_cooldown_s=scaling.scale_out_cooldown_s,
    )


def _ignore_missing(exc: ClientError) -> None:
    if error_code(exc) != "ObjectNotFoundException":
        raise exc


def deregister_autoscaling(
    clients: AwsClients, endpoint_name: str, variant: str = "AllTraffic"
) -> bool:
    """Delete the variant's scaling policies, then its scalable target. True when a target was
    registered; absent ones are fine (this runs before every endpoint deletion)."""
    client = clients.client("application-autoscaling")
    rid = resource_id(endpoint_name, variant)
    for policy in _describe_policies(client, rid):
        try:
            client.delete_scaling_policy(
                PolicyName=policy["PolicyName"],
                ServiceNamespace=NAMESPACE,
                ResourceId=rid,
                ScalableDimension=DIMENSION,
            )
            log.info("Deleted scaling policy %s", policy["PolicyName"])
        except ClientError as exc:
            _ignore_missing(exc)
    if _describe_target(client, rid) is None:
        return False
    try:
        client.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
        )
    except ClientError as exc:
        _ignore_missing(exc)
        return False
    log.info("Deregistered scalable target %s", rid)
    return True


def is_registered(clients: AwsClients, endpoint_name: str, variant: str = "AllTraffic") -> bool:
    """Whether the variant is a registered scalable target (an update that changes its instance
    type must deregister it first)."""
    client = clients.client("application-autoscaling")
    return _describe_target(client, resource_id(endpoint_name, variant)) is not None
