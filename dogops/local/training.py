"""Best-estimator training on the local backend, and SageMaker-style model.tar.gz packaging."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dogops.backends.base import ProgressFn
from dogops.errors import OperationFailedError, UserInputError
from dogops.local.container import (
    container_env,
    prepare_job,
    run_training_job,
    write_source_archive,
)
from dogops.local.data_source import local_path
from dogops.local.trial_progress import TrainingWatcher
from dogops.local.tuner import final_metrics
from dogops.results import TrainedModel, TrialResult, TuningResult

MODEL_ARCHIVE = "model.tar.gz"


def make_model_archive(model_dir: Path, archive: Path) -> str:
    """Pack `model_dir` like SageMaker's model.tar.gz, byte-for-byte reproducibly.

    Fixed mtimes, owners and order make the archive's sha256 a content version: the same model
    packed twice is the same version, so a re-run does not redeploy it.
    """
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(model_dir).as_posix()
            if "__pycache__" in rel:
                continue
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    data = buffer.getvalue()
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, archive)
    return hashlib.sha256(data).hexdigest()


def extract_model_archive(archive: Path, dest: Path) -> Path:
    """Unpack into `dest` (a fresh folder) with tarfile's safe `data` filter."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "metadata.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def trained_model_record(
    job_name: str, model_dir: Path, archive: Path, version: str,
    hyperparameters: dict[str, Any], reused: bool, training_seconds: float = 0.0,
) -> TrainedModel:
    return TrainedModel.from_metadata(
        read_metadata(model_dir),
        job_name=job_name,
        model_uri=archive.resolve().as_uri(),
        hyperparameters=hyperparameters,
        reused=reused,
        version=version[:16],
        training_seconds=training_seconds,
    )


def reusable_trial(tuning: TuningResult, epochs: int) -> TrialResult | None:
    """The best trial when it trained to completion on the final training's epoch budget."""
    best = tuning.best
    if best is None or best.model_uri is None:
        return None
    if int(best.hyperparameters.get("epochs", -1)) != epochs:
        return None
    return best


def _epoch_reporter(
    progress: ProgressFn | None, watcher: TrainingWatcher | None = None
) -> Callable[[str], bool] | None:
    """Forward the script's per-epoch lines as progress, and every line to `watcher` (feature
    extraction's progress); never ask to stop the job."""
    if progress is None and watcher is None:
        return None

    def on_line(line: str) -> bool:
        if watcher is not None:
            watcher.feed(line)
        if progress is not None and line.startswith("Epoch"):
            progress(line.strip())
        return False

    return on_line


def train_final(
    job_name: str,
    job_dir: Path,
    data_dir: Path,
    hyperparameters: dict[str, Any],
    feature_cache_dir: Path | None,
    progress: ProgressFn | None = None,
    timeout_s: float = 6 * 3600,
) -> TrainedModel:
    """Train once with `hyperparameters` into `job_dir`, or reuse a finished run there."""
    archive = job_dir / MODEL_ARCHIVE
    model_dir = job_dir / "model"
    if archive.exists() and (model_dir / "metadata.json").exists():
        version = hashlib.sha256(archive.read_bytes()).hexdigest()
        if progress:
            progress(f"training job {job_name} already finished: reusing {archive}")
        return trained_model_record(job_name, model_dir, archive, version, hyperparameters, True)
    if progress:
        progress(f"training job {job_name} started with {hyperparameters}")
    watcher = TrainingWatcher(job_name, int(hyperparameters.get("epochs", 0)) or None, progress)
    # The job folder is the training job's /opt/ml (SAGEMAKER_BASE_DIR): model/ is SM_MODEL_DIR.
    prepare_job(job_dir, data_dir, hyperparameters, write_source_archive(job_dir))
    outcome = run_training_job(
        job_dir,
        container_env(job_dir, os.cpu_count() or 1, feature_cache_dir),
        job_dir / "train.log",
        on_line=_epoch_reporter(progress, watcher),
        timeout_s=timeout_s,
    )
    watcher.close(outcome.succeeded)
    if not outcome.succeeded:
        reason = outcome.failure_reason()
        if outcome.user_error:
            raise UserInputError(f"training job {job_name}: {reason}")
        raise OperationFailedError(
            f"training job {job_name} failed: {reason} (log: {job_dir / 'train.log'})"
        )
    metrics = final_metrics(outcome.log_text)
    version = make_model_archive(model_dir, archive)
    if progress:
        progress(f"training job {job_name} finished in {outcome.seconds:.1f} s: {metrics}")
    return trained_model_record(
        job_name, model_dir, archive, version, hyperparameters, False, outcome.seconds
    )


def package_trial(
    trial: TrialResult, job_name: str, job_dir: Path, progress: ProgressFn | None = None
) -> TrainedModel:
    """Reuse a tuning trial's model as the final model: copy it and pack model.tar.gz."""
    assert trial.model_uri is not None
    source = local_path(trial.model_uri)
    model_dir = job_dir / "model"
    archive = job_dir / MODEL_ARCHIVE
    if not archive.exists():
        shutil.copytree(source, model_dir, dirs_exist_ok=True)
        version = make_model_archive(model_dir, archive)
        reused = False
    else:
        version = hashlib.sha256(archive.read_bytes()).hexdigest()
        reused = True
    if progress:
        progress(f"reusing trial {trial.name}'s model (trained on the same budget) as {job_name}")
    return trained_model_record(
        job_name, model_dir, archive, version, trial.hyperparameters, reused
    )
