"""What every benchmark shares: figures and their JSON, peers, a tiny model, memory probes.

Every benchmark compares a dogops figure with a peer doing the same work in the same run on the
same machine, and writes `bench/results/<name>.json` holding a list of `Figure`s plus details.
Everything runs on loopback; nothing is downloaded except the peer CLI (`awscli`, from the
package registry, into `.venv-peer/` on first use) because it pins a botocore of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
CACHE_DIR = REPO / "bench" / ".cache"
PEER_VENV = REPO / ".venv-peer"
PEER_REQUIREMENTS = REPO / "bench" / "requirements-peer.txt"

# Credentials for moto and the local endpoint, which check no signature.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Proxies never apply to our loopback peers.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------
# Figures and results


@dataclass
class Figure:
    """One measured figure next to its peer's; `ratio` is ours / peer's."""

    name: str
    value: float
    unit: str
    peer: str | None = None
    peer_value: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.peer_value in (None, 0):
            return None
        return self.value / self.peer_value  # type: ignore[operator]

    @property
    def verdict(self) -> str:
        """'better' / 'worse' / 'same' (within 5 %) than the peer, from our point of view."""
        ratio = self.ratio
        if ratio is None:
            return ""
        if abs(ratio - 1.0) <= 0.05:
            return "same"
        return "better" if (ratio > 1.0) == self.higher_is_better else "worse"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "verdict": self.verdict}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class BenchResult:
    bench: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "machine": machine(),
            "seconds": round(self.seconds, 2),
            "figures": [f.to_dict() for f in self.figures],
            "details": self.details,
        }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What a figure needs beside it to be read: the machine, its load, the key versions."""
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "boto3": _version("boto3"),
        "prefect": _version("prefect"),
        "platform": platform.platform(),
        # Other work on the machine skews every figure: a load above the core count means the
        # run shared its CPUs.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(result: BenchResult, out: Path | None = None) -> Path:
    path = out or RESULTS_DIR / f"{result.bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    os.replace(tmp, path)
    return path


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def table(rows: Sequence[tuple[str, Figure]]) -> str:
    """A markdown table: bench, figure, ours, peer, peer's value, ratio, verdict."""
    lines = [
        "| bench | figure | dogops | peer | peer value | ratio (ours/peer) | |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench, f in rows:
        ratio = f.ratio
        lines.append(
            f"| {bench} | {f.name} | {_fmt(f.value)} {f.unit} | {f.peer or '-'} | "
            f"{_fmt(f.peer_value)}{' ' + f.unit if f.peer_value is not None else ''} | "
            f"{'-' if ratio is None else _fmt_ratio(ratio)} | {f.verdict} |"
        )
    return "\n".join(lines)


def finish(result: BenchResult, out: Path | None, started: float) -> int:
    """Print the bench's table, write its JSON; the common tail of every bench's `main`."""
    result.seconds = time.perf_counter() - started
    path = write_result(result, out)
    print(table([(result.bench, f) for f in result.figures]))
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
          f"({result.seconds:.0f} s)")
    return 0


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="A smaller, faster run (smoke check).")
    p.add_argument("--out", type=Path, default=None, help="Where to write the JSON result.")
    return p


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation), as load-testing tools report it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# Processes and peers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in its own process on 127.0.0.1 (so it does not share our GIL)."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    log = (CACHE_DIR / "moto.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **FAKE_AWS_ENV})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not http_ok(f"{url}/moto-api/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def reset_moto(url: str) -> None:
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with _HTTP.open(request, timeout=30) as response:
        response.read()


def peer_aws_cli() -> Path:
    """The `aws` CLI from `.venv-peer/`, created on first use (awscli pins its own botocore)."""
    aws = PEER_VENV / "bin" / "aws"
    if aws.exists():
        return aws
    python = shutil.which("python3") or sys.executable
    print(f"creating {PEER_VENV.name}/ with awscli (once) ...", flush=True)
    subprocess.run([python, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "--quiet", "-r",
                    str(PEER_REQUIREMENTS)], check=True)
    if not aws.exists():
        raise RuntimeError(f"{aws} missing after installing {PEER_REQUIREMENTS}")
    return aws


def run_with_peak_rss(
    cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
    timeout_s: float = 600,
) -> tuple[int, int, float, str]:
    """Run `cmd`; return (exit code, its peak RSS in bytes, seconds, output).

    The peak comes from the kernel's own accounting (`wait4` rusage `ru_maxrss`, which Linux
    reports in KiB), so no sampling can miss it. Output goes to a temp file, not a pipe, so a
    chatty child never blocks.
    """
    out_path = CACHE_DIR / f"rss-{os.getpid()}-{time.monotonic_ns()}.log"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with out_path.open("w+b") as out:
        proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    out_path.unlink(missing_ok=True)
    return proc.returncode, int(usage.ru_maxrss) * 1024, time.perf_counter() - started, text


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_peak_rss(pid: int) -> dict[int, int]:
    """Peak RSS (VmHWM, bytes) of `pid` and each live descendant, by pid."""
    peaks: dict[int, int] = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            peaks[member] = _status_kib(member, "VmHWM") * 1024
    return peaks


# --------------------------------------------------------------------------------------------
# A tiny trained model, cached


TINY_DATA = {"classes": 3, "train_per_class": 12, "valid_per_class": 4, "test_per_class": 4,
             "image_size": 48, "seed": 1}


def _code_key(image_size: int) -> str:
    """Changes when the model code changes, so a stale cached model is retrained."""
    digest = hashlib.sha256(json.dumps(TINY_DATA, sort_keys=True).encode())
    digest.update(str(image_size).encode())
    for name in ("train.py", "net.py", "inference.py", "data.py", "features.py"):
        digest.update((REPO / "model_code" / name).read_bytes())
    return digest.hexdigest()[:12]


def demo_data(overrides: dict[str, int] | None = None) -> Path:
    """The tiny demo data set (3 classes, 60 images; `overrides` change its numbers), generated
    once into the cache."""
    from model_code.demo_data import generate_demo_dataset

    spec = {**TINY_DATA, **(overrides or {})}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    out = CACHE_DIR / f"demo-data-{key}"
    if not (out / "test").is_dir():
        generate_demo_dataset(out, **spec)
    return out


def tiny_model(image_size: int = 64) -> tuple[Path, Path]:
    """(model dir, data dir) of a tiny model trained by `python -m model_code.train`, cached
    under bench/.cache/ and retrained only when the model code changes."""
    data_dir = demo_data()
    model_dir = CACHE_DIR / f"tiny-model-{_code_key(image_size)}"
    if (model_dir / "metadata.json").is_file() and (model_dir / "code" / "inference.py").is_file():
        return model_dir, data_dir
    shutil.rmtree(model_dir, ignore_errors=True)
    print(f"training a tiny model into {model_dir.relative_to(REPO)} (once) ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "model_code.train", "--data-dir", str(data_dir),
         "--model-dir", str(model_dir), "--image-size", str(image_size), "--epochs", "3",
         "--batch-size", "8", "--learning-rate", "0.01", "--feature-cache-dir",
         str(CACHE_DIR / "feature-cache")],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )
    return model_dir, data_dir


def labelled_test_images(data_dir: Path) -> list[tuple[Path, str]]:
    """(image, class name) for every test image, sorted."""
    return [(p, p.parent.name) for p in sorted((data_dir / "test").rglob("*.jpg"))]
