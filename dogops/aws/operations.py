"""The aws backend's `dogops.backends.Operations`: the SageMaker console, on-demand prices, IAM,
and the idle guard's CloudWatch check, scale-in and sleep (`dogops.aws.idle`)."""

from __future__ import annotations

from datetime import datetime

from dogops.aws import idle
from dogops.aws.clients import AwsClients
from dogops.results import EndpointInfo, IdleStatus
from dogops.settings import Settings


class AwsOperations:
    name = "aws"

    def __init__(self, clients: AwsClients | None = None) -> None:
        self.clients = clients

    def _clients(self, settings: Settings) -> AwsClients:
        return self.clients or AwsClients(settings.aws)

    def console_link(self, endpoint: EndpointInfo, region: str) -> str:
        return (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
                f"#/endpoints/{endpoint.name}")

    def price_basis(self, region: str, *, short: bool = False) -> str:
        return f"AWS {region}, on-demand"

    def no_iam_reason(self) -> str | None:
        return None

    def endpoint_address(self, settings: Settings, name: str) -> EndpointInfo:
        return EndpointInfo(name=name, url="")  # boto3's sagemaker-runtime finds it by name

    def idle_status(self, settings: Settings, max_idle_hours: float, now: datetime) -> IdleStatus:
        return idle.aws_idle_status(self._clients(settings), settings, max_idle_hours, now)

    def scale_to_min(self, settings: Settings, status: IdleStatus, apply: bool) -> list[str]:
        return idle.scale_to_min(self._clients(settings), settings, status, apply)

    def put_to_sleep(self, settings: Settings, status: IdleStatus, apply: bool) -> list[str]:
        return idle.put_to_sleep(self._clients(settings), settings, status, apply)
