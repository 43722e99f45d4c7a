"""SageMaker's own rules that dogops's requests depend on, checked before each request is sent.

Why: the moto server that the aws backend is tested against stores what it is sent and enforces
none of the rules between fields (data capture on a serverless variant, a canary larger than
half the fleet, an instance-type change of a variant registered for auto-scaling): a request AWS
refuses passed on moto. So each rule dogops relies on is written down here once, with the page of
the SageMaker API reference or developer guide it comes from, and `check_request` runs every rule
of an operation on the request at the one place that operation is sent
(`dogops.aws.endpoint`, `endpoint_update`, `training`, `tuning`). A broken rule raises
`SageMakerRuleError` (never retried) before anything is created.

Rules that need more than the request (what the endpoint runs now, whether its variant is a
scalable target) read it from an `UpdateContext` the caller describes from AWS first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dogops.errors import SageMakerRuleError

API = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/"
GUIDE = "https://docs.aws.amazon.com/sagemaker/latest/dg/"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


@dataclass(frozen=True)
class UpdateContext:
    """What an UpdateEndpoint's rules need besides the request: the variants of the endpoint's
    current config and of the config it moves to (CreateEndpointConfig / DescribeEndpointConfig
    `ProductionVariants`), and the variants registered as Application Auto Scaling targets."""

    old_variants: list[dict[str, Any]]
    new_variants: list[dict[str, Any]]
    scaling_targets: frozenset[str] = field(default_factory=frozenset)


Check = Callable[[dict[str, Any], UpdateContext | None], str | None]


@dataclass(frozen=True)
class Rule:
    operation: str
    name: str
    source: str  # the AWS page the rule is written on
    check: Check  # the violation in words, or None


def step_instances(size: dict[str, Any], count: int) -> int:
    """Instances one traffic-shifting step turns on: a CapacitySize of CAPACITY_PERCENT is a
    share of the variant's `count`, rounded up to a whole instance (a step turns on at least
    one); INSTANCE_COUNT is the number itself."""
    value = int(size.get("Value", 0))
    if size.get("Type") == "INSTANCE_COUNT":
        return value
    return max(1, math.ceil(count * value / 100))


def step_fits(size: dict[str, Any], count: int) -> bool:
    """TrafficRoutingConfig: a canary or linear step is at most 50 % of the variant's instances."""
    return 2 * step_instances(size, count) <= count


# -- helpers over requests ---------------------------------------------------------------------

def _variants(request: dict[str, Any]) -> list[dict[str, Any]]:
    return list(request.get("ProductionVariants") or [])


def _definition(request: dict[str, Any]) -> dict[str, Any]:
    """A training job's own fields: the request itself, or a tuning job's definition."""
    return dict(request.get("TrainingJobDefinition") or request)


def _routing(request: dict[str, Any]) -> dict[str, Any]:
    policy = (request.get("DeploymentConfig") or {}).get("BlueGreenUpdatePolicy") or {}
    return dict(policy.get("TrafficRoutingConfiguration") or {})


def _count(variant: dict[str, Any]) -> int:
    return int(variant.get("InitialInstanceCount") or variant.get("CurrentInstanceCount") or 0)


def _name_rule(key: str, most: int) -> Check:
    def check(request: dict[str, Any], _: UpdateContext | None) -> str | None:
        name = str(request.get(key, ""))
        if len(name) <= most and _NAME.match(name):
            return None
        return (f"{key} {name!r} must be 1-{most} letters, digits and hyphens, starting and "
                "ending with a letter or digit")
    return check


# -- the checks ---------------------------------------------------------------------------------

