"""Operating it day to day, through the `dogops` CLI on the local backend (real flows, tiny data):
one train-and-deploy, then everything with no parameters: retrain on the registry's data (and
on images added to the object store), the registry table, idle-guard putting the endpoint to
sleep, `dogops wake` bringing it back answering the same way, rollback and teardown. Plus the
"run train-and-deploy first" errors on an empty state dir, and AWS sleep/wake on moto.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dogops.errors import UserInputError
from dogops.settings import Settings

pytestmark = pytest.mark.slow

IMAGE_SIZE = 48
NAME = "ops-cli"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_code.demo_data import generate_demo_dataset

    return generate_demo_dataset(
        tmp_path_factory.mktemp("cli-data") / "dogs", classes=3, train_per_class=10,
        valid_per_class=4, test_per_class=4, image_size=IMAGE_SIZE, seed=11,
    )


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings from the environment, as a cron run or `make serve` would have them: a tiny,
    fast configuration and a fresh state dir; nothing passed as a parameter."""
    state_dir = tmp_path / "state"
    for key, value in {
        "STATE_DIR": str(state_dir), "ENDPOINT__NAME": NAME, "SCALING__MAX_CAPACITY": "1",
        "TUNING__MAX_JOBS": "1", "TUNING__MAX_PARALLEL_JOBS": "1", "TUNING__EPOCHS": "2",
        "TUNING__BATCH_SIZES": "[8]", "TUNING__LEARNING_RATE_MIN": "0.005",
        "TUNING__LEARNING_RATE_MAX": "0.02", "TRAINING__EPOCHS": "2",
        "TRAINING__IMAGE_SIZE": str(IMAGE_SIZE), "LAMBDA__PROVISIONED_CONCURRENCY": "0",
    }.items():
        monkeypatch.setenv(f"DOGOPS_{key}", value)
    monkeypatch.delenv("DOGOPS_DATA_DIR", raising=False)
    return state_dir


@dataclass
class Ran:
    exit_code: int
    output: str


FLOW_VERBS = {"run", "retrain", "rollback", "teardown", "wake"}


def dogops(*args: str, ok: bool = True) -> Ran:
    """`dogops ARGS`. Verbs that run a flow run as a user runs them, in their own process (which
    reports to the test's Prefect server: PREFECT_API_URL is set, as after the printed export);
    CliRunner's swapped streams would outlive its call in Prefect's log handlers."""
    if args[0] in FLOW_VERBS:
        from prefect.settings import PREFECT_API_URL

        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
               "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "dogops_cli.cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        result = Ran(done.returncode, done.stdout + done.stderr)
    else:
        from dogops_cli.cli import app

        invoked = CliRunner().invoke(app, list(args))
        result = Ran(invoked.exit_code, invoked.output)
    if ok:
        assert result.exit_code == 0, result.output[-4000:]
    return result


