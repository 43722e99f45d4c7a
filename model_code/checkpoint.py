"""Per-epoch training checkpoints, so a stopped job (a reclaimed spot instance, a killed trial)
resumes after its last finished epoch instead of starting over.

SageMaker syncs `/opt/ml/checkpoints` (CheckpointConfig.LocalPath) with S3 while a managed spot
job runs and copies it back into the new instance after an interruption; the local backend gives
each job its own folder. Each job checkpoints in its own subfolder (`default_dir`), one file,
`checkpoint.pt`, rewritten after every epoch under a temporary
name and renamed: a kill mid-write leaves the previous epoch's checkpoint intact.

It holds what the next epoch depends on, so a resumed run ends with the same model as an
uninterrupted one with the same seed: head weights, optimizer state, the epoch, the best epoch so
far (its weights, loss, the patience counter, the history) and every RNG state the loop draws from.
A checkpoint written with other settings or data (its `fingerprint` differs) is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FILE_NAME = "checkpoint.pt"
SAGEMAKER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def default_dir(env: Any = None) -> Path | None:
    """DOGOPS_CHECKPOINT_DIR (the local backend's job folder), else SageMaker's
    /opt/ml/checkpoints when it exists (CheckpointConfig creates it), else none; inside it, the
    job's own folder named by TRAINING_JOB_NAME when that is set.

    All the trials of a SageMaker tuning job share one CheckpointConfig, so one S3 folder synced
    into every trial's /opt/ml/checkpoints: one file name there would have parallel trials
    overwrite each other. SageMaker sets TRAINING_JOB_NAME in the container (the training
    toolkit reads it too: sagemaker_training.params.TRAINING_JOB_ENV), a different name per
    trial, and a spot job restarted after an interruption keeps its name, so it finds its own
    checkpoint again."""
    env = os.environ if env is None else env
    if env.get("DOGOPS_CHECKPOINT_DIR"):
        base = Path(env["DOGOPS_CHECKPOINT_DIR"])
    elif Path(SAGEMAKER_CHECKPOINT_DIR).is_dir():
        base = Path(SAGEMAKER_CHECKPOINT_DIR)
    else:
        return None
    job = env.get("TRAINING_JOB_NAME") or ""
    # Job names are [a-zA-Z0-9-]; anything else (a path) is not used as a folder name.
    return base / job if _JOB_NAME.fullmatch(job) else base


def fingerprint(settings: dict[str, Any]) -> str:
    """A digest of what makes two runs the same run (hyperparameters that shape the training,
    class names, split sizes)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def rng_states(generator: torch.Generator) -> dict[str, Any]:
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    generator.set_state(states["generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(folder: Path, state: dict[str, Any]) -> Path:
    """Write `state` atomically as folder/checkpoint.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    tmp = folder / f".{FILE_NAME}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(folder: Path | None, expected_fingerprint: str) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint to resume from (or None) and a line saying why."""
    if folder is None:
        return None, "no checkpoint folder"
    path = folder / FILE_NAME
    if not path.is_file():
        return None, f"no checkpoint in {folder}"
    try:
        # Our own file (numpy RNG state needs full unpickling); never a user-supplied one.
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file means: start over
        return None, f"ignoring unreadable checkpoint {path}: {exc}"
    if state.get("fingerprint") != expected_fingerprint:
        return None, f"ignoring checkpoint {path}: written with other settings or data"
    return state, f"checkpoint of epoch {state['epoch']} in {folder}"


@dataclass
class Progress:
    """Where train.py's epoch loop stands: what a checkpoint saves and a resume restores."""
    epoch: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = float("inf")
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    stale: int = 0
    resumed_from: int = 0
