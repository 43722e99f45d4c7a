"""The local backend's `dogops.backends.Operations`: a status page instead of a console, prices
as if this ran on AWS, no IAM."""

from __future__ import annotations

from dogops.results import EndpointInfo


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
