"""Backbone features computed once per image and reused across epochs and tuning trials.

With a frozen backbone in eval mode an image's feature vector never changes, so training only
the head on cached features gives the same result as full forward passes at a fraction of the
cost. The on-disk cache is keyed by everything the features depend on (architecture, backbone
weights, image size, class list, and each file's relative path, size and mtime), so a changed
data set or model never reads stale features. Files are written to a temporary name and renamed,
so trials running at the same time never see half-written files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

try:
    from model_code.data import DataError, ImageDataset, Split, corrupt_image_error
    from model_code.net import Classifier
except ImportError:  # run as `python train.py` inside model_code/ (how SageMaker starts it)
    from data import DataError, ImageDataset, Split, corrupt_image_error  # type: ignore[no-redef]
    from net import Classifier  # type: ignore[no-redef]

CACHE_FORMAT = 1


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


def extract_features(
    model: Classifier,
    dataset: ImageDataset,
    *,
    batch_size: int,
    device: torch.device,
    skip_corrupt: bool,
    num_workers: int = 0,
) -> FeatureSet:
    """Run the frozen backbone once over `dataset` (eval mode, no grad)."""
    # An own generator: iterating a DataLoader otherwise draws from the global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    skipped: list[str] = []
    model.eval()
    for images, targets, indices in loader:
        bad = targets < 0
        for index in indices[bad].tolist():
            path = dataset.split.samples[index][0]
            if not skip_corrupt:
                raise corrupt_image_error(path)
            skipped.append(path.relative_to(dataset.split.root).as_posix())
        good = ~bad
        if good.any():
            feats.append(model.features(images[good].to(device)).cpu())
            labels.append(targets[good])
    if not feats:
        raise DataError(f"no readable images in {dataset.split.root}: every image failed to load.")
    return FeatureSet(torch.cat(feats), torch.cat(labels), skipped)


def _cache_path(
    cache_dir: Path, split: Split, architecture: str, image_size: int, key: str
) -> Path:
    return cache_dir / f"{architecture}-{image_size}px-{split.name}-{key[:24]}.pt"


def _read(path: Path) -> FeatureSet | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return FeatureSet(blob["features"], blob["labels"], list(blob["skipped"]))
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
        return None


def _write_atomic(path: Path, features: FeatureSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        blob = {
            "features": features.features,
            "labels": features.labels,
            "skipped": features.skipped,
        }
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_features(
    split: Split,
    *,
    cache_dir: Path | None,
    architecture: str,
    image_size: int,
    weights_id: str,
    skip_corrupt: bool,
    compute: Callable[[], FeatureSet],
) -> tuple[FeatureSet, bool]:
    """The split's features from `cache_dir` when present (hit=True), else computed and stored."""
    path = None
    if cache_dir is not None:
        key = cache_key(split, architecture, image_size, weights_id)
        path = _cache_path(cache_dir, split, architecture, image_size, key)
        found = _read(path) if path.is_file() else None
        if found is not None:
            if found.skipped and not skip_corrupt:
                # Built by a run that skipped broken files: this run must report them instead.
                raise corrupt_image_error(split.root / found.skipped[0])
            return found, True
    result = compute()
    if path is not None:
        _write_atomic(path, result)
    return result, False
