"""Move a live endpoint to a new config: a guarded blue/green rollout (`dogops.aws.rollout`).

Three endings:

* InService on the new config: promoted; the endpoint's flow-run and model-version tags move.
* InService on the previous config after a guarded update: SageMaker's auto-rollback (an alarm
  fired during a bake). Not an error: the previous model serves, as it should; the returned
  `EndpointInfo.rollout` says `rolled-back`, why and on which alarm states.
* anything else (Failed, a timeout): the endpoint is put back on the previous config if SageMaker
  has not done so, and `OperationFailedError` names both configs and the reason.

Before the update is sent it is checked against SageMaker's rules (`dogops.aws.sagemaker_rules`):
the new config starts with the instances the endpoint runs now (`kept_instance_count`), a fleet
too small for a canary goes all at once (`rollout.plan`), and a registered auto-scaling target
whose instance type changes is deregistered for the update and registered again after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from dogops.aws import naming, ownership, rollout
from dogops.aws.client_errors import error_code, error_message
from dogops.aws.clients import AwsClients
from dogops.aws.sagemaker_job import DEFAULT_POLL_S
from dogops.aws.sagemaker_rules import UpdateContext, check_request
from dogops.backends.base import ProgressFn
from dogops.errors import OperationFailedError
from dogops.results import EndpointInfo
from dogops.settings import Settings

# What `dogops.aws.endpoint` lends (passed in, not imported: it imports this module).
WaitFn = Callable[..., dict[str, Any]]  # wait_for_endpoint
InfoFn = Callable[..., EndpointInfo]  # endpoint_info
SETTLE_S = 480.0  # beyond the deployment's own limit, for SageMaker to settle the endpoint


def config_variants(sm: Any, config_name: str | None) -> list[dict[str, Any]]:
    """The ProductionVariants of endpoint config `config_name` ([] for none)."""
    if not config_name:
        return []
    try:
        described = sm.describe_endpoint_config(EndpointConfigName=config_name)
    except ClientError as exc:  # deleted while the endpoint runs: SageMaker allows that
        if error_code(exc) != "ValidationException" or "Could not find" not in error_message(exc):
            raise
        return []
    return list(described["ProductionVariants"])


def kept_instance_count(settings: Settings, current: dict[str, Any] | None, variant: str) -> int:
    """The instance count a new config of a live endpoint starts with: what the endpoint runs
    now (DescribeEndpoint's Current/DesiredInstanceCount, e.g. after auto-scaling scaled it
    out), or `endpoint.initial_instance_count` when that is more.

    Not `RetainAllVariantProperties`: it keeps the old config's DataCaptureConfig and variant
    weights too (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VariantProperty
    .html), so a change of `endpoint.capture_percent` would not reach the endpoint. The new
    config's InitialInstanceCount is the count the blue/green fleet is built with
    (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html, step 5)."""
    counts = [max(int(v.get("CurrentInstanceCount") or 0), int(v.get("DesiredInstanceCount") or 0))
              for v in (current or {}).get("ProductionVariants", [])
              if v.get("VariantName") == variant and "CurrentServerlessConfig" not in v]
    return max([settings.endpoint.initial_instance_count, *counts])


def _live_variants(current: dict[str, Any]) -> list[dict[str, Any]]:
    """The variants as DescribeEndpoint shows them, for an endpoint whose config was deleted:
    names and serverless or not; the instance type is unknown, so a registered target counts
    as changing type and is lifted for the update (harmless, it is registered again after)."""
    return [{"VariantName": v.get("VariantName"),
             **({"ServerlessConfig": v["CurrentServerlessConfig"]}
                if "CurrentServerlessConfig" in v else {})}
            for v in current.get("ProductionVariants", [])]


def needs_deregistration(
    old_variants: list[dict[str, Any]], new_variants: list[dict[str, Any]], registered: set[str]
) -> set[str]:
    """Registered auto-scaling targets the update removes or moves to another instance type:
    AWS refuses that UpdateEndpoint until they are deregistered; a new model on the same
    instance type is allowed as it is
    (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html)."""
    new = {v.get("VariantName"): v.get("InstanceType") for v in new_variants}
    return {str(v.get("VariantName")) for v in old_variants
            if v.get("VariantName") in registered
            and new.get(v.get("VariantName"), object()) != v.get("InstanceType")}


def fleet_size(new_variants: list[dict[str, Any]]) -> int:
    """The instances the new config's fleet starts with: what a traffic-shifting step is a
    share of."""
    return max([int(v.get("InitialInstanceCount") or 1) for v in new_variants] or [1])


def update_request(name: str, config_name: str, guard: dict[str, Any]) -> dict[str, Any]:
    """`UpdateEndpoint` of endpoint `name` to `config_name` with `guard` (`rollout`)."""
    return {"EndpointName": name, "EndpointConfigName": config_name, **guard}


def _rollback(
    clients: AwsClients, name: str, previous: str, wait: Callable[[], dict[str, Any]],
    progress: ProgressFn | None, context: UpdateContext,
) -> str:
    """Put endpoint `name` back on config `previous`; returns what happened, for the error."""
    current = wait()
    if current.get("EndpointConfigName") == previous and current["EndpointStatus"] == "InService":
        return f"SageMaker kept it on the previous config {previous}"
    if progress:
        progress(f"rolling endpoint {name} back to {previous}")
    request = update_request(name, previous, {})
    back = UpdateContext(context.new_variants, context.old_variants, context.scaling_targets)
    check_request("UpdateEndpoint", request, back)
    clients.client("sagemaker").update_endpoint(**request)
    after = wait()
    return f"rolled back to {previous} ({after['EndpointStatus']})"


def _plan(settings: Settings, alarms: list[str], chosen: rollout.Plan) -> str:
    if not alarms:
        return "all at once"
    text = (f"{chosen.strategy} rollout, steps {chosen.steps} %, bake "
            f"{settings.rollout.bake_seconds} s, auto-rollback on {', '.join(alarms)}")
    return text + (f"; {chosen.note}" if chosen.note else "")


def _failure(described: dict[str, Any], config_name: str) -> str:
    """Why an update did not end InService on `config_name`; empty when it did."""
    if described["EndpointStatus"] == "InService" and (
        described.get("EndpointConfigName") == config_name
    ):
        return ""
    return (f"it ended {described['EndpointStatus']} on {described.get('EndpointConfigName')}: "
            f"{described.get('FailureReason') or 'no reason given'}")


def _scaling_pause(
    clients: AwsClients, settings: Settings, name: str, variant: str,
    old_variants: list[dict[str, Any]], new_variants: list[dict[str, Any]],
) -> tuple[set[str], set[str]]:
    """The variant's auto-scaling registration, and which of it must be lifted for this update."""
    from dogops.aws.autoscaling import is_registered

    registered = {variant} if is_registered(clients, name, variant) else set()
    return registered, needs_deregistration(old_variants, new_variants, registered)


