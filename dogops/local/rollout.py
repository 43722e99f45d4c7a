"""The local endpoint's guarded rollout: SageMaker's canary/linear deployment, inside one server.

    start the new model's workers beside the old ones (same server, same port)
      -> for each step of `settings.rollout` (e.g. 10 % then 100 %): send that share of the
         requests to them and watch for `bake_seconds` (at 100 %: `termination_wait_s`)
      -> judge the new workers' answers of the step: 5xx share above `max_error_rate_percent`,
         or (with at least `min_requests` answers) p99 latency above `max_latency_p99_ms`
      -> all steps pass: promote (old workers stop after their requests in flight);
         one fails: roll back (new workers stop the same way); the old model never stopped.

The server does the routing and the counting (`endpoint_server/traffic_split.py`); this module
only sends it commands on its control socket (never the serving port, `endpoint_server/control.py`)
and judges the figures it reports, as SageMaker judges CloudWatch alarms. New workers that cannot
load the model fail the update like a failed health check on AWS (`OperationFailedError`); the
old model keeps serving. The model must lie in the state dir's model store (`models/`), the only
folder the server loads a new model from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dogops.backends.base import ProgressFn
from dogops.errors import OperationFailedError, UserInputError
from dogops.local import endpoint as local_endpoint
from dogops.local.endpoint_server.control import control_call
from dogops.local.model_store import in_model_store, model_store
from dogops.results import RolloutOutcome
from dogops.settings import RolloutConfig
from dogops.waiting import poll

REPORT_EVERY_S = 5.0


def _call(control: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request on the server's control socket (`endpoint_server/control.py`)."""
    try:
        status, answer = control_call(control, path, body)
    except OSError as exc:
        raise OperationFailedError(f"endpoint server's control channel {control}: {exc}") from exc
    if status != 200:
        raise OperationFailedError(
            f"endpoint server refused {path}: {status} {answer.get('message', answer)}")
    return answer


def judge(figures: dict[str, Any], rollout: RolloutConfig) -> list[str]:
    """The thresholds the new workers' step figures cross (empty: the step passes)."""
    crossed = []
    if figures["requests"] and figures["error_rate_percent"] > rollout.max_error_rate_percent:
        crossed.append(f"5xx rate {figures['error_rate_percent']:.1f} % > "
                       f"{rollout.max_error_rate_percent:g} % ({figures['errors_5xx']} of "
                       f"{figures['requests']} requests)")
    p99 = figures.get("p99_ms")
    if (figures["requests"] >= rollout.min_requests and p99 is not None
            and p99 > rollout.max_latency_p99_ms):
        crossed.append(f"p99 latency {p99:.0f} ms > {rollout.max_latency_p99_ms:g} ms")
    return crossed


def _describe(step: dict[str, Any]) -> str:
    p99 = step.get("p99_ms")
    return (f"{step['requests']} requests, {step['errors_5xx']} 5xx "
            f"({step['error_rate_percent']:.1f} %), p99 "
            + (f"{p99:.0f} ms" if p99 is not None else "n/a"))


def _wait_for_new_workers(control: str, version: str, timeout_s: float,
                          sleep: Callable[[float], None]) -> None:
    def loaded() -> bool | None:
        workers = _call(control, "/dogops/status")["rollout"]["canary"]["workers"]
        if workers["ready"]:
            return True
        if workers["load_failures"] and not workers["starting"]:
            raise OperationFailedError(workers["load_failures"][-1])
        return None

    poll(loaded, timeout_s=timeout_s, poll_s=0.2, sleep=sleep, timed_out=lambda: (
        OperationFailedError(f"no new worker loaded model {version} in {timeout_s:g} s")))


def _bake(control: str, percent: int, seconds: float, rollout: RolloutConfig,
          progress: ProgressFn | None, sleep: Callable[[float], None]) -> tuple[dict, list[str]]:
    """Watch one step; returns the new workers' figures and the thresholds crossed. Stops early
    once `min_requests` answers already cross a threshold."""
    started = last = time.monotonic()
    while True:
        step = _call(control, "/dogops/status")["rollout"]
        crossed = judge(step["canary"], rollout)
        elapsed = time.monotonic() - started
        done = elapsed >= seconds or (crossed and step["canary"]["requests"]
                                      >= rollout.min_requests)
        if progress and (done or time.monotonic() - last >= REPORT_EVERY_S):
            last = time.monotonic()
            progress(f"rollout {percent} %: baking {min(elapsed, seconds):.0f}/{seconds:.0f} s; "
                     f"new: {_describe(step['canary'])}; old: {_describe(step['baseline'])}")
        if done:
            return {"new": step["canary"], "old": step["baseline"]}, crossed
        sleep(min(1.0, max(0.05, seconds - elapsed)))


