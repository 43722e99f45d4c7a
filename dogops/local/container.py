"""Run `model_code/train.py` as a SageMaker PyTorch training container does: through
SageMaker's training toolkit (`sagemaker-training`), not through a contract written here.

Each job gets an `/opt/ml`-shaped folder, its `SAGEMAKER_BASE_DIR`:

    input/config/hyperparameters.json   every value a JSON-encoded string, as SageMaker writes
                                        it, incl. sagemaker_program / sagemaker_submit_directory
    input/config/inputdataconfig.json   the "training" channel
    input/config/resourceconfig.json    one host, algo-1
    input/data/training                 the synced data set (a link; SageMaker copies it)
    code/                               the toolkit unpacks sourcedir.tar.gz here
    model/, output/                     SM_MODEL_DIR; SM_OUTPUT_DATA_DIR and success / failure
    checkpoints/<job name>/             train.py's per-epoch checkpoint (/opt/ml/checkpoints and
                                        TRAINING_JOB_NAME, as on SageMaker), kept when the job
                                        runs again, so it resumes

`sourcedir.tar.gz` is the archive the aws backend uploads
(`dogops.aws.sagemaker_job.source_archive`).
`python -m dogops.local.toolkit_train` (the container's `train` command) then sets `SM_*`, starts
`train.py` with the hyperparameters as arguments and streams its output, which is read here for
metric lines and pruning.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import model_code
from dogops.aws.naming import sanitize
from dogops.aws.sagemaker_job import CHANNEL, ENTRY_POINT, source_archive
from dogops.hyperparameters import hp_value
from dogops.local.store import write_atomic

MODEL_CODE_DIR = Path(next(iter(model_code.__path__))).resolve()
SOURCE_ARCHIVE = "sourcedir.tar.gz"
CHECKPOINTS = "checkpoints"
HOST = "algo-1"
# train.py exits 2 for the user's mistakes; the toolkit reports it as "ExitCode 2" in
# output/failure (and exits 1 itself, like the container).
USER_ERROR_EXIT_CODE = 2


@dataclass
class ProcessOutcome:
    returncode: int
    log_text: str
    seconds: float
    stopped_early: bool
    failure: str = ""
    """The toolkit's output/failure file: what SageMaker shows as the job's FailureReason."""

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.stopped_early

    @property
    def script_exit_code(self) -> int:
        """train.py's own exit code, from the toolkit's failure report (else the process's)."""
        found = re.search(r"^ExitCode (-?\d+)$", self.failure, re.MULTILINE)
        return int(found.group(1)) if found else self.returncode

    @property
    def user_error(self) -> bool:
        return self.script_exit_code == USER_ERROR_EXIT_CODE

    def failure_reason(self) -> str:
        code = self.script_exit_code
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"training process killed by signal {name}"
        errors = [ln for ln in self.log_text.splitlines() if ln.startswith("ERROR")]
        tail = errors[-1] if errors else (
            self.failure.strip().splitlines()[0] if self.failure.strip()
            else "\n".join(self.log_text.splitlines()[-5:])
        )
        return f"training process exited with code {code}: {tail}"


def write_source_archive(folder: Path) -> Path:
    """`folder/sourcedir.tar.gz` of model_code, rewritten only when the code changed."""
    data, _ = source_archive(MODEL_CODE_DIR)
    path = folder / SOURCE_ARCHIVE
    if not path.exists() or path.read_bytes() != data:
        write_atomic(path, data)
    return path


def sagemaker_hyperparameters(
    hyperparameters: Mapping[str, Any], source: Path
) -> dict[str, str]:
    """hyperparameters.json as SageMaker writes it: string values, plus the framework keys."""
    values = {
        **hyperparameters,
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": str(source),
        "sagemaker_container_log_level": 20,
    }
    return {name: hp_value(value) for name, value in values.items()}


def prepare_job(
    base_dir: Path, data_dir: Path, hyperparameters: Mapping[str, Any], source: Path
) -> None:
    """Lay out the job's /opt/ml folder; a re-run starts from fresh code, model and output."""
    config = base_dir / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    files = {
        "hyperparameters.json": sagemaker_hyperparameters(hyperparameters, source),
        "inputdataconfig.json": {
            CHANNEL: {"ContentType": "application/x-image", "TrainingInputMode": "File",
                      "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        },
        "resourceconfig.json": {
            "current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0",
            "current_instance_type": "local", "current_group_name": "homogeneousCluster",
            "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                 "instance_type": "local", "hosts": [HOST]}],
        },
    }
    for name, document in files.items():
        write_atomic(config / name, json.dumps(document, indent=1).encode())
    channel = base_dir / "input" / "data" / CHANNEL
    channel.parent.mkdir(parents=True, exist_ok=True)
    if channel.is_symlink() or channel.exists():
        channel.unlink()
    channel.symlink_to(Path(data_dir).resolve(), target_is_directory=True)
    for stale in ("code", "output"):
        shutil.rmtree(base_dir / stale, ignore_errors=True)
    # SageMaker provides these; the toolkit writes output/failure without creating the folder
    # (and, when it cannot, exits 0: a failed job would pass for a finished one).
    (base_dir / "output" / "data").mkdir(parents=True)
    (base_dir / "model").mkdir(exist_ok=True)


def job_name(base_dir: Path) -> str:
    """The job's TRAINING_JOB_NAME: its folder's name in SageMaker's name alphabet (letters,
    digits, hyphens; at most 63)."""
    return sanitize(base_dir.resolve().name)[:63].rstrip("-") or "job"


def adopt_checkpoints(old_job: Path, new_job: Path) -> bool:
    """Give `new_job` the checkpoints of `old_job` (the same trial re-run after a crash under a
    new number) unless it has its own; True when copied. train.py resumes from them only when
    their fingerprint matches (same hyperparameters and data). Each job keeps them under its
    own name (`checkpoint.default_dir`), so the old job's folder becomes the new job's."""
    source = old_job / CHECKPOINTS / job_name(old_job)
    target = new_job / CHECKPOINTS / job_name(new_job)
    if not source.is_dir() or target.exists() or source.resolve() == target.resolve():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)
    return True


def container_env(
    base_dir: Path, num_threads: int, feature_cache_dir: Path | None = None
) -> dict[str, str]:
    """What the training container's process starts with; the toolkit adds the SM_* variables.
    Inherited SM_* / SAGEMAKER_* are dropped: the toolkit reads some of them (SAGEMAKER_PROGRAM
    overrides sagemaker_program), and a container starts without them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        {
            "SAGEMAKER_BASE_DIR": str(base_dir.resolve()),
            # One local "host": skips the toolkit's wait for algo-1 to resolve in DNS.
            "SM_STUDIO_LOCAL_MODE": "true",
            "OMP_NUM_THREADS": str(num_threads),
            "MKL_NUM_THREADS": str(num_threads),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The job's checkpoint folder (SageMaker's /opt/ml/checkpoints): kept across re-runs of the
    # job, so a killed trial resumes after its last finished epoch (train.py, checkpoint.py).
    env["DOGOPS_CHECKPOINT_DIR"] = str((base_dir / CHECKPOINTS).resolve())
    # What SageMaker sets in every training container; train.py checkpoints under it.
    env["TRAINING_JOB_NAME"] = job_name(base_dir)
    if feature_cache_dir is not None:
        env["DOGOPS_FEATURE_CACHE_DIR"] = str(feature_cache_dir)
    return env


def run_training_job(
    base_dir: Path,
    env: Mapping[str, str],
    log_path: Path,
    on_line: Callable[[str], bool] | None = None,
    timeout_s: float | None = None,
) -> ProcessOutcome:
    """Run the toolkit on `base_dir`, tee its output to `log_path`; `on_line` returning True
    stops the job early (the toolkit and train.py: one process group)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines: list[str] = []
    stopped = timed_out = False
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dogops.local.toolkit_train"],
            cwd=base_dir,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
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
            _stop_group(proc)
    failure_file = base_dir / "output" / "failure"
    return ProcessOutcome(
        returncode=124 if timed_out else (0 if stopped else proc.returncode),
        log_text="".join(lines),
        seconds=time.perf_counter() - started,
        stopped_early=stopped,
        failure=failure_file.read_text(errors="replace") if failure_file.exists() else "",
    )


def _stop_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    # train.py may outlive a toolkit that exited on its own signal: end the group either way.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
