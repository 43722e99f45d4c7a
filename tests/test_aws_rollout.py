"""Guarded rollouts on the aws backend: DeploymentConfig, the alarms dogops owns, the outcome.

CloudWatch alarms are emulated by the moto server, so they are created, read, tagged and deleted
there for real. moto has no UpdateEndpoint (HTTP 500) and runs no deployment: as in
test_aws_sagemaker.py, the client's update_endpoint is replaced by a recorder, and describe_endpoint
reports the states SageMaker goes through (a pending deployment baking, then the end state) on top
of moto's real answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_aws_sagemaker import ROLE, clients, deploy, no_sleep, tag_dict, trained

from dogops.aws import rollout
from dogops.aws.teardown import teardown_aws
from dogops.errors import NotOwnedError, UserInputError
from dogops.settings import RolloutConfig, Settings

pytestmark = pytest.mark.aws
__all__ = ["clients"]  # the fixture, shared with test_aws_sagemaker.py

EP = "dogops-classifier"


class FakeDeployment:
    """Records UpdateEndpoint; the next describes show a canary baking, then the end state:
    InService on the new config (promoted) or, with `roll_back`, InService on the old one with
    SageMaker's reason (what its auto-rollback leaves)."""

    def __init__(self, sm: Any, monkeypatch: pytest.MonkeyPatch, roll_back: bool = False) -> None:
        self.requests: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        real_describe = sm.describe_endpoint
        self.final: dict[str, Any] = {}

        def describe_endpoint(**kwargs: Any) -> dict[str, Any]:
            state = self.states.pop(0) if self.states else self.final
            return {**real_describe(**kwargs), **state}

        def update_endpoint(**kwargs: Any) -> dict[str, Any]:
            self.requests.append(kwargs)
            old = real_describe(EndpointName=kwargs["EndpointName"])
            baking = {"EndpointStatus": "Updating", "PendingDeploymentSummary": {
                "EndpointConfigName": kwargs["EndpointConfigName"],
                "ProductionVariants": [{"VariantName": "AllTraffic", "VariantStatus": [
                    {"Status": "Baking", "StatusMessage": "canary 10% baking"}]}]}}
            self.states = [baking, baking]
            if roll_back:
                self.final = {"EndpointStatus": "InService",
                              "EndpointConfigName": old["EndpointConfigName"],
                              "FailureReason": "Deployment was rolled back: alarm "
                              f"{EP}-dogops-5xx-rate in ALARM"}
            else:
                self.final = {"EndpointStatus": "InService",
                              "EndpointConfigName": kwargs["EndpointConfigName"]}
            return {"EndpointArn": old["EndpointArn"]}

        monkeypatch.setattr(sm, "describe_endpoint", describe_endpoint)
        monkeypatch.setattr(sm, "update_endpoint", update_endpoint)


