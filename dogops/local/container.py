"""Run `model_code/train.py` the way a SageMaker training container runs an entry point.

The script is started as `python train.py --name value ...` with `model_code/` as its working
directory and the `SM_*` variables set, so what passes here passes in the PyTorch container too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import model_code

MODEL_CODE_DIR = Path(next(iter(model_code.__path__))).resolve()
ENTRY_POINT = "train.py"
USER_ERROR_EXIT_CODE = 2


@dataclass
class ProcessOutcome:
    returncode: int
    log_text: str
    seconds: float
    stopped_early: bool

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.stopped_early

    def failure_reason(self) -> str:
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"training process killed by signal {name}"
        errors = [ln for ln in self.log_text.splitlines() if ln.startswith("ERROR")]
        tail = errors[-1] if errors else "\n".join(self.log_text.splitlines()[-5:])
        return f"training process exited with code {self.returncode}: {tail}"


def container_env(
    data_dir: Path,
    model_dir: Path,
    output_dir: Path,
    hyperparameters: Mapping[str, Any],
    num_threads: int,
    feature_cache_dir: Path | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SM_CHANNEL_TRAINING": str(data_dir),
            "SM_CHANNELS": json.dumps(["training"]),
            "SM_MODEL_DIR": str(model_dir),
            "SM_OUTPUT_DATA_DIR": str(output_dir),
            "SM_HPS": json.dumps(dict(hyperparameters)),
            "SM_CURRENT_HOST": "algo-1",
            "SM_HOSTS": json.dumps(["algo-1"]),
            "SM_NUM_CPUS": str(num_threads),
            "SM_NUM_GPUS": "0",
            "OMP_NUM_THREADS": str(num_threads),
            "MKL_NUM_THREADS": str(num_threads),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if feature_cache_dir is not None:
        env["DOGOPS_FEATURE_CACHE_DIR"] = str(feature_cache_dir)
    return env


def run_entry_point(
    args: list[str],
    env: Mapping[str, str],
    log_path: Path,
    on_line: Callable[[str], bool] | None = None,
    timeout_s: float | None = None,
) -> ProcessOutcome:
    """Run train.py, tee its output to `log_path`; `on_line` returning True stops it early."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines: list[str] = []
    stopped = timed_out = False
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, ENTRY_POINT, *args],
            cwd=MODEL_CODE_DIR,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                log.flush()
                if on_line is not None and on_line(line):
                    stopped = True
                    break
                if timeout_s is not None and time.perf_counter() - started > timeout_s:
                    lines.append(f"ERROR: stopped after the {timeout_s:.0f} s time limit\n")
                    timed_out = True
                    break
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
    return ProcessOutcome(
        returncode=124 if timed_out else (0 if stopped else proc.returncode),
        log_text="".join(lines),
        seconds=time.perf_counter() - started,
        stopped_early=stopped,
    )
