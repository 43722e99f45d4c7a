"""The environment the model's serving container gets, on both backends.

The aws backend puts it in CreateModel's `Environment` (plus the container's own keys); the local
backend gives it to its endpoint server, whose workers run the same serving toolkits.
"""

from __future__ import annotations

from dogops.settings import Settings

INFERENCE_ENTRY_POINT = "inference.py"


def serving_environment(settings: Settings) -> dict[str, str]:
    """`SAGEMAKER_PROGRAM` for the toolkit, and the bucket allow-list `inference.py` reads for
    `s3://` image URLs (default: the project's own bucket)."""
    buckets = settings.endpoint.allowed_s3_buckets or [settings.aws.bucket]
    return {
        "SAGEMAKER_PROGRAM": INFERENCE_ENTRY_POINT,
        "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/json",
        "DOGOPS_ALLOWED_S3_BUCKETS": ",".join(buckets),
    }
