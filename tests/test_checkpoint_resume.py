"""train.py checkpoints after every epoch and resumes after the newest one (managed spot, killed
trials): a run killed after its 2nd epoch and started again with the same --checkpoint-dir ends
with the same model as an uninterrupted run with the same seed.

The kill is a real SIGKILL of the training process, sent by the process itself from inside
train.py (once epoch 2's metric line is out, or halfway through writing epoch 3's checkpoint): on
cached features an epoch takes milliseconds, so a kill sent from outside on seeing a log line
would land at an unpredictable epoch.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from model_code import checkpoint, metrics
from model_code.demo_data import generate_demo_dataset

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
EPOCHS = 6

# Runs train.main with two hooks: once epoch KILL_AFTER's metric line is printed, or while epoch
# KILL_DURING's checkpoint is half written, the process kills itself.
KILLER = """
import os, signal, sys, torch
from model_code import checkpoint, train
after = int(os.environ.get("KILL_AFTER", "0"))
during = int(os.environ.get("KILL_DURING", "0"))
real_save, real_torch_save, real_emit = checkpoint.save, torch.save, train.emit
def save(folder, state):
    if state["epoch"] == during:
        def half(obj, path):
            real_torch_save(obj, path)
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = half
    return real_save(folder, state)
def emit(line):
    real_emit(line)
    if after and line.startswith(f"Epoch: {after} "):
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save, train.emit = save, emit
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), classes=3, train_per_class=16,
                                 valid_per_class=5, test_per_class=5, image_size=64, seed=3)


