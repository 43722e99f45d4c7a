"""Tuning: random search with early stopping (optuna MedianPruner) vs the same search without it.

    python -m bench.bench_tuning [--trials 5] [--epochs 4] [--quick]

Both arms run `dogops.local.tuner.LocalTuner` (real `train.py` subprocesses) on the same demo data
with the same seed and the random sampler, one trial at a time, so both draw the same
hyperparameters in the same order; the only difference is `early_stopping`. Trials train with
per-epoch augmentation (`augment`), so an epoch costs a full forward/backward pass, as it does on
the real data set, and the feature cache is warmed before either arm runs. The figure is the time
(sum of trial seconds) each arm needs to reach the best validation loss both arms reach, and their
ratio; each arm's best-loss-over-trial-seconds timeline is in the JSON details. A trial that ran
the same work in both arms is charged the mean of its two timings (raw timings are in the
details too), so that a busy moment of the machine is not credited to early stopping. Trial
seconds include each trial's process start (importing torch), which early stopping cannot save;
the epochs each arm trained are reported as a timing-free figure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchResult, Figure, demo_data, finish, parser

DATA = {"classes": 5, "train_per_class": 16, "valid_per_class": 6, "test_per_class": 4,
        "image_size": 48, "seed": 3}
IMAGE_SIZE = 64


def ordered(result: Any) -> list[Any]:
    return sorted(result.trials, key=lambda t: t.name)  # names start with the trial number


def paired_seconds(plain: Any, pruned: Any) -> tuple[list[float], list[float]]:
    """Each trial's seconds in both arms, with a trial that ran the same work in both (same
    hyperparameters, completed, same epochs) charged the mean of its two timings: on a shared
    machine, identical work can differ by 2x, and that noise is not early stopping's doing."""
    a_seconds, b_seconds = [], []
    for a, b in zip(ordered(plain), ordered(pruned), strict=True):
        same = (a.hyperparameters == b.hyperparameters and a.state == b.state == "Completed"
                and a.epochs_run == b.epochs_run)
        mean = (a.seconds + b.seconds) / 2
        a_seconds.append(mean if same else a.seconds)
        b_seconds.append(mean if same else b.seconds)
    return a_seconds, b_seconds


def timeline(result: Any, seconds: list[float]) -> list[tuple[float, float | None, str]]:
    """(cumulative trial seconds, best objective so far, state) after each trial, in order."""
    points: list[tuple[float, float | None, str]] = []
    elapsed, best = 0.0, None
    for trial, spent in zip(ordered(result), seconds, strict=True):
        elapsed += spent
        if trial.state == "Completed" and trial.objective is not None:
            best = trial.objective if best is None else min(best, trial.objective)
        points.append((elapsed, best, trial.state))
    return points


def time_to_reach(points: list[tuple[float, float | None, str]], target: float) -> float | None:
    for elapsed, best, _ in points:
        if best is not None and best <= target + 1e-12:
            return elapsed
    return None


