"""Every AWS client comes from here: one region, one credential source, optional endpoint URLs.

Credentials come from a prefect-aws `AwsCredentials` block when one is named, otherwise from
boto3's default chain (env, profile, instance role). They are never logged: `AwsClients.describe()`
shows where calls go, not who makes them.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import boto3
from botocore.config import Config

from dogops.aws.client_errors import TRANSIENT_ERROR_CODES, is_transient_aws_error
from dogops.settings import AwsConfig

__all__ = ["TRANSIENT_ERROR_CODES", "AwsClients", "is_transient_aws_error"]


class AwsClients:
    """Cached boto3 clients for one `AwsConfig`.

    botocore's own "standard" retry mode already retries throttling and 5xx with exponential
    backoff and jitter inside each call; `max_attempts` bounds it. Prefect task retries
    (`dogops.errors.retry_condition`) add a slower outer loop for the same transient errors only.
    """

    def __init__(self, config: AwsConfig, session: boto3.session.Session | None = None) -> None:
        self.config = config
        self._session = session
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            if self.config.credentials_block:
                from prefect_aws import AwsCredentials

                block = cast(
                    AwsCredentials, AwsCredentials.load(self.config.credentials_block)
                )
                self._session = block.get_boto3_session()
            else:
                self._session = boto3.session.Session(
                    profile_name=self.config.profile, region_name=self.config.region
                )
        return self._session

    def endpoint_url(self, service: str) -> str | None:
        return self.config.service_endpoint_urls.get(service) or self.config.endpoint_url

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self.session.client(
                    service,  # type: ignore[call-overload]
                    region_name=self.config.region,
                    endpoint_url=self.endpoint_url(service),
                    config=Config(
                        # total_max_attempts counts the first call; botocore's max_attempts
                        # counts only the retries after it.
                        retries={
                            "total_max_attempts": self.config.max_attempts,
                            "mode": "standard",
                        },
                        connect_timeout=10,
                        read_timeout=70,
                    ),
                )
            return self._clients[service]

    def account_id(self) -> str:
        return str(self.client("sts").get_caller_identity()["Account"])

    def describe(self) -> str:
        where = self.config.endpoint_url or "AWS"
        return f"region={self.config.region} endpoint={where}"