def _train(root: Path, demo: Path, name: str, ckpt: Path | None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["--data-dir", str(demo), "--model-dir", str(root / name / "model"),
            "--feature-cache-dir", str(root / "cache"), "--epochs", str(EPOCHS), "--patience",
            str(EPOCHS), "--image-size", "64", "--batch-size", "8", "--learning-rate", "0.01",
            "--num-threads", "1", "--seed", "7"]
    if ckpt is not None:
        args += ["--checkpoint-dir", str(ckpt)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DOGOPS_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", KILLER, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


def _epochs(stdout: str) -> list[int]:
    return [int(v) for v in metrics.parse_metrics(stdout).get("epoch", [])]


def _head(model_dir: Path) -> dict[str, torch.Tensor]:
    state: dict[str, Any] = torch.load(model_dir / "model.pth", map_location="cpu")
    return {k: v for k, v in state.items() if k.startswith("head.")}


@pytest.fixture(scope="module")
def uninterrupted(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ckpt")
    proc = _train(root, demo, "whole", None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "proc": proc}


def _final_test_accuracy(stdout: str) -> float:
    return metrics.last_metrics(stdout)["test:accuracy"]


@pytest.mark.parametrize("kill", [{"KILL_AFTER": "2"}, {"KILL_DURING": "3"}],
                         ids=["killed-after-epoch-2", "killed-while-writing-epoch-3"])
def test_killed_run_resumes_and_ends_with_the_uninterrupted_model(
    demo: Path, uninterrupted: dict[str, Any], kill: dict[str, str]
) -> None:
    root = uninterrupted["root"]
    name = "-".join(kill).lower()
    ckpt = root / name / "checkpoints"

    killed = _train(root, demo, name, ckpt, kill)
    assert killed.returncode == -signal.SIGKILL
    assert _epochs(killed.stdout) == [1, 2]
    assert not (root / name / "model" / "model.pth").exists()
    assert (ckpt / checkpoint.FILE_NAME).is_file()

    resumed = _train(root, demo, name, ckpt)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[train] resumed from epoch 2 " in resumed.stdout
    assert _epochs(resumed.stdout) == list(range(3, EPOCHS + 1))  # only the remaining epochs

    whole = uninterrupted["proc"].stdout
    assert _epochs(whole) == list(range(1, EPOCHS + 1))
    assert _final_test_accuracy(resumed.stdout) == _final_test_accuracy(whole)
    got, want = _head(root / name / "model"), _head(root / "whole" / "model")
    assert got.keys() == want.keys() and got
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_finished_checkpoint_is_not_trained_again_and_other_settings_start_over(
    demo: Path, uninterrupted: dict[str, Any]
) -> None:
    root = uninterrupted["root"]
    ckpt = root / "again" / "checkpoints"
    first = _train(root, demo, "again", ckpt)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting at epoch 1 (no checkpoint in" in first.stdout
    again = _train(root, demo, "again", ckpt)
    assert f"resumed from epoch {EPOCHS} " in again.stdout and _epochs(again.stdout) == []
    assert _final_test_accuracy(again.stdout) == _final_test_accuracy(first.stdout)

    other = subprocess.run(
        [sys.executable, "-m", "model_code.train", "--data-dir", str(demo), "--model-dir",
         str(root / "other"), "--feature-cache-dir", str(root / "cache"), "--epochs", "1",
         "--image-size", "64", "--learning-rate", "0.05", "--checkpoint-dir", str(ckpt)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-3000:]
    assert re.search(r"starting at epoch 1 \(ignoring checkpoint .* other settings", other.stdout)


def test_default_checkpoint_dir(tmp_path: Path) -> None:
    assert checkpoint.default_dir({"DOGOPS_CHECKPOINT_DIR": str(tmp_path)}) == tmp_path
    expected = Path("/opt/ml/checkpoints") if Path("/opt/ml/checkpoints").is_dir() else None
    assert checkpoint.default_dir({}) == expected


def test_local_job_folder_keeps_its_checkpoints_so_a_stopped_job_resumes(
    demo: Path, tmp_path: Path
) -> None:
    """The local backend's job (the training toolkit in an /opt/ml-shaped folder) gets
    `checkpoints/`; a job stopped after epoch 2 and run again resumes instead of starting over."""
    from dogops.local.container import (
        CHECKPOINTS,
        container_env,
        prepare_job,
        run_training_job,
        write_source_archive,
    )

    job = tmp_path / "job"
    hps = {"epochs": EPOCHS, "patience": EPOCHS, "image_size": 64, "batch_size": 8,
           "learning_rate": 0.01, "num_threads": 1, "seed": 7}
    source = write_source_archive(tmp_path)
    env = container_env(job, 1, tmp_path / "cache")

    prepare_job(job, demo, hps, source)
    stopped = run_training_job(job, env, job / "train.log",
                               on_line=lambda line: line.startswith("Epoch: 2 "))
    assert stopped.stopped_early
    assert "starting at epoch 1 (no checkpoint in" in stopped.log_text
    # Under the job's name, as on SageMaker (TRAINING_JOB_NAME: tuning trials share one folder).
    assert (job / CHECKPOINTS / "job" / checkpoint.FILE_NAME).is_file()

    prepare_job(job, demo, hps, source)  # a re-run of the job keeps checkpoints/
    again = run_training_job(job, env, job / "train.log")
    assert again.succeeded, again.failure_reason()
    found = re.search(r"\[train\] resumed from epoch (\d+) ", again.log_text)
    assert found and int(found.group(1)) >= 2, again.log_text[-2000:]
    assert _epochs(again.log_text) == list(range(int(found.group(1)) + 1, EPOCHS + 1))


def test_trial_left_running_by_a_crashed_tuning_run_resumes_from_its_checkpoint(
    demo: Path, tmp_path: Path
) -> None:
    """The flow's process died while a trial ran (its journal says RUNNING, its folder has the
    checkpoint of epoch 2): the re-run tunes that trial's values again, from that checkpoint."""
    from dogops.hyperparameters import static_hyperparameters
    from dogops.local.container import (
        container_env,
        prepare_job,
        run_training_job,
        write_source_archive,
    )
    from dogops.local.tuner import LocalTuner, search_space, trial_name
    from dogops.settings import TrainingConfig, TuningConfig

    tuner = LocalTuner(
        job_name="crash-job", job_dir=tmp_path / "crash-job", data_dir=demo,
        tuning=TuningConfig(max_jobs=1, max_parallel_jobs=1, epochs=EPOCHS, batch_sizes=[8],
                            strategy="random", early_stopping=False),
        training=TrainingConfig(image_size=64, patience=EPOCHS),
        feature_cache_dir=tmp_path / "cache",
    )
    # What the crashed run left: a RUNNING trial, and its job stopped after epoch 2.
    study = tuner._study()
    crashed = study.ask(search_space(tuner.tuning))
    crashed_dir = tuner.job_dir / "trials" / trial_name(crashed.number, crashed.params)
    crashed.set_user_attr("trial_dir", str(crashed_dir))
    hps = {**crashed.params, **static_hyperparameters(tuner.tuning, tuner.training)}
    prepare_job(crashed_dir, demo, hps, write_source_archive(tuner.job_dir))
    stopped = run_training_job(crashed_dir, container_env(crashed_dir, 1, tmp_path / "cache"),
                               crashed_dir / "train.log",
                               on_line=lambda line: line.startswith("Epoch: 2 "))
    assert stopped.stopped_early

    lines: list[str] = []
    tuner.progress = lines.append
    result = tuner.run()
    again = [t for t in result.trials if t.state == "Completed"]
    assert len(again) == 1 and again[0].hyperparameters["learning_rate"] == pytest.approx(
        crashed.params["learning_rate"])
    assert any("resuming from the checkpoint of the crashed run's trial" in ln for ln in lines)
    log = (tuner.job_dir / "trials" / again[0].name / "train.log").read_text()
    found = re.search(r"\[train\] resumed from epoch (\d+) ", log)
    assert found and int(found.group(1)) >= 2, log[-2000:]
    assert _epochs(log) == list(range(int(found.group(1)) + 1, EPOCHS + 1))
