"""The Lambda front door on AWS: function, version, alias, reserved and provisioned concurrency.

Idempotent by comparison, not by hope: the code is uploaded only when Lambda's `CodeSha256`
differs from the deterministic package's, the configuration only when a field we own differs,
and a version is published only when one of those changed (or no published version matches what
is wanted, e.g. after a run that crashed between update and publish). The alias then points at
that version, so callers never see `$LATEST`.

Provisioned concurrency is set on the alias. Which value dogops last set is kept in a function tag,
so that `provisioned_concurrency = 0` removes a configuration dogops made without calling the API
when there never was one. Any 404 from that API other than "no configuration yet" is raised as a
clear error rather than swallowed: it means a missing function or alias, or an endpoint that does
not implement the API at all (moto does not).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws.client_errors import error_code, http_status
from dogops.aws.clients import AwsClients
from dogops.aws.ownership import FUNCTION_SETTING, is_ours, require_ours
from dogops.aws.propagation import call_with_role
from dogops.backends.base import StepNotSupported
from dogops.errors import DogopsError, OperationFailedError
from dogops.lambda_package import LambdaPackage, build_package
from dogops.results import LambdaInfo, StepSkipped
from dogops.settings import Settings
from dogops.waiting import poll

log = logging.getLogger(__name__)

RUNTIME = "python3.12"
PC_TAG = "dogops-provisioned-concurrency"
MANAGED_BY = "dogops"
WAIT_TIMEOUT_S = 300.0
WAIT_POLL_S = 2.0
_sleep: Callable[[float], None] = time.sleep  # tests replace this to avoid real waits


def _tags(settings: Settings) -> dict[str, str]:
    return {"project": settings.project, "managed-by": MANAGED_BY}


def desired_configuration(
    settings: Settings, endpoint_name: str, role_arn: str, package: LambdaPackage
) -> dict[str, Any]:
    """The configuration fields dogops owns, in `update_function_configuration`'s shape."""
    return {
        "Role": role_arn,
        "Handler": package.handler,
        "Runtime": RUNTIME,
        "Timeout": settings.lambda_.timeout_s,
        "MemorySize": settings.lambda_.memory_mb,
        # The handler gives up on the endpoint a few seconds before Lambda would kill it, so a
        # slow endpoint answers 504 with a JSON body instead of a bare Lambda timeout.
        "Environment": {"Variables": {
            "ENDPOINT_NAME": endpoint_name,
            "READ_TIMEOUT_S": str(max(1, settings.lambda_.timeout_s - 5)),
        }},
    }