def _spot_wait(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    definition = _definition(request)
    if not definition.get("EnableManagedSpotTraining"):
        return None
    stop = definition.get("StoppingCondition") or {}
    wait, runtime = stop.get("MaxWaitTimeInSeconds"), stop.get("MaxRuntimeInSeconds", 86400)
    if wait is None or wait < runtime:
        return (f"a managed spot job needs StoppingCondition.MaxWaitTimeInSeconds ({wait}) of at "
                f"least MaxRuntimeInSeconds ({runtime}): raise training.spot_max_wait_s")
    return None


def _hyperparameters(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    definition = _definition(request)
    values = definition.get("HyperParameters") or definition.get("StaticHyperParameters") or {}
    if len(values) > 100:
        return f"{len(values)} hyperparameters: at most 100"
    long = sorted(k for k, v in values.items() if len(str(k)) > 256 or len(str(v)) > 2500)
    return f"hyperparameters {long}: keys at most 256, values 2500 characters" if long else None


def _metric_definitions(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    found = (_definition(request).get("AlgorithmSpecification") or {}).get("MetricDefinitions")
    count = len(found or [])
    return f"{count} MetricDefinitions: at most 40" if count > 40 else None


def _environment(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    environment = (request.get("PrimaryContainer") or {}).get("Environment") or {}
    if len(environment) > 100:
        return f"{len(environment)} container environment variables: at most 100"
    long = sorted(k for k, v in environment.items() if len(k) > 1024 or len(str(v)) > 1024)
    return f"environment variables {long}: names and values at most 1024 characters" if long \
        else None


def _one_capacity(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    for variant in _variants(request):
        serverless = "ServerlessConfig" in variant
        instances = "InstanceType" in variant or "InitialInstanceCount" in variant
        if serverless == instances:
            return (f"variant {variant.get('VariantName')} needs either ServerlessConfig or "
                    "InstanceType with InitialInstanceCount, not both or neither")
    return None


def _serverless_bounds(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    for variant in _variants(request):
        config = variant.get("ServerlessConfig")
        if config is None:
            continue
        memory, most = config.get("MemorySizeInMB", 0), config.get("MaxConcurrency", 0)
        provisioned = config.get("ProvisionedConcurrency")
        if memory not in range(1024, 6145, 1024):
            return f"MemorySizeInMB {memory}: one of 1024, 2048, ... 6144 (whole GB)"
        if not 1 <= most <= 200:
            return f"MaxConcurrency {most}: 1-200"
        if provisioned is not None and not 1 <= provisioned <= most:
            return f"ProvisionedConcurrency {provisioned}: 1 to MaxConcurrency ({most})"
    return None


def _serverless_capture(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    serverless = [v.get("VariantName") for v in _variants(request) if "ServerlessConfig" in v]
    if serverless and request.get("DataCaptureConfig"):
        return (f"DataCaptureConfig on an endpoint config with serverless variant(s) {serverless}"
                ": serverless endpoints do not support data capture; set "
                "endpoint.capture_percent=0 or endpoint.mode=instance")
    return None


def _sampling(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    capture = request.get("DataCaptureConfig")
    if capture and not 0 <= capture.get("InitialSamplingPercentage", -1) <= 100:
        return f"InitialSamplingPercentage {capture.get('InitialSamplingPercentage')}: 0-100"
    return None


def _new_counts(context: UpdateContext | None) -> list[tuple[str, int]]:
    return [(str(v.get("VariantName")), _count(v)) for v in (context.new_variants if context
                                                             else []) if "ServerlessConfig"
            not in v]


def _canary(request: dict[str, Any], context: UpdateContext | None) -> str | None:
    routing = _routing(request)
    if routing.get("Type") != "CANARY":
        return None
    size = routing.get("CanarySize") or {}
    for name, count in _new_counts(context):
        if not step_fits(size, count):
            return (f"CanarySize {size} turns on {step_instances(size, count)} of variant "
                    f"{name}'s {count} instance(s): a canary is at most 50 % of the instances")
    return None


def _linear(request: dict[str, Any], context: UpdateContext | None) -> str | None:
    routing = _routing(request)
    if routing.get("Type") != "LINEAR":
        return None
    size = routing.get("LinearStepSize") or {}
    if size.get("Type") == "CAPACITY_PERCENT" and not 10 <= size.get("Value", 0) <= 50:
        return f"LinearStepSize {size}: 10-50 % of the instances"
    for name, count in _new_counts(context):
        if not step_fits(size, count):
            return (f"LinearStepSize {size} turns on {step_instances(size, count)} of variant "
                    f"{name}'s {count} instance(s): a step is at most 50 % of the instances")
    return None


def _blue_green_bounds(request: dict[str, Any], _: UpdateContext | None) -> str | None:
    policy = (request.get("DeploymentConfig") or {}).get("BlueGreenUpdatePolicy")
    if policy is None:
        return None
    wait = _routing(request).get("WaitIntervalInSeconds", 0)
    timeout = policy.get("MaximumExecutionTimeoutInSeconds", 600)
    termination = policy.get("TerminationWaitInSeconds", 0)
    if not 0 <= wait <= 3600 or not 0 <= termination <= 3600 or not 600 <= timeout <= 28800:
        return (f"WaitIntervalInSeconds {wait} / TerminationWaitInSeconds {termination} (0-3600) "
                f"or MaximumExecutionTimeoutInSeconds {timeout} (600-28800) out of bounds")
    return None


def _same_variants(request: dict[str, Any], context: UpdateContext | None) -> str | None:
    if context is None or not request.get("DeploymentConfig"):
        return None
    old = {str(v.get("VariantName")) for v in context.old_variants}
    new = {str(v.get("VariantName")) for v in context.new_variants}
    return None if old == new else (f"a blue/green deployment keeps the variant names: "
                                    f"{sorted(old)} -> {sorted(new)}")


def _not_to_serverless(request: dict[str, Any], context: UpdateContext | None) -> str | None:
    if context is None:
        return None
    old = {str(v.get("VariantName")) for v in context.old_variants if "ServerlessConfig" not in v}
    new = {str(v.get("VariantName")) for v in context.new_variants if "ServerlessConfig" in v}
    if old & new:
        return (f"variant(s) {sorted(old & new)} would go from instances to serverless: "
                "SageMaker cannot update a real-time endpoint to serverless; delete the endpoint "
                "(`dogops teardown --apply`) to redeploy it serverless, or keep "
                "endpoint.mode=instance")
    return None


def _scaling_target_type(request: dict[str, Any], context: UpdateContext | None) -> str | None:
    if context is None:
        return None
    new = {v.get("VariantName"): v for v in context.new_variants}
    for old in context.old_variants:
        name = old.get("VariantName")
        if name not in context.scaling_targets:
            continue
        after = new.get(name)
        if after is None or after.get("InstanceType") != old.get("InstanceType"):
            return (f"variant {name} is a registered auto-scaling target and the update "
                    f"{'removes it' if after is None else 'changes its instance type'}: "
                    "deregister it first (and register it again after)")
    return None


RULES: tuple[Rule, ...] = (
    *(Rule(op, "managed spot: MaxWaitTimeInSeconds >= MaxRuntimeInSeconds",
           API + "API_StoppingCondition.html", _spot_wait)
      for op in ("CreateTrainingJob", "CreateHyperParameterTuningJob")),
    *(Rule(op, "hyperparameters: at most 100, keys 256 and values 2500 characters",
           API + "API_CreateTrainingJob.html#sagemaker-CreateTrainingJob-request-HyperParameters",
           _hyperparameters) for op in ("CreateTrainingJob", "CreateHyperParameterTuningJob")),
    *(Rule(op, "at most 40 metric definitions", API + "API_AlgorithmSpecification.html",
           _metric_definitions) for op in ("CreateTrainingJob", "CreateHyperParameterTuningJob")),
    Rule("CreateTrainingJob", "training job name: 1-63 characters, letters digits hyphens",
         API + "API_CreateTrainingJob.html", _name_rule("TrainingJobName", 63)),
    Rule("CreateHyperParameterTuningJob", "tuning job name: 1-32 characters",
         API + "API_CreateHyperParameterTuningJob.html",
         _name_rule("HyperParameterTuningJobName", 32)),
    Rule("CreateModel", "model name: 1-63 characters", API + "API_CreateModel.html",
         _name_rule("ModelName", 63)),
    Rule("CreateModel", "container environment: at most 100 entries of 1024 characters",
         API + "API_ContainerDefinition.html", _environment),
    Rule("CreateEndpointConfig", "endpoint config name: 1-63 characters",
         API + "API_CreateEndpointConfig.html", _name_rule("EndpointConfigName", 63)),
    Rule("CreateEndpointConfig", "a variant is serverless or instance-based, not both",
         API + "API_ProductionVariant.html", _one_capacity),
    Rule("CreateEndpointConfig", "serverless memory, concurrency and provisioned concurrency",
         API + "API_ProductionVariantServerlessConfig.html", _serverless_bounds),
    Rule("CreateEndpointConfig", "no data capture on serverless endpoints",
         GUIDE + "serverless-endpoints.html",
         _serverless_capture),
    Rule("CreateEndpointConfig", "capture sampling 0-100 %", API + "API_DataCaptureConfig.html",
         _sampling),
    Rule("CreateEndpoint", "endpoint name: 1-63 characters", API + "API_CreateEndpoint.html",
         _name_rule("EndpointName", 63)),
    Rule("UpdateEndpoint", "CanarySize at most 50 % of the variant's instance count",
         API + "API_TrafficRoutingConfig.html", _canary),
    Rule("UpdateEndpoint", "LinearStepSize 10-50 % of the variant's instance count",
         API + "API_TrafficRoutingConfig.html", _linear),
    Rule("UpdateEndpoint", "bake 0-3600 s, termination wait 0-3600 s, timeout 600-28800 s",
         API + "API_BlueGreenUpdatePolicy.html", _blue_green_bounds),
    Rule("UpdateEndpoint", "blue/green: the new config keeps the variant names",
         GUIDE + "deployment-guardrails-exclusions.html", _same_variants),
    Rule("UpdateEndpoint", "a real-time endpoint cannot be updated to serverless",
         GUIDE + "serverless-endpoints-update.html", _not_to_serverless),
    Rule("UpdateEndpoint", "no instance-type change of a registered auto-scaling target",
         GUIDE + "endpoint-scaling-update.html", _scaling_target_type),
)
OPERATIONS = frozenset(rule.operation for rule in RULES)


def rules_for(operation: str) -> Iterator[Rule]:
    return (rule for rule in RULES if rule.operation == operation)


def violations(
    operation: str, request: dict[str, Any], context: UpdateContext | None = None
) -> list[str]:
    """Each broken rule of `operation` as `name: what is wrong (source page)`."""
    if operation not in OPERATIONS:
        raise ValueError(f"no SageMaker rules recorded for {operation}")
    found = []
    for rule in rules_for(operation):
        problem = rule.check(request, context)
        if problem:
            found.append(f"{rule.name}: {problem} (see {rule.source})")
    return found


def check_request(
    operation: str, request: dict[str, Any], context: UpdateContext | None = None
) -> None:
    """Raise `SageMakerRuleError` naming every rule the request breaks; AWS would refuse it."""
    if operation == "UpdateEndpoint" and context is None:
        raise ValueError("UpdateEndpoint is checked against an UpdateContext")
    found = violations(operation, request, context)
    if found:
        raise SageMakerRuleError(
            f"{operation} refused before sending, SageMaker would not accept it: "
            + "; ".join(found)
        )
