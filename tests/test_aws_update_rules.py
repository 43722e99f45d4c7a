"""Issue 22 (part A): where dogops's aws requests met SageMaker rules that moto does not enforce.

Each case deploys against the moto server as test_aws_sagemaker.py does. moto has no
UpdateEndpoint and no auto-scaler, so, as there, `FakeDeployment` (test_aws_rollout.py) records
the UpdateEndpoint request and reports the end state, and a scaled-out endpoint is shown by
reporting the instance count Application Auto Scaling would have set on top of moto's real
DescribeEndpoint answer. Everything else (models, configs, alarms, scalable targets) is moto's.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from test_aws_rollout import FakeDeployment
from test_aws_sagemaker import FakeUpdates, calls, clients, deploy, trained

from dogops.aws.autoscaling import is_registered, register_autoscaling
from dogops.aws.sagemaker_job import framework_image
from dogops.errors import OperationFailedError, SageMakerRuleError, UserInputError
from dogops.rollout import rollout_markdown
from dogops.settings import EndpointConfig, RolloutConfig, Settings, TrainingConfig, load_settings

pytestmark = pytest.mark.aws
__all__ = ["clients"]  # the fixture, shared with test_aws_sagemaker.py

EP = "dogops-classifier"


def routing(request: dict[str, Any]) -> dict[str, Any]:
    return dict(request["DeploymentConfig"]["BlueGreenUpdatePolicy"][
        "TrafficRoutingConfiguration"])


def scaled_out(sm: Any, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """DescribeEndpoint reports `count` instances, as after auto-scaling scaled the variant out
    (moto runs no scaler: its answer is kept and only the counts are set)."""
    real = sm.describe_endpoint

    def describe_endpoint(**kwargs: Any) -> dict[str, Any]:
        answer = real(**kwargs)
        answer["ProductionVariants"] = [
            {**v, "CurrentInstanceCount": count, "DesiredInstanceCount": count}
            for v in answer.get("ProductionVariants", [])]
        return dict(answer)

    monkeypatch.setattr(sm, "describe_endpoint", describe_endpoint)


# -- serverless + data capture ------------------------------------------------------------------

def test_serverless_with_capture_is_refused_when_the_settings_load():
    with pytest.raises(UserInputError, match=r"endpoint.mode=serverless with "
                       r"endpoint.capture_percent=20.*CAPTURE_PERCENT=0.*MODE=instance"):
        load_settings(endpoint={"mode": "serverless", "capture_percent": 20})
    assert EndpointConfig(mode="serverless", capture_percent=0).capture_percent == 0
    assert EndpointConfig(mode="instance", capture_percent=20).capture_percent == 20


def test_a_config_that_skipped_the_settings_check_is_refused_before_it_is_sent(clients,
                                                                             aws_settings):
    """The rules module is the second net: settings built without validation still cannot put
    a DataCaptureConfig on a serverless variant."""
    sent = calls(clients.client("sagemaker"), "CreateEndpointConfig")
    aws_settings.endpoint = EndpointConfig.model_construct(
        **{**EndpointConfig().model_dump(), "mode": "serverless", "capture_percent": 20})
    with pytest.raises(SageMakerRuleError, match="no data capture on serverless endpoints.*"
                       "serverless-endpoints.html"):
        deploy(clients, aws_settings, trained("v1"))
    assert sent == []


# -- the canary of a one-instance endpoint --------------------------------------------------------

def test_one_instance_update_goes_all_at_once_with_the_bake_and_says_why(clients, aws_settings,
                                                                         monkeypatch):
    aws_settings.rollout = RolloutConfig(bake_seconds=120)  # the defaults: canary 10 %, 1 instance
    deploy(clients, aws_settings, trained("v1"))
    fake = FakeDeployment(clients.client("sagemaker"), monkeypatch)

    result = deploy(clients, aws_settings, trained("v2"), run_key="run2")

    assert routing(fake.requests[0]) == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 120}
    alarms = fake.requests[0]["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert [a["AlarmName"] for a in alarms] == [f"{EP}-dogops-5xx-rate", f"{EP}-dogops-latency-p99"]
    outcome = result.rollout
    assert outcome is not None and outcome.promoted
    assert (outcome.strategy, outcome.steps, outcome.bake_seconds) == ("all-at-once", [100], 120)
    assert "canary of 10 % on 1 instance(s)" in outcome.reason and "50 %" in outcome.reason
    summary = rollout_markdown(outcome, EP)  # the run's rollout artifact
    assert "all-at-once, steps [100] %" in summary and "same bake and alarms" in summary


@pytest.mark.parametrize(("strategy", "count", "expected"), [
    ("canary", 2, "CANARY"), ("linear", 1, "ALL_AT_ONCE"), ("linear", 2, "LINEAR"),
])
def test_the_rollout_keeps_its_steps_where_the_fleet_allows(clients, aws_settings, monkeypatch,
                                                           strategy, count, expected):
    aws_settings.rollout = RolloutConfig(strategy=strategy, linear_step_percent=50,
                                         bake_seconds=60)
    aws_settings.endpoint.initial_instance_count = count
    deploy(clients, aws_settings, trained("v1"))
    fake = FakeDeployment(clients.client("sagemaker"), monkeypatch)
    deploy(clients, aws_settings, trained("v2"), run_key="run2")
    assert routing(fake.requests[0])["Type"] == expected


# -- the instance count through an update ---------------------------------------------------------

def test_an_update_keeps_the_instances_auto_scaling_added(clients, aws_settings, monkeypatch):
    sm = clients.client("sagemaker")
    deploy(clients, aws_settings, trained("v1"))
    scaled_out(sm, monkeypatch, 3)  # the scaler added two instances under load
    fake = FakeDeployment(sm, monkeypatch)

    second = deploy(clients, aws_settings, trained("v2"), run_key="run2")

    config = sm.describe_endpoint_config(EndpointConfigName=second.config_name)
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 3
    assert "RetainAllVariantProperties" not in fake.requests[0]  # would also keep old capture
    # Three instances take the configured canary (10 % -> one instance of three).
    assert routing(fake.requests[0])["Type"] == "CANARY"


def test_the_same_model_after_a_scale_out_is_not_redeployed(clients, aws_settings, monkeypatch):
    sm = clients.client("sagemaker")
    first = deploy(clients, aws_settings, trained("v1"))
    scaled_out(sm, monkeypatch, 2)
    fake = FakeDeployment(sm, monkeypatch)
    again = deploy(clients, aws_settings, trained("v1"), run_key="run2")
    assert fake.requests == [] and again.config_name == first.config_name and not again.updated


def test_more_initial_instances_for_the_same_model_is_an_update(clients, aws_settings,
                                                                monkeypatch):
    sm = clients.client("sagemaker")
    deploy(clients, aws_settings, trained("v1"))
    fake = FakeDeployment(sm, monkeypatch)
    aws_settings.endpoint.initial_instance_count = 2
    again = deploy(clients, aws_settings, trained("v1"), run_key="run2")
    assert [r["EndpointConfigName"] for r in fake.requests] == [again.config_name]
    config = sm.describe_endpoint_config(EndpointConfigName=again.config_name)
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2


# -- updates of a registered auto-scaling target --------------------------------------------------

def _watch_registration(clients: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the variant is a scalable target at the moment UpdateEndpoint is sent."""
    sm = clients.client("sagemaker")
    seen: list[bool] = []
    update = sm.update_endpoint

    def update_endpoint(**kwargs: Any) -> Any:
        seen.append(is_registered(clients, EP))
        return update(**kwargs)

    monkeypatch.setattr(sm, "update_endpoint", update_endpoint)
    return seen


