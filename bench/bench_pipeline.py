"""Pipeline: Lambda package size, orchestration overhead, and peak memory of a trial and endpoint.

    python -m bench.bench_pipeline [--quick]

- Lambda package: the zip `dogops.lambda_package.build_package` makes, against the same handler
  packaged the common way, with boto3 vendored next to it (`pip install boto3 -t .`).
- Orchestration overhead: the `train_and_deploy` flow runs once on the local backend (tiny demo
  data, 2 trials of 2 epochs, one at a time) under Prefect (a temporary server, or PREFECT_API_URL
  when set; a warm-up flow starts it first so its start-up is not counted). Prefect's own time is
  counted for every run, the tuning trials' task runs included: for each task run, the caller's
  wall time of the task call (`Task.__call__`) minus the time inside the task's function (the
  engine's `call_with_parameters`), plus the flow's wall time minus its function's time. Work
  inside a task (a trial's training process, say) is never counted as Prefect's, and Prefect's
  bookkeeping around a trial is never counted as work. Overhead = that sum, as a percentage of the
  flow's wall time. Its peer is Prefect's floor: an empty flow calling 20 empty tasks gives the
  cost of a flow run (its wall time minus its function's) and of a task run (the median call);
  one flow run plus the flow's number of task runs at that price is what no code of ours can
  remove. The older figure (wall time minus the backend calls, data check and reports) is in the
  details.
- Memory: peak RSS of one tuning trial (`train.py` started by the training toolkit, measured by the
  kernel via wait4) against a process that only imports torch and torchvision; and of the flow's
  endpoint (server + worker, VmHWM after 30 requests) against a bare process that loads the same
  model and answers one request in-process.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE_DIR,
    BenchResult,
    Figure,
    demo_data,
    finish,
    labelled_test_images,
    median,
    parser,
    run_with_peak_rss,
    tree_peak_rss,
)

ENDPOINT = "bench-pipeline"
MB = 1e6

# --------------------------------------------------------------------------------------------
# Lambda package


def vendored_package_size() -> int:
    """Bytes of handler.py + boto3 and its dependencies zipped (deflate), cached per version."""
    import botocore

    from dogops.lambda_package import HANDLER_DIR

    cached = CACHE_DIR / f"vendored-lambda-{botocore.__version__}.json"
    if cached.exists():
        return int(json.loads(cached.read_text())["bytes"])
    site = Path(botocore.__file__).resolve().parents[1]
    packages = ["boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(HANDLER_DIR / "handler.py", "handler.py")
        for name in packages:
            top = site / name
            files = [top] if top.is_file() else sorted(top.rglob("*"))
            for path in files:
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.write(path, path.relative_to(site).as_posix())
    size = len(buffer.getvalue())
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"bytes": size}))
    return size


# --------------------------------------------------------------------------------------------
# Orchestration overhead


class WorkTimer:
    """Wraps functions so that the seconds spent inside them add up, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed

    def patch(self, owner: Any, names: list[str], prefix: str) -> None:
        for name in names:
            setattr(owner, name, self.wrap(getattr(owner, name), f"{prefix}{name}"))

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class PrefectTimer:
    """Prefect's own time: per task run, the call's wall time minus its function's; per flow run,
    the same. Nested runs (trials inside the tuning task) are each counted once, because a
    parent's function time includes the child's whole call. Patches Prefect's classes, so it
    covers every task, however it is called; thread-safe (trials run in the tuner's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: dict[str, list[float]] = {}
        self.bodies: dict[str, list[float]] = {}
        self.flow_body = 0.0

    def _add(self, into: dict[str, list[float]], name: str, seconds: float) -> None:
        with self._lock:
            into.setdefault(name, []).append(seconds)

    def install(self) -> None:
        import prefect.flow_engine
        import prefect.task_engine
        import prefect.tasks

        original_call = prefect.tasks.Task.__call__
        task_body = prefect.task_engine.call_with_parameters
        flow_body = prefect.flow_engine.call_with_parameters
        timer = self

        def timed_call(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original_call(self, *args, **kwargs)
            finally:
                timer._add(timer.calls, getattr(self.fn, "__name__", self.name),
                           time.perf_counter() - started)

        def timed_body(fn: Any, parameters: Any) -> Any:
            started = time.perf_counter()
            try:
                return task_body(fn, parameters)
            finally:
                timer._add(timer.bodies, getattr(fn, "__name__", "?"),
                           time.perf_counter() - started)

        def timed_flow_body(fn: Any, parameters: Any) -> Any:
            started = time.perf_counter()
            try:
                return flow_body(fn, parameters)
            finally:
                timer.flow_body += time.perf_counter() - started

        prefect.tasks.Task.__call__ = timed_call  # type: ignore[method-assign]
        prefect.task_engine.call_with_parameters = timed_body  # type: ignore[assignment]
        prefect.flow_engine.call_with_parameters = timed_flow_body  # type: ignore[assignment]

    def reset(self) -> None:
        with self._lock:
            self.calls, self.bodies, self.flow_body = {}, {}, 0.0

    def task_runs(self) -> int:
        return sum(len(v) for v in self.calls.values())

    def prefect_seconds(self, flow_wall: float) -> float:
        calls = sum(sum(v) for v in self.calls.values())
        bodies = sum(sum(v) for v in self.bodies.values())
        return (flow_wall - self.flow_body) + (calls - bodies)


def empty_task_floor(timer: PrefectTimer, n: int = 20) -> dict[str, float]:
    """Prefect's per-task floor: calls of a task that does nothing, inside a flow."""
    from prefect import flow, task

    @task(name="bench-empty")
    def empty() -> None:
        return None

    @flow(name="bench-empty-tasks")
    def empty_tasks() -> None:
        for _ in range(n):
            empty()

    timer.reset()
    started = time.perf_counter()
    empty_tasks()
    wall = time.perf_counter() - started
    calls = timer.calls.get("empty", [])
    return {"tasks": n, "flow_wall_seconds": wall, "per_task_median_seconds": median(calls),
            "per_task_mean_seconds": sum(calls) / max(1, len(calls)),
            "flow_only_seconds": wall - timer.flow_body}


