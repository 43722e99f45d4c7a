"""Operations tasks: registry, quality gate, approval, cost, teardown and idle checks.

Thin wrappers over `dogops.registry`, `dogops.evaluation`, `dogops.cost`, `dogops.idle` and the
backend's `teardown`, each leaving the artifact a person reads in the Prefect UI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput

from dogops import cost, evaluation, idle, registry
from dogops.backends import Backend
from dogops.evaluation import GateDecision, Score
from dogops.registry import RegistryEntry
from dogops.results import EndpointInfo, SyncReport, TrainedModel, TuningResult
from tasks.common import RETRYING, flow_run_id, progress

QUALITY_GATE_KEY = "quality-gate"
COST_KEY = "cost-estimate"
TEARDOWN_KEY = "teardown"
REGISTRY_KEY = "model-registry"
IDLE_KEY = "idle-guard"
ROLLBACK_KEY = "rollback"


def run_namer(prefix: str) -> Callable[[], str]:
    """A `flow_run_name` callable: `<prefix>-<backend>-<start time>`, readable in the UI."""

    def name() -> str:
        from prefect.runtime import flow_run

        backend = flow_run.parameters.get("backend") or "default"
        return f"{prefix}-{backend}-{flow_run.scheduled_start_time:%Y%m%d-%H%M%S}"

    return name


# -- registry ------------------------------------------------------------------------------------


@task(name="read-live-model", **RETRYING)
def read_live_model(backend: Backend) -> RegistryEntry | None:
    return registry.registry_in(backend.store).live(backend.settings.endpoint.name)


@task(name="record-model", task_run_name="record-model-{model.version}", **RETRYING)
def record_model(
    backend: Backend, model: TrainedModel, data: SyncReport | None, endpoint: EndpointInfo,
    source: registry.Source, data_dir: str | None = None,
) -> RegistryEntry:
    """Version the deployed model in the registry (a no-op when it is already live there);
    `data_dir` is the folder the data was synced from, kept for `retrain(resync=True)`."""
    reg = registry.registry_in(backend.store)
    entry = reg.record(
        model, endpoint.name, backend.name, data=data, flow_run_id=flow_run_id(),
        source=source, data_dir=data_dir,
    )
    progress()(f"registry {reg.uri}: version {entry.version} ({entry.model_version}) is live "
               f"on {endpoint.name}")
    _publish_registry(reg, endpoint.name)
    return entry


@task(name="set-live-version", task_run_name="set-live-v{version}", **RETRYING)
def set_live_version(backend: Backend, version: int, reason: str) -> RegistryEntry:
    reg = registry.registry_in(backend.store)
    name = backend.settings.endpoint.name
    entry = reg.set_live(name, version, flow_run_id(), reason)
    _publish_registry(reg, name)
    return entry


def _publish_registry(reg: registry.Registry, endpoint_name: str) -> None:
    live = reg.live(endpoint_name)
    create_table_artifact(
        key=REGISTRY_KEY,
        table=registry.history_table(reg.history(endpoint_name), live.version if live else None),
        description=f"Promoted models for endpoint {endpoint_name} ({reg.uri})",
    )


# -- quality gate ----------------------------------------------------------------------------------


@task(name="score-candidate", task_run_name="score-candidate-{model.version}",
      cache_policy=NO_CACHE)
def score_candidate(backend: Backend, model: TrainedModel, test_dir: Path) -> Score:
    """The candidate on the held-out test split, through its own serving code."""
    score = evaluation.score_model(model.model_uri, model.version, model.metrics, test_dir,
                                   backend.settings, backend.store)
    progress()(f"candidate {model.version}: test accuracy {score.accuracy:.4f} ({score.source})")
    return score


@task(name="score-live", cache_policy=NO_CACHE)
def score_live(backend: Backend, live: RegistryEntry | None, test_dir: Path) -> Score | None:
    """The live model on the same test split, or None before the first promotion."""
    if live is None:
        progress()("no live model in the registry: the candidate will be the first")
        return None
    score = evaluation.score_model(live.model_uri, live.model_version, live.metrics, test_dir,
                                   backend.settings, backend.store)
    progress()(f"live v{live.version} ({live.model_version}): test accuracy "
               f"{score.accuracy:.4f} ({score.source})")
    return score


@task(name="report-quality-gate")
def report_gate(decision: GateDecision, note: str | None = None) -> str:
    markdown = evaluation.gate_markdown(decision, note)
    create_markdown_artifact(
        key=QUALITY_GATE_KEY, markdown=markdown,
        description="Candidate vs live model on the same test split, and the decision",
    )
    return markdown


class Approval(RunInput):
    """What a person answers in the Prefect UI when a retrain waits for approval."""

    approve: bool = False
    reason: str = ""


def request_approval(
    summary: str, timeout_s: int, poll_s: int | None = None
) -> tuple[bool, str]:
    """Pause the calling flow run until a person approves or rejects it in the UI.

    Call from inside a flow. No answer within `timeout_s` counts as "not approved". The run
    checks for an answer every `poll_s` seconds (default: up to 10).
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    logger = get_run_logger()
    logger.info("waiting up to %d s for approval in the Prefect UI: %s", timeout_s, summary)
    try:
        answer = pause_flow_run(wait_for_input=Approval.with_initial_data(
            description=f"**Approve this promotion?**\n\n{summary}", approve=False, reason="",
        ), timeout=timeout_s, poll_interval=poll_s or min(10, max(1, timeout_s // 4)))
    except FlowPauseTimeout:
        return False, f"no approval within {timeout_s} s: not promoted"
    if answer is None:  # pragma: no cover - only without wait_for_input
        return False, "resumed without an answer: not promoted"
    verdict = "approved" if answer.approve else "rejected"
    return answer.approve, f"{verdict} in the UI" + (f": {answer.reason}" if answer.reason else "")


# -- cost ------------------------------------------------------------------------------------------


@task(name="report-cost", cache_policy=NO_CACHE)
def report_cost(
    backend: Backend, tuning: TuningResult | None, training_s: float,
    training_billable_s: float | None = None,
) -> cost.CostEstimate:
    """The run's estimated cost as a table artifact (`cost-estimate`) and in the log; with
    managed spot the tuning and training lines show billable against trained seconds."""
    estimate = cost.estimate_cost(backend.settings, cost.tuning_seconds(tuning), training_s,
                                  training_billable_s=training_billable_s,
                                  tuning_billable_s=cost.tuning_billable_seconds(tuning),
                                  operations=backend.operations)
    create_table_artifact(
        key=COST_KEY, table=estimate.rows(),
        description=f"Estimated cost ({estimate.label}); prices: {estimate.prices_source} "
        f"as of {estimate.prices_as_of}",
    )
    progress()(estimate.text())
    return estimate


# -- teardown and idle guard -----------------------------------------------------------------------


@task(name="teardown-resources", task_run_name="teardown-{backend.name}", **RETRYING)
def teardown_resources(backend: Backend, apply: bool) -> list[str]:
    """List (dry run) or delete what the project runs; idempotent, so a retry is safe."""
    return backend.teardown(apply)


def teardown_rows(lines: list[str], apply: bool) -> list[dict[str, Any]]:
    action = "deleted" if apply else "would delete"
    rows = []
    for line in lines:
        kind, _, name = line.partition(":")
        rows.append({"kind": kind, "resource": name or kind, "action": action})
    return rows


@task(name="report-teardown")
def report_teardown(lines: list[str], apply: bool, backend_name: str) -> None:
    rows = teardown_rows(lines, apply) or [
        {"kind": "-", "resource": "nothing to remove", "action": "-"}
    ]
    create_table_artifact(
        key=TEARDOWN_KEY, table=rows,
        description=f"Teardown on the {backend_name} backend ({'apply' if apply else 'dry run'})",
    )


@task(name="check-idle", **RETRYING)
def check_idle(backend: Backend, max_idle_hours: float) -> idle.IdleStatus:
    status = idle.idle_status(backend.settings, max_idle_hours, operations=backend.operations)
    progress()(f"endpoint {status.endpoint_name}: idle={status.idle} "
               f"({status.idle_hours} h, limit {max_idle_hours:g} h) - {status.detail}")
    return status


@task(name="scale-to-min", **RETRYING)
def scale_to_min(backend: Backend, status: idle.IdleStatus, apply: bool) -> list[str]:
    return idle.scale_to_min(backend.settings, status, apply, backend.operations)


@task(name="put-to-sleep", **RETRYING)
def put_to_sleep(backend: Backend, status: idle.IdleStatus, apply: bool) -> list[str]:
    """Delete (AWS) or stop (local) the idle endpoint; idempotent, so a retry is safe."""
    return idle.put_to_sleep(backend.settings, status, apply, backend.operations)


@task(name="mark-asleep", **RETRYING)
def mark_asleep(backend: Backend, status: idle.IdleStatus) -> registry.Asleep | None:
    """Record in the registry that the endpoint sleeps (its live version stays live), and leave
    the `cost-estimate` artifact with what sleeping saves. None when the registry has no live
    model for it (then there is nothing `wake` could bring back)."""
    from datetime import UTC, datetime

    settings = backend.settings
    reg = registry.registry_in(backend.store)
    name = settings.endpoint.name
    live = reg.live(name)
    if live is None:
        get_run_logger().warning("registry %s has no live model for %s: not marked asleep",
                                 reg.uri, name)
        return None
    instances = max(status.current_instances or 0, settings.scaling.min_capacity)
    price = cost.hosting_price(settings.endpoint.instance_type)
    asleep = registry.Asleep(
        since=datetime.now(UTC), version=live.version, instances=instances,
        instance_type=settings.endpoint.instance_type,
        saved_per_day=None if price is None else round(24 * instances * price, 4),
        reason=f"idle {status.idle_hours} h (limit {status.max_idle_hours:g} h)",
    )
    reg.mark_asleep(name, asleep, flow_run_id())
    report_savings(backend, reg.asleep(name) or asleep)
    return asleep


def report_savings(backend: Backend, asleep: registry.Asleep) -> cost.CostEstimate:
    """The `cost-estimate` table of what an asleep endpoint saves (per day and so far)."""
    from datetime import UTC, datetime

    hours = max(0.0, (datetime.now(UTC) - asleep.since).total_seconds() / 3600)
    estimate = cost.idle_savings(backend.settings, asleep.instances, hours,
                                 operations=backend.operations)
    create_table_artifact(
        key=COST_KEY, table=estimate.rows(),
        description=f"What sleeping {backend.settings.endpoint.name} saves ({estimate.label}); "
        f"prices: {estimate.prices_source} as of {estimate.prices_as_of}",
    )
    return estimate


@task(name="mark-awake", **RETRYING)
def mark_awake(backend: Backend) -> registry.Asleep | None:
    """Clear the registry's asleep mark after a deploy; what it was (for the savings), or None."""
    was = registry.registry_in(backend.store).mark_awake(backend.settings.endpoint.name,
                                                         flow_run_id())
    if was is not None:
        report_savings(backend, was)
    return was
