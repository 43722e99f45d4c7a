"""Endpoint: latency and throughput of the local endpoint vs the bare model in-process.

    python -m bench.bench_endpoint [--requests 400] [--clients 8] [--quick]

A tiny model (`python -m model_code.train` on the demo data, 64 px, cached in bench/.cache/) is
served by `dogops.local.endpoint.start_endpoint` with 1 and then 2 workers (ScalingConfig
min = max), and called through an unmodified boto3 `sagemaker-runtime` client:

- one client, sequential requests: p50 latency, against the bare forward pass of the same image
  in this process (the overhead ratio), and against input_fn + predict_fn + output_fn in-process
  (what the HTTP hop, the worker pipe and boto3 add);
- `--clients` concurrent clients (threads, one boto3 client each): p50/p95/p99 latency and
  requests/s, at 1 and at 2 workers (the scaling ratio).

The clients run on the same 2 cores as the server, which is a handicap for the endpoint.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchResult,
    Figure,
    finish,
    labelled_test_images,
    median,
    parser,
    percentile,
    tiny_model,
    tree_peak_rss,
)

NAME = "bench-endpoint"


def runtime_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
        # One attempt: a 503 must show up as an error here, not be retried away.
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60,
                      max_pool_connections=64),
    )


def bare_model(model_dir: Path, images: list[bytes], repeats: int,
               threads: int | None) -> dict[str, float]:
    """Median seconds of the bare forward pass and of the serving functions, in-process, with
    the torch thread count an endpoint worker gets."""
    import io

    import torch
    from PIL import Image

    from model_code import inference

    if threads:
        torch.set_num_threads(threads)
    loaded = inference.model_fn(model_dir)
    tensors = [loaded.transform(Image.open(io.BytesIO(b)).convert("RGB")).unsqueeze(0)
               for b in images]

    def forward(i: int) -> None:
        with torch.no_grad():
            loaded.module(tensors[i % len(tensors)])

    def pipeline(i: int) -> None:
        inference.handle(loaded, images[i % len(images)], "image/jpeg", "application/json")

    result = {}
    for name, fn in (("forward", forward), ("pipeline", pipeline)):
        for i in range(5):
            fn(i)
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start)
        result[name] = median(times)
    return result


def sequential(url: str, images: list[bytes], requests: int,
               max_seconds: float = 20.0) -> list[float]:
    """Latencies of up to `requests` one-at-a-time requests, stopping after `max_seconds`."""
    client = runtime_client(url)
    times: list[float] = []
    deadline = time.monotonic() + max_seconds
    for i in range(requests):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        client.invoke_endpoint(EndpointName=NAME, Body=images[i % len(images)],
                               ContentType="image/jpeg")["Body"].read()
        times.append(time.perf_counter() - start)
    return times


def concurrent(url: str, images: list[bytes], requests: int, clients: int,
               max_seconds: float = 40.0) -> dict[str, Any]:
    """`requests` spread over `clients` threads; latencies of successes, and error counts.

    Bounded: clients stop starting new requests after `max_seconds` (on a loaded machine)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    per_client = [requests // clients + (1 if i < requests % clients else 0)
                  for i in range(clients)]
    ready = threading.Barrier(clients + 1)
    deadline = time.monotonic() + 3600.0  # set for real once every client is ready

    def worker(n: int, count: int) -> None:
        client = runtime_client(url)
        mine: list[float] = []
        ready.wait()
        for i in range(count):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                client.invoke_endpoint(EndpointName=NAME, Body=images[(n + i) % len(images)],
                                       ContentType="image/jpeg")["Body"].read()
                mine.append(time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                with lock:
                    errors[code] = errors.get(code, 0) + 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n, c)) for n, c in enumerate(per_client)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + max_seconds
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "requests": requests, "sent": len(latencies) + sum(errors.values()),
        "clients": clients, "seconds": wall,
        "ok": len(latencies), "errors": errors,
        "rps": len(latencies) / wall,
        "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
    }


