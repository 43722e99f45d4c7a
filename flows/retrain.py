"""retrain: new data -> warm-started tuning -> candidate -> quality gate -> promote (or keep live).

    data (given folder, else the registry's: what is under its object-store URI now, or with
    resync=True the recorded folder synced again) -> tune (warm start) -> train best -> evaluate
             -> score candidate + score live (same test split) -> quality gate
             -> [approval in the UI] -> deploy -> register auto-scaling -> record in registry

The candidate replaces the live model only when its test accuracy beats the live model's by
`margin`; otherwise the live endpoint is left alone and the `quality-gate` artifact says why.
With `require_approval`, the run pauses for a person's answer in the Prefect UI; no answer within
`approval_timeout_s` means no promotion. The steps are the same tasks train-and-deploy uses.
With no parameters at all (the weekly cron, *Run* in the UI) it retrains on the data of record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from dogops.backends import Backend, get_backend
from dogops.errors import UserInputError
from dogops.evaluation import GateDecision, decide
from dogops.registry import RegistryEntry
from dogops.results import (
    EndpointInfo,
    RolloutOutcome,
    ScalingInfo,
    StepSkipped,
    SyncReport,
    TrainedModel,
)
from dogops.run_key import run_key as make_run_key
from dogops.settings import (
    DEFAULT_ENDPOINT,
    DEFAULT_SCALING,
    DEFAULT_TRAINING,
    DEFAULT_TUNING,
    BackendName,
    EndpointConfig,
    ScalingConfig,
    TrainingConfig,
    TuningConfig,
    load_settings,
)
from tasks.data import (
    data_of_record,
    fetch_test_split,
    refresh_data,
    upload_data,
    validate_data,
)
from tasks.endpoint import deploy, register_autoscaling
from tasks.live_lock import live_model_lock
from tasks.operations import (
    read_live_model,
    record_model,
    report_cost,
    report_gate,
    request_approval,
    run_namer,
    score_candidate,
    score_live,
)
from tasks.reporting import evaluate, report_tuning
from tasks.rollout import record_rolled_back, report_rollout
from tasks.training import train_best, tune


class RetrainResult(BaseModel):
    promoted: bool
    reason: str
    gate: GateDecision
    candidate: TrainedModel
    data: SyncReport | None = None
    live_before: RegistryEntry | None = None
    registry_entry: RegistryEntry | None = None
    endpoint: EndpointInfo | None = None
    scaling: ScalingInfo | StepSkipped | None = None
    rollout: RolloutOutcome | None = None


def choose_data(platform: Backend, resync: bool) -> tuple[SyncReport, Path, str | None]:
    """The data to retrain on, a local folder with its test split, and the folder it was synced
    from (None when it was read from the object store as it is)."""
    folder = platform.settings.data_dir
    entry = None
    if folder is None:
        entry = data_of_record(platform, "retrain")
        if resync:
            if not entry.data_dir:
                raise UserInputError(
                    f"resync=True, but registry v{entry.version} records no source folder: "
                    "pass data_dir."
                )
            folder = Path(entry.data_dir)
    if folder is not None:
        data_root = Path(validate_data(folder).root)
        return upload_data(platform, data_root), data_root / "test", str(data_root)
    assert entry is not None
    data = refresh_data(platform, entry.data_uri)
    return data, fetch_test_split(platform, data), entry.data_dir or None


def live_moved(before: RegistryEntry | None, now: RegistryEntry | None) -> str | None:
    """Why not to promote when another run changed the live model since the gate read it."""
    if (before and before.version) == (now and now.version):
        return None
    return (f"the live model changed while this run trained (v{before.version if before else '-'}"
            f" -> v{now.version if now else '-'}), so the quality gate judged the candidate "
            "against a model that no longer serves: nothing was deployed; run retrain again.")


@flow(name="retrain", flow_run_name=run_namer("retrain"), log_prints=True)
def retrain(
    data_dir: str | None = None,
    resync: bool = False,
    backend: BackendName | None = None,
    margin: Annotated[float, Field(ge=0, le=1)] = 0.01,
    require_approval: bool = False,
    approval_timeout_s: Annotated[int, Field(ge=1)] = 3600,
    tuning: TuningConfig = DEFAULT_TUNING,
    training: TrainingConfig = DEFAULT_TRAINING,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    scaling: ScalingConfig = DEFAULT_SCALING,
    state_dir: str | None = None,
) -> RetrainResult:
    """Retrain and promote only a better model. With no `data_dir`, the registry's data: what is
    under its object-store URI now, or with `resync` its source folder synced again. Unchanged
    fields keep the settings; `margin` is absolute test accuracy (0.01 = one point)."""
    # Warm start is what makes a retrain cheaper than a first run: always on here.
    tuning_override = {**tuning.model_dump(exclude_unset=True), "warm_start": True}
    settings = load_settings(
        data_dir=data_dir, backend=backend, tuning=tuning_override, training=training,
        endpoint=endpoint, scaling=scaling, state_dir=state_dir,
    )
    platform = get_backend(settings)  # built once; every task of this run gets it
    logger = get_run_logger()
    live_before = read_live_model(platform)
    data, test_dir, source_dir = choose_data(platform, resync)
    key = make_run_key(settings, data)
    tuned = tune(platform, data, key)
    report_tuning(tuned)
    candidate = train_best(platform, data, tuned, key)
    evaluate(candidate, tuned)
    report_cost(platform, tuned, candidate.training_seconds, candidate.billable_seconds)

    decision = decide(
        score_candidate(platform, candidate, test_dir),
        score_live(platform, live_before, test_dir),
        margin,
        candidate.version,
        live_before.model_version if live_before else None,
    )
    promote, reason = decision.promote, decision.reason
    note = None
    if promote and require_approval:
        report_gate(decision, "Waiting for approval in the Prefect UI.")
        approved, note = request_approval(decision.reason, approval_timeout_s)
        if not approved:
            promote, reason = False, f"{decision.reason}; but {note}"
    report_gate(decision.model_copy(update={"promote": promote, "reason": reason}), note)
    logger.info("quality gate: %s", reason)
    if not promote:
        return RetrainResult(promoted=False, reason=reason, gate=decision, candidate=candidate,
                             data=data, live_before=live_before)

    with live_model_lock(settings):  # from deploy to the registry: no other run in between
        moved = live_moved(live_before, read_live_model(platform))
        if moved:  # the gate judged the candidate against a model that no longer serves
            logger.warning("not promoted: %s", moved)
            return RetrainResult(promoted=False, reason=moved, gate=decision,
                                 candidate=candidate, data=data, live_before=live_before)
        live = deploy(platform, candidate, key)  # through the guarded rollout
        rolled = report_rollout(live, candidate)
        if not rolled.promoted:
            record_rolled_back(platform, candidate, rolled, "retrain")
            logger.warning("rollout of %s rolled back: %s", candidate.version, rolled.reason)
            return RetrainResult(promoted=False, reason=f"passed the gate but the rollout was "
                                 f"rolled back: {rolled.reason}", gate=decision,
                                 candidate=candidate, data=data, live_before=live_before,
                                 endpoint=live, rollout=rolled)
        scaled = register_autoscaling(platform, live)
        entry = record_model(platform, candidate, data, live, "retrain", source_dir)
    return RetrainResult(
        promoted=True, reason=reason, gate=decision, candidate=candidate, data=data,
        live_before=live_before, registry_entry=entry, endpoint=live, scaling=scaled,
        rollout=rolled,
    )


if __name__ == "__main__":
    retrain()
