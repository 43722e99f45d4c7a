"""The one-off feature pass vs the bare batched forward pass of the same backbone.

    python -m bench.bench_features [--images 160] [--image-size 224] [--threads N] [--quick]

The feature pass is `model_code.features.extract_features` exactly as `train.py` runs it on CPU:
JPEG decode + resize in a DataLoader worker while the backbone runs on the previous batch, batches
of 16, features written to a memory-mapped cache file. Its peer is the bare forward pass of the
same backbone (EfficientNet-Lite0, the real pretrained weights) over the same number of images
already decoded in memory, same batch size, same torch threads: the machine's limit for this
step. Decoding serially in the main process (no worker) is reported beside it. The arms alternate
and repeat; medians are reported, with the load average, since the machine is shared.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import BenchResult, Figure, demo_data, finish, parser

BATCH = 16  # train.py's CPU extraction batch


def _arms(images: int, image_size: int) -> dict[str, Callable[[], float]]:
    import torch

    from model_code import data, features, net

    data_dir = demo_data({"classes": 8, "train_per_class": max(1, images // 8),
                          "valid_per_class": 1, "test_per_class": 1, "image_size": 96,
                          "seed": 5})
    split = data.scan_dataset(data_dir)["train"]
    model = net.build_model("efficientnet_lite0", 8, image_size=image_size, pretrained=True)
    model.eval()
    dataset = data.ImageDataset(split, net.eval_transform(image_size), image_size)
    device = torch.device("cpu")
    n = len(dataset)

    def feature_pass(workers: int) -> float:
        out = Path(tempfile.mkdtemp(prefix="bench-features-"))
        try:
            start = time.perf_counter()
            fs = features.extract_features(model, dataset, batch_size=BATCH, device=device,
                                           skip_corrupt=False, num_workers=workers, out_dir=out)
            seconds = time.perf_counter() - start
            assert len(fs.labels) == n
            return n / seconds
        finally:
            shutil.rmtree(out, ignore_errors=True)

    batches = [torch.rand(min(BATCH, n - i), 3, image_size, image_size)
               for i in range(0, n, BATCH)]

    def bare_forward() -> float:
        start = time.perf_counter()
        for batch in batches:
            model.features(batch)
        return n / (time.perf_counter() - start)

    return {
        "feature_pass": lambda: feature_pass(features.extraction_workers(device, n)),
        "bare_forward": bare_forward,
        "serial_decode": lambda: feature_pass(0),
    }


def run(images: int, image_size: int, repeats: int) -> BenchResult:
    import torch

    arms = _arms(images, image_size)
    arms["bare_forward"]()  # warm-up: first-call allocations and kernel selection
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, arm in arms.items():
            samples[name].append(arm())
    med = {name: statistics.median(values) for name, values in samples.items()}
    threads = torch.get_num_threads()
    peer = f"bare batched forward, same backbone, {threads} threads"
    figures = [
        Figure("feature pass (decode in a worker, batched forward)", med["feature_pass"],
               "images/s", peer, med["bare_forward"],
               note=f"{images} images at {image_size} px, batch {BATCH}, goal >= 0.8x"),
        Figure("feature pass with serial decode (no worker)", med["serial_decode"], "images/s",
               peer, med["bare_forward"]),
    ]
    details: dict[str, Any] = {"samples_images_per_s": samples, "images": images,
                               "image_size": image_size, "batch": BATCH, "threads": threads}
    return BenchResult("features", figures, details)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=None, help="Images per arm (default 160).")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=None, help="Rounds of the arms (default 3).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    images = args.images or (48 if args.quick else 160)
    repeats = args.repeats or (1 if args.quick else 3)
    started = time.perf_counter()
    return finish(run(images, args.image_size, repeats), args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
