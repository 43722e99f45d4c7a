"""rollout: a model folder (as train.py writes it) onto the configured endpoint, guarded.

    pack the folder -> deploy through the guarded rollout (canary / linear / all at once, judged
    by CloudWatch alarms on AWS and by the endpoint server's own figures locally)
      -> promoted: record it live in the registry | rolled back: record the candidate and why

`dogops rollout --model-dir DIR` runs this flow and exits 0 when promoted, 3 when rolled back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from pydantic import BaseModel, Field

from dogops.backends import get_backend
from dogops.registry import RegistryEntry
from dogops.results import EndpointInfo, RolloutOutcome, TrainedModel
from dogops.settings import (
    DEFAULT_ENDPOINT,
    BackendName,
    EndpointConfig,
    RolloutStrategy,
    load_settings,
)
from tasks.endpoint import deploy
from tasks.live_lock import live_model_lock
from tasks.operations import record_model, run_namer
from tasks.rollout import package_model, record_rolled_back, report_rollout


class RolloutResult(BaseModel):
    model: TrainedModel
    outcome: RolloutOutcome
    endpoint: EndpointInfo
    registry_entry: RegistryEntry | None = None


@flow(name="rollout", flow_run_name=run_namer("rollout"), log_prints=True)
def rollout(
    model_dir: str,
    canary_percent: Annotated[int | None, Field(ge=1, le=50)] = None,
    bake_seconds: Annotated[int | None, Field(ge=0, le=3600)] = None,
    strategy: RolloutStrategy | None = None,
    backend: BackendName | None = None,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    state_dir: str | None = None,
) -> RolloutResult:
    """Roll `model_dir` onto the endpoint; unset options keep the `rollout` settings (a canary
    percent alone means the canary strategy)."""
    changes: dict[str, Any] = {"canary_percent": canary_percent, "bake_seconds": bake_seconds,
                               "strategy": strategy or ("canary" if canary_percent else None)}
    settings = load_settings(backend=backend, endpoint=endpoint, state_dir=state_dir,
                             rollout={k: v for k, v in changes.items() if v is not None})
    platform = get_backend(settings)  # built once; every task of this run gets it
    model = package_model(platform, Path(model_dir))
    with live_model_lock(settings):  # from deploy to the registry: no other run in between
        live = deploy(platform, model, f"rollout-{model.version}")
        outcome = report_rollout(live, model)
        if not outcome.promoted:
            record_rolled_back(platform, model, outcome, "rollout")
            return RolloutResult(model=model, outcome=outcome, endpoint=live)
        entry = record_model(platform, model, None, live, "rollout")
    return RolloutResult(model=model, outcome=outcome, endpoint=live, registry_entry=entry)
