"""How the training step's cost grows with the data: time per stage and peak memory at three sizes.

    python -m bench.bench_scale [--sizes 1000,4000,8000] [--image-size 32] [--threads N] [--quick]

For each size, a generated data set of that many training images (133 classes, like the dog
set) goes through `train.py`'s stages in two fresh processes, as the local tuner runs them: the
first trial (scan the folder, extract backbone features into the memory-mapped cache, train the
head) and a later trial (scan, read the cache, train the head). Each stage's seconds and the
process's peak RSS (the kernel's `ru_maxrss`) are recorded, with the cache's size on disk, and a
straight line through the three sizes predicts the full dog set (8,246 images) and 100,000
images. The peer is the smallest size: the figure is the growth factor against the growth of
the data. Extraction time depends on the model's input size (`--image-size`; the bench uses a
small one to fit a shared 2-core machine): the 224 px rate comes from `bench_features`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE_DIR, REPO, BenchResult, Figure, finish, parser, run_with_peak_rss

CLASSES = 133
EPOCHS = 3
PREDICT = (8246, 100_000)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(data_dir: Path, cache: Path, image_size: int) -> dict[str, Any]:
    """One trial's stages in this process; prints and returns seconds and peak MB per stage."""
    import torch

    from model_code import data, features, net, train

    stages: dict[str, dict[str, float]] = {}
    mark = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[name] = {"seconds": round(now - mark, 3), "peak_mb": round(_peak_mb(), 1)}
        mark = now

    import_mark = mark
    model = net.build_model("efficientnet_lite0", CLASSES, image_size=image_size, pretrained=True)
    stage("build model")
    split = data.scan_dataset(data_dir)["train"]
    key = features.cache_key(split, "efficientnet_lite0", image_size,
                             net.weights_identity("efficientnet_lite0"))
    stage("scan + fingerprint")
    dataset = data.ImageDataset(split, net.eval_transform(image_size), image_size)
    device = torch.device("cpu")
    fs, hit = features.cached_features(
        split, cache_dir=cache, architecture="efficientnet_lite0", image_size=image_size,
        weights_id=net.weights_identity("efficientnet_lite0"), skip_corrupt=False,
        compute=lambda out: features.extract_features(
            model, dataset, batch_size=16, device=device, skip_corrupt=False, out_dir=out,
            num_workers=features.extraction_workers(device, len(dataset))))
    stage("read feature cache" if hit else "extract features")
    generator = train.seed_everything(0)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=0.001)
    with train.small_op_threads(device):
        for _ in range(EPOCHS):
            train.train_epoch_on_features(model.head, fs.features, fs.labels, optimizer, 64,
                                          generator, device)
    stage(f"train head ({EPOCHS} epochs)")
    result = {"hit": hit, "key": key[:12], "images": len(fs.labels), "stages": stages,
              "seconds": round(time.perf_counter() - import_mark, 3)}
    print("RESULT " + json.dumps(result), flush=True)
    return result


def _run_child(data_dir: Path, cache: Path, image_size: int, threads: int | None
               ) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_scale", "--child", str(data_dir), str(cache),
           str(image_size)]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    code, peak, seconds, out = run_with_peak_rss(cmd, env=env, cwd=REPO, timeout_s=3600)
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if code != 0 or not lines:
        raise RuntimeError(f"scale child failed ({code}): {out[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    result.update(process_peak_mb=round(peak / 2**20, 1), process_seconds=round(seconds, 2))
    return result


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run(sizes: list[int], image_size: int, threads: int | None = None) -> BenchResult:
    from model_code.demo_data import generate_demo_dataset

    rows = []
    for size in sizes:
        data_dir = CACHE_DIR / f"scale-{CLASSES}x{size}"
        per_class = max(1, round(size / CLASSES))
        if not (data_dir / "test").is_dir():
            generate_demo_dataset(data_dir, classes=CLASSES, train_per_class=per_class,
                                  valid_per_class=1, test_per_class=1, image_size=48, seed=9)
        cache = Path(tempfile.mkdtemp(prefix="scale-cache-", dir=CACHE_DIR))
        try:
            first = _run_child(data_dir, cache, image_size, threads)
            later = _run_child(data_dir, cache, image_size, threads)
            rows.append({"size": first["images"], "first_trial": first, "later_trial": later,
                         "cache_mb": round(_dir_mb(cache), 2)})
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        print(f"size {first['images']}: first {first['process_seconds']:.1f} s "
              f"{first['process_peak_mb']:.0f} MB, later {later['process_seconds']:.1f} s "
              f"{later['process_peak_mb']:.0f} MB", flush=True)
    return BenchResult("scale", _figures(rows), {"rows": rows, "predictions": _predict(rows),
                                                 "image_size": image_size, "classes": CLASSES,
                                                 "threads": threads or "torch default"})


def _series(rows: list[dict[str, Any]], path: tuple[str, ...]) -> list[float]:
    out = []
    for row in rows:
        value: Any = row
        for key in path:
            value = value[key]
        out.append(float(value))
    return out


def _predict(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    xs = [float(r["size"]) for r in rows]
    series = {
        "extract_seconds": ("first_trial", "stages", "extract features", "seconds"),
        "train_head_seconds": ("later_trial", "stages", f"train head ({EPOCHS} epochs)",
                               "seconds"),
        "first_trial_peak_mb": ("first_trial", "process_peak_mb"),
        "later_trial_peak_mb": ("later_trial", "process_peak_mb"),
        "cache_mb": ("cache_mb",),
    }
    predictions: dict[str, dict[str, float]] = {}
    for name, path in series.items():
        a, b = _fit(xs, _series(rows, path))
        predictions[name] = {"intercept": round(a, 3), "per_1000_images": round(1000 * b, 3),
                             **{str(n): round(a + b * n, 1) for n in PREDICT}}
    return predictions


def _figures(rows: list[dict[str, Any]]) -> list[Figure]:
    small, large = rows[0], rows[-1]
    growth = large["size"] / small["size"]
    peer = f"{small['size']} images (data x{growth:.0f})"
    figures = []
    for label, path, unit in (
        ("first trial: extract features", ("first_trial", "stages", "extract features",
                                           "seconds"), "s"),
        ("later trial: train head", ("later_trial", "stages", f"train head ({EPOCHS} epochs)",
                                     "seconds"), "s"),
        ("first trial: peak RSS", ("first_trial", "process_peak_mb"), "MB"),
        ("later trial: peak RSS", ("later_trial", "process_peak_mb"), "MB"),
        ("feature cache on disk", ("cache_mb",), "MB"),
    ):
        values = _series([small, large], path)
        figures.append(Figure(f"{label}, {large['size']} images", values[1], unit, peer,
                              values[0], higher_is_better=False))
    return figures


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return 0
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help="Training images per run (default "
                   "1000,4000,8000; --quick 200,400,800).")
    p.add_argument("--image-size", type=int, default=32, help="Model input size (px).")
    p.add_argument("--threads", type=int, default=None, help="torch threads of each trial.")
    args = p.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ("200,400,800" if args.quick
                                             else "1000,4000,8000")).split(",")]
    started = time.perf_counter()
    return finish(run(sizes, args.image_size, args.threads), args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
