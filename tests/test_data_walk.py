"""The one walk over a data folder (`model_code.data_files`): validation, both syncs and
training see the same files, links are refused naming the path and the fix, dot-files are
nobody's data, and a one-class set is refused before training.

Nothing is mocked: real folders and links under tmp_path; the S3 sync's file list is the
function `sync_folder` walks with (no bucket is needed to show which files it would send).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dogops.aws.s3_sync import local_files
from dogops.dataset import inspect_dataset
from dogops.errors import DataLayoutError, UserInputError
from dogops.evaluation import list_test_images
from dogops.local.store import sync_folder as local_sync
from model_code import data as training_data
from model_code.demo_data import generate_demo_dataset


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return generate_demo_dataset(tmp_path / "dogs", classes=2, train_per_class=3,
                                 valid_per_class=2, test_per_class=2, image_size=32, seed=4)


def class_dirs(data: Path, split: str) -> list[Path]:
    return sorted(p for p in (data / split).iterdir() if p.is_dir())


def trained_on(data: Path) -> int:
    return sum(len(split) for split in training_data.scan_dataset(data).values())


def test_validate_sync_and_training_count_the_same_files(data: Path, tmp_path: Path) -> None:
    """Dot-files, dot-folders, non-images and files outside class folders are nobody's data;
    images in a sub-folder of a class folder are everybody's."""
    cls = class_dirs(data, "train")[0]
    (cls / ".DS_Store").write_bytes(b"finder")
    (cls / "._1.jpg").write_bytes(b"resource fork")  # a dot-file with an image suffix
    (cls / ".hidden").mkdir()
    shutil.copy(next(cls.glob("*.jpg")), cls / ".hidden" / "x.jpg")
    (cls / "notes.txt").write_text("not an image")
    (data / "train" / "stray.jpg").write_bytes(b"not in a class")
    (class_dirs(data, "test")[0] / "._2.jpg").write_bytes(b"resource fork")
    (cls / "more").mkdir()
    shutil.copy(next(cls.glob("*.jpg")), cls / "more" / "nested.jpg")

    summary = inspect_dataset(data)
    validated = sum(summary.images_per_split.values())
    synced = local_sync(data, tmp_path / "store").files_total
    images = 3 * 2 + 2 * 2 * 2 + 1  # the demo set's, and the nested one
    assert validated == synced == len(local_files(data)) == trained_on(data) == images
    # The quality gate scores exactly the test images validation counted.
    assert len(list_test_images(data / "test")) == summary.images_per_split["test"] == 4


def _link_a_class_folder(data: Path, outside: Path) -> Path:
    """train/<new class> -> a folder outside the data folder (and the same in valid/, test/)."""
    links = []
    for split in ("train", "valid", "test"):
        target = outside / split
        shutil.copytree(class_dirs(data, split)[0], target)
        link = data / split / "099.Linked"
        link.symlink_to(target, target_is_directory=True)
        links.append(link)
    return links[0]  # the walk meets train/ first


def _link_a_file_outside(data: Path, outside: Path) -> Path:
    outside.mkdir()
    secret = outside / "id_rsa.jpg"
    secret.write_bytes(b"not yours to upload")
    link = class_dirs(data, "valid")[0] / "link.jpg"
    link.symlink_to(secret)
    return link


def _link_a_split(data: Path, outside: Path) -> Path:
    shutil.move(data / "test", outside)
    (data / "test").symlink_to(outside, target_is_directory=True)
    return data / "test"


@pytest.mark.parametrize("make_link", [_link_a_class_folder, _link_a_file_outside, _link_a_split],
                         ids=["class-folder", "file-outside", "split"])
def test_every_walk_refuses_a_link_naming_it_and_the_fix(
    data: Path, tmp_path: Path, make_link: object
) -> None:
    link = make_link(data, tmp_path / "outside")  # type: ignore[operator]
    for walk in (inspect_dataset, local_files,
                 lambda d: local_sync(d, tmp_path / "store")):
        with pytest.raises(DataLayoutError) as caught:
            walk(data)
        assert str(link) in str(caught.value) and "symbolic link" in str(caught.value)
        assert "Replace the link with the real file or folder" in str(caught.value)
        assert isinstance(caught.value, UserInputError)
    with pytest.raises(training_data.DataError, match="symbolic link"):
        training_data.scan_dataset(data)
    assert not (tmp_path / "store" / "_manifest.json").exists()  # nothing was copied


def test_a_linked_data_folder_itself_is_the_users_choice(data: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(data, target_is_directory=True)
    assert inspect_dataset(alias).images_per_split == inspect_dataset(data).images_per_split


def test_one_class_is_refused_by_validation_and_by_training(data: Path) -> None:
    for split in ("train", "valid", "test"):
        shutil.rmtree(class_dirs(data, split)[1])
    only = class_dirs(data, "train")[0].name
    with pytest.raises(DataLayoutError, match=r"1 class folder\(s\) \(" + only) as caught:
        inspect_dataset(data)
    assert "at least 2 classes" in str(caught.value)
    with pytest.raises(training_data.DataError, match="at least 2 classes"):
        training_data.scan_dataset(data)