def test_an_instance_type_change_deregisters_then_registers_again(clients, aws_settings,
                                                                  monkeypatch):
    deploy(clients, aws_settings, trained("v1"))
    register_autoscaling(clients, EP, aws_settings.scaling, project="dogops")
    FakeDeployment(clients.client("sagemaker"), monkeypatch)
    registered_at_update = _watch_registration(clients, monkeypatch)
    aws_settings.endpoint.instance_type = "ml.m5.xlarge"
    lines: list[str] = []

    deploy(clients, aws_settings, trained("v2"), run_key="run2", lines=lines)

    assert registered_at_update == [False]
    assert is_registered(clients, EP)
    policies = clients.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 1
    assert any("deregistered for the update" in line for line in lines)
    assert any("registered again" in line for line in lines)


def test_a_failed_instance_type_change_still_registers_again(clients, aws_settings,
                                                               monkeypatch):
    first = deploy(clients, aws_settings, trained("v1"))
    register_autoscaling(clients, EP, aws_settings.scaling, project="dogops")
    fake = FakeUpdates(clients.client("sagemaker"), monkeypatch, healthy_config=first.config_name)
    aws_settings.endpoint.instance_type = "ml.m5.xlarge"
    with pytest.raises(OperationFailedError, match=f"rolled back to {first.config_name}"):
        deploy(clients, aws_settings, trained("v2"), run_key="run2")
    assert len(fake.requests) == 2  # the update, then the rollback to the old config
    assert is_registered(clients, EP)


