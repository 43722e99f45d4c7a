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
shifting, so they are updated all at once (the outcome says so); so is a fleet too small for the
canary or linear step (`plan`: one instance, the default, cannot have a canary).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws import naming, ownership
from dogops.aws.clients import AwsClients
from dogops.aws.sagemaker_rules import step_fits, step_instances
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


@dataclass(frozen=True)
class Plan:
    """The traffic shifting SageMaker is asked for: the `rollout` setting, or all at once when
    the fleet is too small for its steps (`note` says why, and reaches the run summary)."""

    strategy: str
    steps: list[int]
    note: str = ""


def plan(settings: Settings, instance_count: int) -> Plan:
    """The rollout a fleet of `instance_count` instances can take.

    SageMaker lets a canary or a linear step turn on at most 50 % of the variant's instances
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html),
    and a step is at least one instance: one instance (the default endpoint) cannot have a
    canary at all. Such an update goes all at once, blue/green, with the same bake
    (WaitIntervalInSeconds after all traffic moved) and the same auto-rollback alarms, and the
    outcome says so. Decided by the same `step_fits` the rules module checks requests with."""
    rollout = settings.rollout
    size = _step_size(settings)
    if size is None or step_fits(size, instance_count):
        return Plan(rollout.strategy, rollout.steps())
    return Plan("all-at-once", [100], (
        f"{rollout.strategy} of {size['Value']} % on {instance_count} instance(s) would turn on "
        f"{step_instances(size, instance_count)} instance(s), more than the 50 % SageMaker allows "
        "per step: updated all at once (blue/green) with the same bake and alarms instead"))


def _step_size(settings: Settings) -> dict[str, Any] | None:
    rollout = settings.rollout
    if rollout.strategy == "canary":
        return {"Type": "CAPACITY_PERCENT", "Value": rollout.canary_percent}
    if rollout.strategy == "linear":
        return {"Type": "CAPACITY_PERCENT", "Value": rollout.linear_step_percent}
    return None


def deployment_config(
    settings: Settings, alarms: list[str], chosen: Plan | None = None
) -> dict[str, Any]:
    """UpdateEndpoint's `DeploymentConfig` for the `rollout` setting, or for `chosen` (`plan`)."""
    rollout = settings.rollout
    strategy = chosen.strategy if chosen is not None else rollout.strategy
    routing: dict[str, Any] = {"Type": ROUTING_TYPES[strategy],
                               "WaitIntervalInSeconds": rollout.bake_seconds}
    size = _step_size(settings)
    if strategy == "canary" and size:
        routing["CanarySize"] = size
    elif strategy == "linear" and size:
        routing["LinearStepSize"] = size
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": rollout.termination_wait_s,
            "MaximumExecutionTimeoutInSeconds": rollout.max_execution_timeout_s,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]},
    }


SERVERLESS = Plan("all-at-once", [100], "serverless endpoint: updated all at once, no traffic "
                  "shifting")


def update_arguments(
    settings: Settings, alarms: list[str], instance_count: int
) -> tuple[dict[str, Any], Plan]:
    """Extra UpdateEndpoint arguments for a fleet of `instance_count`, and the plan; none for a
    serverless endpoint. No AWS call: the matrix test builds the same request from it."""
    if settings.endpoint.mode == "serverless":
        return {}, SERVERLESS
    chosen = plan(settings, instance_count)
    return {"DeploymentConfig": deployment_config(settings, alarms, chosen)}, chosen


def guarded_update(
    clients: AwsClients, settings: Settings, variant: str, run_key: str, instance_count: int
) -> tuple[dict[str, Any], list[str], Plan]:
    """`update_arguments` with the endpoint's alarms made first (none for serverless)."""
    if settings.endpoint.mode == "serverless":
        guard, chosen = update_arguments(settings, [], instance_count)
        return guard, [], chosen
    alarms = ensure_alarms(clients, settings, variant, run_key)
    guard, chosen = update_arguments(settings, alarms, instance_count)
    return guard, alarms, chosen


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
    chosen: Plan | None = None,
) -> RolloutOutcome:
    """Promoted when the endpoint ended InService on the new config; rolled back when it ended
    InService on another (SageMaker's auto-rollback after an alarm). `chosen`: the plan the
    update ran (`plan`); its note joins the reason."""
    rollout = settings.rollout
    guarded = bool(alarms)
    chosen = chosen or (Plan(rollout.strategy, rollout.steps()) if guarded else SERVERLESS)
    promoted = described.get("EndpointConfigName") == new_config
    figures = alarm_figures(clients, alarms) if alarms else {}
    if promoted:
        reason = "no alarm fired during the bake" if guarded else chosen.note
        if guarded and chosen.note:
            reason += f" ({chosen.note})"
    else:
        fired = [n for n, state in figures.items() if str(state).startswith("ALARM")]
        reason = (f"SageMaker rolled back: {described.get('FailureReason') or 'alarm fired'}"
                  + (f" ({', '.join(fired)} in ALARM)" if fired else ""))
    return RolloutOutcome(
        decision="promoted" if promoted else "rolled-back",
        strategy=chosen.strategy, steps=chosen.steps,
        bake_seconds=rollout.bake_seconds if guarded else 0,
        reason=reason, figures=figures, phases=phases, old_version=old_version,
        new_version=new_version, alarms=alarms,
    )
