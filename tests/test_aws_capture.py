"""Data capture on the aws backend: the DataCaptureConfig that CreateEndpointConfig carries when
`endpoint.capture_percent` > 0 (asserted on the request sent and on what the moto server
stores), none when it is 0, and a new config (so an UpdateEndpoint) when capture changes."""

from __future__ import annotations

from typing import Any

import pytest
import test_aws_sagemaker as base
from test_aws_sagemaker import calls, deploy, trained

from dogops.aws.endpoint import config_request

pytestmark = pytest.mark.aws
clients = base.clients  # the same fixture as there


def test_capture_percent_sets_data_capture_on_the_endpoint_config(clients, aws_settings):
    sm = clients.client("sagemaker")
    sent = calls(sm, "CreateEndpointConfig")
    settings = aws_settings.merged(endpoint={"capture_percent": 20})
    info = deploy(clients, settings, trained("v1"))
    expected: dict[str, Any] = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 20,
        "DestinationS3Uri": f"s3://{aws_settings.aws.bucket}/dogops/captures",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }
    assert sent[0]["DataCaptureConfig"] == expected
    stored = sm.describe_endpoint_config(EndpointConfigName=info.config_name)
    assert stored["DataCaptureConfig"]["DestinationS3Uri"] == expected["DestinationS3Uri"]
    assert stored["DataCaptureConfig"]["InitialSamplingPercentage"] == 20

    # Off by default: no DataCaptureConfig, and the config name is the one it was before
    # capture existed (content hash of the variants only), so re-runs still find it.
    off = config_request(aws_settings, info.model_name or "", "v1", "run1")
    assert "DataCaptureConfig" not in off
    other = config_request(aws_settings.merged(endpoint={"capture_percent": 50}),
                           info.model_name or "", "v1", "run1")
    assert len({off["EndpointConfigName"], other["EndpointConfigName"], info.config_name}) == 3
