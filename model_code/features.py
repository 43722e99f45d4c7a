"""Backbone features computed once per image and reused across epochs and tuning trials.

With a frozen backbone in eval mode an image's feature vector never changes, so training only
the head on cached features gives the same result as full forward passes at a fraction of the
cost. The on-disk cache is keyed by everything the features depend on (architecture, backbone
weights, image size, class list, and each file's relative path, size and mtime), so a changed
data set or model never reads stale features. Each cache entry is a folder written under a
temporary name and renamed, so trials running at the same time never see half-written files.

Features are written straight into a numpy `.npy` file as they are computed and read back
memory-mapped, so neither extraction nor training holds the whole set in memory: 100,000 images
of 1,280 float32 features are 512 MB on disk, paged in as the head's batches touch them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

try:
    from model_code.data import DataError, ImageDataset, Split, corrupt_image_error
    from model_code.net import Classifier
except ImportError:  # run as `python train.py` inside model_code/ (how SageMaker starts it)
    from data import DataError, ImageDataset, Split, corrupt_image_error  # type: ignore[no-redef]
    from net import Classifier  # type: ignore[no-redef]

CACHE_FORMAT = 2  # 2: a folder of memory-mapped .npy files (1 was one torch.save file)
_FEATURES, _LABELS, _SKIPPED = "features.npy", "labels.npy", "skipped.json"

ProgressCallback = Callable[[int, int], None]
"""Called after each batch with (images done, images in the split)."""


@dataclass
class FeatureSet:
    """Feature vectors `[n, dim]` and class indices `[n]` of one split's readable images."""

    features: torch.Tensor
    labels: torch.Tensor
    skipped: list[str] = field(default_factory=list)  # relative paths of unreadable images


def cache_key(split: Split, architecture: str, image_size: int, weights_id: str) -> str:
    """A hash of everything the split's features depend on."""
    payload = {
        "format": CACHE_FORMAT,
        "architecture": architecture,
        "weights": weights_id,
        "image_size": image_size,
        "classes": list(split.class_names),
        "split": split.name,
        "files": split.fingerprint(),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def extraction_workers(device: torch.device, images: int, requested: int | None = None) -> int:
    """DataLoader workers that decode images while the backbone runs on the last batch.

    One worker process on CPU is enough to keep the forward pass fed (decoding a JPEG and
    resizing it costs a few % of an image's forward pass) without taking a core from it; tiny
    splits skip the worker's start-up. An explicit `requested` count wins.
    """
    if requested is not None:
        return requested
    if device.type == "cuda":
        return min(4, os.cpu_count() or 1)
    return 1 if images >= 64 else 0


def extract_features(
    model: Classifier,
    dataset: ImageDataset,
    *,
    batch_size: int,
    device: torch.device,
    skip_corrupt: bool,
    num_workers: int = 0,
    out_dir: Path | None = None,
    on_batch: ProgressCallback | None = None,
) -> FeatureSet:
    """Run the frozen backbone once over `dataset` (eval mode, no grad).

    With `out_dir`, the features go straight into `out_dir/features.npy` (memory-mapped), with
    the labels and skipped files beside it, instead of growing a list of tensors in memory.
    """
    n, dim = len(dataset), int(model.feature_dim)
    # An own generator: iterating a DataLoader otherwise draws from the global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    store: np.ndarray
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        store = np.lib.format.open_memmap(out_dir / _FEATURES, mode="w+", dtype=np.float32,
                                          shape=(n, dim))
    else:
        store = np.empty((n, dim), dtype=np.float32)
    labels = np.full(n, -1, dtype=np.int64)
    skipped: list[str] = []
    done = 0
    model.eval()
    if on_batch is not None:
        on_batch(0, n)  # the stage has started: a watcher can say so before the first batch
    for images, targets, indices in loader:
        bad = targets < 0
        for index in indices[bad].tolist():
            path = dataset.split.samples[index][0]
            if not skip_corrupt:
                raise corrupt_image_error(path)
            skipped.append(path.relative_to(dataset.split.root).as_posix())
        good = ~bad
        if good.any():
            rows = indices[good].numpy()
            store[rows] = model.features(images[good].to(device)).cpu().numpy()
            labels[rows] = targets[good].numpy()
        done += len(indices)
        if on_batch is not None:
            on_batch(done, n)
    keep = labels >= 0
    if not keep.any():
        raise DataError(f"no readable images in {dataset.split.root}: every image failed to load.")
    if out_dir is not None:
        if isinstance(store, np.memmap):
            store.flush()
        np.save(out_dir / _LABELS, labels)
        (out_dir / _SKIPPED).write_text(json.dumps(skipped))
    return _feature_set(store, labels, skipped)


def _feature_set(store: np.ndarray, labels: np.ndarray, skipped: list[str]) -> FeatureSet:
    """Rows of readable images; without skipped files the (memory-mapped) array is not copied."""
    keep = labels >= 0
    if not keep.all():
        store, labels = np.ascontiguousarray(store[keep]), labels[keep]
    return FeatureSet(torch.from_numpy(store), torch.from_numpy(np.array(labels)), skipped)


def _cache_path(
    cache_dir: Path, split: Split, architecture: str, image_size: int, key: str
) -> Path:
    return cache_dir / f"{architecture}-{image_size}px-{split.name}-{key[:24]}.features"


def _read(folder: Path) -> FeatureSet | None:
    try:
        # Copy-on-write mapping: pages are read lazily and never written back to the cache.
        store = np.load(folder / _FEATURES, mmap_mode="c")
        labels = np.load(folder / _LABELS)
        skipped = list(json.loads((folder / _SKIPPED).read_text()))
        if store.ndim != 2 or store.shape[0] != labels.shape[0]:
            return None
        return _feature_set(store, labels, skipped)
    except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never fatal
        return None


def cached_features(
    split: Split,
    *,
    cache_dir: Path | None,
    architecture: str,
    image_size: int,
    weights_id: str,
    skip_corrupt: bool,
    compute: Callable[[Path | None], FeatureSet],
) -> tuple[FeatureSet, bool]:
    """The split's features from `cache_dir` when present (hit=True), else computed and stored.

    `compute(out_dir)` writes its files into `out_dir` (a temporary folder that is renamed into
    place when complete), or keeps the features in memory when `out_dir` is None (no cache).
    """
    if cache_dir is None:
        return compute(None), False
    key = cache_key(split, architecture, image_size, weights_id)
    path = _cache_path(cache_dir, split, architecture, image_size, key)
    found = _read(path) if path.is_dir() else None
    if found is not None:
        if found.skipped and not skip_corrupt:
            # Built by a run that skipped broken files: this run must report them instead.
            raise corrupt_image_error(split.root / found.skipped[0])
        return found, True
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        result = compute(tmp)
        if path.is_dir():  # a damaged entry, or a trial beside us finished first
            shutil.rmtree(path, ignore_errors=True)
        # OSError: another process renamed its copy in between (same content): keep theirs.
        with contextlib.suppress(OSError):
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _read(path) or result, False
