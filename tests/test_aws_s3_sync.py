"""The S3 data sync against the moto server: real buckets, objects, ETags and multipart uploads."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dogops.aws.clients import AwsClients
from dogops.aws.s3_sync import MANIFEST_NAME, MiB, hash_file, sync_folder
from dogops.errors import DataLayoutError, UserInputError

pytestmark = pytest.mark.aws

BUCKET = "dogops-test"
PREFIX = "dogops/data"


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def small_tree(root: Path) -> Path:
    return make_tree(
        root,
        {
            "train/a/1.jpg": b"train-a-1",
            "train/b/2.jpg": b"train-b-2",
            "valid/a/3.jpg": b"valid-a-3",
            "test/b/4.jpg": b"test-b-4",
        },
    )


def keys(s3: Any) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/")
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def count_calls(s3: Any, operation: str) -> list[str]:
    """Record each call of `operation` with a botocore event hook (the client's real calls)."""
    seen: list[str] = []
    s3.meta.events.register(
        f"before-parameter-build.s3.{operation}",
        lambda params, **_: seen.append(params.get("Key", "")),
    )
    return seen


@pytest.fixture
def clients(aws_settings) -> AwsClients:  # type: ignore[no-untyped-def]
    return AwsClients(aws_settings.aws)


def test_first_sync_creates_protected_bucket_and_manifest(clients: AwsClients, tmp_path: Path):
    data = small_tree(tmp_path / "data")
    lines: list[str] = []
    report = sync_folder(
        clients, data, BUCKET, PREFIX, create_bucket=True, progress=lines.append
    )
    s3 = clients.client("s3")

    assert report.uri == f"s3://{BUCKET}/{PREFIX}"
    assert (report.files_total, report.uploaded, report.skipped, report.deleted) == (4, 4, 0, 0)
    assert report.bytes_uploaded == sum(len(p.read_bytes()) for p in data.rglob("*.jpg"))
    assert keys(s3) == {
        f"{PREFIX}/train/a/1.jpg", f"{PREFIX}/train/b/2.jpg", f"{PREFIX}/valid/a/3.jpg",
        f"{PREFIX}/test/b/4.jpg", f"{PREFIX}/{MANIFEST_NAME}",
    }
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4

    body = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == report.manifest_sha256
    manifest = json.loads(body)
    entry = manifest["files"]["train/a/1.jpg"]
    assert entry["size"] == 9
    assert entry["md5"] == hashlib.md5(b"train-a-1").hexdigest()
    assert entry["sha256"] == hashlib.sha256(b"train-a-1").hexdigest()
    assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/train/a/1.jpg")["ContentType"] == (
        "image/jpeg"
    )
    assert any("4 to upload" in line for line in lines)
    assert any("MB/s" in line for line in lines)


def test_changed_unchanged_and_deleted_files(clients: AwsClients, tmp_path: Path):
    data = small_tree(tmp_path / "data")
    first = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)
    s3 = clients.client("s3")
    # Someone else's object under the prefix: not in our manifest, so never deleted.
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/notes/readme.txt", Body=b"keep me")

    (data / "train/a/1.jpg").write_bytes(b"train-a-1 changed, longer")
    (data / "valid/a/3.jpg").write_bytes(b"valid-a-X")  # same size, different content
    (data / "test/b/4.jpg").unlink()
    make_tree(data, {"test/b/5.jpg": b"new"})
    puts = count_calls(s3, "PutObject")

    report = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)

    assert (report.files_total, report.uploaded, report.skipped, report.deleted) == (4, 3, 1, 1)
    assert sorted(puts) == sorted(
        [f"{PREFIX}/train/a/1.jpg", f"{PREFIX}/valid/a/3.jpg", f"{PREFIX}/test/b/5.jpg",
         f"{PREFIX}/{MANIFEST_NAME}"]
    )
    assert f"{PREFIX}/test/b/4.jpg" not in keys(s3)
    assert f"{PREFIX}/notes/readme.txt" in keys(s3)
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/valid/a/3.jpg")["Body"].read() == (
        b"valid-a-X"
    )
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read()
    )
    assert sorted(manifest["files"]) == [
        "test/b/5.jpg", "train/a/1.jpg", "train/b/2.jpg", "valid/a/3.jpg"
    ]
    assert report.manifest_sha256 != first.manifest_sha256


