"""Two runs changing the registry at once: no update is lost, silently or otherwise.

On S3 each write is a PutObject conditional on the ETag that was read (If-Match; If-None-Match: *
for the first write). moto 5.2.5 honours both (412 PreconditionFailed, checked by trying it), so
these tests run against the moto server, not a stub: a botocore `before-parameter-build` hook on
one run's client lets the other run write in between that run's read and its PUT, which is
exactly the window a manual promotion and the cron retrain race in.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from dogops.aws.documents import S3RegistryStore
from dogops.errors import ConcurrentUpdateError, is_transient
from dogops.registry import Registry, registry_for
from dogops.results import TrainedModel
from dogops.settings import Settings

pytestmark = pytest.mark.aws


def model(version: str) -> TrainedModel:
    return TrainedModel(job_name=f"job-{version}", model_uri=f"s3://b/{version}/model.tar.gz",
                        hyperparameters={}, metrics={}, class_names=["a", "b"],
                        version=version)


def s3_client(settings: Settings) -> Any:
    return boto3.client("s3", endpoint_url=settings.aws.endpoint_url, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}))


def registry(settings: Settings, attempts: int = 5) -> tuple[Registry, Any]:
    """A registry with its own S3 client (another run, another process)."""
    s3 = s3_client(settings)
    key = f"{settings.aws.prefix}/registry.json"
    return Registry(S3RegistryStore(s3, settings.aws.bucket, key, attempts)), s3


def before_each_put(s3: Any, action: Any) -> list[dict[str, Any]]:
    """Run `action` just before each PutObject of `s3`; returns the PUTs' parameters."""
    puts: list[dict[str, Any]] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        puts.append(dict(params))
        action(len(puts))

    s3.meta.events.register("before-parameter-build.s3.PutObject", hook)
    return puts


@pytest.fixture
def settings(aws_settings: Settings) -> Settings:
    s3_client(aws_settings).create_bucket(Bucket=aws_settings.aws.bucket)
    return aws_settings


def test_a_promotion_racing_another_is_reapplied_not_lost(settings: Settings) -> None:
    ours, our_s3 = registry(settings)
    theirs, _ = registry(settings)
    # Their promotion lands between our read and our first PUT (the first write of the
    # registry on both sides: If-None-Match: * is what stops ours from replacing theirs).
    puts = before_each_put(our_s3, lambda n: n == 1 and theirs.record(model("theirs"), "ep", "aws",
                                                                       code_version="c"))
    entry = ours.record(model("ours"), "ep", "aws", code_version="c")

    document = registry_for(settings).load()
    assert [(e.version, e.model_version) for e in document.entries] == [(1, "theirs"), (2, "ours")]
    assert document.live == {"ep": 2} and entry.version == 2
    assert [e.from_version for e in document.events] == [None, 1]
    assert puts[0].get("IfNoneMatch") == "*" and "IfMatch" not in puts[0]
    assert puts[1].get("IfMatch") and "IfNoneMatch" not in puts[1]  # the ETag of their write


def test_every_kind_of_change_survives_a_concurrent_rollback(settings: Settings) -> None:
    base, _ = registry(settings)
    base.record(model("one"), "ep", "aws", code_version="c")
    base.record(model("two"), "ep", "aws", code_version="c")
    ours, our_s3 = registry(settings)
    theirs, _ = registry(settings)
    before_each_put(our_s3, lambda n: n == 1 and theirs.set_live("ep", 1, reason="bad"))
    ours.record(model("three"), "ep", "aws", code_version="c")
    document = registry_for(settings).load()
    assert [e.action for e in document.events] == ["promote", "promote", "rollback", "promote"]
    assert document.live == {"ep": 3} and document.events[-1].from_version == 1


def test_a_change_that_keeps_losing_fails_loudly(settings: Settings) -> None:
    ours, our_s3 = registry(settings, attempts=3)
    theirs, _ = registry(settings)
    theirs.record(model("first"), "ep", "aws", code_version="c")
    before_each_put(our_s3, lambda n: theirs.record(model(f"theirs-{n}"), "ep", "aws",
                                                    code_version="c"))
    with pytest.raises(ConcurrentUpdateError, match="NOT recorded") as caught:
        ours.record(model("ours"), "ep", "aws", code_version="c")
    assert is_transient(caught.value)  # a Prefect retry of the step tries again later
    document = registry_for(settings).load()
    assert "ours" not in [e.model_version for e in document.entries]
    assert [e.model_version for e in document.entries] == [
        "first", "theirs-1", "theirs-2", "theirs-3"]  # every one of theirs is kept


def test_local_promotions_from_many_threads_are_all_kept(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    threads = [threading.Thread(target=lambda i=i: registry_for(settings).record(
        model(f"m{i}"), f"ep{i % 2}", "local", code_version="c")) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    document = registry_for(settings).load()
    assert sorted(e.version for e in document.entries) == list(range(1, 9))
    assert {e.model_version for e in document.entries} == {f"m{i}" for i in range(8)}
