"""Move a live endpoint to a new config: a guarded blue/green rollout (`dogops.aws.rollout`).

Three endings:

* InService on the new config: promoted; the endpoint's flow-run and model-version tags move.
* InService on the previous config after a guarded update: SageMaker's auto-rollback (an alarm
  fired during a bake). Not an error: the previous model serves, as it should; the returned
  `EndpointInfo.rollout` says `rolled-back`, why and on which alarm states.
* anything else (Failed, a timeout): the endpoint is put back on the previous config if SageMaker
  has not done so, and `OperationFailedError` names both configs and the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dogops.aws import naming, ownership, rollout
from dogops.aws.clients import AwsClients
from dogops.aws.sagemaker_job import DEFAULT_POLL_S
from dogops.backends.base import ProgressFn
from dogops.errors import OperationFailedError
from dogops.results import EndpointInfo
from dogops.settings import Settings

# What `dogops.aws.endpoint` lends (passed in, not imported: it imports this module).
WaitFn = Callable[..., dict[str, Any]]  # wait_for_endpoint
InfoFn = Callable[..., EndpointInfo]  # endpoint_info
SETTLE_S = 480.0  # beyond the deployment's own limit, for SageMaker to settle the endpoint


def _rollback(
    clients: AwsClients, name: str, previous: str, wait: Callable[[], dict[str, Any]],
    progress: ProgressFn | None,
) -> str:
    """Put endpoint `name` back on config `previous`; returns what happened, for the error."""
    current = wait()
    if current.get("EndpointConfigName") == previous and current["EndpointStatus"] == "InService":
        return f"SageMaker kept it on the previous config {previous}"
    if progress:
        progress(f"rolling endpoint {name} back to {previous}")
    clients.client("sagemaker").update_endpoint(EndpointName=name, EndpointConfigName=previous)
    after = wait()
    return f"rolled back to {previous} ({after['EndpointStatus']})"


def _plan(settings: Settings, alarms: list[str]) -> str:
    rollout_config = settings.rollout
    if not alarms:
        return "all at once"
    return (f"{rollout_config.strategy} rollout, steps {rollout_config.steps()} %, bake "
            f"{rollout_config.bake_seconds} s, auto-rollback on {', '.join(alarms)}")


def _failure(described: dict[str, Any], config_name: str) -> str:
    """Why an update did not end InService on `config_name`; empty when it did."""
    if described["EndpointStatus"] == "InService" and (
        described.get("EndpointConfigName") == config_name
    ):
        return ""
    return (f"it ended {described['EndpointStatus']} on {described.get('EndpointConfigName')}: "
            f"{described.get('FailureReason') or 'no reason given'}")


def update_in_place(
    clients: AwsClients,
    settings: Settings,
    current: dict[str, Any],
    *,
    config_name: str,
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
    """UpdateEndpoint to `config_name` with the rollout's DeploymentConfig; see the docstring."""
    sm = clients.client("sagemaker")
    name = current["EndpointName"]
    previous = current.get("EndpointConfigName")
    guard, alarms = rollout.guarded_update(clients, settings, variant, run_key)
    if progress:
        progress(f"updating endpoint {name}: {previous} -> {config_name} "
                 f"({_plan(settings, alarms)})")
    old_version = ownership.tag_map(ownership.sagemaker_tags(sm, current["EndpointArn"])).get(
        naming.TAG_MODEL_VERSION)
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config_name, **guard)
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
                               phases=phases)

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
            outcome = _rollback(clients, name, previous, wait, progress)
        raise OperationFailedError(
            f"updating endpoint {name} to {config_name} failed ({failure}); {outcome}. The "
            "endpoint keeps serving the previous model; fix the cause and re-run."
        )
    sm.add_tags(ResourceArn=described["EndpointArn"], Tags=naming.tags(settings, run_key, version))
    if progress:
        progress(f"rollout of model {version} promoted")
    return endpoint_info(clients, described, model_name, updated=True).model_copy(
        update={"rollout": judged(described)})