def test_delete_false_keeps_remote_objects_in_the_manifest(clients: AwsClients, tmp_path: Path):
    data = small_tree(tmp_path / "data")
    sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)
    (data / "test/b/4.jpg").unlink()
    kept = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, delete=False)
    s3 = clients.client("s3")
    assert kept.deleted == 0 and f"{PREFIX}/test/b/4.jpg" in keys(s3)
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read()
    )
    assert "test/b/4.jpg" in manifest["files"]
    later = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)
    assert later.deleted == 1 and f"{PREFIX}/test/b/4.jpg" not in keys(s3)


def test_unchanged_thousand_files_make_no_uploads(clients: AwsClients, tmp_path: Path):
    data = tmp_path / "data"
    make_tree(
        data,
        {f"{split}/c{i % 5}/{i:04d}.jpg": f"{split}-{i}".encode()
         for split, n in (("train", 800), ("valid", 100), ("test", 100)) for i in range(n)},
    )
    first = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, max_workers=8)
    assert first.uploaded == 1000

    s3 = clients.client("s3")
    puts = count_calls(s3, "PutObject")
    parts = count_calls(s3, "UploadPart")
    second = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, max_workers=8)

    assert (second.uploaded, second.skipped, second.deleted) == (0, 1000, 0)
    assert puts == []  # not even the manifest: it would be byte-identical
    assert parts == []
    assert second.manifest_sha256 == first.manifest_sha256


def test_hash_cache_makes_an_unchanged_resync_read_no_file_and_still_sees_edits(
    clients: AwsClients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import dogops.aws.s3_sync as s3_sync

    data = small_tree(tmp_path / "data")
    cache = tmp_path / "state" / "hashes.json"
    sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, hash_cache=cache)
    hashed: list[str] = []
    real = s3_sync.hash_file

    def counting(path: Path, rel: str, **kwargs: Any) -> Any:
        hashed.append(path.name)
        return real(path, rel, **kwargs)

    monkeypatch.setattr(s3_sync, "hash_file", counting)
    again = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, hash_cache=cache)
    assert hashed == [] and again.uploaded == 0

    edited = data / "train/a/1.jpg"
    edited.write_bytes(b"a different image")
    os.utime(edited, ns=(edited.stat().st_atime_ns, edited.stat().st_mtime_ns + 10**9))
    third = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, hash_cache=cache)
    assert hashed == ["1.jpg"] and third.uploaded == 1
    body = clients.client("s3").get_object(Bucket=BUCKET, Key=f"{PREFIX}/train/a/1.jpg")["Body"]
    assert body.read() == b"a different image"


def test_crash_mid_sync_then_rerun_completes(clients: AwsClients, tmp_path: Path):
    data = small_tree(tmp_path / "data")
    sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)
    s3 = clients.client("s3")
    old_manifest = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read()
    make_tree(data, {f"train/c/{i}.jpg": f"new-{i}".encode() for i in range(6)})
    (data / "train/b/2.jpg").unlink()

    # The crash: the network dies after three uploads of the second sync.
    puts: list[str] = []

    def die_after_three(params: dict[str, Any], **_: Any) -> None:
        puts.append(params["Key"])
        if len(puts) > 3:
            raise ConnectionError("simulated crash")

    s3.meta.events.register("before-parameter-build.s3.PutObject", die_after_three)
    with pytest.raises(ConnectionError):
        sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, max_workers=1)
    s3.meta.events.unregister("before-parameter-build.s3.PutObject", die_after_three)

    # The old manifest is intact and the file deleted locally is still there remotely.
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read() == (
        old_manifest
    )
    assert f"{PREFIX}/train/b/2.jpg" in keys(s3)

    report = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)
    assert report.uploaded == 3  # the three the crashed run did are skipped
    assert report.deleted == 1
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read()
    )
    expected = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    assert sorted(manifest["files"]) == expected
    assert keys(s3) == {f"{PREFIX}/{k}" for k in expected} | {f"{PREFIX}/{MANIFEST_NAME}"}


