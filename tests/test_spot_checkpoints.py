"""Each training job's checkpoints are its own, also when jobs share one checkpoint folder.

A SageMaker tuning job has one CheckpointConfig for all its trials: one S3 folder, synced into
every trial's /opt/ml/checkpoints. train.py keeps its checkpoint under the job's name
(TRAINING_JOB_NAME, which SageMaker sets in the container and keeps when it restarts a spot job),
so parallel trials never overwrite each other and a restarted trial finds its own. No SageMaker
here: DOGOPS_CHECKPOINT_DIR (the local backend's stand-in for /opt/ml/checkpoints) plays the
shared, synced folder, and train.py runs for real. (Resume after a kill: test_checkpoint_resume.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_code import checkpoint
from model_code.demo_data import generate_demo_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("base", ["DOGOPS_CHECKPOINT_DIR", "/opt/ml/checkpoints"])
def test_the_default_folder_is_the_jobs_own(tmp_path: Path, base: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"DOGOPS_CHECKPOINT_DIR": str(tmp_path)} if base.startswith("DOGOPS") else {}
    if not env:  # SageMaker's folder, as CheckpointConfig creates it (not there on this machine)
        monkeypatch.setattr(checkpoint, "SAGEMAKER_CHECKPOINT_DIR", str(tmp_path))
    one = checkpoint.default_dir({**env, "TRAINING_JOB_NAME": "dogops-hpo-run1-ab12-001-5f2c"})
    two = checkpoint.default_dir({**env, "TRAINING_JOB_NAME": "dogops-hpo-run1-ab12-002-9e1d"})
    assert one == tmp_path / "dogops-hpo-run1-ab12-001-5f2c"
    assert two == tmp_path / "dogops-hpo-run1-ab12-002-9e1d"
    # Outside a job (no name) the folder itself; a name that is not a job name is not a path.
    assert checkpoint.default_dir(env) == tmp_path
    assert checkpoint.default_dir({**env, "TRAINING_JOB_NAME": "../elsewhere"}) == tmp_path


def test_the_local_job_sets_training_job_name_like_sagemaker(tmp_path: Path) -> None:
    from dogops.local.container import container_env

    env = container_env(tmp_path / "tune-003-lr0.0123-bs64", 1)
    assert env["TRAINING_JOB_NAME"] == "tune-003-lr0-0123-bs64"  # SageMaker's name alphabet


def _trial(demo: Path, root: Path, shared: Path, name: str, lr: str) -> str:
    """One trial as a tuning job runs it: no --checkpoint-dir, the shared folder, its name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DOGOPS_"))}
    env.update({"DOGOPS_CHECKPOINT_DIR": str(shared), "TRAINING_JOB_NAME": name})
    proc = subprocess.run(
        [sys.executable, "-m", "model_code.train", "--data-dir", str(demo), "--model-dir",
         str(root / name), "--feature-cache-dir", str(root / "cache"), "--epochs", "1",
         "--image-size", "64", "--batch-size", "8", "--learning-rate", lr, "--num-threads", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_parallel_trials_sharing_one_folder_keep_and_resume_their_own_checkpoints(
    tmp_path: Path
) -> None:
    demo = generate_demo_dataset(tmp_path / "demo", classes=2, train_per_class=6,
                                 valid_per_class=3, test_per_class=3, image_size=64, seed=3)
    shared = tmp_path / "checkpoints"  # the tuning job's one checkpoint folder
    _trial(demo, tmp_path, shared, "hpo-001-aaaa", "0.01")
    _trial(demo, tmp_path, shared, "hpo-002-bbbb", "0.05")

    files = {p.parent.name: p for p in shared.rglob(checkpoint.FILE_NAME)}
    assert sorted(files) == ["hpo-001-aaaa", "hpo-002-bbbb"]
    prints = {torch.load(p, map_location="cpu", weights_only=False)["fingerprint"]
              for p in files.values()}
    assert len(prints) == 2  # two runs' checkpoints, neither overwritten by the other

    # A spot restart of trial 1 (same name) resumes from its own checkpoint.
    again = _trial(demo, tmp_path, shared, "hpo-001-aaaa", "0.01")
    assert "[train] resumed from epoch 1 " in again
