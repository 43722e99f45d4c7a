"""Tuning and best-estimator training tasks."""

from __future__ import annotations

from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from dogops.backends import Backend
from dogops.results import SyncReport, TrainedModel, TrialResult, TuningResult
from tasks.common import RETRYING, progress


@task(name="trial", task_run_name="{name}", cache_policy=NO_CACHE)
def trial(name: str, run: Callable[[], TrialResult]) -> State:
    """One tuning trial as its own task run, named after its hyperparameters.

    Not retried: a failed trial is a result of the tuning (shown in the trials table), and the
    tuner proposes the next one instead.
    """
    result = run()
    if result.state == "Failed":
        return Failed(message=result.failure_reason or "trial failed", data=result)
    return Completed(message=f"{result.state}: objective {result.objective}", data=result)


def _trial_as_task(name: str, run: Callable[[], TrialResult]) -> object:
    return trial(name, run, return_state=True)


@task(name="tune", task_run_name="tune-{run_key}", **RETRYING)
def tune(backend: Backend, data: SyncReport, run_key: str) -> TuningResult:
    return backend.tune(data, run_key, progress(), trial_wrapper=_trial_as_task)


@task(name="train-best", task_run_name="train-best-{run_key}", **RETRYING)
def train_best(
    backend: Backend, data: SyncReport, tuning: TuningResult, run_key: str
) -> TrainedModel:
    return backend.train_best(data, tuning, run_key, progress())
