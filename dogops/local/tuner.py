"""Local hyperparameter tuning: the SageMaker tuner's contract on one machine.

Each trial is `model_code/train.py` started by SageMaker's training toolkit in its own
/opt/ml-shaped job folder (`dogops.local.container`). The objective is read from the trial's
log with the same regex metric definitions the SageMaker tuner gets. Optuna proposes
hyperparameters (TPE, i.e. Bayesian-style, or random; seeded) and prunes hopeless trials on their
per-epoch validation metric (median rule), which is what SageMaker's `EarlyStoppingType=Auto`
does.

The study lives in a journal file inside the job folder: a re-run after a crash loads it, keeps
the finished trials and runs only the rest of the budget.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from dogops import hyperparameters
from dogops.backends.base import ProgressFn, TrialWrapper
from dogops.errors import UserInputError
from dogops.hyperparameters import static_hyperparameters
from dogops.local.container import (
    adopt_checkpoints,
    container_env,
    prepare_job,
    run_training_job,
    write_source_archive,
)
from dogops.local.store import write_atomic
from dogops.local.trial_progress import TrainingWatcher
from dogops.progress import Progress
from dogops.results import TrialResult, TuningResult
from dogops.settings import TrainingConfig, TuningConfig
from model_code.metrics import METRIC_DEFINITIONS

optuna.logging.set_verbosity(optuna.logging.WARNING)

_REGEXES = {d["Name"]: re.compile(d["Regex"]) for d in METRIC_DEFINITIONS}


_STATES = {
    TrialState.COMPLETE: "Completed",
    TrialState.PRUNED: "Stopped",
    TrialState.FAIL: "Failed",
    TrialState.RUNNING: "InProgress",
    TrialState.WAITING: "Pending",
}


def parse_line(line: str) -> dict[str, float]:
    """Every metric a log line carries, by metric definition name."""
    found: dict[str, float] = {}
    for name, regex in _REGEXES.items():
        match = regex.search(line)
        if match:
            try:
                found[name] = float(match.group(1))
            except ValueError:
                continue
    return found


def final_metrics(log_text: str) -> dict[str, float]:
    """The last value of each metric, as SageMaker reports a metric's final value."""
    metrics: dict[str, float] = {}
    for line in log_text.splitlines():
        metrics.update(parse_line(line))
    return metrics


def trial_name(number: int, hyperparameters: dict[str, Any]) -> str:
    lr = float(hyperparameters["learning_rate"])
    return f"tune-{number:03d}-lr{lr:.3g}-bs{hyperparameters['batch_size']}"


def search_space(tuning: TuningConfig) -> dict[str, BaseDistribution]:
    """`dogops.hyperparameters.search_space` as Optuna distributions."""
    space = hyperparameters.search_space(tuning)
    return {
        "learning_rate": FloatDistribution(
            space.learning_rate_min, space.learning_rate_max, log=space.learning_rate_log
        ),
        "batch_size": CategoricalDistribution(list(space.batch_sizes)),
    }


