"""The aws backend's `dogops.backends.Operations`: the SageMaker console, on-demand prices, IAM."""

from __future__ import annotations

from dogops.results import EndpointInfo


class AwsOperations:
    name = "aws"

    def console_link(self, endpoint: EndpointInfo, region: str) -> str:
        return (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
                f"#/endpoints/{endpoint.name}")

    def price_basis(self, region: str, *, short: bool = False) -> str:
        return f"AWS {region}, on-demand"

    def no_iam_reason(self) -> str | None:
        return None
