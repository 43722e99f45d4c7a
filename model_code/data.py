"""The train/valid/test ImageFolder layout: scanning, checks with clear errors, and loading.

Checks run before any model is built, so a bad data folder fails in seconds with a message that
names the folder or file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

try:
    from model_code.data_files import (
        IMAGE_EXTENSIONS,
        SPLITS,
        DataError,
        class_folders,
        data_files,
        one_class_message,
    )
except ImportError:  # on SageMaker the source dir itself is on the path
    from data_files import (  # type: ignore[no-redef]
        IMAGE_EXTENSIONS,
        SPLITS,
        DataError,
        class_folders,
        data_files,
        one_class_message,
    )

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "DataError", "ImageDataset", "Split", "scan_dataset"]


@dataclass(frozen=True)
class Split:
    """One split: its folder and `(image path, class index)` pairs, sorted by path."""

    name: str
    root: Path
    class_names: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    def __len__(self) -> int:
        return len(self.samples)

    def fingerprint(self) -> list[tuple[str, int, int]]:
        """(relative path, size, mtime in ns) of each file: changes when any image changes."""
        rows = []
        for path, _ in self.samples:
            stat = path.stat()
            rows.append((path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime_ns))
        return rows


def scan_split(data_dir: Path, name: str) -> tuple[Path, dict[str, list[Path]]]:
    """The class folders of one split and their images; raises DataError on a bad layout."""
    root = data_dir / name
    if not root.is_dir():
        raise DataError(
            f"missing split folder {root}: the data folder needs train/, valid/ and test/ "
            f"sub-folders, each with one folder per class (ImageFolder layout)."
        )
    class_dirs = class_folders(data_dir, name)
    if not class_dirs:
        raise DataError(
            f"split folder {root} has no class folders: put each class's images in its own "
            f"sub-folder, e.g. {root}/001.Affenpinscher/image.jpg."
        )
    by_class: dict[str, list[Path]] = {d.name: [] for d in class_dirs}
    for found in data_files(data_dir, (name,)):  # the one walk validate and the syncs use
        by_class[found.class_name].append(found.path)
    for class_dir in class_dirs:
        images = by_class[class_dir.name]
        if not images:
            raise DataError(
                f"class folder {class_dir} is empty (no {'/'.join(sorted(IMAGE_EXTENSIONS))} "
                f"images): add images or remove the folder from every split."
            )
    return root, by_class


def scan_dataset(data_dir: str | Path) -> dict[str, Split]:
    """All three splits with one class list (taken from train/, checked against the others)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist: pass --data-dir (or set "
            f"SM_CHANNEL_TRAINING) to a folder with train/, valid/ and test/."
        )
    scanned = {name: scan_split(data_dir, name) for name in SPLITS}
    class_names = tuple(sorted(scanned["train"][1]))
    if len(class_names) < 2:
        raise DataError(one_class_message(data_dir / "train", class_names))
    for name in ("valid", "test"):
        other = set(scanned[name][1])
        if other != set(class_names):
            only_train = sorted(set(class_names) - other)
            only_other = sorted(other - set(class_names))
            raise DataError(
                f"class folders differ between {data_dir / 'train'} and {data_dir / name}: "
                f"only in train: {only_train or 'none'}; only in {name}: {only_other or 'none'}. "
                f"Every split needs the same class folders."
            )
    splits = {}
    for name, (root, by_class) in scanned.items():
        samples = tuple(
            (path, index) for index, cls in enumerate(class_names) for path in by_class[cls]
        )
        splits[name] = Split(name, root, class_names, samples)
    return splits


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully as RGB (greyscale, palette and alpha images included)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def image_error(path: Path) -> str | None:
    """Why `path` cannot be decoded, or None when it can."""
    try:
        load_rgb(path)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        return f"{type(exc).__name__}: {exc}"
    return None


def corrupt_image_error(path: Path) -> DataError:
    reason = image_error(path) or "could not be read"
    return DataError(
        f"cannot read image {path} ({reason}): replace or delete the file, or pass "
        f"--skip-corrupt true to skip unreadable images with a warning."
    )


class ImageDataset(Dataset[tuple[torch.Tensor, int, int]]):
    """Yields `(image tensor, class index, sample index)`.

    An unreadable image yields class index -1 instead of raising, so the caller (in the main
    process, even with DataLoader workers) decides between a clear error and skipping it.
    """

    def __init__(self, split: Split, transform: Any, image_size: int) -> None:
        self.split = split
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path, label = self.split.samples[index]
        try:
            image = load_rgb(path)
        except Exception:  # noqa: BLE001 - reported by the caller via image_error()
            return torch.zeros(3, self.image_size, self.image_size), -1, index
        tensor: torch.Tensor = self.transform(image)
        return tensor, label, index
