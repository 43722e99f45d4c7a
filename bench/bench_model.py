"""Benchmark the model code on this machine: training throughput and serving overhead.

    .venv/bin/python bench/bench_model.py [--image-size 224] [--repeats 30]

Prints a table and writes bench/results/model.json:
- training images/s: one-off backbone feature extraction, head training on cached features (what
  every epoch and tuning trial costs with the feature cache), and a full forward+backward step
  (what every epoch costs with --augment, i.e. without the cache);
- single-image latency through model_fn/input_fn/predict_fn/output_fn next to the bare network
  forward pass on the same, already preprocessed image, and their ratio (the serving overhead:
  decoding, resizing, normalising, softmax, JSON).
Runs in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model_code import data, features, inference, net, train  # noqa: E402
from model_code.demo_data import generate_demo_dataset  # noqa: E402


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_throughput(model: net.Classifier, split: data.Split, image_size: int,
                        batch_size: int, cache_dir: Path) -> dict[str, float]:
    """Images/s of feature extraction, head training on features, and full training steps.
    The extracted features go to `cache_dir`, where the training run that follows finds them."""
    dataset = data.ImageDataset(split, net.eval_transform(image_size), image_size)
    device = torch.device("cpu")
    start = time.perf_counter()
    fs, _ = features.cached_features(
        split, cache_dir=cache_dir, architecture="efficientnet_lite0", image_size=image_size,
        weights_id=net.weights_identity("efficientnet_lite0"), skip_corrupt=False,
        compute=lambda out: features.extract_features(model, dataset, batch_size=16, device=device,
                                                      skip_corrupt=False, out_dir=out))
    extract_ips = len(fs.labels) / (time.perf_counter() - start)

    # Head training on cached features: repeat the features to time a realistic epoch size.
    feats, labels = fs.features.repeat(50, 1), fs.labels.repeat(50)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with train.small_op_threads(device):  # as train.py does
        train.train_epoch_on_features(model.head, feats, labels, optimizer, batch_size,
                                      generator, device)
    head_ips = len(labels) / (time.perf_counter() - start)

    # Full forward (frozen backbone) + head backward, as every --augment epoch does.
    images = torch.stack([dataset[i][0] for i in range(min(16, len(dataset)))])
    targets = fs.labels[: len(images)]
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        model.train()
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()

    full_ips = len(images) / median_seconds(step, repeats=2, warmup=1)
    return {"feature_extraction": extract_ips, "head_on_cached_features": head_ips,
            "full_forward_backward": full_ips}


def serving_latency(model_dir: Path, image_path: Path, repeats: int) -> dict[str, float]:
    """Median seconds of one request through the four serving functions vs the bare forward."""
    loaded = inference.model_fn(model_dir)
    body = image_path.read_bytes()

    def pipeline() -> None:
        request = inference.input_fn(body, "image/jpeg")
        inference.output_fn(inference.predict_fn(request, loaded), "application/json")

    tensor = loaded.transform(data.load_rgb(image_path)).unsqueeze(0)

    def bare() -> None:
        with torch.no_grad():
            loaded.module(tensor)

    # Interleaved, so a change in machine load hits both sides alike.
    for _ in range(2):
        pipeline()
        bare()
    pipeline_times, bare_times = [], []
    for _ in range(repeats):
        pipeline_times.append(median_seconds(pipeline, 1, warmup=0))
        bare_times.append(median_seconds(bare, 1, warmup=0))
    pipeline_s, bare_s = statistics.median(pipeline_times), statistics.median(bare_times)
    return {"pipeline_s": pipeline_s, "bare_forward_s": bare_s, "ratio": pipeline_s / bare_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "model.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = generate_demo_dataset(root / "data", classes=4, train_per_class=16,
                                     valid_per_class=4, test_per_class=4, image_size=96)
        splits = data.scan_dataset(demo)
        model = net.build_model("efficientnet_lite0", 4, image_size=args.image_size)
        throughput = training_throughput(model, splits["train"], args.image_size,
                                         args.batch_size, root / "cache")
        code = train.main(["--data-dir", str(demo), "--model-dir", str(root / "model"),
                           "--image-size", str(args.image_size), "--epochs", "2",
                           "--feature-cache-dir", str(root / "cache")])
        if code != 0:
            return code
        image = splits["test"].samples[0][0]
        latency = serving_latency(root / "model", image, args.repeats)
    result = {
        "machine": {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                    "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
        "architecture": "efficientnet_lite0",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "train_images_per_s": throughput,
        "inference_latency": latency,
        "bench_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print()
    print(f"efficientnet_lite0 at {args.image_size} px, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
          f"CPUs (other processes slow every number down)")
    print("| measure | value |")
    print("|---|---|")
    print(f"| feature extraction (once per image) | {throughput['feature_extraction']:.1f} img/s |")
    print(f"| head training on cached features | {throughput['head_on_cached_features']:.0f} "
          f"img/s |")
    print(f"| full forward+backward (--augment) | {throughput['full_forward_backward']:.1f} "
          f"img/s |")
    print(f"| cached / full training speed-up | "
          f"{throughput['head_on_cached_features'] / throughput['full_forward_backward']:.0f}x |")
    print(f"| one request: input_fn+predict_fn+output_fn | "
          f"{latency['pipeline_s'] * 1000:.1f} ms |")
    print(f"| bare forward pass, same image | {latency['bare_forward_s'] * 1000:.1f} ms |")
    print(f"| ratio pipeline / bare | {latency['ratio']:.2f} |")
    print(f"wrote {args.out} ({result['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
