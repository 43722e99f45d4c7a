"""Remember file hashes between syncs, so re-syncing an unchanged folder reads no file content.

An entry is reused only while the file's size and modification time (nanoseconds) are the ones
it was hashed at, the same test `aws s3 sync` relies on; anything else is hashed again. The cache
lives in the state dir, never in the user's data folder, and a lost or corrupt cache only costs
a re-hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

T = dict[str, Any]
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """A file's sha256, read in chunks (data files and weights can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    def __init__(self, path: Path | None, variant: str = "") -> None:
        """`variant` names what the hashes depend on besides content (e.g. a multipart part size):
        entries made under another variant are not reused."""
        self.path = path
        self.variant = variant
        self._lock = threading.Lock()
        self._entries: dict[str, T] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("variant") == variant:
                    self._entries = dict(data.get("files", {}))
            except (OSError, ValueError):
                self._entries = {}

    def _lookup(self, path: Path, key: str) -> tuple[list[int], T | None]:
        """`path`'s stamp now (one stat, nothing read), and its cached hashes while the stamp is
        the one they were made at, else None."""
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry.get("stamp") == stamp:
            return stamp, dict(entry["hashes"])
        return stamp, None

    def cached(self, path: Path, key: str) -> T | None:
        """The cached hashes of `path` while it is unchanged (one stat, nothing read), else None."""
        return self._lookup(path, key)[1]

    def hashes(self, path: Path, key: str, compute: Callable[[Path], T]) -> T:
        """The cached hashes of `path` when it has not changed, else `compute(path)` (cached)."""
        stamp, known = self._lookup(path, key)
        if known is not None:
            return known
        values = compute(path)
        with self._lock:
            self._entries[key] = {"stamp": stamp, "hashes": values}
        return values

    def save(self, keep: set[str] | None = None) -> None:
        """Write the cache atomically; `keep` drops entries of files that are gone."""
        if self.path is None:
            return
        with self._lock:
            entries = {k: v for k, v in self._entries.items() if keep is None or k in keep}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"variant": self.variant, "files": entries}))
        os.replace(tmp, self.path)
