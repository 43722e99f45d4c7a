"""The endpoint config's `DataCaptureConfig`: SageMaker writes the captures the `monitor` flow
reads (format and layout: `dogops.capture`)."""

from __future__ import annotations

from typing import Any

from dogops.capture import JSON_CONTENT_TYPES, capture_s3_uri
from dogops.settings import Settings


def data_capture_config(settings: Settings) -> dict[str, Any] | None:
    """`DataCaptureConfig` when `endpoint.capture_percent` > 0: requests and responses of that
    share of invocations go to `s3://<bucket>/<prefix>/captures/<endpoint>/AllTraffic/...`
    (the execution role may write there and nowhere else); JSON responses are stored as text,
    images as base64 (`dogops.capture`)."""
    percent = settings.endpoint.capture_percent
    if percent <= 0:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": percent,
        "DestinationS3Uri": capture_s3_uri(settings),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": list(JSON_CONTENT_TYPES)},
    }
