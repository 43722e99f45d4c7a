"""The aws backend's idle check, scale-to-minimum and sleep (`dogops.idle`).

Idleness is CloudWatch's `AWS/SageMaker` `Invocations` (Sum) for EndpointName/VariantName over
the last `max_idle_hours`; with no invocation in that window the endpoint has been idle since it
was last created or updated (so a fresh deploy is never "idle"). Sleep deletes the endpoint (only
one tagged as dogops's; its scaling target first, as AWS needs) and keeps the models, endpoint
configs, Lambda and registry, so `wake` brings it back under the same name.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from dogops.aws import autoscaling
from dogops.aws.clients import AwsClients
from dogops.aws.endpoint import VARIANT, describe_endpoint
from dogops.aws.ownership import require_endpoint_ours
from dogops.results import IdleStatus
from dogops.settings import Settings

MAX_DATAPOINTS = 1440  # CloudWatch's limit per GetMetricStatistics call


def _period_s(window_s: float) -> int:
    """A whole-minute period that keeps the window under CloudWatch's datapoint limit."""
    minutes = max(1, math.ceil(window_s / MAX_DATAPOINTS / 60))
    return max(60, minutes * 60) if window_s < 86400 else max(3600, minutes * 60)


def aws_idle_status(
    clients: AwsClients, settings: Settings, max_idle_hours: float, now: datetime
) -> IdleStatus:
    name = settings.endpoint.name
    status = IdleStatus(endpoint_name=name, backend="aws", exists=False,
                        max_idle_hours=max_idle_hours, min_instances=settings.scaling.min_capacity)
    described = describe_endpoint(clients, name)
    if described is None:
        status.detail = f"endpoint {name} does not exist"
        return status
    status.exists = True
    variants = described.get("ProductionVariants") or []
    variant = next((v for v in variants if v.get("VariantName") == VARIANT), None)
    if variant is not None and variant.get("CurrentInstanceCount") is not None:
        status.current_instances = int(variant["CurrentInstanceCount"])
    # CloudWatch needs StartTime < EndTime: max_idle_hours=0 ("idle now") still looks back a
    # minute, which only decides the detail text (0 h idle is always past the limit).
    window = timedelta(hours=max(max_idle_hours, 1 / 60))
    period = _period_s(window.total_seconds())
    points = clients.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="Invocations",
        Dimensions=[{"Name": "EndpointName", "Value": name},
                    {"Name": "VariantName", "Value": VARIANT}],
        StartTime=now - window, EndTime=now, Period=period, Statistics=["Sum"],
    ).get("Datapoints", [])
    used = [p for p in points if float(p.get("Sum", 0)) > 0]
    status.invocations_in_window = int(sum(float(p["Sum"]) for p in used))
    changed = described.get("LastModifiedTime") or described.get("CreationTime") or now
    if used:
        # A datapoint's timestamp starts its period: the last call was at most a period later.
        last_active = min(now, max(p["Timestamp"] for p in used) + timedelta(seconds=period))
        how = f"{status.invocations_in_window} invocations in the last {max_idle_hours:g} h"
    else:
        last_active = changed
        how = f"no invocations in the last {max_idle_hours:g} h (CloudWatch)"
    status.detail = how
    return status.finish(max(last_active, changed), now)


def scale_to_min(
    clients: AwsClients, settings: Settings, status: IdleStatus, apply: bool
) -> list[str]:
    """Set the variant's desired instance count to the scaling minimum (which still costs it)."""
    if not status.exists:
        return []
    target = settings.scaling.min_capacity
    if settings.endpoint.mode == "serverless":
        return []  # no instances: an idle serverless endpoint costs nothing already
    if status.current_instances is not None and status.current_instances <= target:
        return []
    if apply:
        sm = clients.client("sagemaker")
        # The ownership rule: only an endpoint tagged as this project's is changed.
        require_endpoint_ours(
            sm, sm.describe_endpoint(EndpointName=status.endpoint_name), settings.project
        )
        sm.update_endpoint_weights_and_capacities(
            EndpointName=status.endpoint_name,
            DesiredWeightsAndCapacities=[{"VariantName": VARIANT, "DesiredInstanceCount": target}],
        )
    return [f"endpoint-capacity:{status.endpoint_name}:{status.current_instances}->{target}"]


def put_to_sleep(
    clients: AwsClients, settings: Settings, status: IdleStatus, apply: bool
) -> list[str]:
    """Delete the endpoint if it is dogops's (config, model and registry stay)."""
    name = status.endpoint_name
    if not status.exists:
        return []
    sm = clients.client("sagemaker")
    described = describe_endpoint(clients, name)
    if described is None:
        return []
    # The ownership rule: idle-guard deletes only an endpoint tagged as this project's.
    require_endpoint_ours(sm, described, settings.project)
    if apply:
        autoscaling.deregister_autoscaling(clients, name, VARIANT)
        if described["EndpointStatus"] != "Deleting":
            sm.delete_endpoint(EndpointName=name)
    return [f"scalable-target:{name}", f"endpoint:{name} (config, model and registry kept)"]
