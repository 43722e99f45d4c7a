"""Guarded rollouts on SageMaker: blue/green updates with auto-rollback on alarms dogops owns.

An endpoint update carries a `DeploymentConfig`: a `BlueGreenUpdatePolicy` whose traffic routing
is the `rollout` setting (CANARY, LINEAR or ALL_AT_ONCE, with its bake and timeouts), and an
`AutoRollbackConfiguration` naming two CloudWatch alarms that dogops creates for the endpoint:

* `<endpoint>-dogops-5xx-rate`: 100 x Invocation5XXErrors / Invocations (metric math, per
  minute) above `rollout.max_error_rate_percent`;
* `<endpoint>-dogops-latency-p99`: ModelLatency p99 (microseconds) above
  `rollout.max_latency_p99_ms`.

Both are tagged like every dogops resource; an alarm of that name without our tags stops the run
unchanged (the ownership rule), and teardown deletes only ours. If an alarm fires during a bake,
SageMaker shifts all traffic back and the endpoint ends InService on the previous config: that is
a rolled-back outcome, not an error. Serverless endpoints take no DeploymentConfig with traffic
shifting, so they are updated all at once (the outcome says so).
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws import naming, ownership
from dogops.aws.clients import AwsClients
from dogops.results import RolloutOutcome
from dogops.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "AWS/SageMaker"
PERIOD_S = 60
ALARM_SUFFIXES = ("dogops-5xx-rate", "dogops-latency-p99")
ALARM_SETTING = "DOGOPS_ENDPOINT__NAME (the alarms are named <endpoint>-dogops-...)"
ROUTING_TYPES = {"canary": "CANARY", "linear": "LINEAR", "all-at-once": "ALL_AT_ONCE"}


def alarm_names(endpoint_name: str) -> list[str]:
    return [f"{endpoint_name}-{suffix}" for suffix in ALARM_SUFFIXES]


def _dimensions(endpoint_name: str, variant: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint_name},
            {"Name": "VariantName", "Value": variant}]


def alarm_requests(
    settings: Settings, variant: str, run_key: str
) -> list[dict[str, Any]]:
    """The two `PutMetricAlarm` requests. Missing data (no traffic) is not a breach."""
    name = settings.endpoint.name
    rollout = settings.rollout
    dims = _dimensions(name, variant)
    tags = naming.tags(settings, run_key)
    common = {"EvaluationPeriods": 1, "DatapointsToAlarm": 1,
              "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
              "ActionsEnabled": False, "Tags": tags}

    def stat(query_id: str, metric: str) -> dict[str, Any]:
        return {"Id": query_id, "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims},
            "Period": PERIOD_S, "Stat": "Sum"}}

    errors, latency = alarm_names(name)
    return [
        {
            "AlarmName": errors,
            "AlarmDescription": f"dogops rollout guard: share of 5xx answers of {name} above "
            f"{rollout.max_error_rate_percent} % (rollout.max_error_rate_percent)",
            "Metrics": [stat("errors", "Invocation5XXErrors"), stat("calls", "Invocations"),
                        {"Id": "rate", "Expression": "IF(calls > 0, 100 * errors / calls, 0)",
                         "Label": "5xx rate %", "ReturnData": True}],
            "Threshold": float(rollout.max_error_rate_percent),
            **common,
        },
        {
            "AlarmName": latency,
            "AlarmDescription": f"dogops rollout guard: p99 ModelLatency of {name} above "
            f"{rollout.max_latency_p99_ms} ms (rollout.max_latency_p99_ms)",
            "Namespace": NAMESPACE, "MetricName": "ModelLatency", "Dimensions": dims,
            "ExtendedStatistic": "p99", "Period": PERIOD_S, "Unit": "Microseconds",
            # ModelLatency is reported in microseconds.
            "Threshold": float(rollout.max_latency_p99_ms) * 1000.0,
            **common,
        },
    ]


def describe_alarms(clients: AwsClients, names: list[str]) -> dict[str, dict[str, Any]]:
    """The metric alarms of these names that exist, by name."""
    answer = clients.client("cloudwatch").describe_alarms(AlarmNames=names, AlarmTypes=[
        "MetricAlarm"])
    return {a["AlarmName"]: a for a in answer.get("MetricAlarms", [])}


def _alarm_tags(clients: AwsClients, arn: str) -> list[dict[str, str]]:
    answer = clients.client("cloudwatch").list_tags_for_resource(ResourceARN=arn)
    return list(answer.get("Tags", []))


def ensure_alarms(
    clients: AwsClients, settings: Settings, variant: str, run_key: str
) -> list[str]:
    """Create (or update to the current thresholds) the endpoint's two alarms; only ours are
    ever updated. Returns their names."""
    cw = clients.client("cloudwatch")
    requests = alarm_requests(settings, variant, run_key)
    existing = describe_alarms(clients, [r["AlarmName"] for r in requests])
    for request in requests:
        found = existing.get(request["AlarmName"])
        if found is not None:
            ownership.require_ours(_alarm_tags(clients, found["AlarmArn"]), settings.project,
                                   f"CloudWatch alarm {request['AlarmName']}", ALARM_SETTING)
            # PutMetricAlarm ignores Tags on an existing alarm; ours already has them.
        cw.put_metric_alarm(**request)
    return [r["AlarmName"] for r in requests]


def delete_alarms(
    clients: AwsClients, endpoint_name: str, project: str, apply: bool
) -> list[str]:
    """`cloudwatch-alarm:NAME` for each of the endpoint's alarms that is ours (deleted only with
    `apply`); someone else's alarm of that name is left and logged."""
    done: list[str] = []
    for name, alarm in sorted(describe_alarms(clients, alarm_names(endpoint_name)).items()):
        if not ownership.is_ours(_alarm_tags(clients, alarm["AlarmArn"]), project):
            log.warning("Leaving CloudWatch alarm %s: not tagged as %s's", name, project)
            continue
        if apply:
            clients.client("cloudwatch").delete_alarms(AlarmNames=[name])
        done.append(f"cloudwatch-alarm:{name}")
    return done


