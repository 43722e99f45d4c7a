"""The aws backend's data of record (`dogops.data_source`): what is under an S3 prefix now, by
size and ETag (no download), and the test split downloaded for scoring."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dogops.aws import s3_sync
from dogops.aws.clients import AwsClients
from dogops.aws.training import split_s3_uri
from dogops.errors import UserInputError
from dogops.results import DATA_MANIFEST, SyncReport, listing_report


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of the registry's data URI, refusing anything else."""
    bucket, key = split_s3_uri(uri) if uri.startswith("s3://") else ("", "")
    if not bucket:
        raise UserInputError(f"{uri} is not an s3://bucket/prefix URI.")
    return bucket, key.strip("/")


def refresh_s3(clients: AwsClients, uri: str) -> SyncReport:
    """What is under the S3 prefix now, by size and ETag (no download)."""
    started = time.perf_counter()
    bucket, prefix = split_s3(uri)
    previous = s3_sync.read_manifest(clients, bucket, prefix)
    files: dict[str, dict[str, Any]] = {}
    for key, remote in s3_sync.list_remote(clients, bucket, prefix).items():
        rel = key[len(prefix) + 1:] if prefix else key
        if rel == DATA_MANIFEST:
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
    return listing_report(uri, files, started)


def download_test_split(clients: AwsClients, uri: str, cache_dir: Path) -> Path:
    """The test split under `uri`, downloaded to `cache_dir/<bucket>/<prefix>/test` (skipping
    files already there with the same size)."""
    bucket, prefix = split_s3(uri)
    target = cache_dir / bucket / prefix
    s3 = clients.client("s3")
    test_prefix = f"{prefix}/test" if prefix else "test"
    for key, remote in s3_sync.list_remote(clients, bucket, test_prefix).items():
        path = target / key[len(prefix) + 1:] if prefix else target / key
        if path.is_file() and path.stat().st_size == remote.size:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(path))
    return target / "test"
