"""The local store reads back the `file://` URIs the local backend writes (`Path.as_uri()`,
percent-encoded), also under a state dir whose path has a space or a non-ASCII letter."""

from __future__ import annotations

from pathlib import Path

import pytest

from dogops.errors import UserInputError
from dogops.local.documents import LocalStore


@pytest.mark.parametrize("folder", ["plain", "with space", "Zoë"])
def test_archive_file_finds_the_archive_behind_its_own_uri(tmp_path: Path, folder: str) -> None:
    state = tmp_path / folder
    archive = state / "rollouts" / "v1" / "model.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    store = LocalStore(state)
    assert store.archive_file(archive.as_uri(), tmp_path / "scratch") == archive
    assert store.archive_file((state / "missing.tar.gz").as_uri(), tmp_path / "scratch") is None


def test_archive_file_refuses_another_scheme(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="neither file:// nor s3://"):
        LocalStore(tmp_path).archive_file("https://example.com/model.tar.gz", tmp_path / "x")
