"""Uploading the files an S3 sync found changed: one PutObject per small file, sent as the bytes
it hashes, and verified from S3's answer (see `dogops.aws.s3_sync`, steps 4 and 5).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from dogops.backends.base import ProgressFn
from dogops.errors import TransientError
from dogops.progress import Progress

MiB = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    """One local file, hashed the ways S3 and the manifest need."""

    rel: str
    path: Path
    size: int
    md5: str
    sha256: str
    etag: str


@dataclass(frozen=True)
class RemoteObject:
    size: int
    etag: str


def object_key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def bytes_file(data: bytes, path: Path, rel: str) -> LocalFile:
    """The hashes of `data` sent in one PutObject (its ETag is then the plain MD5)."""
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return LocalFile(rel, path, len(data), md5, hashlib.sha256(data).hexdigest(), md5)


class ThrottledSay:
    """Throttled progress lines (files, bytes, MB/s), always emitted from the calling thread."""

    def __init__(self, progress: ProgressFn | None, interval_s: float) -> None:
        self.progress = progress
        self.interval_s = interval_s
        self.last = 0.0

    def __call__(self, line: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress and (force or now - self.last >= self.interval_s):
            self.last = now
            self.progress(line)


def run_pool(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any]
) -> Iterator[tuple[Any, Any]]:
    """Yield (item, result) as each finishes; on any error cancel what has not started."""
    futures: dict[Future[Any], Any] = {pool.submit(fn, item): item for item in items}
    try:
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        for future in futures:
            future.cancel()


def uploader(
    s3: Any, bucket: str, prefix: str, threshold: int, transfer: TransferConfig
) -> Callable[[LocalFile], tuple[LocalFile, RemoteObject]]:
    """The upload of one file; it returns what was sent and the object S3 now holds."""

    def upload(item: LocalFile) -> tuple[LocalFile, RemoteObject]:
        key = object_key(prefix, item.rel)
        content_type = mimetypes.guess_type(item.rel)[0] or "application/octet-stream"
        if item.size < threshold:
            # One PutObject of the bytes just read and hashed again (step 4; `upload_file` starts
            # a transfer manager per file, several times slower for thousands of small images).
            data = item.path.read_bytes()
            sent = bytes_file(data, item.path, item.rel)
            answer = s3.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type,
                ContentMD5=base64.b64encode(bytes.fromhex(sent.md5)).decode(),
            )
            return sent, RemoteObject(sent.size, str(answer["ETag"]).strip('"'))
        s3.upload_file(
            str(item.path), bucket, key, ExtraArgs={"ContentType": content_type}, Config=transfer,
        )
        head = s3.head_object(Bucket=bucket, Key=key)
        return item, RemoteObject(int(head["ContentLength"]), str(head["ETag"]).strip('"'))

    return upload


def upload_all(
    pool: ThreadPoolExecutor, upload: Callable[[LocalFile], tuple[LocalFile, RemoteObject]],
    to_upload: list[LocalFile], uri: str, total_files: int, say: ThrottledSay,
    progress: ProgressFn | None,
) -> list[tuple[LocalFile, RemoteObject]]:
    """Upload `to_upload` in `pool` with progress lines; returns (what was sent, object) each."""
    total_bytes = sum(f.size for f in to_upload)
    say(f"{uri}: {total_files} files, {len(to_upload)} to upload ({total_bytes / MiB:.1f} MB), "
        f"{total_files - len(to_upload)} unchanged", force=True)
    if not to_upload:
        return []
    done: list[tuple[LocalFile, RemoteObject]] = []
    done_bytes = 0
    upload_started = time.monotonic()
    tracker = Progress(f"upload to {uri}", len(to_upload), "files", say=progress)
    for _, result in run_pool(pool, upload, to_upload):
        done.append(result)
        done_bytes += result[0].size
        elapsed = max(time.monotonic() - upload_started, 1e-6)
        rate = (f"{done_bytes / MiB:.1f}/{total_bytes / MiB:.1f} MB, "
                f"{done_bytes / MiB / elapsed:.1f} MB/s")
        tracker.update(len(done), note=rate)
        say(f"uploaded {len(done)}/{len(to_upload)} files, {rate}",
            force=len(done) == len(to_upload))
    tracker.finish()
    return done


def check_uploads(bucket: str, prefix: str, done: list[tuple[LocalFile, RemoteObject]]) -> None:
    """Check every uploaded object holds the size that was sent (see step 5: no listing, no HEAD
    per small object: a PutObject answered 200 is stored and S3 checked its Content-MD5)."""
    for sent, obj in done:
        if obj.size != sent.size:
            raise TransientError(
                f"s3://{bucket}/{object_key(prefix, sent.rel)} is {obj.size} bytes after upload, "
                f"the local file had {sent.size} bytes: the re-run uploads it again."
            )
