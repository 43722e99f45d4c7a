"""The settings matrix: for every combination of endpoint mode, data capture, rollout strategy,
instance count, spot and architecture, the settings are either refused when they load (with a
message naming the settings and the fix) or every request dogops would send for them passes
every SageMaker rule (`dogops.aws.sagemaker_rules`). The requests come from the backend's own
builders (tests/rule_requests.py); nothing is sent, so no server is needed.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError
from rule_requests import endpoint_requests, job_requests

from dogops.aws.sagemaker_rules import violations
from dogops.errors import UserInputError
from dogops.settings import Settings

MODES = ("instance", "serverless")
CAPTURE = (0, 20)
STRATEGIES = ("canary", "linear", "all-at-once")
COUNTS = (1, 2, 4)
SPOT = (False, True)
ARCHITECTURES = ("efficientnet_lite0", "resnet50")
MATRIX = list(itertools.product(MODES, CAPTURE, STRATEGIES, COUNTS, SPOT, ARCHITECTURES))

# What AWS cannot do, refused when the settings load: (mode, capture on) -> words the error says.
REFUSED = {("serverless", True): ("endpoint.mode=serverless", "endpoint.capture_percent",
                                  "CAPTURE_PERCENT=0")}


def settings_for(mode: str, capture: int, strategy: str, count: int, spot: bool,
                 architecture: str, **endpoint: Any) -> Settings:
    return Settings(
        backend="aws",
        endpoint={"mode": mode, "capture_percent": capture, "initial_instance_count": count,
                  **endpoint},
        rollout={"strategy": strategy, "bake_seconds": 300},
        training={"spot": spot, "architecture": architecture},
    )


@pytest.mark.parametrize(("mode", "capture", "strategy", "count", "spot", "architecture"), MATRIX)
def test_every_combination_is_refused_at_load_or_passes_every_rule(
    mode: str, capture: int, strategy: str, count: int, spot: bool, architecture: str
) -> None:
    refused = REFUSED.get((mode, capture > 0))
    try:
        settings = settings_for(mode, capture, strategy, count, spot, architecture)
    except (UserInputError, ValidationError) as exc:
        assert refused is not None, f"refused, but AWS would take it: {exc}"
        assert all(words in str(exc) for words in refused), str(exc)
        return
    assert refused is None, "settings AWS refuses were accepted"
    sent = job_requests(settings) + endpoint_requests(settings, instances=count)
    assert {op for op, _, _ in sent} == {
        "CreateHyperParameterTuningJob", "CreateTrainingJob", "CreateModel",
        "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint"}
    for operation, request, context in sent:
        assert violations(operation, request, context) == [], operation


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_instance_type_change_of_a_scaled_endpoint_passes_every_rule(strategy: str,
                                                                        count: int) -> None:
    """The live endpoint is a registered auto-scaling target on ml.m5.large; the new settings
    move it to ml.m5.xlarge: the update is sent with the target lifted, and passes."""
    before = settings_for("instance", 0, strategy, count, False, "efficientnet_lite0")
    after = before.merged(endpoint={"instance_type": "ml.m5.xlarge"})
    sent = endpoint_requests(after, instances=count, previous=before)
    operation, request, context = sent[-1]
    assert operation == "UpdateEndpoint" and context is not None
    assert context.scaling_targets == frozenset()  # lifted for the update
    assert violations(operation, request, context) == []


@pytest.mark.parametrize("instances", [1, 2, 3, 5])
def test_a_scaled_out_fleet_keeps_its_instances_and_a_valid_rollout(instances: int) -> None:
    """Settings say one instance; the live endpoint runs `instances`: the new config starts
    with them, and the canary is sized against them (all at once where it cannot fit)."""
    settings = settings_for("instance", 0, "canary", 1, False, "resnet50")
    sent = endpoint_requests(settings, instances=instances)
    operation, request, context = sent[-1]
    assert context is not None and context.new_variants[0]["InitialInstanceCount"] == instances
    routing = request["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == ("ALL_AT_ONCE" if instances == 1 else "CANARY")
    assert violations(operation, request, context) == []
