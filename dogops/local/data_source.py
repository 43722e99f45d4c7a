"""The local backend's data of record (`dogops.data_source`): the store folder at a `file://`
URI as it is now, every file hashed (cached by mtime)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dogops.dataset import data_files, inspect_dataset
from dogops.errors import UserInputError
from dogops.hash_cache import HashCache, file_sha256
from dogops.results import SyncReport, listing_report


def local_path(uri: str) -> Path:
    """file:///a/b -> /a/b."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise UserInputError(f"{uri} is not a file:// URI of the local object store.")
    return Path(unquote(parsed.path))


def refresh_local(uri: str, hash_cache: Path | None = None) -> SyncReport:
    """The local store folder at `uri` as it is now: every file, hashed (cached by mtime)."""
    started = time.perf_counter()
    root = local_path(uri)
    inspect_dataset(root)
    cache = HashCache(hash_cache)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(found.path for found in data_files(root)):  # what the sync copied
        key = path.relative_to(root).as_posix()
        digests = cache.hashes(
            path, key, lambda p: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        )
        files[key] = {"size": int(digests["size"]), "sha256": digests["sha256"]}
    cache.save(keep=set(files))
    return listing_report(uri, files, started)
