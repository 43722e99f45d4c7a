"""Serverless endpoints on the aws backend: the ProductionVariantServerlessConfig the endpoint
config carries (asserted on the request sent and on what the moto server stores), the settings'
bounds, and auto-scaling skipped with its reason."""

from __future__ import annotations

from typing import Any

import pytest
import test_aws_sagemaker as base
from test_aws_sagemaker import calls, deploy, trained

from dogops.aws.backend import AwsBackend
from dogops.aws.endpoint import config_request
from dogops.backends.base import StepNotSupported
from dogops.errors import UserInputError
from dogops.results import EndpointInfo
from dogops.settings import EndpointConfig

pytestmark = pytest.mark.aws
clients = base.clients  # the same fixture as there


def serverless(settings: Any, **extra: Any) -> Any:
    return settings.merged(endpoint={"mode": "serverless", "serverless_memory_mb": 3072,
                                     "serverless_max_concurrency": 20, **extra})


def test_serverless_endpoint_config(clients, aws_settings):
    sm = clients.client("sagemaker")
    sent = calls(sm, "CreateEndpointConfig")
    settings = serverless(aws_settings, serverless_provisioned_concurrency=4)
    info = deploy(clients, settings, trained("v1"))
    variant = sent[0]["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {
        "MemorySizeInMB": 3072, "MaxConcurrency": 20, "ProvisionedConcurrency": 4}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    stored = sm.describe_endpoint_config(EndpointConfigName=info.config_name)
    assert stored["ProductionVariants"][0]["ServerlessConfig"] == variant["ServerlessConfig"]

    # Without provisioned concurrency the field is absent; other capacity is another config.
    plain = config_request(serverless(aws_settings), info.model_name or "", "v1", "run1")
    assert plain["ProductionVariants"][0]["ServerlessConfig"] == {
        "MemorySizeInMB": 3072, "MaxConcurrency": 20}
    instances = config_request(aws_settings, info.model_name or "", "v1", "run1")
    assert "ServerlessConfig" not in instances["ProductionVariants"][0]
    assert len({plain["EndpointConfigName"], instances["EndpointConfigName"],
                info.config_name}) == 3


def test_serverless_skips_application_auto_scaling_with_the_reason(aws_settings):
    backend = AwsBackend(serverless(aws_settings), poll_s=0)
    with pytest.raises(StepNotSupported, match="serverless endpoint.*Application Auto Scaling"):
        backend.register_autoscaling(EndpointInfo(name="dogops-classifier", url="x"))


@pytest.mark.parametrize("fields, problem", [
    ({"serverless_memory_mb": 1536}, "whole number of GB"),
    ({"serverless_memory_mb": 7168}, "less than or equal to 6144"),
    ({"serverless_memory_mb": 512}, "greater than or equal to 1024"),
    ({"serverless_max_concurrency": 201}, "less than or equal to 200"),
    ({"serverless_max_concurrency": 5, "serverless_provisioned_concurrency": 6},
     "serverless_provisioned_concurrency \\(6\\) is greater than"),
])
def test_serverless_settings_are_checked(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises((UserInputError, ValueError), match=problem):
        EndpointConfig(mode="serverless", **fields)


def test_cost_prices_serverless_per_request_duration_and_idle_at_nothing(aws_settings):
    from dogops import cost

    prices = cost.load_prices()
    assert prices.sagemaker_serverless_per_gb_second
    estimate = cost.estimate_cost(serverless(aws_settings), prices=prices)
    lines = {line.item: line for line in estimate.lines}
    assert lines["endpoint at min"].cost == 0.0 and "idle costs nothing" in lines[
        "endpoint at min"].note
    assert "endpoint at max" not in lines  # no instances to scale
    per_request = lines["endpoint per 1,000 requests"]
    assert per_request.quantity == pytest.approx(1000 * cost.SERVERLESS_REQUEST_S * 3)  # 3 GB
    assert per_request.cost == pytest.approx(per_request.quantity
                                             * prices.sagemaker_serverless_per_gb_second)
    assert "assumed request duration" in per_request.note
    assert estimate.total("per day", "endpoint") == 0.0
    warm = cost.estimate_cost(serverless(aws_settings, serverless_provisioned_concurrency=2))
    assert "2 provisioned concurrency billed while idle" in warm.lines[2].note