def configuration_diff(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """Fields of `desired` that differ from the function's current configuration."""
    diff: dict[str, Any] = {}
    for key, value in desired.items():
        have = current.get(key)
        if key == "Environment":
            have = {"Variables": (have or {}).get("Variables") or {}}
        if have != value:
            diff[key] = value
    return diff


def _matches(version: dict[str, Any], package: LambdaPackage, desired: dict[str, Any]) -> bool:
    return version.get("CodeSha256") == package.code_sha256_b64 and not configuration_diff(
        version, desired
    )


def wait_until_ready(client: Any, function_name: str) -> dict[str, Any]:
    """Wait until the function is not Pending and no update is InProgress; fail on Failed."""
    def look() -> dict[str, Any] | None:
        config = client.get_function_configuration(FunctionName=function_name)
        state, update = config.get("State"), config.get("LastUpdateStatus")
        if state == "Failed" or update == "Failed":
            reason = config.get("LastUpdateStatusReason") or config.get("StateReason") or "unknown"
            raise OperationFailedError(f"Lambda function {function_name} failed: {reason}")
        if state != "Pending" and update != "InProgress":
            return dict(config)
        seen[:] = [state, update]
        return None

    seen: list[Any] = [None, None]
    return poll(
        look, timeout_s=WAIT_TIMEOUT_S, poll_s=WAIT_POLL_S, sleep=_sleep,
        timed_out=lambda: OperationFailedError(
            f"Lambda function {function_name} still {seen[0]}/{seen[1]} after "
            f"{WAIT_TIMEOUT_S:.0f} s."
        ),
    )


def _get_function(client: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(client.get_function(FunctionName=name))
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise


def _published_versions(client: Any, name: str) -> list[dict[str, Any]]:
    versions: list[dict[str, Any]] = []
    for page in client.get_paginator("list_versions_by_function").paginate(FunctionName=name):
        versions.extend(v for v in page["Versions"] if v["Version"] != "$LATEST")
    return sorted(versions, key=lambda v: int(v["Version"]))


def _get_alias(client: Any, name: str, alias: str) -> dict[str, Any] | None:
    try:
        return dict(client.get_alias(FunctionName=name, Name=alias))
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise


# A 404 without one of Lambda's own error codes: the route itself is missing, i.e. this Lambda
# endpoint does not offer the API (moto answers its bare "404 Not Found" page).
_NAMED_404 = ("ResourceNotFoundException", "ProvisionedConcurrencyConfigNotFoundException")


def _provisioned_concurrency_error(
    exc: ClientError, operation: str, function_name: str, alias: str
) -> DogopsError:
    code = error_code(exc)
    if http_status(exc) == 404 and code not in _NAMED_404:
        return StepNotSupported(
            f"this Lambda endpoint does not offer provisioned concurrency ({operation} answered "
            f"404 {code}): {function_name}:{alias} is deployed without it. Set "
            "lambda.provisioned_concurrency to 0 (DOGOPS_LAMBDA__PROVISIONED_CONCURRENCY=0) to "
            "not ask for it."
        )
    return OperationFailedError(
        f"Lambda answered {http_status(exc)} {code} to {operation} for {function_name}:{alias}: "
        "the function or its alias does not exist (any more). Re-run the flow to recreate them."
    )


def ensure_provisioned_concurrency(
    client: Any, function_name: str, alias: str, wanted: int, previously_set: int
) -> bool:
    """Make the alias's provisioned concurrency `wanted` (0: none). True when something changed.

    `previously_set` is what dogops last set (from the function's tag): with `wanted == 0` and
    nothing set before, no call is made at all. `StepNotSupported` when the endpoint does not
    offer the API at all (moto); `OperationFailedError` when the function or alias is missing.
    """
    if wanted == 0 and previously_set == 0:
        return False
    try:
        current = client.get_provisioned_concurrency_config(
            FunctionName=function_name, Qualifier=alias
        )
    except ClientError as exc:
        if error_code(exc) != "ProvisionedConcurrencyConfigNotFoundException":
            raise _provisioned_concurrency_error(
                exc, "GetProvisionedConcurrencyConfig", function_name, alias
            ) from exc
        current = None
    if wanted == 0:
        if current is None:
            return False
        client.delete_provisioned_concurrency_config(FunctionName=function_name, Qualifier=alias)
        log.info("Removed provisioned concurrency from %s:%s", function_name, alias)
        return True
    if (
        current is not None
        and current.get("RequestedProvisionedConcurrentExecutions") == wanted
        and current.get("Status") != "FAILED"
    ):
        return False
    try:
        client.put_provisioned_concurrency_config(
            FunctionName=function_name, Qualifier=alias, ProvisionedConcurrentExecutions=wanted
        )
    except ClientError as exc:
        if http_status(exc) == 404:
            raise _provisioned_concurrency_error(
                exc, "PutProvisionedConcurrencyConfig", function_name, alias
            ) from exc
        raise
    log.info("Provisioned concurrency %d requested on %s:%s", wanted, function_name, alias)
    return True


def _create_function(
    client: Any, settings: Settings, desired: dict[str, Any], package: LambdaPackage
) -> dict[str, Any]:
    created = call_with_role(
        client.create_function,
        desired["Role"],
        "CreateFunction",
        FunctionName=settings.lambda_.function_name,
        Code={"ZipFile": package.zip_bytes},
        Description="dogops: predicts dog breeds through the SageMaker endpoint",
        Publish=False,
        Tags=_tags(settings),
        **desired,
    )
    log.info("Created Lambda function %s", settings.lambda_.function_name)
    return dict(created)


def deploy_lambda(
    clients: AwsClients, settings: Settings, endpoint_name: str, role_arn: str
) -> LambdaInfo:
    """Create or update the function, publish a version when something changed, point the alias
    at it, then set reserved (when configured) and provisioned concurrency."""
    cfg = settings.lambda_
    name = cfg.function_name
    package = build_package()
    client = clients.client("lambda")
    desired = desired_configuration(settings, endpoint_name, role_arn, package)

    changed = False
    existing = _get_function(client, name)
    if existing is None:
        function_arn = str(_create_function(client, settings, desired, package)["FunctionArn"])
        tags: dict[str, str] = {}
        changed = True
        wait_until_ready(client, name)
    else:
        function_arn = str(existing["Configuration"]["FunctionArn"])
        tags = dict(existing.get("Tags") or {})
        require_ours(tags, settings.project, f"Lambda function {name}", FUNCTION_SETTING)
        current = wait_until_ready(client, name)
        if current.get("CodeSha256") != package.code_sha256_b64:
            client.update_function_code(FunctionName=name, ZipFile=package.zip_bytes, Publish=False)
            log.info("Uploaded new code for %s (%d bytes)", name, package.size_bytes)
            current = wait_until_ready(client, name)
            changed = True
        diff = configuration_diff(current, desired)
        if diff:
            call_with_role(
                client.update_function_configuration, role_arn, "UpdateFunctionConfiguration",
                FunctionName=name, **diff,
            )
            log.info("Updated configuration of %s: %s", name, sorted(diff))
            wait_until_ready(client, name)
            changed = True

    version = _version_to_serve(client, name, package, desired, cfg.alias, changed)
    alias_changed = _ensure_alias(client, name, cfg.alias, version)

    if cfg.reserved_concurrency is not None:
        reserved = client.get_function_concurrency(FunctionName=name)
        if reserved.get("ReservedConcurrentExecutions") != cfg.reserved_concurrency:
            client.put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=cfg.reserved_concurrency
            )
            changed = True

    previously = int(tags.get(PC_TAG, "0") or 0)
    skipped: list[StepSkipped] = []
    try:
        if ensure_provisioned_concurrency(
            client, name, cfg.alias, cfg.provisioned_concurrency, previously
        ):
            changed = True
    except StepNotSupported as exc:  # the function and alias are complete without it
        log.warning("provisioned concurrency skipped: %s", exc)
        skipped.append(StepSkipped(step="provisioned-concurrency", reason=str(exc)))
    else:
        if previously != cfg.provisioned_concurrency:
            client.tag_resource(
                Resource=function_arn, Tags={PC_TAG: str(cfg.provisioned_concurrency)}
            )

    return LambdaInfo(
        function_name=name,
        alias=cfg.alias,
        version=version,
        code_sha256=package.code_sha256_b64,
        package_bytes=package.size_bytes,
        provisioned_concurrency=0 if skipped else cfg.provisioned_concurrency,
        arn=f"{function_arn}:{cfg.alias}",
        skipped=skipped,
        updated=changed or alias_changed,
    )


def _version_to_serve(
    client: Any,
    name: str,
    package: LambdaPackage,
    desired: dict[str, Any],
    alias: str,
    changed: bool,
) -> str:
    """The published version the alias should point at; publishes one only when needed."""
    if not changed:
        current_alias = _get_alias(client, name, alias)
        versions = _published_versions(client, name)
        by_number = {v["Version"]: v for v in versions}
        if current_alias and _matches(
            by_number.get(current_alias["FunctionVersion"], {}), package, desired
        ):
            return str(current_alias["FunctionVersion"])
        for version in reversed(versions):
            if _matches(version, package, desired):
                return str(version["Version"])
    published = client.publish_version(
        FunctionName=name,
        CodeSha256=package.code_sha256_b64,  # AWS refuses if $LATEST changed under us
        Description=f"dogops package sha256 {package.sha256[:16]}",
    )
    log.info("Published %s version %s", name, published["Version"])
    return str(published["Version"])


def _ensure_alias(client: Any, name: str, alias: str, version: str) -> bool:
    current = _get_alias(client, name, alias)
    if current is None:
        client.create_alias(
            FunctionName=name,
            Name=alias,
            FunctionVersion=version,
            Description="dogops: the version callers use",
        )
        log.info("Created alias %s:%s -> %s", name, alias, version)
        return True
    if current["FunctionVersion"] != version or current.get("RoutingConfig"):
        client.update_alias(
            FunctionName=name,
            Name=alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        log.info("Moved alias %s:%s -> %s", name, alias, version)
        return True
    return False


def delete_lambda(clients: AwsClients, settings: Settings, apply: bool) -> list[str]:
    """Provisioned concurrency, alias, then the function, only if it is tagged as dogops's.
    Returns what is deleted (or would be when `apply` is False)."""
    cfg = settings.lambda_
    client = clients.client("lambda")
    existing = _get_function(client, cfg.function_name)
    if existing is None:
        return []
    tags = existing.get("Tags") or {}
    if not is_ours(tags, settings.project):
        log.warning("Leaving Lambda %s: not tagged as managed by dogops", cfg.function_name)
        return []
    done: list[str] = []
    if int(tags.get(PC_TAG, "0") or 0) > 0:
        if apply:
            ensure_provisioned_concurrency(
                client, cfg.function_name, cfg.alias, 0, int(tags[PC_TAG])
            )
        done.append(f"provisioned-concurrency:{cfg.function_name}:{cfg.alias}")
    if _get_alias(client, cfg.function_name, cfg.alias) is not None:
        if apply:
            client.delete_alias(FunctionName=cfg.function_name, Name=cfg.alias)
        done.append(f"alias:{cfg.function_name}:{cfg.alias}")
    if apply:
        client.delete_function(FunctionName=cfg.function_name)
    done.append(f"function:{cfg.function_name}")
    return done