@dataclass
class LocalTuner:
    """One tuning job in `job_dir`; `run()` is safe to call again after a crash."""

    job_name: str
    job_dir: Path
    data_dir: Path
    tuning: TuningConfig
    training: TrainingConfig
    feature_cache_dir: Path | None = None
    previous_job_dir: Path | None = None
    progress: ProgressFn | None = None
    trial_timeout_s: float = 3600.0
    trial_wrapper: TrialWrapper | None = None
    """Runs each trial's callable; the tuning task passes one that makes it a Prefect task run."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _user_error: str | None = None
    _job_progress: Progress | None = None
    _source: Path | None = None

    @property
    def result_path(self) -> Path:
        return self.job_dir / "result.json"

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def _study(self) -> optuna.Study:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(self.job_dir / "journal.log")))
        sampler: optuna.samplers.BaseSampler = (
            optuna.samplers.TPESampler(seed=self.tuning.seed, n_startup_trials=2)
            if self.tuning.strategy == "bayesian"
            else optuna.samplers.RandomSampler(seed=self.tuning.seed)
        )
        pruner: optuna.pruners.BasePruner = (
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
            if self.tuning.early_stopping
            else optuna.pruners.NopPruner()
        )
        return optuna.create_study(
            study_name=self.job_name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction="minimize" if self.tuning.minimize else "maximize",
            load_if_exists=True,
        )

    def _warm_start(self, study: optuna.Study) -> None:
        """Seed a new study with the finished trials of the previous tuning job."""
        if study.trials or self.previous_job_dir is None:
            return
        previous = self.previous_job_dir / "result.json"
        if not previous.exists():
            return
        space = search_space(self.tuning)
        parent = TuningResult.model_validate_json(previous.read_text())
        seeded = 0
        for trial in parent.trials:
            params = {k: trial.hyperparameters.get(k) for k in space}
            if trial.state != "Completed" or trial.objective is None:
                continue
            if not all(space[k]._contains(space[k].to_internal_repr(v)) for k, v in params.items()
                       if v is not None):
                continue
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=space, value=trial.objective,
                    user_attrs={"warm_start_from": parent.job_name},
                )
            )
            seeded += 1
        self._say(f"warm start: seeded the search with {seeded} trial(s) of {parent.job_name}")

    def run(self) -> TuningResult:
        if self.result_path.exists():
            result = TuningResult.model_validate_json(self.result_path.read_text())
            result.reused = True
            self._say(f"tuning job {self.job_name} already finished: reusing its "
                      f"{len(result.trials)} trials")
            return result
        study = self._study()
        self._source = write_source_archive(self.job_dir)  # the trials' sourcedir.tar.gz
        self._warm_start(study)
        for trial in study.trials:
            if trial.state == TrialState.RUNNING:  # left behind by a crashed run
                study.tell(trial.number, state=TrialState.FAIL)
                # Run it again with the same values, resuming from its last checkpoint.
                if trial.user_attrs.get("trial_dir"):
                    study.enqueue_trial(trial.params,
                                        user_attrs={"resume_from": trial.user_attrs["trial_dir"]})
        own = [t for t in study.trials if "warm_start_from" not in t.user_attrs]
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in own)
        remaining = max(0, self.tuning.max_jobs - done)
        if done:
            self._say(f"resuming tuning job {self.job_name}: {done} trial(s) done, "
                      f"{remaining} to go")
        self._job_progress = Progress(f"tuning job {self.job_name}", remaining, "trials",
                                      say=self.progress)
        counter = {"launched": 0}
        if done == 0 and remaining > 1 and self.feature_cache_dir is not None:
            # The first trial fills the backbone feature cache alone; trials started beside it
            # would each compute the same features, which is most of a trial's cost.
            counter["launched"] = 1
            self._launch(study, study.ask(search_space(self.tuning)), os.cpu_count() or 1)
        workers = min(self.tuning.max_parallel_jobs, remaining - counter["launched"])
        threads_per_trial = max(1, (os.cpu_count() or 1) // max(1, workers))

        def worker() -> None:
            while True:
                with self._lock:
                    if counter["launched"] >= remaining or self._user_error:
                        return
                    counter["launched"] += 1
                    trial = study.ask(search_space(self.tuning))
                self._launch(study, trial, threads_per_trial)

        # Each thread gets its own copy of the caller's context, so a `trial_wrapper` that
        # starts Prefect task runs finds the parent task run from any thread.
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(worker,), daemon=True)
            for _ in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._job_progress.finish()
        if self._user_error:
            raise UserInputError(self._user_error)
        result = self._collect(study)
        write_atomic(self.result_path, result.model_dump_json(indent=1).encode())
        return result

    def _launch(self, study: optuna.Study, trial: optuna.Trial, threads: int) -> None:
        name = trial_name(trial.number, trial.params)
        run = functools.partial(self._run_trial, study, trial, threads, name)
        if self.trial_wrapper is None:
            run()
        else:
            self.trial_wrapper(name, run)

    def _run_trial(
        self, study: optuna.Study, trial: optuna.Trial, threads: int, name: str
    ) -> TrialResult:
        hps = {**trial.params, **static_hyperparameters(self.tuning, self.training)}
        trial_dir = self.job_dir / "trials" / name
        with self._lock:
            trial.set_user_attr("name", name)
            trial.set_user_attr("trial_dir", str(trial_dir))
        self._say(f"{name}: started")
        objective = self.tuning.objective
        intermediate = objective.replace("test:", "validation:")
        watcher = TrainingWatcher(name, int(hps.get("epochs", 0)) or None, self.progress)

        def on_line(line: str) -> bool:
            watcher.feed(line)  # feature extraction and epochs: a progress artifact per stage
            metrics = parse_line(line)
            if "epoch" not in metrics or intermediate not in metrics:
                return False
            step = int(metrics["epoch"])
            with self._lock:
                trial.report(metrics[intermediate], step)
                prune = trial.should_prune()
            if prune:
                self._say(f"{name}: stopped early at epoch {step} ({intermediate}="
                          f"{metrics[intermediate]:.4f} is worse than the median)")
            return prune

        assert self._source is not None
        crashed = trial.user_attrs.get("resume_from")
        if crashed and adopt_checkpoints(Path(crashed), trial_dir):
            self._say(f"{name}: resuming from the checkpoint of the crashed run's trial")
        prepare_job(trial_dir, self.data_dir, hps, self._source)
        outcome = run_training_job(
            trial_dir,
            container_env(trial_dir, threads, self.feature_cache_dir),
            trial_dir / "train.log",
            on_line=on_line,
            timeout_s=self.trial_timeout_s,
        )
        watcher.close(outcome.succeeded or outcome.stopped_early)
        if self._job_progress is not None:
            self._job_progress.advance()
        metrics = final_metrics(outcome.log_text)
        record = {
            "seconds": round(outcome.seconds, 2),
            "metrics": metrics,
            "epochs_run": int(metrics.get("epoch", 0)),
        }
        with self._lock:
            for key, value in record.items():
                trial.set_user_attr(key, value)
            value = metrics.get(objective)
            if outcome.stopped_early:
                study.tell(trial, state=TrialState.PRUNED)
            elif outcome.succeeded and value is not None and math.isfinite(value):
                study.tell(trial, value)
                self._say(f"{name}: {objective}={value:.4f} in {outcome.seconds:.1f} s")
            else:
                reason = outcome.failure_reason() if not outcome.succeeded else (
                    f"no {objective} metric line in the log"
                )
                trial.set_user_attr("failure_reason", reason)
                study.tell(trial, state=TrialState.FAIL)
                self._say(f"{name}: failed: {reason}")
                if outcome.user_error:
                    self._user_error = reason
            return self._to_result(study.trials[trial.number])

    def _to_result(self, t: optuna.trial.FrozenTrial) -> TrialResult:
        hps = {**t.params, **static_hyperparameters(self.tuning, self.training)}
        model_dir = Path(t.user_attrs.get("trial_dir", "")) / "model"
        return TrialResult(
            name=t.user_attrs.get("name", trial_name(t.number, hps)),
            hyperparameters=hps,
            objective=t.value,
            state=_STATES.get(t.state, "Failed"),  # type: ignore[arg-type]
            seconds=float(t.user_attrs.get("seconds", 0.0)),
            epochs_run=int(t.user_attrs.get("epochs_run", 0)),
            model_uri=model_dir.resolve().as_uri() if (model_dir / "model.pth").exists()
            else None,
            failure_reason=t.user_attrs.get("failure_reason"),
            metrics=dict(t.user_attrs.get("metrics", {})),
        )

    def _collect(self, study: optuna.Study) -> TuningResult:
        trials = [
            self._to_result(t) for t in study.trials if "warm_start_from" not in t.user_attrs
        ]
        completed = [t for t in trials if t.state == "Completed" and t.objective is not None]
        best = None
        if completed:
            key = (lambda t: t.objective) if self.tuning.minimize else (lambda t: -t.objective)
            best = min(completed, key=key)  # type: ignore[arg-type,return-value]
        return TuningResult(
            job_name=self.job_name,
            objective=self.tuning.objective,
            minimize=self.tuning.minimize,
            trials=trials,
            best=best,
        )

