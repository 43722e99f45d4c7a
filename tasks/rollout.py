"""Rollout tasks: pack a model folder, show the rollout's outcome, keep rolled-back candidates."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from dogops import registry, rollout
from dogops.backends import Backend
from dogops.results import EndpointInfo, RolloutOutcome, TrainedModel
from tasks.common import RETRYING, flow_run_id, progress

ROLLOUT_KEY = "rollout"


@task(name="package-model", **RETRYING)
def package_model(backend: Backend, model_dir: Path) -> TrainedModel:
    model = rollout.package_model_dir(model_dir, backend.store_model)
    progress()(f"packed {model_dir} as model {model.version} ({model.model_uri})")
    return model


@task(name="report-rollout")
def report_rollout(endpoint: EndpointInfo, model: TrainedModel) -> RolloutOutcome:
    """The `rollout` artifact: decision, figures, phases."""
    outcome = rollout.outcome_of(endpoint, model)
    create_markdown_artifact(
        key=ROLLOUT_KEY, markdown=rollout.rollout_markdown(outcome, endpoint.name),
        description=f"Rollout of {model.version} on {endpoint.name}: {outcome.decision}",
    )
    return outcome


@task(name="record-rolled-back", task_run_name="record-rolled-back-{model.version}", **RETRYING)
def record_rolled_back(
    backend: Backend, model: TrainedModel, outcome: RolloutOutcome, source: str
) -> None:
    """Keep the rolled-back candidate and why in the registry; the live version stays."""
    reg = registry.registry_in(backend.store)
    reg.record_rolled_back(rollout.rolled_back_record(
        backend.settings.endpoint.name, model, outcome, source, flow_run_id()))
    progress()(f"registry {reg.uri}: candidate {model.version} rolled back ({outcome.reason})")