def test_a_new_model_on_the_same_instance_type_stays_registered(clients, aws_settings,
                                                                monkeypatch):
    deploy(clients, aws_settings, trained("v1"))
    register_autoscaling(clients, EP, aws_settings.scaling, project="dogops")
    FakeDeployment(clients.client("sagemaker"), monkeypatch)
    registered_at_update = _watch_registration(clients, monkeypatch)
    deploy(clients, aws_settings, trained("v2"), run_key="run2")
    assert registered_at_update == [True]  # AWS allows a model change of a registered variant


def test_real_time_to_serverless_is_refused_before_any_update(clients, aws_settings,
                                                              monkeypatch):
    deploy(clients, aws_settings, trained("v1"))
    fake = FakeDeployment(clients.client("sagemaker"), monkeypatch)
    serverless = aws_settings.merged(endpoint={"mode": "serverless"})
    with pytest.raises(SageMakerRuleError, match=r"instances to serverless.*dogops teardown.*"
                       r"serverless-endpoints-update.html"):
        deploy(clients, serverless, trained("v2"), run_key="run2")
    assert fake.requests == []


# -- the framework image ------------------------------------------------------------------------

def test_an_unsupported_framework_python_pair_is_refused_not_guessed():
    with pytest.raises(UserInputError, match=r"training.py_version 'py312'.*Unsupported Python "
                       r"version: py312.*DOGOPS_TRAINING__PY_VERSION"):
        framework_image("us-east-1", TrainingConfig(py_version="py312"), "ml.m5.xlarge")
    assert framework_image("us-east-1", Settings().training, "ml.m5.xlarge").endswith(
        "pytorch-training:2.5-cpu-py311")


def test_without_the_sdk_the_built_in_table_knows_only_real_images(monkeypatch):
    # The SDK is installed here; "not importable" is the one thing that must be faked.
    monkeypatch.setitem(sys.modules, "sagemaker.core", None)
    assert framework_image("eu-west-1", Settings().training, "ml.g4dn.xlarge") == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-gpu-py311")
    with pytest.raises(UserInputError, match="training.py_version 'py312'"):
        framework_image("eu-west-1", TrainingConfig(py_version="py312"), "ml.m5.xlarge")


def test_an_endpoint_whose_config_was_deleted_still_updates(clients, aws_settings, monkeypatch):
    """SageMaker lets a live endpoint's config be deleted; the update then has no old variants
    to compare, and goes on (the old code never read them)."""
    sm = clients.client("sagemaker")
    first = deploy(clients, aws_settings, trained("v1"))
    sm.delete_endpoint_config(EndpointConfigName=first.config_name)
    fake = FakeDeployment(sm, monkeypatch)
    second = deploy(clients, aws_settings, trained("v2"), run_key="run2")
    assert [r["EndpointConfigName"] for r in fake.requests] == [second.config_name]