def test_update_carries_the_deployment_config_and_dogops_alarms(clients, aws_settings,
                                                                monkeypatch):
    sm, cw = clients.client("sagemaker"), clients.client("cloudwatch")
    aws_settings.rollout = RolloutConfig(canary_percent=20, bake_seconds=120,
                                         termination_wait_s=60, max_execution_timeout_s=1800,
                                         max_error_rate_percent=2.5, max_latency_p99_ms=800)
    # Two instances: a canary may turn on at most half of them (one instance: all at once, see
    # test_aws_update_rules.py).
    aws_settings.endpoint.initial_instance_count = 2
    first = deploy(clients, aws_settings, trained("v1"))
    fake = FakeDeployment(sm, monkeypatch)
    lines: list[str] = []

    second = deploy(clients, aws_settings, trained("v2"), run_key="run2", lines=lines)

    names = [f"{EP}-dogops-5xx-rate", f"{EP}-dogops-latency-p99"]
    assert fake.requests == [{
        "EndpointName": EP, "EndpointConfigName": second.config_name,
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY", "WaitIntervalInSeconds": 120,
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}},
                "TerminationWaitInSeconds": 60, "MaximumExecutionTimeoutInSeconds": 1800},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": n} for n in names]}},
    }]
    assert second.config_name != first.config_name
    assert second.rollout is not None and second.rollout.decision == "promoted"
    assert (second.rollout.old_version, second.rollout.new_version) == ("v1", "v2")
    assert any("Baking: canary 10% baking" in line for line in second.rollout.phases)
    assert any("Baking" in line for line in lines) and "rollout of model v2 promoted" in lines[-1]
    assert tag_dict(sm, second.arn)["model-version"] == "v2"

    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    dims = [{"Name": "EndpointName", "Value": EP}, {"Name": "VariantName", "Value": "AllTraffic"}]
    latency = alarms[names[1]]
    assert (latency["Namespace"], latency["MetricName"], latency["ExtendedStatistic"],
            latency["Threshold"], latency["ComparisonOperator"]) == (
        "AWS/SageMaker", "ModelLatency", "p99", 800_000.0, "GreaterThanThreshold")
    assert latency["Dimensions"] == dims
    errors = alarms[names[0]]
    assert errors["Threshold"] == 2.5 and errors["ComparisonOperator"] == "GreaterThanThreshold"
    stats = {m["Id"]: m for m in errors["Metrics"]}
    assert {m["MetricStat"]["Metric"]["MetricName"] for k, m in stats.items() if k != "rate"} == {
        "Invocation5XXErrors", "Invocations"}
    assert all(m["MetricStat"]["Metric"]["Dimensions"] == dims
               for k, m in stats.items() if k != "rate")
    assert stats["rate"]["Expression"] == "IF(calls > 0, 100 * errors / calls, 0)"
    for alarm in alarms.values():
        tags = {t["Key"]: t["Value"] for t in
                cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]}
        assert (tags["project"], tags["managed-by"]) == ("dogops", "dogops")


def test_alarm_rollback_is_an_outcome_with_its_figures(clients, aws_settings, monkeypatch):
    sm, cw = clients.client("sagemaker"), clients.client("cloudwatch")
    first = deploy(clients, aws_settings, trained("v1"))
    FakeDeployment(sm, monkeypatch, roll_back=True)
    # What CloudWatch would have done during the bake: the 5xx-rate alarm fired.
    real_update = rollout.ensure_alarms

    def ensure_then_fire(*args: Any) -> list[str]:
        names = real_update(*args)
        cw.set_alarm_state(AlarmName=names[0], StateValue="ALARM",
                           StateReason="Threshold Crossed: 1 datapoint [50.0] > 5.0")
        return names

    monkeypatch.setattr(rollout, "ensure_alarms", ensure_then_fire)

    result = deploy(clients, aws_settings, trained("v2"), run_key="run2")

    assert result.rollout is not None and result.rollout.decision == "rolled-back"
    assert result.config_name == first.config_name and not result.updated
    reason = result.rollout.reason
    assert "rolled back" in reason and f"{EP}-dogops-5xx-rate" in reason
    assert result.rollout.figures[f"{EP}-dogops-5xx-rate"].startswith(
        "ALARM: Threshold Crossed: 1 datapoint [50.0]")
    assert tag_dict(sm, result.arn)["model-version"] == "v1"  # the old model's tags stay


def test_someone_elses_alarm_stops_the_update_unchanged(clients, aws_settings, monkeypatch):
    sm, cw = clients.client("sagemaker"), clients.client("cloudwatch")
    deploy(clients, aws_settings, trained("v1"))
    fake = FakeDeployment(sm, monkeypatch)
    cw.put_metric_alarm(AlarmName=f"{EP}-dogops-5xx-rate", Namespace="Team", MetricName="X",
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=9.0,
                        ComparisonOperator="GreaterThanThreshold")

    with pytest.raises(NotOwnedError, match="DOGOPS_ENDPOINT__NAME"):
        deploy(clients, aws_settings, trained("v2"), run_key="run2")

    assert fake.requests == []
    theirs = cw.describe_alarms(AlarmNames=[f"{EP}-dogops-5xx-rate"])["MetricAlarms"][0]
    assert (theirs["Namespace"], theirs["Threshold"]) == ("Team", 9.0)
    # Teardown leaves their alarm too.
    assert rollout.delete_alarms(clients, EP, "dogops", apply=True) == []
    assert cw.describe_alarms(AlarmNames=[f"{EP}-dogops-5xx-rate"])["MetricAlarms"]


