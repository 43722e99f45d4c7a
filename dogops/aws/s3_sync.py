"""Incremental, parallel, verified and resumable sync of the data folder to S3.

How one sync goes, and why in this order:

1. Check the layout (train/ valid/ test/) before touching AWS: a wrong folder fails in a second.
   The files synced are the data files of the one walk validation and training use
   (`model_code.data_files`: images under <split>/<class>/, no dot-files, links refused).
2. Make sure the bucket exists (created on request with AES256 default encryption and every
   public access block flag on; an existing bucket's settings are never overwritten).
3. Read the previous manifest and list the prefix (the floor of a re-sync: started at once,
   beside step 2's checks and the local walk), then hash every local file (MD5, SHA-256 and the
   ETag S3 will report: the plain MD5 below the multipart threshold, else the MD5 of the part
   MD5s plus `-<parts>` with boto3's part size). A hash cache by size + mtime makes an unchanged
   re-sync read no file and send no per-file request: one listing, a stat per file.
4. Upload only files that differ, in a thread pool (boto3 clients are thread-safe; large files
   are multipart uploads through `TransferConfig`). A file is unchanged when the remote size and
   ETag match, or when the previous manifest recorded the same SHA-256 for exactly the remote
   object's ETag (this covers SSE-KMS buckets, where the ETag is not an MD5, and part-size
   changes). A small file is read once, hashed again and sent with its Content-MD5, so what the
   manifest records is what S3 checked and stored, even if the file changed in between.
5. Verify each upload (size and ETag from its PutObject answer; a HEAD per multipart file),
   delete objects whose local file is gone -- only keys the previous manifest listed, so objects
   other tools put under the prefix survive -- and write `<prefix>/_manifest.json` LAST in one
   PUT, which S3 makes atomic.

A crash anywhere before step 5's PUT leaves the old manifest; the re-run re-hashes, finds the files
the crashed run already uploaded matching by ETag, and uploads only the rest. (A file uploaded by a
crashed run and deleted locally before the re-run is not in any manifest and so is left in place:
deleting only what a manifest lists is what keeps other objects safe.)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from s3transfer.utils import ChunksizeAdjuster

from dogops.aws.client_errors import error_code
from dogops.aws.clients import AwsClients
from dogops.aws.s3_bucket import ensure_bucket
from dogops.aws.s3_upload import (
    LocalFile,
    MiB,
    ProgressFn,
    RemoteObject,
    ThrottledSay,
    check_uploads,
    object_key,
    run_pool,
    upload_all,
    uploader,
)
from dogops.dataset import data_files
from dogops.errors import DataLayoutError, TransientError
from dogops.hash_cache import HashCache
from dogops.progress import Progress
from dogops.results import SyncReport

DEFAULT_MULTIPART_THRESHOLD = 8 * MiB  # boto3's default: below it, one PutObject per file
DEFAULT_MULTIPART_CHUNKSIZE = 8 * MiB
MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
REQUIRED_SPLITS = ("train", "valid", "test")

_T = TypeVar("_T")


def check_layout(local_dir: Path) -> None:
    """Raise `DataLayoutError` naming the missing folder unless train/ valid/ test/ exist."""
    if not local_dir.is_dir():
        raise DataLayoutError(
            f"Data dir {local_dir} does not exist or is not a folder: pass a folder holding "
            "train/, valid/ and test/."
        )
    for split in REQUIRED_SPLITS:
        if not (local_dir / split).is_dir():
            raise DataLayoutError(
                f"Data dir {local_dir} has no {split}/ folder: it needs train/, valid/ and test/, "
                "each with one sub-folder per class."
            )


def local_files(local_dir: Path) -> list[Path]:
    """The data's files, sorted: the one walk validation and training use (images under
    <split>/<class>/, no dot-files, links refused), so S3 holds exactly what was validated."""
    return sorted(found.path for found in data_files(local_dir))


def part_size(size: int, chunksize: int) -> int:
    """The part size s3transfer really uses for a file (it grows parts to stay <= 10,000)."""
    return int(ChunksizeAdjuster().adjust_chunksize(chunksize, size))


def hash_file(
    path: Path, rel: str, *, threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
) -> LocalFile:
    """MD5, SHA-256 and the expected S3 ETag in one read of the file."""
    size = path.stat().st_size
    multipart = size >= threshold  # s3transfer's own test: `size >= multipart_threshold`
    step = part_size(size, chunksize) if multipart else MiB
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    part_digests: list[bytes] = []
    with path.open("rb") as fh:
        while chunk := fh.read(step):
            md5.update(chunk)
            sha.update(chunk)
            if multipart:
                part_digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    if multipart:
        combined = hashlib.md5(b"".join(part_digests), usedforsecurity=False).hexdigest()
        etag = f"{combined}-{len(part_digests)}"
    else:
        etag = md5.hexdigest()
    return LocalFile(rel, path, size, md5.hexdigest(), sha.hexdigest(), etag)


def read_manifest_bytes(clients: AwsClients, bucket: str, prefix: str) -> bytes | None:
    """The previous sync's manifest as stored, or None when there is none yet."""
    try:
        body = clients.client("s3").get_object(
            Bucket=bucket, Key=object_key(prefix, MANIFEST_NAME)
        )["Body"].read()
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return bytes(body)


