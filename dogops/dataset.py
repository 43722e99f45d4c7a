"""Fast checks of a data folder's layout, before anything is uploaded or trained.

Only names and sizes are read here (cheap even for the 8k-image original); decoding every image
is the training script's job (`model_code.data`), which names a corrupt file when it meets one.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from dogops.errors import DataLayoutError

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class DatasetSummary(BaseModel):
    root: Path
    class_names: list[str]
    images_per_split: dict[str, int]
    bytes_total: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(class_dir: Path) -> list[Path]:
    return [
        p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]


def inspect_dataset(data_dir: Path | str | None) -> DatasetSummary:
    """Check the train/valid/test ImageFolder layout; raise `DataLayoutError` naming the fix."""
    if data_dir is None:
        raise DataLayoutError(
            "No data dir given: pass --data-dir (or DOGOPS_DATA_DIR), or run `dogops demo-data` "
            "to generate the demo set."
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataLayoutError(
            f"Data dir {root} does not exist or is not a folder: pass a folder holding "
            f"{', '.join(s + '/' for s in SPLITS)} with one sub-folder per class."
        )
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DataLayoutError(
            f"Data dir {root} lacks the split folder(s) {', '.join(missing)}: it needs "
            f"{', '.join(s + '/' for s in SPLITS)}, each with one sub-folder per class."
        )
    classes: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    total_bytes = 0
    for split in SPLITS:
        dirs = _class_dirs(root / split)
        if not dirs:
            raise DataLayoutError(
                f"{root / split} has no class folders: put each class's images in its own "
                f"sub-folder, e.g. {root / split}/001.Affenpinscher/img.jpg."
            )
        classes[split] = [d.name for d in dirs]
        counts[split] = 0
        for d in dirs:
            images = _images(d)
            if not images:
                raise DataLayoutError(
                    f"Class folder {d} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
                    "add images or remove the folder from every split."
                )
            counts[split] += len(images)
            total_bytes += sum(p.stat().st_size for p in images)
    reference = set(classes["train"])
    for split in SPLITS[1:]:
        other = set(classes[split])
        if other != reference:
            only_train = sorted(reference - other)
            only_other = sorted(other - reference)
            raise DataLayoutError(
                f"Class folders differ between train/ and {split}/ in {root}: "
                f"only in train/: {only_train or 'none'}; "
                f"only in {split}/: {only_other or 'none'}. "
                "Every split needs the same class folders."
            )
    return DatasetSummary(
        root=root, class_names=classes["train"], images_per_split=counts, bytes_total=total_bytes
    )
