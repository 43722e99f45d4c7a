"""Each SageMaker rule of `dogops.aws.sagemaker_rules` fires on a request that breaks it.

The valid requests come from the backend's own builders (tests/rule_requests.py); each case
breaks one thing in a copy, the way AWS would see it refused. A rule without a case here fails
`test_every_rule_has_a_case`, so a new rule comes with its proof.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from rule_requests import endpoint_requests, job_requests

from dogops.aws.sagemaker_rules import RULES, UpdateContext, check_request, violations
from dogops.errors import SageMakerRuleError, UserInputError, is_transient
from dogops.settings import Settings

Sent = tuple[dict[str, Any], UpdateContext | None]


def _sent(operation: str, *, serverless: bool = False) -> Sent:
    """A valid request of `operation` (the last one built) and its context."""
    settings = Settings(backend="aws", training={"spot": True},
                        endpoint={"initial_instance_count": 4, "capture_percent": 20}
                        if not serverless else {"mode": "serverless"})
    built = job_requests(settings) + endpoint_requests(settings, instances=4)
    request, context = [(r, c) for op, r, c in built if op == operation][-1]
    return copy.deepcopy(request), context


def _definition(request: dict[str, Any]) -> dict[str, Any]:
    return dict(request.get("TrainingJobDefinition", request))


def _spot_short(op: str) -> Sent:
    request, context = _sent(op)
    _definition(request)["StoppingCondition"]["MaxWaitTimeInSeconds"] = 60
    return request, context


def _many_hyperparameters(op: str) -> Sent:
    request, context = _sent(op)
    definition = _definition(request)
    key = "HyperParameters" if "HyperParameters" in definition else "StaticHyperParameters"
    definition[key]["note"] = "x" * 2501
    return request, context


def _many_metrics(op: str) -> Sent:
    request, context = _sent(op)
    spec = _definition(request)["AlgorithmSpecification"]
    spec["MetricDefinitions"] = [{"Name": f"m{i}", "Regex": "x"} for i in range(41)]
    return request, context


def _named(op: str, key: str, name: str) -> Callable[[], Sent]:
    def build() -> Sent:
        request, context = _sent(op)
        request[key] = name
        return request, context
    return build


def _big_environment() -> Sent:
    request, context = _sent("CreateModel")
    request["PrimaryContainer"]["Environment"].update({f"K{i}": "v" for i in range(101)})
    return request, context


def _both_capacities() -> Sent:
    request, context = _sent("CreateEndpointConfig")
    request["ProductionVariants"][0]["ServerlessConfig"] = {"MemorySizeInMB": 2048,
                                                            "MaxConcurrency": 5}
    return request, context


def _half_gb() -> Sent:
    request, context = _sent("CreateEndpointConfig", serverless=True)
    request["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] = 1536
    return request, context


def _serverless_capture() -> Sent:
    request, context = _sent("CreateEndpointConfig", serverless=True)
    request["DataCaptureConfig"] = _sent("CreateEndpointConfig")[0]["DataCaptureConfig"]
    return request, context


def _sampling() -> Sent:
    request, context = _sent("CreateEndpointConfig")
    request["DataCaptureConfig"]["InitialSamplingPercentage"] = 101
    return request, context


def _routing(kind: str, size: dict[str, Any] | None, key: str = "", count: int = 1) -> Sent:
    request, context = _sent("UpdateEndpoint")
    assert context is not None
    routing = request["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    routing.clear()
    routing.update({"Type": kind, "WaitIntervalInSeconds": 60, **({key: size} if key else {})})
    new = [{**v, "InitialInstanceCount": count} for v in context.new_variants]
    return request, UpdateContext(context.old_variants, new, context.scaling_targets)


def _long_bake() -> Sent:
    request, context = _sent("UpdateEndpoint")
    request["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"][
        "WaitIntervalInSeconds"] = 3601
    return request, context


def _renamed_variant() -> Sent:
    request, context = _sent("UpdateEndpoint")
    assert context is not None
    new = [{**v, "VariantName": "Blue"} for v in context.new_variants]
    return request, UpdateContext(context.old_variants, new, context.scaling_targets)


def _to_serverless() -> Sent:
    request, context = _sent("UpdateEndpoint")
    assert context is not None
    new = _sent("CreateEndpointConfig", serverless=True)[0]["ProductionVariants"]
    return {k: v for k, v in request.items() if k != "DeploymentConfig"}, UpdateContext(
        context.old_variants, new, context.scaling_targets)


def _registered_type_change() -> Sent:
    request, context = _sent("UpdateEndpoint")
    assert context is not None
    new = [{**v, "InstanceType": "ml.c5.xlarge"} for v in context.new_variants]
    return request, UpdateContext(context.old_variants, new, frozenset({"AllTraffic"}))


JOBS = ("CreateTrainingJob", "CreateHyperParameterTuningJob")
CASES: dict[tuple[str, str], Callable[[], Sent]] = {
    **{(op, "managed spot"): (lambda op=op: _spot_short(op)) for op in JOBS},
    **{(op, "hyperparameters"): (lambda op=op: _many_hyperparameters(op)) for op in JOBS},
    **{(op, "at most 40 metric"): (lambda op=op: _many_metrics(op)) for op in JOBS},
    ("CreateTrainingJob", "training job name"): _named("CreateTrainingJob", "TrainingJobName",
                                                       "t" * 64),
    ("CreateHyperParameterTuningJob", "tuning job name"): _named(
        "CreateHyperParameterTuningJob", "HyperParameterTuningJobName", "h" * 33),
    ("CreateModel", "model name"): _named("CreateModel", "ModelName", "under_score"),
    ("CreateModel", "container environment"): _big_environment,
    ("CreateEndpointConfig", "endpoint config name"): _named(
        "CreateEndpointConfig", "EndpointConfigName", "-dash-first"),
    ("CreateEndpointConfig", "a variant is serverless"): _both_capacities,
    ("CreateEndpointConfig", "serverless memory"): _half_gb,
    ("CreateEndpointConfig", "no data capture on serverless"): _serverless_capture,
    ("CreateEndpointConfig", "capture sampling"): _sampling,
    ("CreateEndpoint", "endpoint name"): _named("CreateEndpoint", "EndpointName", "x" * 64),
    ("UpdateEndpoint", "CanarySize"): lambda: _routing(
        "CANARY", {"Type": "CAPACITY_PERCENT", "Value": 10}, "CanarySize"),
    ("UpdateEndpoint", "LinearStepSize"): lambda: _routing(
        "LINEAR", {"Type": "CAPACITY_PERCENT", "Value": 20}, "LinearStepSize"),
    ("UpdateEndpoint", "bake 0-3600"): _long_bake,
    ("UpdateEndpoint", "blue/green: the new config keeps"): _renamed_variant,
    ("UpdateEndpoint", "a real-time endpoint cannot"): _to_serverless,
    ("UpdateEndpoint", "no instance-type change"): _registered_type_change,
}


def _case(rule: Any) -> Callable[[], Sent] | None:
    return next((build for (op, start), build in CASES.items()
                 if op == rule.operation and rule.name.startswith(start)), None)


def test_every_rule_has_a_case_and_an_aws_page():
    assert [f"{r.operation}: {r.name}" for r in RULES if _case(r) is None] == []
    for rule in RULES:
        assert rule.source.startswith("https://docs.aws.amazon.com/sagemaker/latest/"), rule


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.operation}:{r.name}")
def test_each_rule_fires_on_a_request_that_breaks_it(rule: Any) -> None:
    build = _case(rule)
    assert build is not None
    request, context = build()
    found = violations(rule.operation, request, context)
    assert [v for v in found if v.startswith(rule.name)], found
    with pytest.raises(SageMakerRuleError, match="refused before sending") as caught:
        check_request(rule.operation, request, context)
    assert rule.source in str(caught.value)
    assert isinstance(caught.value, UserInputError) and not is_transient(caught.value)


def test_the_valid_requests_pass():
    for operation in ("CreateTrainingJob", "CreateHyperParameterTuningJob", "CreateModel",
                      "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint"):
        assert violations(operation, *_sent(operation)) == [], operation


@pytest.mark.parametrize(("size", "count", "fits"), [
    ({"Type": "CAPACITY_PERCENT", "Value": 10}, 1, False),  # a whole instance of one
    ({"Type": "CAPACITY_PERCENT", "Value": 10}, 2, True),
    ({"Type": "CAPACITY_PERCENT", "Value": 50}, 3, False),  # ceil(1.5) = 2 of 3
    ({"Type": "CAPACITY_PERCENT", "Value": 50}, 4, True),
    ({"Type": "INSTANCE_COUNT", "Value": 2}, 4, True),
    ({"Type": "INSTANCE_COUNT", "Value": 3}, 4, False),
])
def test_a_step_is_at_most_half_the_fleet(size: dict[str, Any], count: int, fits: bool) -> None:
    from dogops.aws.sagemaker_rules import step_fits

    assert step_fits(size, count) is fits


def test_an_update_is_only_checked_with_its_context():
    request, _ = _sent("UpdateEndpoint")
    with pytest.raises(ValueError, match="UpdateContext"):
        check_request("UpdateEndpoint", request)
    with pytest.raises(ValueError, match="no SageMaker rules"):
        check_request("DeleteEverything", {})


SENDERS = {"create_training_job": "CreateTrainingJob",
           "create_hyper_parameter_tuning_job": "CreateHyperParameterTuningJob",
           "create_model": "CreateModel", "create_endpoint_config": "CreateEndpointConfig",
           "create_endpoint": "CreateEndpoint", "update_endpoint": "UpdateEndpoint"}


def test_every_send_is_checked_in_the_function_that_sends_it():
    """Read from the source (nothing runs): a function of dogops/aws that calls or hands on
    `<client>.create_model` (etc.) also calls `check_request("CreateModel", ...)`; a new send
    point without the check fails here."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "dogops" / "aws"
    unchecked, seen = [], set()
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            sends = {SENDERS[n.attr] for n in ast.walk(node)
                     if isinstance(n, ast.Attribute) and n.attr in SENDERS}
            checked = {n.args[0].value for n in ast.walk(node)
                       if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "check_request"
                       and n.args and isinstance(n.args[0], ast.Constant)}
            seen |= sends
            unchecked += [f"{path.name}::{node.name}: {op}" for op in sorted(sends - checked)]
    assert unchecked == []
    assert seen == set(SENDERS.values())  # each operation is sent somewhere and was looked at