def _resume_scaling(
    clients: AwsClients, settings: Settings, name: str, variant: str,
    progress: ProgressFn | None,
) -> None:
    """Register the variant again after an update that needed it deregistered (step 7 of
    https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html)."""
    from dogops.aws.autoscaling import register_autoscaling

    if not settings.scaling.enabled:
        if progress:
            progress(f"auto-scaling of {name} stays off (scaling.enabled is false)")
        return
    register_autoscaling(clients, name, settings.scaling, variant, project=settings.project)
    if progress:
        progress(f"auto-scaling of {name}/{variant} registered again")


def update_in_place(
    clients: AwsClients,
    settings: Settings,
    current: dict[str, Any],
    *,
    config_name: str,
    new_variants: list[dict[str, Any]],
    model_name: str,
    version: str,
    run_key: str,
    variant: str,
    wait_for_endpoint: WaitFn,
    endpoint_info: InfoFn,
    progress: ProgressFn | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = DEFAULT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> EndpointInfo:
    """UpdateEndpoint to `config_name` (whose variants are `new_variants`) with the rollout's
    DeploymentConfig; see the module docstring. Checked against SageMaker's rules first; a
    registered auto-scaling target whose instance type changes is deregistered for the update
    and registered again after it, whatever its outcome."""
    sm = clients.client("sagemaker")
    name = current["EndpointName"]
    previous = current.get("EndpointConfigName")
    old_variants = config_variants(sm, previous) or _live_variants(current)
    registered, lifted = _scaling_pause(clients, settings, name, variant, old_variants,
                                        new_variants)
    guard, alarms, chosen = rollout.guarded_update(clients, settings, variant, run_key,
                                                   fleet_size(new_variants))
    request = update_request(name, config_name, guard)
    context = UpdateContext(old_variants, new_variants, frozenset(registered - lifted))
    check_request("UpdateEndpoint", request, context)  # before anything changes
    if progress:
        progress(f"updating endpoint {name}: {previous} -> {config_name} "
                 f"({_plan(settings, alarms, chosen)})")
    old_version = ownership.tag_map(ownership.sagemaker_tags(sm, current["EndpointArn"])).get(
        naming.TAG_MODEL_VERSION)
    if lifted:
        from dogops.aws.autoscaling import deregister_autoscaling

        for target in sorted(lifted):
            deregister_autoscaling(clients, name, target)
        if progress:
            progress(f"auto-scaling of {name} deregistered for the update: its instance type "
                     "changes, which AWS refuses for a registered scaling target")
    try:
        sm.update_endpoint(**request)
        return _follow(clients, settings, name, previous, config_name, model_name, version,
                       run_key, alarms, chosen, old_version, context, wait_for_endpoint,
                       endpoint_info, progress, timeout_s, poll_s, sleep)
    finally:
        if lifted:
            _resume_scaling(clients, settings, name, variant, progress)


def _follow(
    clients: AwsClients, settings: Settings, name: str, previous: str | None, config_name: str,
    model_name: str, version: str, run_key: str, alarms: list[str], chosen: rollout.Plan,
    old_version: str | None, context: UpdateContext, wait_for_endpoint: WaitFn,
    endpoint_info: InfoFn, progress: ProgressFn | None, timeout_s: float, poll_s: float,
    sleep: Callable[[float], None],
) -> EndpointInfo:
    """Wait for the update sent to `config_name` and judge it: promoted, rolled back by
    SageMaker, or failed (then put back on `previous`)."""
    sm = clients.client("sagemaker")
    phases: list[str] = []

    def watch(line: str) -> None:
        phases.append(line)
        if progress:
            progress(line)

    def wait(limit_s: float = timeout_s) -> dict[str, Any]:
        return wait_for_endpoint(clients, name, timeout_s=limit_s, poll_s=poll_s,
                                 progress=watch, sleep=sleep)

    def judged(described: dict[str, Any]) -> Any:
        return rollout.outcome(clients, settings, described, new_config=config_name,
                               old_version=old_version, new_version=version, alarms=alarms,
                               phases=phases, chosen=chosen)

    failure = ""
    try:
        # A guarded deployment may take its whole MaximumExecutionTimeoutInSeconds.
        described = wait(max(timeout_s, settings.rollout.max_execution_timeout_s + SETTLE_S)
                         if alarms else timeout_s)
        if alarms and described["EndpointStatus"] == "InService" and (
            described.get("EndpointConfigName") == previous
        ):
            result = judged(described)
            if progress:
                progress(f"rollout of model {version} rolled back: {result.reason}")
            info = endpoint_info(clients, described, model_name, updated=False)
            return info.model_copy(update={"rollout": result})
        failure = _failure(described, config_name)
    except OperationFailedError as exc:
        failure = str(exc)
    if failure:
        outcome = "not rolled back: no previous config"
        if previous:
            outcome = _rollback(clients, name, previous, wait, progress, context)
        raise OperationFailedError(
            f"updating endpoint {name} to {config_name} failed ({failure}); {outcome}. The "
            "endpoint keeps serving the previous model; fix the cause and re-run."
        )
    sm.add_tags(ResourceArn=described["EndpointArn"], Tags=naming.tags(settings, run_key, version))
    if progress:
        progress(f"rollout of model {version} promoted")
    return endpoint_info(clients, described, model_name, updated=True).model_copy(
        update={"rollout": judged(described)})
