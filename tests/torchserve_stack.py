"""The real SageMaker PyTorch serving stack on this machine: TorchServe 0.12 with
`sagemaker-inference` 1.10.1 and `sagemaker-pytorch-inference` 2.0.25, serving a model folder the
way the PyTorch inference container does.

What the container does (`sagemaker_pytorch_serving_container/torchserve.py`,
`start_torchserve`), and what is done here:
- its properties file is written by the toolkit's own `_generate_ts_config_properties` (run in a
  child process with the container's environment), so `default_service_handler`,
  `decode_input_request=false`, the timeout, the workers and the inference/management address
  (one port, SAGEMAKER_BIND_TO_PORT) are the container's; only the bind address changes
  (127.0.0.1, not 0.0.0.0) and the ports TorchServe would open by default (metrics 8082,
  gRPC 7070/7071) are moved to free ones, so parallel test runs do not collide;
- `torchserve --start --model-store S --ts-config CFG --log-config <toolkit's log4j2.xml>
  --models model=MODEL_DIR`, with `--foreground` so the process can be stopped by its group;
- PYTHONPATH puts the model's `code/` first, as `_set_python_path` does.

The packages come from PyPI with `pip install --target` into a git-ignored cache folder, reused
while its stamp names the same versions. TMPDIR is private to each start because TorchServe keeps
its pid file in the temp dir and refuses to start while another TorchServe's is there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = (
    "torchserve==0.12.0",
    "sagemaker-inference==1.10.1",
    "sagemaker-pytorch-inference==2.0.25",
    "retrying==1.3.4",  # sagemaker-inference 1.10.1 wants >=1.3.3,<1.4
    "six==1.17.0",
    "setuptools==75.8.0",  # pkg_resources, which the toolkit's torchserve.py imports
)
CACHE = REPO / ".cache" / "torchserve-0.12.0"
START_TIMEOUT_S = 180.0


def java_missing_reason() -> str | None:
    """Why TorchServe cannot run here, or None: its 0.12 frontend needs Java 17 on PATH."""
    java = shutil.which("java")
    if java is None:
        return "TorchServe needs Java 17 (no `java` on PATH)"
    version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    first = (version.stderr or version.stdout).splitlines()[:1]
    digits = first[0].split('"')[1].split(".")[0] if first and '"' in first[0] else "0"
    if not digits.isdigit() or int(digits) < 17:
        return f"TorchServe needs Java 17, found {first}"
    return None


def install(target: Path = CACHE) -> Path:
    """`pip install --target` the stack once; later runs reuse the folder."""
    stamp = target / ".installed"
    wanted = "\n".join(PACKAGES)
    if stamp.is_file() and stamp.read_text() == wanted:
        return target
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "--no-deps", "--target", str(partial),
                           *PACKAGES], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"pip install {' '.join(PACKAGES)}:\n{done.stderr[-3000:]}"
    (partial / ".installed").write_text(wanted)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # whole or not at all: an interrupted install is never reused
    return target


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_properties(packages: Path, env: dict[str, str]) -> str:
    """The properties file the container's toolkit writes for `env`.

    As in the container, the toolkit's default-ts.properties has no final newline, so its last
    line and the first setting it appends run together (`enable_model_api=truedefault_response_
    timeout=60`): TorchServe sees neither, the model API is off and, unless SAGEMAKER_TS_* are
    set, the response timeout is TorchServe's 120 s, not SAGEMAKER_MODEL_SERVER_TIMEOUT. Kept
    as is: this is what serves the model on aws."""
    script = ("from sagemaker_pytorch_serving_container import torchserve as t\n"
              "print(t._generate_ts_config_properties(t.DEFAULT_HANDLER_SERVICE), end='')\n")
    done = subprocess.run([sys.executable, "-c", script], env={**env, "PYTHONPATH": str(packages)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@dataclass
class TorchServe:
    url: str  # inference (and management) address, as in the container
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _ready(url: str) -> bool:
    """/ping answers and the model's worker is READY (ping alone is healthy before it is)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
    try:
        with opener.open(f"{url}/ping", timeout=5) as response:
            if response.status != 200:
                return False
        with opener.open(f"{url}/models/model", timeout=5) as response:
            described = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False
    workers = [w for model in described for w in model.get("workers", [])]
    return bool(workers) and all(w.get("status") == "READY" for w in workers)


@contextmanager
def torchserve(model_dir: Path, workdir: Path, env: dict[str, str]) -> Iterator[TorchServe]:
    """TorchServe serving `model_dir` as the container would, with `env` as the container's
    environment (what the aws backend sends in CreateModel's `Environment`)."""
    packages = install()
    port = _free_port()
    tmp = workdir / "tmp"
    store = workdir / "model-store"
    for folder in (tmp, store):
        folder.mkdir(parents=True, exist_ok=True)
    code_dir = model_dir / "code"
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("SAGEMAKER_", "SM_", "TS_", "DOGOPS_"))}
    full_env = {**base, **env, "SAGEMAKER_BIND_TO_PORT": str(port), "TMPDIR": str(tmp),
                "LOG_LOCATION": str(workdir / "logs"), "METRICS_LOCATION": str(workdir / "logs"),
                "PYTHONPATH": f"{code_dir}:{packages}"}
    properties = container_properties(packages, full_env).replace("0.0.0.0", "127.0.0.1")
    properties += (f"metrics_address=http://127.0.0.1:{_free_port()}\n"
                   f"grpc_inference_port={_free_port()}\n"
                   f"grpc_management_port={_free_port()}\n")
    config = workdir / "config.properties"
    config.write_text(properties)
    log_config = packages / "sagemaker_pytorch_serving_container" / "etc" / "log4j2.xml"
    log = workdir / "torchserve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ts.model_server", "--start", "--foreground",
             "--model-store", str(store), "--ts-config", str(config), "--log-config",
             str(log_config), "--models", f"model={model_dir}", "--disable-token-auth"],
            cwd=workdir, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own group: Java and its Python workers stop together
    server = TorchServe(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(server.url):
            assert process.poll() is None, f"TorchServe exited:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"TorchServe not ready:\n{server.log_tail()}"
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group this module started, then SIGKILL to what is left of it."""
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The launcher has gone; its Java child may still be stopping in the same group.
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
