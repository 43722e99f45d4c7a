"""Endpoint: latency and throughput of the local endpoint vs the same model in-process.

    python -m bench.bench_endpoint [--requests 800] [--clients 16] [--quick]

A tiny model (`python -m model_code.train` on the demo data, 64 px, cached in bench/.cache/) is
served by `dogops.local.endpoint.start_endpoint` with one worker, and called through an unmodified
boto3 `sagemaker-runtime` client. Both sides use the same torch thread count (`--worker-threads`,
default: the machine's cores), measured in the same run:

- one client, sequential requests: p50 latency against the bare predict in this process (decode +
  preprocess + forward + softmax of one image, `load_image_bytes` + `predict_fn`). Goal <= 1.15x.
- `--clients` concurrent clients (threads, one boto3 client each), with dynamic batching on
  (`--batch-size`, `--max-delay-ms`, the settings' defaults 16 and 5): requests/s against the
  forward pass's limit, batches of `--batch-size` preprocessed images (images/s). Goals: >= 0.8x,
  p99 <= 2x p50, nothing lost (every request sent answered 200).
- the same load with batching off (batch size 1), for the gain.

The clients run on the same cores as the server, which is a handicap for the endpoint.
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


def bare_model(model_dir: Path, images: list[bytes], repeats: int, threads: int,
               batch: int) -> dict[str, float]:
    """In-process peers with `threads` torch threads: median seconds of one bare predict (decode
    + preprocess + forward + softmax), and images/s of the forward pass on batches of `batch`."""
    import torch

    from model_code import inference

    torch.set_num_threads(threads)
    loaded = inference.model_fn(model_dir)

    def predict(i: int) -> None:
        image = inference.load_image_bytes(images[i % len(images)])
        inference.predict_fn(inference.ImageRequest(image, 5), loaded)

    tensors = [loaded.transform(inference.load_image_bytes(b)) for b in images]
    stacked = torch.stack([tensors[i % len(tensors)] for i in range(batch)])

    def forward(_: int) -> None:
        with torch.no_grad():
            loaded.module(stacked)

    result = {}
    for name, fn, count in (("predict", predict, repeats), ("batch_forward", forward,
                                                          max(10, repeats // 4))):
        for i in range(5):
            fn(i)
        times = []
        for i in range(count):
            start = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start)
        result[name] = median(times)
    result["batch_images_per_s"] = batch / result["batch_forward"]
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
                     clients: int, seq_requests: int, threads: int,
                     batching: dict[str, float]) -> dict[str, Any]:
    from dogops.local.endpoint import read_endpoint_record, start_endpoint, stop_endpoint
    from dogops.settings import ScalingConfig

    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
        state = Path(tmp)
        info = start_endpoint(
            NAME, model_dir, state, ScalingConfig(min_capacity=workers, max_capacity=workers),
            options={"drain_seconds": 0.2, **batching},
            env={"OMP_NUM_THREADS": str(threads)},
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
            status = json.loads(_get(f"{url}/dogops/status"))
        finally:
            stop_endpoint(NAME, state)
    return {"workers": workers, "batching": status.get("batching"),
            "sequential_p50": median(seq), "sequential_p99": percentile(seq, 99), "load": load,
            "peak_rss_bytes": sum(peaks.values()), "peak_rss_by_pid": peaks}


def _get(url: str) -> bytes:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return bytes(response.read())


def run(requests: int, clients: int, seq_requests: int, repeats: int, threads: int,
        batch_size: int, max_delay_ms: float) -> BenchResult:
    model_dir, data_dir = tiny_model()
    images = [p.read_bytes() for p, _ in labelled_test_images(data_dir)]
    batching = {"batch_size": batch_size, "max_batch_delay_ms": max_delay_ms}
    bare = bare_model(model_dir, images, repeats, threads, batch_size)
    on = measure_endpoint(model_dir, 1, images, requests, clients, seq_requests, threads,
                          batching)
    off = measure_endpoint(model_dir, 1, images, requests, clients, seq_requests, threads,
                           {"batch_size": 1, "max_batch_delay_ms": 0})
    bare_after = bare_model(model_dir, images, repeats, threads, batch_size)
    # The peers before and after the endpoint runs: the better of each, so that a busy moment
    # of the shared machine is not credited to the endpoint.
    predict = min(bare["predict"], bare_after["predict"])
    limit = max(bare["batch_images_per_s"], bare_after["batch_images_per_s"])
    ms = 1000.0
    load, load_off = on["load"], off["load"]
    lost = load["sent"] - load["ok"]
    figures = [
        Figure("p50 latency, 1 client (goal: <= 1.15x)", on["sequential_p50"] * ms, "ms",
               f"bare predict in-process, {threads} thread(s)", predict * ms,
               higher_is_better=False,
               note="decode + preprocess + forward + softmax; the endpoint adds HTTP, boto3, "
                    "the worker pipe, JSON"),
        Figure(f"requests/s, {clients} clients, batching on (goal: >= 0.8x)", load["rps"],
               "req/s", f"forward pass on batches of {batch_size}, {threads} thread(s)", limit,
               note=f"mean batch {on['batching'] and on['batching'].get('mean_batch')}"),
        Figure(f"p99 latency, {clients} clients (goal: <= 2x p50)", load["p99"] * ms, "ms",
               "p50 of the same run", load["p50"] * ms, higher_is_better=False),
        Figure(f"requests lost, {clients} clients (goal: 0)", lost, "requests",
               note=f"{load['ok']} of {load['sent']} sent answered 200 (errors "
                    f"{load['errors']}); {load['requests']} planned, sending stops after 40 s"),
        Figure(f"requests/s, {clients} clients, batching on vs off", load["rps"], "req/s",
               "batch size 1", load_off["rps"]),
        Figure(f"p99 latency, {clients} clients, batching off", load_off["p99"] * ms, "ms",
               "p50 of the same run", load_off["p50"] * ms, higher_is_better=False),
    ]
    details = {"bare_before": bare, "bare_after": bare_after, "batching_on": on,
               "batching_off": off, "torch_threads": threads, "workers": 1,
               "batching": batching, "model_dir": str(model_dir), "image_size": 64,
               "images": len(images)}
    return BenchResult("endpoint", figures, details)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=None, help="Requests per load run.")
    p.add_argument("--clients", type=int, default=16, help="Concurrent clients.")
    p.add_argument("--worker-threads", type=int, default=1,
                   help="Torch threads of the worker and of the in-process peers (default 1: "
                   "on a shared machine more threads than free cores stall every parallel "
                   "region; see the README).")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    args = p.parse_args(argv)
    requests = args.requests or (200 if args.quick else 800)
    started = time.perf_counter()
    result = run(requests, args.clients, seq_requests=30 if args.quick else 100,
                 repeats=30 if args.quick else 60, threads=args.worker_threads,
                 batch_size=args.batch_size, max_delay_ms=args.max_delay_ms)
    return finish(result, args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