def read_manifest(clients: AwsClients, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The previous sync's file table, or {} when there is none yet."""
    body = read_manifest_bytes(clients, bucket, prefix)
    return dict(json.loads(body).get("files", {})) if body else {}


def list_remote(clients: AwsClients, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Every object under `prefix/`, keyed by the full key."""
    found: dict[str, RemoteObject] = {}
    paginator = clients.client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for item in page.get("Contents", []):
            found[item["Key"]] = RemoteObject(int(item["Size"]), item["ETag"].strip('"'))
    return found


def is_unchanged(
    local: LocalFile, remote: RemoteObject | None, previous: dict[str, Any] | None
) -> bool:
    """See step 4 of the module docstring."""
    if remote is None or remote.size != local.size:
        return False
    if remote.etag == local.etag:
        return True
    return bool(previous and previous.get("sha256") == local.sha256
                and previous.get("etag") == remote.etag)


def manifest_body(bucket: str, prefix: str, files: dict[str, dict[str, Any]]) -> bytes:
    """Deterministic JSON (sorted keys, no timestamps): same data, same bytes, same hash."""
    document = {"version": MANIFEST_VERSION, "bucket": bucket, "prefix": prefix, "files": files}
    return json.dumps(document, sort_keys=True, indent=1).encode()


def _prefetch(
    pool: ThreadPoolExecutor, clients: AwsClients, bucket: str, prefix: str, *, create: bool
) -> tuple[Future[bool], Future[dict[str, RemoteObject]], Future[bytes | None]]:
    """Start the bucket checks, the listing and the manifest read at once (step 3). On a bucket
    this sync creates, the listing and the read find no bucket and run again once it exists."""
    bucket_ready = pool.submit(ensure_bucket, clients, bucket, create=create)

    def after_bucket(read: Callable[[], _T]) -> _T:
        try:
            return read()
        except ClientError as exc:
            if error_code(exc) not in ("NoSuchBucket", "404"):
                raise
        bucket_ready.result()  # raises the bucket's own, clearer error when there is one
        return read()

    listing = pool.submit(after_bucket, lambda: list_remote(clients, bucket, prefix))
    manifest = pool.submit(after_bucket, lambda: read_manifest_bytes(clients, bucket, prefix))
    return bucket_ready, listing, manifest


def _hasher(
    cache: HashCache, threshold: int, chunksize: int
) -> Callable[[tuple[Path, str]], LocalFile]:
    """(path, rel) -> its LocalFile, from the hash cache when size and mtime still match."""

    def digests(path: Path) -> dict[str, Any]:
        f = hash_file(path, "", threshold=threshold, chunksize=chunksize)
        return {"size": f.size, "md5": f.md5, "sha256": f.sha256, "etag": f.etag}

    def hashed(item: tuple[Path, str]) -> LocalFile:
        path, rel = item
        return LocalFile(rel=rel, path=path, **cache.hashes(path, rel, digests))

    return hashed


def sync_folder(
    clients: AwsClients,
    local_dir: Path,
    bucket: str,
    prefix: str,
    *,
    create_bucket: bool,
    delete: bool = True,
    max_workers: int = 8,
    progress: ProgressFn | None = None,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
    progress_interval_s: float = 2.0,
    hash_cache: Path | None = None,
) -> SyncReport:
    """Mirror `local_dir` to `s3://bucket/prefix/`; see the module docstring for the guarantees.

    `hash_cache` (a file in the state dir) keeps each file's hashes by size and mtime, so a
    re-sync of an unchanged folder reads no file content.
    """
    started, local_dir, prefix = time.monotonic(), Path(local_dir), prefix.strip("/")
    check_layout(local_dir)
    s3 = clients.client("s3")
    say = ThrottledSay(progress, progress_interval_s)
    cache = HashCache(hash_cache, variant=f"s3:{multipart_threshold}:{multipart_chunksize}")

    _hash = _hasher(cache, multipart_threshold, multipart_chunksize)
    # The classic transfer manager: its part sizes are the ones `hash_file` reproduces.
    transfer = TransferConfig(
        multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize,
        max_concurrency=4, use_threads=True, preferred_transfer_client="classic",
    )
    hashed: dict[str, LocalFile] = {}
    to_upload: list[LocalFile] = []
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3sync") as pool:
        bucket_ready, listing, manifest = _prefetch(
            pool, clients, bucket, prefix, create=create_bucket
        )
        paths = local_files(local_dir)  # while the listing runs, as are the cache's stats
        rels = [p.relative_to(local_dir).as_posix() for p in paths]
        known = [cache.cached(path, rel) for path, rel in zip(paths, rels, strict=True)]
        bucket_ready.result()
        previous_body = manifest.result()
        previous = dict(json.loads(previous_body).get("files", {})) if previous_body else {}
        remote = listing.result()

        title = f"hash {local_dir} (unchanged files are skipped)"
        for local in _hash_all(pool, title, list(zip(paths, rels, strict=True)), known, _hash,
                               progress):
            hashed[local.rel] = local
            key = object_key(prefix, local.rel)
            if not is_unchanged(local, remote.get(key), previous.get(local.rel)):
                to_upload.append(local)
        to_upload.sort(key=lambda f: f.rel)
        uploaded = upload_all(
            pool, uploader(s3, bucket, prefix, multipart_threshold, transfer), to_upload,
            f"s3://{bucket}/{prefix}", len(paths), say, progress,
        )

    cache.save(keep=set(rels))
    for sent, obj in uploaded:
        hashed[sent.rel] = sent
        remote[object_key(prefix, sent.rel)] = obj
    check_uploads(bucket, prefix, uploaded)
    # Only after every upload is verified: remote deletions, then the manifest.
    deleted = _delete_stale(clients, bucket, prefix, previous, hashed, remote) if delete else 0
    body = _write_manifest(s3, bucket, prefix, hashed, remote, previous, previous_body,
                           keep_previous=not delete)
    report = SyncReport(
        uri=f"s3://{bucket}/{prefix}", files_total=len(paths), uploaded=len(uploaded),
        skipped=len(paths) - len(uploaded), deleted=deleted,
        bytes_uploaded=sum(sent.size for sent, _ in uploaded),
        seconds=round(time.monotonic() - started, 3),
        manifest_sha256=hashlib.sha256(body).hexdigest(),
    )
    say(f"synced {report.uri} in {report.seconds:.1f} s: {report.uploaded} uploaded, "
        f"{report.skipped} unchanged, {report.deleted} deleted", force=True)
    return report


def _hash_all(
    pool: ThreadPoolExecutor, title: str, items: list[tuple[Path, str]],
    known: list[dict[str, Any] | None], hash_one: Callable[[tuple[Path, str]], LocalFile],
    progress: ProgressFn | None,
) -> list[LocalFile]:
    """Every file's hashes: from the cache where it vouches for them, else read in `pool`."""
    hashing = Progress(title, len(items), "files", say=progress)
    done = [LocalFile(rel=rel, path=path, **digests)
            for (path, rel), digests in zip(items, known, strict=True) if digests is not None]
    hashing.advance(len(done))
    unread = [item for item, digests in zip(items, known, strict=True) if digests is None]
    for _, local in run_pool(pool, hash_one, unread):
        hashing.advance()
        done.append(local)
    hashing.finish()
    return done


def _write_manifest(
    s3: Any, bucket: str, prefix: str, hashed: dict[str, LocalFile],
    remote: dict[str, RemoteObject], previous: dict[str, dict[str, Any]],
    previous_body: bytes | None, *, keep_previous: bool,
) -> bytes:
    """The manifest of what is now under the prefix, PUT unless it is byte-identical."""
    files: dict[str, dict[str, Any]] = {}
    for rel, local in sorted(hashed.items()):
        etag = remote[object_key(prefix, rel)].etag
        files[rel] = {"size": local.size, "md5": local.md5, "sha256": local.sha256, "etag": etag}
    if keep_previous:
        # Kept remote objects stay in the manifest: it describes what is under the prefix, and a
        # later sync with delete=True can then still remove them.
        for rel, entry in previous.items():
            if rel not in files and object_key(prefix, rel) in remote:
                files[rel] = entry
    files = dict(sorted(files.items()))
    body = manifest_body(bucket, prefix, files)
    if body != previous_body:  # an unchanged data set makes no request that writes
        s3.put_object(
            Bucket=bucket, Key=object_key(prefix, MANIFEST_NAME), Body=body,
            ContentType="application/json",
        )
    return body


def _delete_stale(
    clients: AwsClients,
    bucket: str,
    prefix: str,
    previous: dict[str, dict[str, Any]],
    hashed: dict[str, LocalFile],
    remote: dict[str, RemoteObject],
) -> int:
    """Delete objects the previous manifest listed whose local file is gone; returns how many."""
    stale = [
        object_key(prefix, rel)
        for rel in sorted(previous)
        if rel not in hashed and object_key(prefix, rel) in remote
    ]
    s3 = clients.client("s3")
    for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1,000 keys
        batch = stale[start : start + 1000]
        answer = s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        errors = answer.get("Errors", [])
        if errors:
            first = errors[0]
            raise TransientError(
                f"could not delete {len(errors)} stale object(s) under s3://{bucket}/{prefix}, "
                f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
            )
    return len(stale)
