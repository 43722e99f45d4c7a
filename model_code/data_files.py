"""The one walk over a train/valid/test data folder: which files are the data.

Validation (`dogops.dataset`), both syncs (`dogops.aws.s3_sync`, `dogops.local.store`) and
training (`model_code.data`) all take their file list from `data_files`, so the data that is
validated is exactly the data that is synced and trained on. The rule:

- the data is the image files (by suffix) under `<split>/<class>/`, at any depth;
- names starting with "." (files or folders) are skipped everywhere: editors' and OS droppings
  such as `.DS_Store`, and the syncs' own temp files;
- a symbolic link anywhere below the folder (a split, a class folder, a sub-folder or a file) is
  refused with `DataError` naming it: followed, it could bring in files from outside the folder,
  and one walk following it while another did not is how counts came to differ. The folder itself
  may be a link (it is the path the user chose).

This file is part of the SageMaker source dir, so it imports nothing from dogops.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class DataError(ValueError):
    """The data folder is not usable; the message names the folder or file and the fix."""


class DataFile(NamedTuple):
    """One image of the data: its split, class folder name, key (relative, `/`) and path."""

    split: str
    class_name: str
    rel: str
    path: Path


def _refuse_link(path: Path, root: Path) -> DataError:
    target = os.readlink(path)
    return DataError(
        f"{path} is a symbolic link (to {target}) inside the data folder {root}: dogops does not "
        "follow links in a data folder, so what is validated, synced and trained on is the same "
        "set of files and nothing outside the folder is uploaded. Replace the link with the real "
        f"file or folder (e.g. `cp -rL {root} <new folder>`) or remove it."
    )


def one_class_message(train_dir: Path, class_names: tuple[str, ...] | list[str]) -> str:
    """Why a data set with fewer than two classes is refused (a classifier needs two)."""
    found = ", ".join(class_names) or "none"
    return (
        f"{train_dir} has {len(class_names)} class folder(s) ({found}): a classifier needs at "
        "least 2 classes. Add a sub-folder per class (the same ones in train/, valid/ and test/)."
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def class_folders(root: Path, split: str) -> list[Path]:
    """The class folders of `root/split` (no dot-folders), sorted; refuses links; [] when the
    split folder does not exist (callers say what is missing)."""
    split_dir = root / split
    if split_dir.is_symlink():
        raise _refuse_link(split_dir, root)
    if not split_dir.is_dir():
        return []
    found = []
    for entry in sorted(split_dir.iterdir()):
        if _is_hidden(entry.name):
            continue
        if entry.is_symlink():
            raise _refuse_link(entry, root)
        if entry.is_dir():
            found.append(entry)
    return found


def _files_below(folder: Path, root: Path) -> Iterator[Path]:
    """Regular, visible files under `folder`, sorted by path; refuses any link on the way."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in dirnames:
            if (base / name).is_symlink():  # os.walk lists links to folders as folders
                raise _refuse_link(base / name, root)
        for name in sorted(filenames):
            path = base / name
            if _is_hidden(name):
                continue
            if path.is_symlink():
                raise _refuse_link(path, root)
            if path.is_file():  # not a fifo, socket or device
                yield path


def data_files(data_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> Iterator[DataFile]:
    """Every image of the data folder by the rule above, split by split, sorted by key."""
    root = Path(data_dir)
    for split in splits:
        for class_dir in class_folders(root, split):
            for path in sorted(_files_below(class_dir, root)):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    rel = path.relative_to(root).as_posix()
                    yield DataFile(split, class_dir.name, rel, path)