def rollout_local(
    name: str, state_dir: Path, model_dir: Path, rollout: RolloutConfig,
    progress: ProgressFn | None = None, *, version: str | None = None,
    load_timeout_s: float = 300.0, sleep: Callable[[float], None] = time.sleep,
) -> RolloutOutcome:
    """Roll the model in `model_dir` onto the running endpoint `name`; see the module docstring."""
    # The server loads new models only from the store: say so here, before anything starts.
    model_dir = in_model_store(str(model_dir), model_store(state_dir))
    info = local_endpoint.read_endpoint(name, Path(state_dir))
    record = local_endpoint.read_endpoint_record(name, Path(state_dir)) or {}
    if info is None or not info.runtime_endpoint_url:
        raise UserInputError(f"endpoint {name} is not running: deploy a model first "
                             "(`dogops run`, or `dogops wake` after idle-guard).")
    if not record.get("control_socket"):
        raise OperationFailedError(f"endpoint {name}'s server predates the control channel and "
                                   "takes no rollout commands: redeploy it (`dogops run`).")
    code_dir = model_dir / "code"
    if not (code_dir / "inference.py").is_file():
        raise UserInputError(f"{code_dir / 'inference.py'} is missing: a model folder holds "
                             "model.pth, metadata.json and code/ as train.py writes them.")
    control = str(record["control_socket"])
    new = version or local_endpoint.model_version_of(model_dir)
    old = info.model_name or ""  # the record's model_version
    steps, phases = rollout.steps(), []
    outcome = RolloutOutcome(decision="promoted", strategy=rollout.strategy, steps=steps,
                             bake_seconds=rollout.bake_seconds, old_version=old, new_version=new)

    def say(line: str) -> None:
        phases.append(line)
        if progress:
            progress(line)

    _call(control, "/dogops/rollout/start", {"model_dir": str(model_dir),
                                             "code_dir": str(code_dir), "version": new})
    say(f"rollout of {new} onto {name} (serving {old}): starting new workers")
    try:
        _wait_for_new_workers(control, new, load_timeout_s, sleep)
    except BaseException as exc:
        _call(control, "/dogops/rollout/rollback", {"reason": f"did not load: {exc}"})
        if not isinstance(exc, OperationFailedError):
            raise
        raise OperationFailedError(
            f"Endpoint {name}: the new workers for model {new} failed their health check "
            f"(could not load the model: {exc}). The previous model ({old}) keeps serving; "
            "fix the model and roll it out again.") from None
    try:
        for percent in steps:
            _call(control, "/dogops/rollout/shift", {"percent": percent})
            wait = rollout.bake_seconds if percent < 100 else rollout.termination_wait_s
            say(f"rollout {percent} % of requests to {new}, baking {wait} s")
            figures, crossed = _bake(control, percent, wait, rollout, say, sleep)
            outcome.figures[f"{percent}%"] = figures
            if crossed:
                outcome.decision = "rolled-back"
                outcome.reason = f"at {percent} %: " + "; ".join(crossed)
                break
        if outcome.promoted:
            outcome.reason = (f"every step within the thresholds (5xx <= "
                              f"{rollout.max_error_rate_percent:g} %, p99 <= "
                              f"{rollout.max_latency_p99_ms:g} ms)")
    except BaseException:
        # Anything unexpected (including Ctrl-C): the old model takes all traffic back.
        _call(control, "/dogops/rollout/rollback", {"reason": "the rollout controller stopped"})
        raise
    action = "promote" if outcome.promoted else "rollback"
    _call(control, f"/dogops/rollout/{action}", {"reason": outcome.reason})
    if outcome.promoted:  # a restarted server (wake, crash) must load the promoted model
        local_endpoint.update_record(name, Path(state_dir), model_dir=str(model_dir),
                                     code_dir=str(code_dir), model_version=new)
    say(f"rollout of {new}: {outcome.decision} ({outcome.reason})")
    return outcome.model_copy(update={"phases": phases})
