"""S3 upload: dogops' `sync_folder` vs `aws s3 sync`, same folder, same moto server.

    python -m bench.bench_s3_sync [--files 2000] [--quick]

Both tools upload the same generated folder (default 2,000 files of 50-200 KB of random bytes,
like JPEGs: incompressible) to their own bucket on one moto server running in its own process on
127.0.0.1, then sync the unchanged folder again. Each tool runs with its default concurrency
(dogops: 8 threads; awscli: 10). The moto server is reset between the tools, so each starts from
an empty server. `aws s3 sync`'s time includes its interpreter start-up, as a user sees it; that
start-up is reported on its own too.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE_DIR,
    FAKE_AWS_ENV,
    BenchResult,
    Figure,
    finish,
    moto_server,
    parser,
    peer_aws_cli,
    reset_moto,
)

SPLITS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
CLASSES = 10
PREFIX = "data"


def make_folder(files: int, seed: int = 7, min_kb: int = 50, max_kb: int = 200) -> Path:
    """A train/valid/test folder of `files` random files, generated once into the cache."""
    root = CACHE_DIR / f"s3-folder-{files}-{seed}-{min_kb}-{max_kb}"
    done = root.with_name(root.name + ".done")  # outside the folder: both tools would upload it
    if done.exists():
        return root
    rng = random.Random(seed)
    index = 0
    for split, share in SPLITS:
        count = round(files * share) if split != "test" else files - index
        for n in range(count):
            folder = root / split / f"class_{n % CLASSES:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            size = rng.randint(min_kb * 1024, max_kb * 1024)
            (folder / f"img_{index:05d}.jpg").write_bytes(rng.randbytes(size))
            index += 1
    done.write_text(str(files))
    return root


def folder_stats(root: Path) -> tuple[int, int]:
    paths = [p for p in root.rglob("*") if p.is_file()]
    return len(paths), sum(p.stat().st_size for p in paths)


def count_objects(url: str, bucket: str) -> tuple[int, int]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/"):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("_manifest.json"):
                count += 1
                size += int(item["Size"])
    return count, size


def run_peer(aws: Path, url: str, folder: Path, bucket: str) -> float:
    env = {**os.environ, **FAKE_AWS_ENV}
    started = time.perf_counter()
    subprocess.run(
        [str(aws), "s3", "sync", str(folder), f"s3://{bucket}/{PREFIX}", "--endpoint-url", url,
         "--only-show-errors", "--no-progress"],
        env=env, check=True,
    )
    return time.perf_counter() - started


def peer_startup(aws: Path) -> float:
    started = time.perf_counter()
    subprocess.run([str(aws), "--version"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_project(url: str, folder: Path, bucket: str, hash_cache: Path) -> tuple[float, Any]:
    from dogops.aws.clients import AwsClients
    from dogops.aws.s3_sync import sync_folder
    from dogops.settings import AwsConfig

    clients = AwsClients(AwsConfig(endpoint_url=url, region="us-east-1", bucket=bucket))
    started = time.perf_counter()
    # The hash cache in the state dir, as `AwsBackend.upload_data` passes it.
    report = sync_folder(
        clients, folder, bucket, PREFIX, create_bucket=True, hash_cache=hash_cache
    )
    return time.perf_counter() - started, report


def run(files: int) -> BenchResult:
    import boto3

    for key, value in FAKE_AWS_ENV.items():
        os.environ.setdefault(key, value)
    aws = peer_aws_cli()
    folder = make_folder(files)
    n_files, n_bytes = folder_stats(folder)
    mb = n_bytes / 1e6
    details: dict[str, Any] = {"files": n_files, "megabytes": round(mb, 1),
                               "file_kb": [50, 200], "peer": "aws s3 sync (awscli)"}
    with moto_server() as url:
        # The peer first, then a reset: each tool starts from an empty server.
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.create_bucket(Bucket="bench-peer")
        startup = peer_startup(aws)
        peer_first = run_peer(aws, url, folder, "bench-peer")
        peer_objects = count_objects(url, "bench-peer")
        peer_again = run_peer(aws, url, folder, "bench-peer")
        reset_moto(url)

        cache = folder.parent / "hash-cache.json"
        cache.unlink(missing_ok=True)
        ours_first, report = run_project(url, folder, "bench-dogops", cache)
        our_objects = count_objects(url, "bench-dogops")
        ours_again, again = run_project(url, folder, "bench-dogops", cache)
    if peer_objects != (n_files, n_bytes) or our_objects != (n_files, n_bytes):
        raise RuntimeError(f"incomplete upload: folder {(n_files, n_bytes)}, "
                           f"peer {peer_objects}, dogops {our_objects}")
    if report.uploaded != n_files or again.uploaded != 0:
        raise RuntimeError(f"unexpected sync reports: {report} / {again}")
    details.update({
        "dogops_seconds": round(ours_first, 3), "peer_seconds": round(peer_first, 3),
        "dogops_resync_seconds": round(ours_again, 3),
        "peer_resync_seconds": round(peer_again, 3),
        "peer_startup_seconds": round(startup, 3),
        "dogops_report": report.model_dump(), "dogops_resync_report": again.model_dump(),
    })
    peer = "aws s3 sync"
    figures = [
        Figure("upload files/s", n_files / ours_first, "files/s", peer, n_files / peer_first),
        Figure("upload MB/s", mb / ours_first, "MB/s", peer, mb / peer_first),
        Figure("re-sync unchanged folder", ours_again, "s", peer, peer_again,
               higher_is_better=False,
               note="dogops re-hashes every file (MD5+SHA-256); awscli compares size+mtime"),
        Figure("peer CLI start-up (in its times)", startup, "s",
               note="`aws --version`; included in each aws s3 sync time"),
    ]
    return BenchResult("s3_sync", figures, details)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=None, help="Files to generate (default 2000).")
    args = p.parse_args(argv)
    files = args.files or (200 if args.quick else 2000)
    started = time.perf_counter()
    return finish(run(files), args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