def _stdout_json(output: str) -> Any:
    """The (indented) JSON document a command printed, among its other lines."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return json.loads("\n".join(lines[start:end + 1]))


def test_every_verb_with_no_parameters_after_one_train_and_deploy(
    prefect_harness: None, tiny: Path, data_dir: Path
) -> None:
    from dogops.local.endpoint import read_endpoint, stop_endpoint
    from dogops.registry import registry_for
    from flows.idle_guard import idle_guard

    image = next((data_dir / "test").rglob("*.jpg"))
    files = sum(1 for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    try:
        first = _stdout_json(dogops("run", "--data-dir", str(data_dir)).output)
        assert first["endpoint"] == NAME
        registry = registry_for(Settings())
        v1 = registry.live(NAME)
        assert v1 is not None and v1.data_dir == str(data_dir.resolve())
        assert v1.data_uri.startswith("file://") and v1.data_files == files

        table = dogops("registry").output
        assert f"registry {registry.uri}" in table
        row = next(line for line in table.splitlines() if line.startswith("1 "))
        assert "yes" in row and NAME in row and v1.data_uri in row

        # Someone adds an image under the data prefix in the object store; a retrain with no
        # parameters (the cron's) trains on it: the data of record, as it is now.
        store = Path(v1.data_uri.removeprefix("file://"))
        extra = next((store / "train").rglob("*.jpg"))
        shutil.copy(extra, extra.with_name("added-" + extra.name))
        retrained = _stdout_json(dogops("retrain").output)
        assert retrained["data"] == v1.data_uri and retrained["data_files"] == files + 1
        assert isinstance(retrained["promoted"], bool) and retrained["reason"]

        before = json.loads(dogops("invoke", str(image)).output)
        # idle-guard, never invoked ... with max_idle_hours=0 it is idle now: the workers stop.
        assert read_endpoint(NAME, tiny) is not None
        slept = idle_guard(max_idle_hours=0, apply=True)
        assert slept.status.idle and slept.changes and slept.applied
        assert read_endpoint(NAME, tiny) is None
        asleep = registry.asleep(NAME)
        assert asleep is not None and asleep.version == registry.live(NAME).version
        assert "asleep" in dogops("registry").output
        assert dogops("invoke", str(image), ok=False).exit_code != 0

        woke = dogops("wake").output
        assert f"{NAME} serves v{asleep.version}" in woke and "asleep since" in woke
        assert read_endpoint(NAME, tiny) is not None and registry.asleep(NAME) is None
        after = json.loads(dogops("invoke", str(image)).output)
        assert after["label"] == before["label"]
        assert after["probability"] == pytest.approx(before["probability"], abs=1e-6)

        rolled = dogops("rollback", "--to-version", "1").output
        assert f"{NAME} now serves v1 {v1.model_version}" in rolled
        assert registry.live(NAME).version == 1

        listed = dogops("teardown").output
        assert "would delete (dry run" in listed and f"endpoint:{NAME}" in listed
        assert read_endpoint(NAME, tiny) is not None
        removed = dogops("teardown", "--apply").output
        assert "deleted: " in removed and read_endpoint(NAME, tiny) is None
    finally:
        stop_endpoint(NAME, tiny)


def test_before_any_train_and_deploy_the_error_names_the_fix(
    prefect_harness: None, tiny: Path
) -> None:
    for verb in ("retrain", "rollback", "wake"):
        result = dogops(verb, ok=False)
        assert result.exit_code == 2, (verb, result.output)
        assert "train-and-deploy first" in result.output, (verb, result.output)
    assert "no model yet" in dogops("registry").output
    # A resync with nothing recorded gets the same fix.
    assert "train-and-deploy first" in dogops("retrain", "--resync", ok=False).output


def test_cost_what_if_and_unchecked_prices() -> None:
    from dogops.cost import load_prices

    prices = load_prices()
    out = dogops("cost", "--instance-type", "ml.g4dn.xlarge", "--hours", "10",
                 "--count", "2").output
    hosting = prices.sagemaker_hosting_per_hour["ml.g4dn.xlarge"]
    training = prices.sagemaker_training_per_hour["ml.g4dn.xlarge"]
    assert f"{20 * hosting:,.2f} USD" in out and f"{20 * training:,.2f} USD" in out
    assert "NOT checked against a price list: ml.g4dn.xlarge" in out
    refused = dogops("cost", "--instance-type", "ml.nope.large", "--hours", "1", ok=False)
    assert refused.exit_code == 2 and "no price for ml.nope.large" in refused.output
    assert "needs both" in dogops("cost", "--hours", "1", ok=False).output


def test_cost_marks_only_unchecked_figures(tmp_path: Path) -> None:
    from dogops.cost import PRICES_FILE, estimate_cost, load_prices

    document = json.loads(PRICES_FILE.read_text())
    document["checked"] = ["sagemaker_hosting_per_hour/ml.m5.large"]
    (tmp_path / "prices.json").write_text(json.dumps(document))
    estimate = estimate_cost(Settings(), 3600, 0, load_prices(tmp_path / "prices.json"))
    marks = {row["item"]: row["price_checked"] for row in estimate.rows()}
    assert marks["endpoint at min"] == "yes" and marks["tuning"] == "NOT CHECKED"
    assert "ml.m5.large" not in estimate.text().split("NOT checked against a price list:")[1]


# -- AWS: sleep deletes only the endpoint, wake brings it back (moto) ------------------------------


def test_aws_sleep_deletes_the_endpoint_and_wake_recreates_it(
    prefect_harness: None, aws_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dogops.aws.autoscaling import register_autoscaling
    from dogops.aws.clients import AwsClients
    from dogops.aws.endpoint import deploy_endpoint
    from dogops.aws.iam import ensure_sagemaker_role
    from dogops.registry import registry_for
    from dogops.results import TrainedModel
    from flows.idle_guard import idle_guard
    from flows.wake import wake

    settings = aws_settings
    clients = AwsClients(settings.aws)
    role = ensure_sagemaker_role(clients, settings)
    model = TrainedModel(job_name="job", hyperparameters={}, version="v1",
                         model_uri=f"s3://{settings.aws.bucket}/dogops/training/job/output/model.tar.gz")
    deploy_endpoint(clients, settings, model, role, "run1", poll_s=0, sleep=lambda _: None)
    register_autoscaling(clients, settings.endpoint.name, settings.scaling)
    clients.client("s3").create_bucket(Bucket=settings.aws.bucket)
    registry = registry_for(settings)
    registry.record(model, settings.endpoint.name, "aws", source="train-and-deploy")
    sm = clients.client("sagemaker")
    configs = sm.list_endpoint_configs()["EndpointConfigs"]
    models = sm.list_models()["Models"]
    assert configs and models

    common: dict[str, Any] = {"backend": "aws", "state_dir": str(settings.state_dir)}
    for key, value in {"AWS__ENDPOINT_URL": settings.aws.endpoint_url,
                       "AWS__BUCKET": settings.aws.bucket, "AWS__MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(f"DOGOPS_{key}", str(value))
    dry = idle_guard(max_idle_hours=0, **common)
    assert dry.changes and sm.list_endpoints()["Endpoints"]  # a dry run deletes nothing

    state = idle_guard(max_idle_hours=0, apply=True, return_state=True, **common)
    slept = state.result()
    assert slept.applied
    # The cost artifact says what sleeping saves: the endpoint's instances at the hosting price.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            key=ArtifactFilterKey(any_=["cost-estimate"])))
    rows = json.loads(artifacts[0].data)
    per_day = next(r for r in rows if r["period"] == "per day")
    assert per_day["item"] == "saved while asleep" and per_day["cost_usd"] == pytest.approx(
        24 * 0.115)  # 1 x ml.m5.large, the price in prices.json
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == configs
    assert sm.list_models()["Models"] == models
    scaling = clients.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    asleep = registry.asleep(settings.endpoint.name)
    assert asleep is not None and asleep.version == 1 and asleep.saved_per_day
    assert registry.live(settings.endpoint.name).model_version == "v1"

    woke = wake(**common)
    assert woke.endpoint.name == settings.endpoint.name and woke.was_asleep is not None
    described = sm.describe_endpoint(EndpointName=settings.endpoint.name)
    assert described["EndpointStatus"] == "InService"
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert registry.asleep(settings.endpoint.name) is None


def test_aws_sleep_refuses_an_endpoint_dogops_did_not_make(aws_settings: Settings) -> None:
    from dogops.aws.clients import AwsClients
    from dogops.backends import operations_for
    from dogops.errors import NotOwnedError
    from dogops.idle import idle_status, put_to_sleep

    clients = AwsClients(aws_settings.aws)
    sm = clients.client("sagemaker")
    sm.create_model(ModelName="theirs", PrimaryContainer={"Image": "x"},
                    ExecutionRoleArn="arn:aws:iam::123456789012:role/other")
    sm.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "theirs", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=aws_settings.endpoint.name, EndpointConfigName="theirs")
    operations = operations_for("aws", clients)
    status = idle_status(aws_settings, 0, operations=operations)
    assert status.idle
    with pytest.raises(NotOwnedError, match="is not dogops's.*DOGOPS_ENDPOINT__NAME"):
        put_to_sleep(aws_settings, status, apply=True, operations=operations)
    assert sm.list_endpoints()["Endpoints"]


def test_s3_data_of_record_picks_up_added_objects_and_keeps_the_sync_manifest(
    aws_settings: Settings, tmp_path: Path
) -> None:
    """On S3, the data of record is what is under the prefix now; the sync's own manifest is
    not rewritten, so a later resync from the folder does not delete the added object."""
    from dogops.aws import s3_sync
    from dogops.aws.clients import AwsClients
    from dogops.aws.data_source import refresh_s3
    from dogops.backends import store_for
    from model_code.demo_data import generate_demo_dataset

    folder = generate_demo_dataset(tmp_path / "dogs", classes=2, train_per_class=3,
                                   valid_per_class=2, test_per_class=2, image_size=32, seed=1)
    clients = AwsClients(aws_settings.aws)
    bucket, prefix = aws_settings.aws.bucket, "dogops/data"
    synced = s3_sync.sync_folder(clients, folder, bucket, prefix, create_bucket=True)
    uri = f"s3://{bucket}/{prefix}"
    same = refresh_s3(clients, uri)
    assert same.files_total == synced.files_total
    manifest = s3_sync.read_manifest_bytes(clients, bucket, prefix)

    s3 = clients.client("s3")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/train/001.Synthetic_Beagle/added.jpg", Body=b"jpeg")
    grown = refresh_s3(clients, uri)
    assert grown.files_total == synced.files_total + 1
    assert grown.manifest_sha256 != same.manifest_sha256
    assert s3_sync.read_manifest_bytes(clients, bucket, prefix) == manifest  # untouched

    test_dir = store_for(aws_settings).test_split(grown)
    local = sorted(p.relative_to(test_dir).as_posix() for p in test_dir.rglob("*.jpg"))
    assert local == sorted(p.relative_to(folder / "test").as_posix()
                           for p in (folder / "test").rglob("*.jpg"))

    # A resync from the original folder keeps the object added under the prefix.
    s3_sync.sync_folder(clients, folder, bucket, prefix, create_bucket=True)
    assert s3.head_object(Bucket=bucket, Key=f"{prefix}/train/001.Synthetic_Beagle/added.jpg")
    with pytest.raises(UserInputError, match="train/, valid/ and test/"):
        refresh_s3(clients, f"s3://{bucket}/nothing-here")
