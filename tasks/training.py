"""Tuning and best-estimator training tasks."""

from __future__ import annotations

from prefect import task

from dogops.results import SyncReport, TrainedModel, TuningResult
from dogops.settings import Settings
from tasks.common import RETRYING, backend_for, progress


@task(name="tune", task_run_name="tune-{run_key}", **RETRYING)
def tune(settings: Settings, data: SyncReport, run_key: str) -> TuningResult:
    return backend_for(settings).tune(data, run_key, progress())


@task(name="train-best", task_run_name="train-best-{run_key}", **RETRYING)
def train_best(
    settings: Settings, data: SyncReport, tuning: TuningResult, run_key: str
) -> TrainedModel:
    return backend_for(settings).train_best(data, tuning, run_key, progress())