def measure_endpoint(model_dir: Path, workers: int, images: list[bytes], requests: int,
                     clients: int, seq_requests: int, threads: int | None) -> dict[str, Any]:
    from dogops.local.endpoint import read_endpoint_record, start_endpoint, stop_endpoint
    from dogops.settings import ScalingConfig

    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
        state = Path(tmp)
        info = start_endpoint(
            NAME, model_dir, state, ScalingConfig(min_capacity=workers, max_capacity=workers),
            options={"drain_seconds": 0.2},
            env={"OMP_NUM_THREADS": str(threads)} if threads else None,
        )
        url = str(info.runtime_endpoint_url)
        try:
            # /ping answers once one worker is up; the others may still be loading the model.
            deadline = time.monotonic() + 120
            while (ready := json.loads(_get(f"{url}/dogops/status"))["workers"])["ready"] < workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"expected {workers} ready workers: {ready}")
                time.sleep(0.2)
            sequential(url, images, 20)  # warm-up: connections, first-call costs
            seq = sequential(url, images, seq_requests)
            load = concurrent(url, images, requests, clients)
            record = read_endpoint_record(NAME, state) or {}
            peaks = tree_peak_rss(int(record["pid"]))
        finally:
            stop_endpoint(NAME, state)
    return {"workers": workers, "sequential_p50": median(seq),
            "sequential_p99": percentile(seq, 99), "load": load,
            "peak_rss_bytes": sum(peaks.values()), "peak_rss_by_pid": peaks}


def _get(url: str) -> bytes:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return bytes(response.read())


def run(requests: int, clients: int, seq_requests: int, repeats: int,
        threads: int | None = None) -> BenchResult:
    model_dir, data_dir = tiny_model()
    images = [p.read_bytes() for p, _ in labelled_test_images(data_dir)]
    bare = bare_model(model_dir, images, repeats, threads)
    one = measure_endpoint(model_dir, 1, images, requests, clients, seq_requests, threads)
    two = measure_endpoint(model_dir, 2, images, requests, clients, seq_requests, threads)
    ms = 1000.0
    bare_name, pipe_name = "bare forward pass in-process", "serving functions in-process"
    load1, load2 = one["load"], two["load"]
    figures = [
        Figure("p50 latency, 1 client, 1 worker", one["sequential_p50"] * ms, "ms", bare_name,
               bare["forward"] * ms, higher_is_better=False,
               note="ratio = endpoint overhead over the bare model"),
        Figure("p50 latency, 1 client, 1 worker (vs serving code)", one["sequential_p50"] * ms,
               "ms", pipe_name, bare["pipeline"] * ms, higher_is_better=False,
               note="HTTP + worker pipe + boto3 on top of decode/resize/softmax/JSON"),
    ]
    for result in (one, two):
        w, load = result["workers"], result["load"]
        for pct in ("p50", "p95", "p99"):
            figures.append(Figure(f"{pct} latency, {clients} clients, {w} worker(s)",
                                  load[pct] * ms, "ms", higher_is_better=False))
    figures += [
        Figure(f"requests/s, {clients} clients, 1 worker", load1["rps"], "req/s",
               bare_name, 1.0 / bare["forward"],
               note="peer = 1 / bare forward time, one image at a time"),
        Figure(f"requests/s, {clients} clients, 2 workers", load2["rps"], "req/s",
               "same, 1 worker", load1["rps"], note="ratio = scaling from 1 to 2 workers"),
        Figure("errors under load (1 / 2 workers)",
               sum(load1["errors"].values()) + sum(load2["errors"].values()), "requests",
               higher_is_better=False),
    ]
    details = {"bare_seconds": bare, "one_worker": one, "two_workers": two,
               "torch_threads_per_worker": threads or "torch default (cores)",
               "model_dir": str(model_dir), "image_size": 64, "images": len(images)}
    return BenchResult("endpoint", figures, details)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=None, help="Requests per load run.")
    p.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    p.add_argument("--worker-threads", type=int, default=None,
                   help="OMP_NUM_THREADS for the workers (and the bare model); default: the "
                   "endpoint's own default (torch uses every core).")
    args = p.parse_args(argv)
    requests = args.requests or (100 if args.quick else 400)
    started = time.perf_counter()
    result = run(requests, args.clients, seq_requests=30 if args.quick else 100,
                 repeats=30 if args.quick else 60, threads=args.worker_threads)
    return finish(result, args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
