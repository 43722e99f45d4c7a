"""Fast checks of a data folder's layout, before anything is uploaded or trained.

Only names and sizes are read here (cheap even for the 8k-image original); decoding every image
is the training script's job (`model_code.data`), which names a corrupt file when it meets one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from dogops.errors import DataLayoutError
from model_code import data_files as walk

SPLITS = walk.SPLITS
IMAGE_SUFFIXES = walk.IMAGE_EXTENSIONS


class DatasetSummary(BaseModel):
    root: Path
    class_names: list[str]
    images_per_split: dict[str, int]
    bytes_total: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def data_files(root: Path, splits: tuple[str, ...] = SPLITS) -> Iterator[walk.DataFile]:
    """The images of `root` by the one walk training also uses (`model_code.data_files`: no
    dot-files, links refused), its refusals as `DataLayoutError`."""
    try:
        yield from walk.data_files(root, splits)
    except walk.DataError as exc:
        raise DataLayoutError(str(exc)) from exc


def split_images(split_dir: Path) -> list[walk.DataFile]:
    """The images of one split folder (a store's or a downloaded test/) by the same walk."""
    return list(data_files(split_dir.parent, (split_dir.name,)))


def _class_dirs(root: Path, split: str) -> list[Path]:
    try:
        return walk.class_folders(root, split)
    except walk.DataError as exc:
        raise DataLayoutError(str(exc)) from exc


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
    images: dict[tuple[str, str], int] = {}
    total_bytes = 0
    for found in data_files(root):  # the same files the syncs upload and training reads
        images[found.split, found.class_name] = images.get((found.split, found.class_name), 0) + 1
        total_bytes += found.path.stat().st_size
    for split in SPLITS:
        dirs = _class_dirs(root, split)
        if not dirs:
            raise DataLayoutError(
                f"{root / split} has no class folders: put each class's images in its own "
                f"sub-folder, e.g. {root / split}/001.Affenpinscher/img.jpg."
            )
        classes[split] = [d.name for d in dirs]
        counts[split] = 0
        for d in dirs:
            if not images.get((split, d.name)):
                raise DataLayoutError(
                    f"Class folder {d} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
                    "add images or remove the folder from every split."
                )
            counts[split] += images[split, d.name]
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
    if len(reference) < 2:
        raise DataLayoutError(walk.one_class_message(root / "train", classes["train"]))
    return DatasetSummary(
        root=root, class_names=classes["train"], images_per_split=counts, bytes_total=total_bytes
    )
