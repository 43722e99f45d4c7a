"""The local backend's `dogops.backends.Operations`: a status page instead of a console, prices
as if this ran on AWS, no IAM, and the idle guard on the endpoint server (`dogops.local.idle`)."""

from __future__ import annotations

from datetime import datetime

from dogops.errors import UserInputError
from dogops.local import idle
from dogops.local.endpoint import read_endpoint
from dogops.results import EndpointInfo, IdleStatus
from dogops.settings import Settings


class LocalOperations:
    name = "local"

    def console_link(self, endpoint: EndpointInfo, region: str) -> str:
        return endpoint.url.split("/endpoints/")[0] + "/dogops/status"

    def price_basis(self, region: str, *, short: bool = False) -> str:
        if short:
            return "as if this ran on AWS"
        return "as if this ran on AWS: local CPU seconds priced at the configured instance types"

    def no_iam_reason(self) -> str | None:
        return "the local backend has no IAM: nothing to audit (run with backend='aws')"

    def endpoint_address(self, settings: Settings, name: str) -> EndpointInfo:
        endpoint = read_endpoint(name, settings.state_dir.resolve())
        if endpoint is None:
            raise UserInputError(
                f"no local endpoint named {name!r} is running: run `dogops run` first"
            )
        return endpoint

    def idle_status(self, settings: Settings, max_idle_hours: float, now: datetime) -> IdleStatus:
        return idle.local_idle_status(settings, max_idle_hours, now)

    def scale_to_min(self, settings: Settings, status: IdleStatus, apply: bool) -> list[str]:
        return idle.scale_to_min(status)

    def put_to_sleep(self, settings: Settings, status: IdleStatus, apply: bool) -> list[str]:
        return idle.put_to_sleep(settings, status, apply)