def test_teardown_removes_the_alarms(clients, aws_settings, monkeypatch):
    sm, cw = clients.client("sagemaker"), clients.client("cloudwatch")
    aws_settings.lambda_.enabled = False
    aws_settings.aws.sagemaker_role_arn = ROLE
    deploy(clients, aws_settings, trained("v1"))
    FakeDeployment(sm, monkeypatch)
    deploy(clients, aws_settings, trained("v2"), run_key="run2")
    names = rollout.alarm_names(EP)
    assert len(cw.describe_alarms(AlarmNames=names)["MetricAlarms"]) == 2

    planned = teardown_aws(clients, aws_settings, apply=False, poll_s=0, sleep=no_sleep)
    assert [f"cloudwatch-alarm:{n}" for n in names] == [p for p in planned if "alarm" in p]
    assert len(cw.describe_alarms(AlarmNames=names)["MetricAlarms"]) == 2  # dry run

    done = teardown_aws(clients, aws_settings, apply=True, poll_s=0, sleep=no_sleep)
    assert [p for p in done if "alarm" in p] == [f"cloudwatch-alarm:{n}" for n in names]
    assert cw.describe_alarms(AlarmNames=names)["MetricAlarms"] == []


def test_linear_and_all_at_once_routing():
    settings = Settings(rollout={"strategy": "linear", "linear_step_percent": 25,
                                 "bake_seconds": 60})
    routing = rollout.deployment_config(settings, ["a"])["BlueGreenUpdatePolicy"][
        "TrafficRoutingConfiguration"]
    assert routing == {"Type": "LINEAR", "WaitIntervalInSeconds": 60,
                       "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25}}
    assert settings.rollout.steps() == [25, 50, 75, 100]
    once = Settings(rollout={"strategy": "all-at-once", "bake_seconds": 0})
    assert rollout.deployment_config(once, ["a"])["BlueGreenUpdatePolicy"][
        "TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}


def test_serverless_updates_without_traffic_shifting(clients, aws_settings, monkeypatch):
    sm = clients.client("sagemaker")
    aws_settings.endpoint.mode = "serverless"
    deploy(clients, aws_settings, trained("v1"))
    fake = FakeDeployment(sm, monkeypatch)
    result = deploy(clients, aws_settings, trained("v2"), run_key="run2")
    assert "DeploymentConfig" not in fake.requests[0]
    assert result.rollout is not None and result.rollout.strategy == "all-at-once"
    assert clients.client("cloudwatch").describe_alarms()["MetricAlarms"] == []


@pytest.mark.parametrize(("values", "named"), [
    ({"canary_percent": 51}, "canary_percent"),
    ({"canary_percent": 0}, "canary_percent"),
    ({"linear_step_percent": 9}, "linear_step_percent"),
    ({"linear_step_percent": 51}, "linear_step_percent"),
    ({"bake_seconds": 3601}, "bake_seconds"),
    ({"bake_seconds": -1}, "bake_seconds"),
    ({"max_execution_timeout_s": 599}, "max_execution_timeout_s"),
    ({"max_execution_timeout_s": 28801}, "max_execution_timeout_s"),
    ({"bake_seconds": 600, "termination_wait_s": 100, "max_execution_timeout_s": 700},
     "rollout.max_execution_timeout_s"),
    ({"strategy": "linear", "linear_step_percent": 10, "bake_seconds": 600,
      "max_execution_timeout_s": 5400}, "rollout.max_execution_timeout_s"),
])
def test_rollout_settings_keep_to_aws_bounds(values: dict[str, Any], named: str):
    from dogops.settings import load_settings

    with pytest.raises(UserInputError, match=named):
        load_settings(rollout=values)


def test_timeout_must_exceed_the_waits_and_says_the_fix():
    from dogops.settings import load_settings

    with pytest.raises(UserInputError, match=r"\(600 s: bake_seconds 300 x 2 step.*raise it"):
        load_settings(rollout={"strategy": "linear", "linear_step_percent": 40,
                               "bake_seconds": 300, "max_execution_timeout_s": 600})
    assert RolloutConfig(strategy="linear", linear_step_percent=40, bake_seconds=300,
                         max_execution_timeout_s=601).steps() == [40, 80, 100]
