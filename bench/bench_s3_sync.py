"""S3 upload: dogops' `sync_folder` vs `aws s3 sync`, same folder, same moto server.

    python -m bench.bench_s3_sync [--files 2000] [--repeats 3] [--quick]

Both tools upload the same generated folder (default 2,000 files of 50-200 KB of random bytes,
like JPEGs: incompressible) to their own bucket on one moto server running in its own process on
127.0.0.1, then sync the unchanged folder again. Each tool runs with its default concurrency
(dogops: 8 threads; awscli: 10). The moto server is reset before each round, and the rounds
alternate which tool goes first, so neither always gets the fresher server; every figure is the
median over the rounds (at least 3).

Fairness: dogops runs in this process with boto3 already imported, while `aws s3 sync` starts a
fresh interpreter every time. That start-up (`aws --version`, timed in every round) is reported
on its own, and the peer's figures are given both ways: without it (the fair comparison, which
the goals use) and with it (what a user at a shell waits for). The floor of an unchanged re-sync
is the bucket listing both tools must make to see what the bucket holds: a bare
`list_objects_v2` pagination of the same prefix with a warm boto3 client, timed in every round.
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
    median,
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


def listing_seconds(s3: Any, bucket: str) -> float:
    """The floor of a re-sync: one pagination of the prefix, as both tools list it."""
    started = time.perf_counter()
    for _ in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/"):
        pass
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


def peer_round(aws: Path, url: str, folder: Path, s3: Any) -> dict[str, Any]:
    bucket = "bench-peer"
    s3.create_bucket(Bucket=bucket)
    startup = peer_startup(aws)
    first = run_peer(aws, url, folder, bucket)
    objects = count_objects(url, bucket)
    again = run_peer(aws, url, folder, bucket)
    return {"startup": startup, "first": first, "again": again,
            "first_without_startup": first - startup, "again_without_startup": again - startup,
            "listing": listing_seconds(s3, bucket), "objects": objects}


def dogops_round(url: str, folder: Path, s3: Any) -> dict[str, Any]:
    bucket = "bench-dogops"
    cache = folder.parent / "hash-cache.json"
    cache.unlink(missing_ok=True)
    first, report = run_project(url, folder, bucket, cache)
    objects = count_objects(url, bucket)
    again, report_again = run_project(url, folder, bucket, cache)
    if report_again.uploaded != 0:
        raise RuntimeError(f"the unchanged re-sync uploaded files: {report_again}")
    return {"first": first, "again": again, "listing": listing_seconds(s3, bucket),
            "objects": objects, "uploaded": report.uploaded,
            "report": report.model_dump(), "resync_report": report_again.model_dump()}


def run(files: int, repeats: int) -> BenchResult:
    import boto3

    for key, value in FAKE_AWS_ENV.items():
        os.environ.setdefault(key, value)
    aws = peer_aws_cli()
    folder = make_folder(files)
    n_files, n_bytes = folder_stats(folder)
    mb = n_bytes / 1e6
    rounds: list[dict[str, Any]] = []
    with moto_server() as url:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        for r in range(repeats):
            # Alternate who goes first: a warm (or tired) server favours neither tool.
            order = ("peer", "dogops") if r % 2 == 0 else ("dogops", "peer")
            reset_moto(url)
            this: dict[str, Any] = {"order": list(order)}
            for tool in order:
                this[tool] = (peer_round(aws, url, folder, s3) if tool == "peer"
                              else dogops_round(url, folder, s3))
                print(f"round {r + 1}/{repeats} {tool}: first {this[tool]['first']:.2f} s, "
                      f"re-sync {this[tool]['again']:.2f} s", flush=True)
            rounds.append(this)
    for this in rounds:
        if this["peer"]["objects"] != (n_files, n_bytes) or \
                this["dogops"]["objects"] != (n_files, n_bytes):
            raise RuntimeError(
                f"incomplete upload: folder {(n_files, n_bytes)}, peer "
                f"{this['peer']['objects']}, dogops {this['dogops']['objects']}")
        if this["dogops"]["uploaded"] != n_files:
            raise RuntimeError(f"dogops uploaded {this['dogops']['uploaded']} of {n_files}")

    def med(tool: str, key: str) -> float:
        return median([this[tool][key] for this in rounds])

    ours, ours_again = med("dogops", "first"), med("dogops", "again")
    peer_fair, peer_seen = med("peer", "first_without_startup"), med("peer", "first")
    peer_again_fair, peer_again_seen = med("peer", "again_without_startup"), med("peer", "again")
    listing = median([this[t]["listing"] for this in rounds for t in ("peer", "dogops")])
    startup = med("peer", "startup")
    peer = "aws s3 sync"
    figures = [
        Figure("upload files/s (goal: >= 1.2x)", n_files / ours, "files/s",
               f"{peer}, start-up excluded", n_files / peer_fair),
        Figure("upload files/s, peer as a user sees it", n_files / ours, "files/s",
               f"{peer}, start-up included", n_files / peer_seen),
        Figure("upload MB/s", mb / ours, "MB/s", f"{peer}, start-up excluded", mb / peer_fair),
        Figure("re-sync unchanged folder (goal: <= 0.5x)", ours_again, "s",
               f"{peer}, start-up excluded", peer_again_fair, higher_is_better=False,
               note="dogops reads no file (hash cache by size + mtime); awscli compares "
                    "size + mtime"),
        Figure("re-sync unchanged folder, peer as a user sees it", ours_again, "s",
               f"{peer}, start-up included", peer_again_seen, higher_is_better=False),
        Figure("re-sync unchanged folder vs its floor", ours_again, "s",
               "bare listing of the prefix (both tools need it)", listing,
               higher_is_better=False, note="ratio = how far above the floor"),
        Figure("peer re-sync vs the same floor", peer_again_fair, "s",
               "bare listing of the prefix", listing, higher_is_better=False,
               note="awscli, start-up excluded"),
        Figure("peer CLI start-up", startup, "s",
               note="`aws --version`, median per round; subtracted in the fair rows"),
    ]
    details: dict[str, Any] = {
        "files": n_files, "megabytes": round(mb, 1), "file_kb": [50, 200],
        "peer": "aws s3 sync (awscli)", "repeats": repeats, "statistic": "median",
        "rounds": rounds,
    }
    return BenchResult("s3_sync", figures, details)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=None, help="Files to generate (default 2000).")
    p.add_argument("--repeats", type=int, default=3,
                   help="Rounds, alternating which tool goes first (at least 3).")
    args = p.parse_args(argv)
    files = args.files or (200 if args.quick else 2000)
    started = time.perf_counter()
    return finish(run(files, max(3, args.repeats)), args.out, started)


if __name__ == "__main__":
    raise SystemExit(main())