def deployment_config(settings: Settings, alarms: list[str]) -> dict[str, Any]:
    """UpdateEndpoint's `DeploymentConfig` for the `rollout` setting."""
    rollout = settings.rollout
    routing: dict[str, Any] = {"Type": ROUTING_TYPES[rollout.strategy],
                               "WaitIntervalInSeconds": rollout.bake_seconds}
    if rollout.strategy == "canary":
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": rollout.canary_percent}
    elif rollout.strategy == "linear":
        routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT",
                                     "Value": rollout.linear_step_percent}
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": rollout.termination_wait_s,
            "MaximumExecutionTimeoutInSeconds": rollout.max_execution_timeout_s,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]},
    }


def guarded_update(
    clients: AwsClients, settings: Settings, variant: str, run_key: str
) -> tuple[dict[str, Any], list[str]]:
    """Extra UpdateEndpoint arguments and the alarm names; none for a serverless endpoint."""
    if settings.endpoint.mode == "serverless":
        return {}, []
    alarms = ensure_alarms(clients, settings, variant, run_key)
    return {"DeploymentConfig": deployment_config(settings, alarms)}, alarms


def phase(described: dict[str, Any]) -> str:
    """The deployment's current phase from DescribeEndpoint's PendingDeploymentSummary, e.g.
    `Baking: waiting 300 s` (empty when no deployment is pending)."""
    pending = described.get("PendingDeploymentSummary") or {}
    seen: list[str] = []
    for variant in pending.get("ProductionVariants", []):
        for status in variant.get("VariantStatus", []):
            message = status.get("StatusMessage")
            seen.append(f"{status.get('Status')}" + (f": {message}" if message else ""))
    return "; ".join(seen)


def alarm_figures(clients: AwsClients, alarms: list[str]) -> dict[str, Any]:
    """Each alarm's state and CloudWatch's reason for it: what a rollback was decided on."""
    try:
        found = describe_alarms(clients, alarms)
    except ClientError as exc:  # the outcome is still known; the figures are a courtesy
        return {"alarms": f"could not be read: {exc}"}
    return {name: f"{a.get('StateValue')}: {a.get('StateReason', '')}".strip()
            for name, a in found.items()}


def outcome(
    clients: AwsClients, settings: Settings, described: dict[str, Any], *, new_config: str,
    old_version: str | None, new_version: str, alarms: list[str], phases: list[str],
) -> RolloutOutcome:
    """Promoted when the endpoint ended InService on the new config; rolled back when it ended
    InService on another (SageMaker's auto-rollback after an alarm)."""
    rollout = settings.rollout
    guarded = bool(alarms)
    promoted = described.get("EndpointConfigName") == new_config
    figures = alarm_figures(clients, alarms) if alarms else {}
    if promoted:
        reason = ("no alarm fired during the bake" if guarded else
                  "serverless endpoint: updated all at once, no traffic shifting")
    else:
        fired = [n for n, state in figures.items() if str(state).startswith("ALARM")]
        reason = (f"SageMaker rolled back: {described.get('FailureReason') or 'alarm fired'}"
                  + (f" ({', '.join(fired)} in ALARM)" if fired else ""))
    return RolloutOutcome(
        decision="promoted" if promoted else "rolled-back",
        strategy=rollout.strategy if guarded else "all-at-once",
        steps=rollout.steps() if guarded else [100],
        bake_seconds=rollout.bake_seconds if guarded else 0,
        reason=reason, figures=figures, phases=phases, old_version=old_version,
        new_version=new_version, alarms=alarms,
    )

