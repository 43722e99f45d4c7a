"""SageMaker Model, EndpointConfig and Endpoint under a stable name, updated in place.

Plain boto3: the SDK 3 `sagemaker.core.resources` classes create these objects but then fail
validating the describe answer of the test server (empty `VpcConfig` / `DataCaptureConfig`), and
boto3 is all three steps need.

* Names come from content, never from the flow run: the Model is named from its image, artifact
  and environment, the EndpointConfig from the model and the variant's instance settings. The same
  model deployed again (any flow run) finds its Model and EndpointConfig and an Endpoint already
  pointing at them, and creates nothing.
* The Endpoint keeps the user's name (`settings.endpoint.name`), which the Lambda reads, so a
  redeploy never needs the Lambda edited (the original's pain). An existing endpoint is moved to
  the new config with `UpdateEndpoint` (SageMaker's blue/green swap, no downtime). If the update
  does not reach InService the endpoint is put back on the previous config and
  `OperationFailedError` names both configs and the reason.
* Tags: project, managed-by, flow run and model version on every resource; the endpoint's
  flow-run and model-version tags move with each update.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws import naming, ownership, rollout
from dogops.aws.client_errors import error_code, error_message
from dogops.aws.clients import AwsClients
from dogops.aws.data_capture import data_capture_config
from dogops.aws.endpoint_model import (
    DIGEST_LEN,
    child_name,
    child_prefix,
    model_request,
    model_version,
)
from dogops.aws.endpoint_model import container_environment as container_environment
from dogops.aws.endpoint_update import config_variants, kept_instance_count, update_in_place
from dogops.aws.propagation import call_with_role
from dogops.aws.sagemaker_job import DEFAULT_POLL_S, framework_image
from dogops.aws.sagemaker_rules import check_request
from dogops.aws.waiting import wait_with_waiter
from dogops.backends.base import ProgressFn
from dogops.errors import OperationFailedError
from dogops.progress import Progress
from dogops.results import EndpointInfo, TrainedModel
from dogops.settings import Settings
from dogops.waiting import poll

logger = logging.getLogger(__name__)

VARIANT = "AllTraffic"
DEFAULT_ENDPOINT_TIMEOUT_S = 3600.0
TYPICAL_ENDPOINT_S = 480.0  # what creating or updating an endpoint usually takes
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def _missing(exc: ClientError) -> bool:
    """SageMaker answers ValidationException "Could not find ..." for absent resources."""
    code = error_code(exc)
    return code in ("ValidationException", "ResourceNotFound") and (
        "Could not find" in error_message(exc) or code == "ResourceNotFound"
    )


def capacity(settings: Settings, instance_count: int | None = None) -> dict[str, Any]:
    """The variant's capacity: instances (`instance_count`, else the setting's initial count),
    or ProductionVariantServerlessConfig."""
    endpoint = settings.endpoint
    if endpoint.mode == "instance":
        return {"InstanceType": endpoint.instance_type,
                "InitialInstanceCount": instance_count or endpoint.initial_instance_count}
    serverless: dict[str, int] = {"MemorySizeInMB": endpoint.serverless_memory_mb,
                                  "MaxConcurrency": endpoint.serverless_max_concurrency}
    if endpoint.serverless_provisioned_concurrency is not None:
        serverless["ProvisionedConcurrency"] = endpoint.serverless_provisioned_concurrency
    return {"ServerlessConfig": serverless}


def config_request(
    settings: Settings, model_name: str, version: str, run_key: str,
    instance_count: int | None = None,
) -> dict[str, Any]:
    """`CreateEndpointConfig`: one variant, a new name for each model (and instance setting).
    `endpoint.mode=serverless` gives the variant a ServerlessConfig instead of instances;
    `instance_count` (a live endpoint's, `kept_instance_count`) overrides the initial count."""
    variants = [
        {
            "VariantName": VARIANT,
            "ModelName": model_name,
            **capacity(settings, instance_count),
            "InitialVariantWeight": 1.0,
        }
    ]
    capture = data_capture_config(settings)
    # Capture joins the name's hash only when on: configs made before it keep their names.
    name = child_name(settings.endpoint.name, "c", variants, *([capture] if capture else []))
    return {"EndpointConfigName": name, "ProductionVariants": variants,
            "Tags": naming.tags(settings, run_key, version),
            **({"DataCaptureConfig": capture} if capture else {})}


def _ensure(
    describe: Callable[[], Any], create: Callable[[], Any], what: str,
    progress: ProgressFn | None,
) -> bool:
    """Describe, create when absent; True when created."""
    try:
        describe()
        return False
    except ClientError as exc:
        if not _missing(exc):
            raise
    create()
    if progress:
        progress(f"created {what}")
    return True


def describe_endpoint(clients: AwsClients, name: str) -> dict[str, Any] | None:
    try:
        return dict(clients.client("sagemaker").describe_endpoint(EndpointName=name))
    except ClientError as exc:
        if _missing(exc):
            return None
        raise


def wait_for_endpoint(
    clients: AwsClients,
    name: str,
    *,
    timeout_s: float = DEFAULT_ENDPOINT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    progress: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the endpoint is no longer busy; returns its description (any final status)."""
    started = time.monotonic()
    last = ""
    tracker: Progress | None = None
    status = ""

    def look() -> dict[str, Any] | None:
        nonlocal last, tracker, status
        described = describe_endpoint(clients, name)
        if described is None:
            raise OperationFailedError(f"endpoint {name} disappeared while waiting for it.")
        status = described["EndpointStatus"]
        line = f"endpoint {name}: {status} on {described.get('EndpointConfigName')}"
        if deployment := rollout.phase(described):
            line += f" (deployment: {deployment})"
        if progress and line != last:
            progress(line)
        last = line
        if status not in BUSY:
            if tracker is not None:
                tracker.finish(note=status)
            return described
        # SageMaker gives no share done: it is estimated from a typical creation time.
        if tracker is None:
            tracker = Progress(f"endpoint {name} {status.lower()} (share of a typical "
                               f"{TYPICAL_ENDPOINT_S / 60:.0f} min)", TYPICAL_ENDPOINT_S, "s",
                               say=progress)
        elapsed = time.monotonic() - started
        tracker.update(min(elapsed, 0.95 * TYPICAL_ENDPOINT_S), note=f"{status}, "
                       f"{elapsed:.0f} s so far")
        return None

    return poll(
        look, timeout_s=timeout_s, poll_s=poll_s, sleep=sleep,
        timed_out=lambda: OperationFailedError(
            f"endpoint {name} still {status} after {timeout_s:.0f} s: check it in the "
            "SageMaker console, then re-run the flow."
        ),
    )


def wait_endpoint_deleted(
    clients: AwsClients, name: str, *, timeout_s: float, poll_s: float, then: str
) -> None:
    """Wait (boto3's `endpoint_deleted` waiter) until endpoint `name` is gone; `then` says what
    the person should do if it is not."""
    wait_with_waiter(
        clients.client("sagemaker"), "endpoint_deleted", EndpointName=name,
        timeout_s=timeout_s, poll_s=poll_s,
        failure=f"endpoint {name} still exists {timeout_s:.0f} s after DeleteEndpoint: {then}",
    )


def endpoint_info(
    clients: AwsClients, described: dict[str, Any], model_name: str, updated: bool
) -> EndpointInfo:
    name = described["EndpointName"]
    region = clients.config.region
    return EndpointInfo(
        name=name,
        url=f"https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{name}/invocations",
        runtime_endpoint_url=clients.endpoint_url("sagemaker-runtime"),
        arn=described.get("EndpointArn"),
        config_name=described.get("EndpointConfigName"),
        model_name=model_name,
        status=described["EndpointStatus"],
        updated=updated,
    )


def endpoint_request(
    settings: Settings, config_name: str, run_key: str, version: str
) -> dict[str, Any]:
    """`CreateEndpoint` under the user's stable name."""
    return {"EndpointName": settings.endpoint.name, "EndpointConfigName": config_name,
            "Tags": naming.tags(settings, run_key, version)}


def _ensure_model_and_config(
    sm: Any, settings: Settings, mreq: dict[str, Any], role_arn: str, run_key: str, *,
    version: str, instance_count: int | None, progress: ProgressFn | None,
) -> dict[str, Any]:
    """The model `mreq` and its endpoint config (reused when they exist), each checked against
    SageMaker's rules before it is created: the config request."""
    model_name = mreq["ModelName"]
    check_request("CreateModel", mreq)
    _ensure(
        lambda: sm.describe_model(ModelName=model_name),
        lambda: call_with_role(sm.create_model, role_arn, "CreateModel", **mreq),
        f"model {model_name} ({mreq['PrimaryContainer']['ModelDataUrl']})",
        progress,
    )
    creq = config_request(settings, model_name, version, run_key, instance_count)
    config_name = creq["EndpointConfigName"]
    check_request("CreateEndpointConfig", creq)
    _ensure(
        lambda: sm.describe_endpoint_config(EndpointConfigName=config_name),
        lambda: sm.create_endpoint_config(**creq),
        f"endpoint config {config_name}",
        progress,
    )
    return creq


def _already_serving(
    sm: Any, settings: Settings, current: dict[str, Any], model_name: str, version: str,
    run_key: str,
) -> bool:
    """Whether the endpoint runs this model with these settings, at whatever instance count
    its config was made with (auto-scaling moves the count, not the config), unless
    `endpoint.initial_instance_count` now asks for more than that config has."""
    previous = current.get("EndpointConfigName")
    counts = [int(v.get("InitialInstanceCount") or 0) for v in config_variants(sm, previous)]
    count = max([*counts, settings.endpoint.initial_instance_count])
    same = config_request(settings, model_name, version, run_key, count)
    return bool(previous) and previous == same["EndpointConfigName"]


def deploy_endpoint(
    clients: AwsClients,
    settings: Settings,
    model: TrainedModel,
    role_arn: str,
    run_key: str,
    progress: ProgressFn | None = None,
    *,
    image_uri: str | None = None,
    timeout_s: float = DEFAULT_ENDPOINT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> EndpointInfo:
    """Create or update the endpoint to serve `model`; see the module docstring."""
    sm = clients.client("sagemaker")
    name = settings.endpoint.name
    current = describe_endpoint(clients, name)
    if current is not None:  # someone else's endpoint of that name: stop before creating a thing
        ownership.require_endpoint_ours(sm, current, settings.project)
    version = model_version(model)
    image = image_uri or framework_image(
        settings.aws.region, settings.training, settings.endpoint.instance_type, "inference"
    )

    def wait() -> dict[str, Any]:
        return wait_for_endpoint(
            clients, name, timeout_s=timeout_s, poll_s=poll_s, progress=progress, sleep=sleep
        )

    mreq = model_request(settings, model, role_arn=role_arn, image_uri=image, run_key=run_key)
    model_name = mreq["ModelName"]
    if current is not None and current["EndpointStatus"] in BUSY:
        current = wait()
    if current is not None and _already_serving(sm, settings, current, model_name, version,
                                                run_key):
        if current["EndpointStatus"] != "InService":
            raise OperationFailedError(
                f"endpoint {name} is {current['EndpointStatus']} on this model's config "
                f"{current.get('EndpointConfigName')}: "
                f"{current.get('FailureReason') or 'no reason given'}. Delete the endpoint "
                "(`dogops teardown`) and re-run."
            )
        if progress:
            progress(f"endpoint {name} already serves model {version} "
                     f"({current.get('EndpointConfigName')})")
        return endpoint_info(clients, current, model_name, updated=False)

    count = kept_instance_count(settings, current, VARIANT) if current is not None else None
    creq = _ensure_model_and_config(sm, settings, mreq, role_arn, run_key, version=version,
                                    instance_count=count, progress=progress)
    config_name = creq["EndpointConfigName"]
    if current is None:
        request = endpoint_request(settings, config_name, run_key, version)
        check_request("CreateEndpoint", request)
        sm.create_endpoint(**request)
        if progress:
            progress(f"creating endpoint {name} on {config_name}")
        described = wait()
        if described["EndpointStatus"] != "InService":
            raise OperationFailedError(
                f"endpoint {name} ended {described['EndpointStatus']}: "
                f"{described.get('FailureReason') or 'no reason given'}. Fix the cause (often the "
                "instance quota or the model container's logs), delete the endpoint and re-run."
            )
        return endpoint_info(clients, described, model_name, updated=False)

    return update_in_place(
        clients, settings, current, config_name=config_name,
        new_variants=creq["ProductionVariants"], model_name=model_name, version=version,
        run_key=run_key, variant=VARIANT, wait_for_endpoint=wait_for_endpoint,
        endpoint_info=endpoint_info, progress=progress, timeout_s=timeout_s, poll_s=poll_s,
        sleep=sleep,
    )


def _children(
    clients: AwsClients, operation: str, key: str, name_key: str, prefix: str
) -> list[str]:
    """Names made by `child_name` with this prefix (exactly: prefix + digest, nothing else)."""
    pattern = re.compile(re.escape(prefix) + f"[0-9a-f]{{{DIGEST_LEN}}}")
    found: list[str] = []
    paginator = clients.client("sagemaker").get_paginator(operation)
    for page in paginator.paginate(NameContains=prefix):
        found.extend(item[name_key] for item in page.get(key, []))
    return sorted(n for n in found if pattern.fullmatch(n))


def delete_endpoint_resources(
    clients: AwsClients,
    endpoint_name: str,
    project: str,
    *,
    apply: bool = False,
    progress: ProgressFn | None = None,
    timeout_s: float = DEFAULT_ENDPOINT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """The endpoint, then every config and model named after it (older versions too), each only
    when tagged as `project`'s (the rest is left and logged). Dry run unless `apply`.

    The caller deregisters the variant's scalable target first: AWS refuses to delete an endpoint
    that still has one. Returns `kind:name` per resource, deleted or (without `apply`) to delete.
    """
    sm = clients.client("sagemaker")
    done: list[str] = []
    described = describe_endpoint(clients, endpoint_name)
    if described is not None and not ownership.endpoint_owned(sm, described, project):
        logger.warning("Leaving endpoint %s: not tagged as %s's", endpoint_name, project)
    elif described is not None:
        if apply:
            sm.delete_endpoint(EndpointName=endpoint_name)
            wait_endpoint_deleted(clients, endpoint_name, timeout_s=timeout_s, poll_s=poll_s,
                                  then="check it in the SageMaker console.")
        done.append(f"endpoint:{endpoint_name}")
    for config in _children(
        clients, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName",
        child_prefix(endpoint_name, "c"),
    ):
        arn = sm.describe_endpoint_config(EndpointConfigName=config)["EndpointConfigArn"]
        if not ownership.is_ours(ownership.sagemaker_tags(sm, arn), project):
            continue
        if apply:
            sm.delete_endpoint_config(EndpointConfigName=config)
        done.append(f"endpoint-config:{config}")
    for model in _children(
        clients, "list_models", "Models", "ModelName", child_prefix(endpoint_name, "m")
    ):
        arn = sm.describe_model(ModelName=model)["ModelArn"]
        if not ownership.is_ours(ownership.sagemaker_tags(sm, arn), project):
            continue
        if apply:
            sm.delete_model(ModelName=model)
        done.append(f"model:{model}")
    if progress:
        verb = "deleted" if apply else "would delete"
        progress(f"{verb} {', '.join(done) or 'nothing'}")
    return done
