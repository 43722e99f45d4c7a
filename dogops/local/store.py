"""The local object store: a folder laid out with the same keys the S3 path uses.

`sync_folder` copies a data folder's data files (the one walk validation and training use,
`model_code.data_files`: images under <split>/<class>/, no dot-files, links refused) into
`<store>/<bucket>/<prefix>/data/` incrementally: files whose size and sha256 match the manifest
are skipped, changed ones are replaced atomically (temp file + rename), files gone from the
source are removed (only keys the previous manifest lists), and the manifest is written last, so
a crash mid-sync leaves the previous manifest and the re-run redoes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from dogops.backends.base import ProgressFn
from dogops.dataset import data_files, inspect_dataset
from dogops.hash_cache import HashCache, file_sha256
from dogops.progress import Progress
from dogops.results import SyncReport

MANIFEST_NAME = "_manifest.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_manifest(dest: Path) -> dict[str, dict[str, object]]:
    path = dest / MANIFEST_NAME
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text())["files"])


def manifest_bytes(files: dict[str, dict[str, object]]) -> bytes:
    return json.dumps({"version": 1, "files": files}, sort_keys=True, indent=1).encode()


def sync_folder(
    source: Path, dest: Path, progress: ProgressFn | None = None,
    hash_cache: Path | None = None,
) -> SyncReport:
    """Mirror `source` (a train/valid/test data folder) into `dest`; see the module docstring.

    `hash_cache` keeps each source file's sha256 by size and mtime between syncs.
    """
    inspect_dataset(source)
    started = time.perf_counter()
    old = load_manifest(dest)
    cache = HashCache(hash_cache)
    new: dict[str, dict[str, object]] = {}
    uploaded = skipped = bytes_uploaded = 0
    files = sorted(found.path for found in data_files(source))  # what inspect_dataset counted
    tracker = Progress(f"sync {source} to the local store", len(files), "files", say=progress)
    for index, path in enumerate(files, 1):
        key = path.relative_to(source).as_posix()
        digests = cache.hashes(
            path, key, lambda p: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        )
        size = int(digests["size"])
        new[key] = {"size": size, "sha256": digests["sha256"]}
        target = dest / key
        previous = old.get(key)
        if (
            previous == new[key]
            and target.is_file()
            and target.stat().st_size == size
        ):
            skipped += 1
        else:
            write_atomic(target, path.read_bytes())
            uploaded += 1
            bytes_uploaded += size
        tracker.update(index, note=f"{uploaded} copied, {skipped} unchanged")
    tracker.finish()
    deleted = 0
    for key in sorted(set(old) - set(new)):
        stale = dest / key
        if stale.is_file():
            stale.unlink()
            deleted += 1
    cache.save(keep=set(new))
    body = manifest_bytes(new)
    write_atomic(dest / MANIFEST_NAME, body)
    return SyncReport(
        uri=dest.resolve().as_uri(),
        files_total=len(files),
        uploaded=uploaded,
        skipped=skipped,
        deleted=deleted,
        bytes_uploaded=bytes_uploaded,
        seconds=round(time.perf_counter() - started, 3),
        manifest_sha256=hashlib.sha256(body).hexdigest(),
    )
