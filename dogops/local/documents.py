"""The local backend's store: documents (the registry) in the state dir and model archives as
`file://` URIs."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

from dogops.errors import UserInputError
from dogops.local.data_source import local_path, refresh_local
from dogops.local.objects import LocalObjects
from dogops.local.store import write_atomic
from dogops.results import SyncReport


class LocalRegistryStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.uri = self.path.resolve().as_uri()

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def update(self, change: Callable[[bytes | None], bytes | None]) -> None:
        """Read, change and write under an exclusive file lock, so two processes promoting at
        once take turns; the write is a temp file + rename, so readers see old or new."""
        with self._lock():
            body = change(self.read())
            if body is not None:
                write_atomic(self.path, body)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(f".{self.path.name}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class LocalStore:
    """`dogops.backends.Store` on this machine: the state dir holds the documents."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir.expanduser().resolve()

    def document(self, name: str) -> LocalRegistryStore:
        return LocalRegistryStore(self.root / name)

    def objects(self, bucket: str) -> LocalObjects:
        """The local object store's folder of `bucket` (S3's keys as paths)."""
        return LocalObjects(self.root / "store" / bucket)

    def archive_file(self, uri: str, scratch: Path) -> Path | None:
        """The archive at a `file://` URI is already a local file (`scratch` is not used)."""
        if not uri.startswith("file://"):
            raise UserInputError(f"model URI {uri!r} is neither file:// nor s3://.")
        archive = local_path(uri)
        return archive if archive.is_file() else None

    def data_now(self, uri: str) -> SyncReport:
        return refresh_local(uri, self.root / "hash-cache" / "store.json")

    def test_split(self, data: SyncReport) -> Path:
        """The store folder itself: nothing to download."""
        return local_path(data.uri) / "test"