def warm_feature_cache(data_dir: Path, cache: Path, epochs: int) -> None:
    """One untimed training run, so that both arms find valid/test features cached."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "model_code.train", "--data-dir", str(data_dir),
             "--model-dir", tmp, "--image-size", str(IMAGE_SIZE), "--epochs", "1",
             "--augment", "true", "--feature-cache-dir", str(cache)],
            cwd=REPO, check=True, stdout=subprocess.DEVNULL,
        )


def run_arm(root: Path, data_dir: Path, cache: Path, early_stopping: bool, trials: int,
            epochs: int) -> Any:
    from dogops.local.tuner import LocalTuner
    from dogops.settings import TrainingConfig, TuningConfig

    tuning = TuningConfig(
        strategy="random", early_stopping=early_stopping, max_jobs=trials, max_parallel_jobs=1,
        epochs=epochs, seed=11, batch_sizes=[8, 16, 32], learning_rate_min=0.0005,
        learning_rate_max=0.1,
    )
    # patience = epochs: the trial's own early stopping never fires, only the pruner's does.
    training = TrainingConfig(image_size=IMAGE_SIZE, epochs=epochs, patience=epochs,
                              augment=True, seed=5)
    name = "pruned" if early_stopping else "plain"
    tuner = LocalTuner(job_name=f"bench-{name}", job_dir=root / name, data_dir=data_dir,
                       tuning=tuning, training=training, feature_cache_dir=cache)
    started = time.perf_counter()
    result = tuner.run()
    result_wall = time.perf_counter() - started
    return result, result_wall


def run(trials: int, epochs: int) -> BenchResult:
    data_dir = demo_data(DATA)
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        root = Path(tmp)
        cache = root / "feature-cache"
        warm_feature_cache(data_dir, cache, epochs)
        plain, plain_wall = run_arm(root, data_dir, cache, False, trials, epochs)
        pruned, pruned_wall = run_arm(root, data_dir, cache, True, trials, epochs)
        shutil.rmtree(root, ignore_errors=True)
    same_params = [t.hyperparameters for t in plain.trials] == [
        t.hyperparameters for t in pruned.trials]
    s_plain, s_pruned = paired_seconds(plain, pruned)
    p_plain, p_pruned = timeline(plain, s_plain), timeline(pruned, s_pruned)
    raw_plain = timeline(plain, [t.seconds for t in ordered(plain)])
    raw_pruned = timeline(pruned, [t.seconds for t in ordered(pruned)])
    best_plain, best_pruned = p_plain[-1][1], p_pruned[-1][1]
    if best_plain is None or best_pruned is None:
        raise RuntimeError("an arm completed no trial: see the trial failure reasons")
    target = max(best_plain, best_pruned)  # the best loss both arms reach
    t_plain, t_pruned = time_to_reach(p_plain, target), time_to_reach(p_pruned, target)
    assert t_plain is not None and t_pruned is not None
    total_plain, total_pruned = p_plain[-1][0], p_pruned[-1][0]
    epochs_plain = sum(t.epochs_run for t in plain.trials)
    epochs_pruned = sum(t.epochs_run for t in pruned.trials)

    def rows(result: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "state": t.state, "objective": t.objective,
                 "seconds": t.seconds, "epochs_run": t.epochs_run} for t in result.trials]

    peer = "random search, no early stopping"
    figures = [
        Figure("trial-seconds to reach the same validation loss", t_pruned, "s", peer, t_plain,
               higher_is_better=False,
               note=f"target loss {target:.4f}; paired timings (see paired_seconds)"),
        Figure("total trial-seconds for the budget", total_pruned, "s", peer, total_plain,
               higher_is_better=False, note=f"{trials} trials x up to {epochs} epochs"),
        Figure("epochs trained for the budget", epochs_pruned, "epochs", peer, epochs_plain,
               higher_is_better=False,
               note="deterministic: free of the timing noise of a shared machine"),
        Figure("best validation loss", best_pruned, "loss", peer, best_plain,
               higher_is_better=False),
        Figure("trials stopped early", sum(t.state == "Stopped" for t in pruned.trials),
               "trials", peer, 0),
    ]
    details = {
        "target_loss": target, "same_hyperparameters_in_both_arms": same_params,
        "plain": {"wall_seconds": plain_wall, "trials": rows(plain), "timeline": p_plain,
                  "raw_timeline": raw_plain},
        "pruned": {"wall_seconds": pruned_wall, "trials": rows(pruned), "timeline": p_pruned,
                   "raw_timeline": raw_pruned},
        "raw_seconds_to_target": {"plain": time_to_reach(raw_plain, target),
                                  "pruned": time_to_reach(raw_pruned, target)},
        "speedup_to_same_loss": t_plain / t_pruned if t_pruned else None,
        "data": DATA, "image_size": IMAGE_SIZE,
    }
    return BenchResult("tuning", figures, details)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=None, help="Trial budget per arm (default 5).")
    p.add_argument("--epochs", type=int, default=None, help="Epochs per trial (default 4).")
    args = p.parse_args(argv)
    trials = args.trials or (3 if args.quick else 5)
    epochs = args.epochs or (3 if args.quick else 4)
    started = time.perf_counter()
    return finish(run(trials, epochs), args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
