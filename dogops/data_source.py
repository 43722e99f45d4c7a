"""Where a run's data comes from when nobody names a folder: the registry and the object store.

After one train-and-deploy the registry entry records the object-store URI the data was synced to
(`data_uri`), its manifest hash, and the local folder it came from (`data_dir`). A retrain with no
parameters then trains on what is under that URI *now*: images someone added under the data
prefix (with `aws s3 cp`, or into the local store folder) are picked up, because the manifest is
recomputed from a listing of the prefix. That recomputed manifest is only hashed (it names the
data for the run key and the registry), never written over the sync's own `_manifest.json`, so a
later sync from the original folder still deletes only what an earlier sync put there.
`resync=True` syncs the recorded folder again instead, as train-and-deploy does.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dogops.dataset import inspect_dataset
from dogops.errors import UserInputError
from dogops.registry import Registry, RegistryEntry
from dogops.results import SyncReport
from dogops.settings import Settings

MANIFEST_NAME = "_manifest.json"


def last_entry(registry: Registry, endpoint_name: str) -> RegistryEntry | None:
    """The endpoint's live entry, else its most recent one (None before any train-and-deploy)."""
    live = registry.live(endpoint_name)
    if live is not None:
        return live
    history = registry.history(endpoint_name)
    return history[-1] if history else None


def require_entry(registry: Registry, endpoint_name: str, what: str) -> RegistryEntry:
    """`last_entry`, or an error that names the fix: there has never been a train-and-deploy."""
    entry = last_entry(registry, endpoint_name)
    if entry is None or not entry.data_uri:
        raise UserInputError(
            f"{what} needs data, and none was given: the registry {registry.uri} has no model "
            f"with recorded data for endpoint {endpoint_name}. Run train-and-deploy first "
            "(`dogops run --data-dir FOLDER`, or the train-and-deploy deployment with data_dir), "
            "or pass data_dir."
        )
    return entry


def local_path(uri: str) -> Path:
    """file:///a/b -> /a/b."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise UserInputError(f"{uri} is not a file:// URI of the local object store.")
    return Path(unquote(parsed.path))


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of the registry's data URI, refusing anything else."""
    from dogops.aws.training import split_s3_uri

    bucket, key = split_s3_uri(uri) if uri.startswith("s3://") else ("", "")
    if not bucket:
        raise UserInputError(f"{uri} is not an s3://bucket/prefix URI.")
    return bucket, key.strip("/")


def _report(uri: str, files: dict[str, dict[str, Any]], started: float) -> SyncReport:
    import json

    body = json.dumps({"version": 1, "files": dict(sorted(files.items()))}, sort_keys=True,
                      indent=1).encode()
    return SyncReport(uri=uri, files_total=len(files), skipped=len(files),
                      seconds=round(time.perf_counter() - started, 3),
                      manifest_sha256=hashlib.sha256(body).hexdigest())


def refresh_local(uri: str, hash_cache: Path | None = None) -> SyncReport:
    """The local store folder at `uri` as it is now: every file, hashed (cached by mtime)."""
    from dogops.hash_cache import HashCache
    from dogops.local.store import file_sha256

    started = time.perf_counter()
    root = local_path(uri)
    inspect_dataset(root)
    cache = HashCache(hash_cache)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = path.relative_to(root).as_posix()
        if key == MANIFEST_NAME or path.name.startswith("."):
            continue
        digests = cache.hashes(
            path, key, lambda p: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        )
        files[key] = {"size": int(digests["size"]), "sha256": digests["sha256"]}
    cache.save(keep=set(files))
    return _report(uri, files, started)


def refresh_s3(clients: Any, uri: str) -> SyncReport:
    """What is under the S3 prefix now, by size and ETag (no download)."""
    from dogops.aws import s3_sync

    started = time.perf_counter()
    bucket, prefix = split_s3(uri)
    previous = s3_sync.read_manifest(clients, bucket, prefix)
    files: dict[str, dict[str, Any]] = {}
    for key, remote in s3_sync.list_remote(clients, bucket, prefix).items():
        rel = key[len(prefix) + 1:] if prefix else key
        if rel == MANIFEST_NAME:
            continue
        known = previous.get(rel)
        if known and known.get("etag") == remote.etag and known.get("size") == remote.size:
            files[rel] = known  # keeps the sha256 the sync recorded
        else:
            files[rel] = {"size": remote.size, "etag": remote.etag}
    missing = [s for s in ("train", "valid", "test") if not any(r.startswith(f"{s}/")
                                                                  for r in files)]
    if missing:
        raise UserInputError(
            f"{uri} has no {', '.join(missing)}/ objects: the data prefix must hold "
            "train/, valid/ and test/; pass resync=True to sync the recorded folder again."
        )
    return _report(uri, files, started)


def refresh(settings: Settings, uri: str) -> SyncReport:
    """The data under `uri` as it is now, on `settings.backend`'s object store."""
    if uri.startswith("s3://"):
        from dogops.aws.clients import AwsClients

        return refresh_s3(AwsClients(settings.aws), uri)
    state = settings.state_dir.expanduser().resolve()
    return refresh_local(uri, state / "hash-cache" / "store.json")


def test_split(settings: Settings, data: SyncReport) -> Path:
    """A local folder with the data's test split, for scoring: the store folder itself locally,
    a download (skipping files already there with the same size) on AWS."""
    if not data.uri.startswith("s3://"):
        return local_path(data.uri) / "test"
    from dogops.aws import s3_sync
    from dogops.aws.clients import AwsClients

    clients = AwsClients(settings.aws)
    bucket, prefix = split_s3(data.uri)
    target = (settings.state_dir.expanduser().resolve() / "data-cache" / bucket / prefix)
    s3 = clients.client("s3")
    test_prefix = f"{prefix}/test" if prefix else "test"
    for key, remote in s3_sync.list_remote(clients, bucket, test_prefix).items():
        path = target / key[len(prefix) + 1:] if prefix else target / key
        if path.is_file() and path.stat().st_size == remote.size:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(path))
    return target / "test"
