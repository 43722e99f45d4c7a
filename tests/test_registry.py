"""The model registry: versions, live pointer, rollback order, on a local file and on moto's S3."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from dogops.errors import OperationFailedError, UserInputError
from dogops.registry import Registry, current_code_version, hash_model_code, registry_for
from dogops.results import SyncReport, TrainedModel
from dogops.settings import Settings

DATA = SyncReport(uri="file:///data", manifest_sha256="d" * 64)


def model(version: str, accuracy: float = 0.9) -> TrainedModel:
    return TrainedModel(
        job_name=f"job-{version}", model_uri=f"file:///models/{version}/model.tar.gz",
        hyperparameters={"learning_rate": 0.01, "batch_size": 32},
        metrics={"test:accuracy": accuracy}, class_names=["a", "b"], version=version,
    )


def exercise(reg: Registry) -> None:
    """The same round trip for either store."""
    assert reg.live("ep") is None and reg.previous("ep") is None and reg.history() == []

    first = reg.record(model("aaa"), "ep", "local", data=DATA, flow_run_id="run-1",
                       source="train-and-deploy")
    assert (first.version, first.model_version, first.source) == (1, "aaa", "train-and-deploy")
    assert first.data_manifest_sha256 == "d" * 64 and first.flow_run_id == "run-1"
    assert first.code_version and first.hyperparameters["batch_size"] == 32
    # Recording the live model again (a re-run) adds nothing.
    assert reg.record(model("aaa"), "ep", "local", data=DATA).version == 1

    second = reg.record(model("bbb", 0.95), "ep", "local", data=DATA, source="retrain")
    assert second.version == 2
    live, previous = reg.live("ep"), reg.previous("ep")
    assert live is not None and previous is not None
    assert live.model_version == "bbb" and previous.model_version == "aaa"
    assert [e.version for e in reg.history("ep")] == [1, 2]
    assert reg.history("other-endpoint") == []

    # Rollback moves the pointer; the history is untouched and the event is kept.
    reg.set_live("ep", previous.version, flow_run_id="run-3", reason="bad model")
    live = reg.live("ep")
    assert live is not None and live.version == 1
    assert reg.previous("ep") is None  # nothing older than v1
    document = reg.load()
    assert [e.action for e in document.events] == ["promote", "promote", "rollback"]
    assert document.events[-1].from_version == 2

    # The rebuilt TrainedModel deploys the same archive under the same content version.
    rebuilt = live.trained_model()
    assert rebuilt.model_uri == model("aaa").model_uri and rebuilt.version == "aaa"

    with pytest.raises(UserInputError, match="no version 9"):
        reg.set_live("ep", 9)


def test_local_registry_round_trip(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    reg = registry_for(settings)
    assert reg.uri.endswith("/state/registry.json")
    exercise(reg)
    document = json.loads((tmp_path / "state" / "registry.json").read_text())
    assert document["live"] == {"ep": 1} and len(document["entries"]) == 2
    # Another process (a new Registry object) sees the same document.
    again = registry_for(settings).live("ep")
    assert again is not None and again.version == 1


def test_s3_registry_round_trip(aws_settings: Settings) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=aws_settings.aws.endpoint_url, region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    s3.create_bucket(Bucket=aws_settings.aws.bucket)
    reg = registry_for(aws_settings)
    assert reg.uri == f"s3://{aws_settings.aws.bucket}/{aws_settings.aws.prefix}/registry.json"
    exercise(reg)
    body = s3.get_object(Bucket=aws_settings.aws.bucket,
                         Key=f"{aws_settings.aws.prefix}/registry.json")["Body"].read()
    assert json.loads(body)["live"] == {"ep": 1}


def test_s3_registry_without_bucket_says_what_to_do(aws_settings: Settings) -> None:
    reg = registry_for(aws_settings)
    assert reg.live("ep") is None  # reading a missing bucket is "no registry yet"
    with pytest.raises(UserInputError, match="does not exist"):
        reg.record(model("aaa"), "ep", "aws")


def test_previous_skips_entries_with_the_live_model(tmp_path: Path) -> None:
    reg = registry_for(Settings(state_dir=tmp_path))
    for version in ("aaa", "bbb", "aaa"):  # v3 re-promotes v1's model
        reg.record(model(version), "ep", "local")
    previous = reg.previous("ep")
    assert previous is not None and previous.version == 2


def test_corrupt_registry_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "registry.json").write_text("{not json")
    with pytest.raises(OperationFailedError, match="not a valid registry"):
        registry_for(Settings(state_dir=tmp_path)).live("ep")


def test_code_version_is_a_commit_or_a_hash() -> None:
    version = current_code_version()
    assert version.startswith(("git:", "sha256:"))
    assert len(hash_model_code()) == 64
    assert current_code_version(Path("/")).startswith("sha256:")  # no git repository there
