"""Data capture: what writing every request's capture costs the local endpoint's request path.

    python -m bench.bench_capture [--rounds 3] [--requests 200] [--clients 8] [--quick]

The tiny bench model (see bench_endpoint) is served with 1 worker, alternately with
`capture_percent=0` and `capture_percent=100` (the heaviest case: every image base64-encoded
and written), `--rounds` times each, so the machine's load falls on both arms alike. Each
round measures sequential p50 latency (one client) and requests/s with `--clients` concurrent
clients; the figures are the medians over rounds, capture on beside capture off. The captures
written are counted from the server's status, and must equal the requests answered. The work a
capture adds to the request path itself (`CaptureWriter.offer`: sample, enqueue) is timed
in-process beside the request's own latency; it does not depend on the machine's load as much.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_endpoint import NAME, _get, concurrent, sequential
from bench.common import (
    BenchResult,
    Figure,
    finish,
    labelled_test_images,
    median,
    parser,
    tiny_model,
)


def measure(model_dir: Path, images: list[bytes], percent: int, requests: int,
            clients: int, seq_requests: int) -> dict[str, Any]:
    from dogops.local.endpoint import start_endpoint, stop_endpoint
    from dogops.settings import ScalingConfig

    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        state = Path(tmp)
        options: dict[str, Any] = {"drain_seconds": 0.2}
        if percent:
            options |= {"capture_percent": percent, "capture_dir": str(state / "captures")}
        info = start_endpoint(NAME, model_dir, state,
                              ScalingConfig(min_capacity=1, max_capacity=1), options=options)
        url = str(info.runtime_endpoint_url)
        try:
            sequential(url, images, 20)  # warm-up
            seq = sequential(url, images, seq_requests)
            load = concurrent(url, images, requests, clients)
            status = settled_status(url, percent)
        finally:
            stop_endpoint(NAME, state)
    # Answered: what the server counted, less its errors (the clients may stop early on a
    # loaded machine, so their own counts are not used).
    answered = status["invocations"]["total"] - status["invocations"]["errors"]
    return {"percent": percent, "sequential_p50": median(seq), "rps": load["rps"],
            "p99": load["p99"], "answered": answered, "capture": status["capture"]}


def settled_status(url: str, percent: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """The server's status once its capture writer has nothing left queued."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = json.loads(_get(f"{url}/dogops/status"))
        capture = status["capture"]
        if not percent or capture["pending"] == 0 and capture["sampled"] == (
                capture["written"] + capture["dropped"] + capture["failed"]):
            return dict(status)
        if time.monotonic() > deadline:
            return dict(status)
        time.sleep(0.2)


def offer_seconds(images: list[bytes], count: int = 2000) -> float:
    """Median time of `CaptureWriter.offer`, the only capture work on the request path (the
    writer thread runs meanwhile, as in the server)."""
    from dogops.local.endpoint_server.capture import CaptureWriter

    answer = json.dumps({"label": "a", "probability": 0.5, "predictions": []}).encode()
    with tempfile.TemporaryDirectory(prefix="bench-capture-offer-") as tmp:
        writer = CaptureWriter(Path(tmp), NAME, 100, queue_size=count + 1)
        times = []
        for i in range(count):
            start = time.perf_counter()
            writer.offer(images[i % len(images)], "image/jpeg", answer, "application/json")
            times.append(time.perf_counter() - start)
        writer.close()
    return median(times)


def run(rounds: int, requests: int, clients: int, seq_requests: int) -> BenchResult:
    model_dir, data_dir = tiny_model()
    images = [p.read_bytes() for p, _ in labelled_test_images(data_dir)]
    off: list[dict[str, Any]] = []
    on: list[dict[str, Any]] = []
    for _ in range(rounds):
        off.append(measure(model_dir, images, 0, requests, clients, seq_requests))
        on.append(measure(model_dir, images, 100, requests, clients, seq_requests))
    ms = 1000.0
    offer_s = offer_seconds(images)

    def med(results: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in results])

    figures = [
        Figure("capture work on the request path (offer), per request", offer_s * ms, "ms",
               "p50 latency, 1 client, capture off", med(off, "sequential_p50") * ms,
               higher_is_better=False, note="in-process median of 2,000 offers"),
        Figure("p50 latency, 1 client, capture 100 %", med(on, "sequential_p50") * ms, "ms",
               "capture off", med(off, "sequential_p50") * ms, higher_is_better=False,
               note=f"median of {rounds} alternating rounds"),
        Figure(f"requests/s, {clients} clients, capture 100 %", med(on, "rps"), "req/s",
               "capture off", med(off, "rps")),
        Figure(f"p99 latency, {clients} clients, capture 100 %", med(on, "p99") * ms, "ms",
               "capture off", med(off, "p99") * ms, higher_is_better=False),
        Figure("captures written / requests answered (all rounds)",
               sum(r["capture"]["written"] for r in on), "captures", "answered",
               sum(r["answered"] for r in on)),
        Figure("captures dropped or failed (all rounds)",
               sum(r["capture"]["dropped"] + r["capture"]["failed"] for r in on), "captures",
               higher_is_better=False),
    ]
    return BenchResult("capture", figures, {"off": off, "on": on, "images": len(images)})


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=None, help="Requests per load run.")
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args(argv)
    started = time.perf_counter()
    result = run(args.rounds, args.requests or (60 if args.quick else 200), args.clients,
                 seq_requests=20 if args.quick else 60)
    return finish(result, args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
