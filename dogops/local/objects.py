"""The local object store read by key: `<state>/store/<bucket>/` with S3's keys as paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


class LocalObjects:
    """`dogops.backends.ObjectReader` over the local object store's bucket folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uri = self.root.resolve().as_uri()

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        folder = base if base.is_dir() else base.parent
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            # Dot-files are writers' temp files (renamed when complete).
            if path.is_file() and not path.name.startswith(".") and key.startswith(prefix):
                yield key

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