def prefect_env() -> None:
    """A Prefect home under bench/.cache (its database is reused: later starts are faster)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(CACHE_DIR / "prefect-home"))


def task_run_seconds(flow_run_id: Any) -> float:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sum(r.total_run_time.total_seconds() for r in runs)


def run_flow(data_dir: Path, state_dir: Path, epochs: int) -> dict[str, Any]:
    prefect_env()
    from prefect import flow

    import tasks.data
    from dogops import reporting
    from dogops.local.backend import LocalBackend
    from dogops.settings import TrainingConfig, TuningConfig
    from flows.train_and_deploy import train_and_deploy

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    started = time.perf_counter()
    warm_up()
    server_start = time.perf_counter() - started
    prefect_timer = PrefectTimer()
    prefect_timer.install()
    empty_task_floor(prefect_timer)  # once to warm up the empty flow's registration
    floor = empty_task_floor(prefect_timer)
    prefect_timer.reset()

    timer = WorkTimer()
    timer.patch(LocalBackend, ["upload_data", "tune", "train_best", "deploy",
                               "register_autoscaling", "secure", "deploy_lambda",
                               "invoke_endpoint"], "backend.")
    timer.patch(tasks.data, ["inspect_dataset"], "")
    timer.patch(reporting, [n for n in ("trials_table", "best_hyperparameters_markdown",
                                        "metrics_markdown", "per_class_table", "plots_png",
                                        "png_markdown", "summary_markdown")
                            if hasattr(reporting, n)], "reporting.")
    started = time.perf_counter()
    state = train_and_deploy(
        data_dir=str(data_dir), backend="local", state_dir=str(state_dir),
        tuning=TuningConfig(max_jobs=2, max_parallel_jobs=1, epochs=epochs, batch_sizes=[8, 16]),
        training=TrainingConfig(epochs=epochs, image_size=64),
        endpoint={"name": ENDPOINT},  # type: ignore[arg-type]
        return_state=True,
    )
    wall = time.perf_counter() - started
    if not state.is_completed():
        raise RuntimeError(f"the flow did not complete: {state.message}")
    result = state.result()
    return {
        "wall_seconds": wall, "prefect_seconds": prefect_timer.prefect_seconds(wall),
        "task_runs": prefect_timer.task_runs(),
        "task_calls_by_name": {k: [round(x, 4) for x in v]
                               for k, v in prefect_timer.calls.items()},
        "task_bodies_by_name": {k: [round(x, 4) for x in v]
                                for k, v in prefect_timer.bodies.items()},
        "flow_body_seconds": prefect_timer.flow_body, "empty_task_floor": floor,
        "work_seconds": timer.total, "work_by_call": timer.seconds,
        # Prefect's own view; its total_run_time can count nested or concurrent runs twice.
        "task_run_seconds_prefect_api": task_run_seconds(state.state_details.flow_run_id),
        "server_start_seconds": server_start, "endpoint_url": result.endpoint.runtime_endpoint_url,
        "smoke_test": result.smoke_test,
    }


# --------------------------------------------------------------------------------------------
# Memory


def trial_peak_rss(data_dir: Path, cache: Path, out: Path) -> tuple[int, int]:
    """Peak RSS of one tuning trial, and of a process that only imports torch + torchvision."""
    from dogops.local.container import container_env, prepare_job, write_source_archive

    hps = {"learning_rate": 0.01, "batch_size": 8, "epochs": 2, "image_size": 64}
    prepare_job(out, data_dir, hps, write_source_archive(out))
    env = container_env(out, os.cpu_count() or 1, cache)
    # The training toolkit and train.py: wait4's peak covers the toolkit's waited-for child.
    code, trial, _, text = run_with_peak_rss(
        [sys.executable, "-m", "dogops.local.toolkit_train"], env=env, cwd=out)
    if code != 0:
        raise RuntimeError(f"trial failed ({code}): {text[-2000:]}")
    code, bare, _, text = run_with_peak_rss(
        [sys.executable, "-c", "import torch, torchvision"])
    if code != 0:
        raise RuntimeError(f"bare import failed: {text[-2000:]}")
    return trial, bare


def endpoint_peak_rss(state_dir: Path, url: str, model_dir: Path,
                      images: list[Path]) -> tuple[int, int, int]:
    """(sum over the server's process tree, its child count, a bare in-process model) peak RSS
    after 30 requests. The children are the model workers (and multiprocessing's resource
    tracker, when one runs)."""
    import boto3

    from dogops.local.endpoint import read_endpoint_record

    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    for i in range(30):
        client.invoke_endpoint(EndpointName=ENDPOINT, Body=images[i % len(images)].read_bytes(),
                               ContentType="image/jpeg")["Body"].read()
    record = read_endpoint_record(ENDPOINT, state_dir) or {}
    peaks = tree_peak_rss(int(record["pid"]))
    script = (
        "import sys; from pathlib import Path; from model_code import inference; "
        "m = inference.model_fn(sys.argv[1]); "
        "inference.handle(m, Path(sys.argv[2]).read_bytes(), 'image/jpeg', 'application/json')"
    )
    code, bare, _, text = run_with_peak_rss(
        [sys.executable, "-c", script, str(model_dir), str(images[0])],
        cwd=Path(__file__).resolve().parents[1])
    if code != 0:
        raise RuntimeError(f"bare model process failed: {text[-2000:]}")
    return sum(peaks.values()), len(peaks) - 1, bare


# --------------------------------------------------------------------------------------------


def run(epochs: int) -> BenchResult:
    from dogops.lambda_package import build_package
    from dogops.local.endpoint import read_endpoint_record, stop_endpoint

    package = build_package()
    vendored = vendored_package_size()
    data_dir = demo_data()
    images = [p for p, _ in labelled_test_images(data_dir)]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        state_dir = Path(tmp) / "state"
        try:
            flow = run_flow(data_dir, state_dir, epochs)
            record = read_endpoint_record(ENDPOINT, state_dir) or {}
            model_dir = Path(record["model_dir"])
            endpoint_rss, workers, bare_model_rss = endpoint_peak_rss(
                state_dir, str(flow["endpoint_url"]), model_dir, images)
        finally:
            stop_endpoint(ENDPOINT, state_dir)
        trial_rss, torch_rss = trial_peak_rss(data_dir, state_dir / "feature-cache",
                                              Path(tmp) / "trial")
    wall = flow["wall_seconds"]
    overhead = flow["prefect_seconds"]
    overhead_pct = 100.0 * overhead / wall
    floor = flow["empty_task_floor"]["per_task_median_seconds"]
    flow_floor = flow["empty_task_floor"]["flow_only_seconds"]
    floor_total = flow_floor + floor * flow["task_runs"]
    old_overhead = wall - flow["work_seconds"]
    figures = [
        Figure("Lambda package size", package.size_bytes, "bytes",
               "same handler with boto3 vendored", vendored, higher_is_better=False),
        Figure("orchestration overhead of train_and_deploy (goal: <= 5 %)", overhead_pct, "%",
               "Prefect's floor: an empty flow + task runs x an empty task",
               100.0 * floor_total / wall, higher_is_better=False,
               note=f"Prefect's own time, every task run counted (trials included): "
                    f"{overhead:.1f} s of {wall:.1f} s; floor {flow_floor:.1f} s per flow run "
                    f"+ {flow['task_runs']} x {floor * 1000:.0f} ms = {floor_total:.1f} s"),
        Figure("Prefect's per-task floor (empty task in a flow)", floor * 1000, "ms",
               higher_is_better=False),
        Figure("peak RSS, one tuning trial", trial_rss / MB, "MB",
               "process importing torch+torchvision only", torch_rss / MB,
               higher_is_better=False),
        Figure(f"peak RSS, endpoint (server + {workers} child processes)", endpoint_rss / MB, "MB",
               "bare process serving the model in-process", bare_model_rss / MB,
               higher_is_better=False),
    ]
    details = {"lambda": {"bytes": package.size_bytes, "sha256": package.sha256,
                          "vendored_boto3_bytes": vendored},
               "flow": flow, "overhead_seconds": overhead,
               "overhead_method": "sum over task runs of (call wall - function time) + flow "
                                  "(wall - function time)",
               "old_overhead_seconds_wall_minus_backend_work": old_overhead,
               "trial_peak_rss_bytes": trial_rss, "torch_import_peak_rss_bytes": torch_rss,
               "endpoint_peak_rss_bytes": endpoint_rss, "endpoint_workers": workers,
               "bare_model_peak_rss_bytes": bare_model_rss}
    return BenchResult("pipeline", figures, details)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    started = time.perf_counter()
    return finish(run(epochs=1 if args.quick else 2), args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
