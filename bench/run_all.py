"""Run every benchmark and print one table of figure vs peer vs ratio (`make bench`).

    python -m bench.run_all [--quick] [--only s3_sync,endpoint]

Each benchmark runs in its own process (so memory figures and environment settings of one do not
leak into the next) and writes bench/results/<name>.json; this script merges them, with the
machine's description (cores, CPU model, memory, load average before and after, versions), into
bench/results/<UTC time>-<host>.json and a copy bench/results/latest.json, and prints the table.
A benchmark that fails is reported and the others still run; the exit code is then 1. The
reference run the README quotes is committed as bench/results/reference-2core.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS_DIR, Figure, machine, table

# Module, result name. Cheapest first, so a quick look needs no patience.
BENCHES: tuple[tuple[str, str], ...] = (
    ("bench.bench_s3_sync", "s3_sync"),
    ("bench.bench_endpoint", "endpoint"),
    ("bench.bench_tuning", "tuning"),
    ("bench.bench_features", "features"),
    ("bench.bench_pipeline", "pipeline"),
    ("bench.bench_scale", "scale"),
)


def run_bench(module: str, name: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    out = RESULTS_DIR / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, "--out", str(out)] + (["--quick"] if quick else [])
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    try:
        code = subprocess.run(cmd, cwd=REPO, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        code = 124
    seconds = time.perf_counter() - started
    if code != 0 or not out.exists():
        return {"bench": name, "error": f"exit code {code}", "seconds": seconds, "figures": []}
    return dict(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="Smaller runs of every benchmark.")
    p.add_argument("--only", default="", help="Comma-separated names: s3_sync, endpoint, ...")
    p.add_argument("--timeout", type=float, default=600, help="Seconds allowed per benchmark.")
    p.add_argument("--out", type=Path, default=None,
                   help="Where to write the merged JSON (default bench/results/<time>-<host>"
                   ".json, copied to bench/results/latest.json).")
    args = p.parse_args(argv)
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    before = machine()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or RESULTS_DIR / f"{stamp}-{before['host'] or 'host'}.json"
    started = time.perf_counter()
    results = [run_bench(module, name, args.quick, args.timeout) for module, name in BENCHES
               if not wanted or name in wanted]
    rows = [(r["bench"], Figure.from_dict(f)) for r in results for f in r["figures"]]
    after = machine()
    document: dict[str, Any] = {
        "command": "python -m bench.run_all" + " ".join(
            [""] + (["--quick"] if args.quick else []) + ([f"--only {args.only}"] if wanted
                                                         else [])),
        "started_utc": stamp,
        "machine": {**after, "load_average_1_5_15_before": before["load_average_1_5_15"]},
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, default=str)
    out.write_text(text)
    if args.out is None:
        (RESULTS_DIR / "latest.json").write_text(text)
    print()
    print(table(rows))
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"FAILED: {r['bench']}: {r['error']}")
    print(f"wrote {out} ({document['seconds']:.0f} s; load average "
          f"{document['machine']['load_average_1_5_15']})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