def test_multipart_file_is_skipped_on_resync(clients: AwsClients, tmp_path: Path):
    data = small_tree(tmp_path / "data")
    big = data / "train/a/big.jpg"
    big.write_bytes(os.urandom(12 * MiB))
    options: dict[str, Any] = {"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB}
    s3 = clients.client("s3")
    parts = count_calls(s3, "UploadPart")

    first = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, **options)
    assert first.uploaded == 5 and len(parts) == 3  # 5 + 5 + 2 MB
    remote_etag = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/train/a/big.jpg")["ETag"]
    local = hash_file(big, "train/a/big.jpg", threshold=5 * MiB, chunksize=5 * MiB)
    assert remote_etag.strip('"') == local.etag and local.etag.endswith("-3")

    parts.clear()
    second = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, **options)
    assert (second.uploaded, second.skipped) == (0, 5)
    assert parts == []

    # A different part size changes the local ETag, but the manifest's sha256 still proves the
    # remote object is the same content: nothing is uploaded.
    third = sync_folder(
        clients, data, BUCKET, PREFIX, create_bucket=True,
        multipart_threshold=5 * MiB, multipart_chunksize=6 * MiB,
    )
    assert third.uploaded == 0


def test_layout_and_bucket_errors(clients: AwsClients, tmp_path: Path):
    data = make_tree(tmp_path / "data", {"train/a/1.jpg": b"x", "test/a/2.jpg": b"y"})
    with pytest.raises(DataLayoutError, match="valid/"):
        sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)
    make_tree(data, {"valid/a/3.jpg": b"z"})
    with pytest.raises(UserInputError, match="create_bucket"):
        sync_folder(clients, data, BUCKET, PREFIX, create_bucket=False)


def test_unchanged_resync_makes_one_listing_and_no_per_object_request(
    clients: AwsClients, tmp_path: Path
):
    data = small_tree(tmp_path / "data")
    cache = tmp_path / "state" / "hashes.json"
    sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, hash_cache=cache)
    s3 = clients.client("s3")
    sent: list[tuple[str, str | None]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        sent.append((model.name, params.get("Key")))

    s3.meta.events.register("before-parameter-build.s3", record)
    again = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True, hash_cache=cache)
    s3.meta.events.unregister("before-parameter-build.s3", record)
    assert again.uploaded == 0 and again.skipped == 4
    # The bucket checks, the manifest read and one listing page: nothing per object.
    assert sorted(sent, key=str) == [
        ("GetBucketEncryption", None), ("GetObject", f"{PREFIX}/{MANIFEST_NAME}"),
        ("GetPublicAccessBlock", None), ("HeadBucket", None), ("ListObjectsV2", None),
    ]


def test_a_file_changed_after_hashing_is_recorded_as_uploaded(
    clients: AwsClients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import dogops.aws.s3_sync as s3_sync

    data = small_tree(tmp_path / "data")
    real = s3_sync.hash_file

    def hash_then_edit(path: Path, rel: str, **kwargs: Any) -> Any:
        hashed = real(path, rel, **kwargs)
        if path.name == "1.jpg":  # the user saves a new version between hashing and upload
            path.write_bytes(b"edited!!!")  # same size: only the hash tells
        return hashed

    monkeypatch.setattr(s3_sync, "hash_file", hash_then_edit)
    report = sync_folder(clients, data, BUCKET, PREFIX, create_bucket=True)
    s3 = clients.client("s3")
    stored = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/train/a/1.jpg")["Body"].read()
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read()
    )
    entry = manifest["files"]["train/a/1.jpg"]
    # The manifest describes the bytes S3 holds, never the stale hash of the earlier content.
    assert stored == b"edited!!!"
    assert entry["sha256"] == hashlib.sha256(stored).hexdigest()
    assert entry["size"] == len(stored) and report.bytes_uploaded == len(stored) + 26
