"""ResNet-50 on SageMaker: dogops ships torchvision's weights file to the jobs, train.py reads it.

The training container has no copy of torchvision's ResNet-50 weights and train.py never
downloads, so without shipping every `training.architecture=resnet50` trial exits with "weights
not found". The weights here are stand-ins (no internet): a few bytes where only the upload and
the request are under test, a randomly initialised resnet50 state_dict where train.py loads it.
S3 is the moto server; the role's access to `weights/` is proven in test_aws_s3_access.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_aws_sagemaker import DATA, ROLE, calls, no_sleep, tune

from dogops.aws import weights
from dogops.aws.clients import AwsClients
from dogops.errors import UserInputError

pytestmark = pytest.mark.aws


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh torch hub cache (TORCH_HOME), empty: where torchvision keeps downloaded weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def clients(aws_settings) -> AwsClients:  # type: ignore[no-untyped-def]
    clients = AwsClients(aws_settings.aws)
    clients.client("s3").create_bucket(Bucket=aws_settings.aws.bucket)
    return clients


def _keys(clients: AwsClients, bucket: str) -> list[str]:
    listed = clients.client("s3").list_objects_v2(Bucket=bucket, Prefix="dogops/weights/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_weights_are_uploaded_once_per_content_under_weights(clients, aws_settings, hub):
    settings = aws_settings.merged(training={"architecture": "resnet50"})
    (hub / "resnet50-11ad3fa6.pth").write_bytes(b"fake weights, version 1")
    puts = []
    clients.client("s3").meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: puts.append(params["Key"]))

    uri = weights.ship_weights(clients, settings)
    assert uri == weights.ship_weights(clients, settings)  # the second call uploads nothing
    assert len(puts) == 1
    (key,) = _keys(clients, settings.aws.bucket)
    assert uri == f"s3://{settings.aws.bucket}/{key.rsplit('/', 1)[0]}/"
    assert key.startswith("dogops/weights/") and key.endswith("/resnet50-11ad3fa6.pth")

    (hub / "resnet50-11ad3fa6.pth").write_bytes(b"fake weights, version 2")
    assert weights.ship_weights(clients, settings) != uri  # new content, new folder
    # EfficientNet-Lite0's weights come with its pip package: nothing to ship.
    assert weights.ship_weights(clients, aws_settings) == ""


def test_resnet50_jobs_get_the_weights_channel(clients, aws_settings, hub, tmp_path):
    (hub / "resnet50-11ad3fa6.pth").write_bytes(b"fake weights")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('Validation Loss: 0.5')\n")
    sent = calls(clients.client("sagemaker"), "CreateHyperParameterTuningJob")

    tune(clients, aws_settings.merged(training={"architecture": "resnet50"}), src)
    channels = sent[0]["TrainingJobDefinition"]["InputDataConfig"]
    assert [c["ChannelName"] for c in channels] == ["training", "weights"]
    source = channels[1]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "S3Prefix"
    assert source["S3Uri"] == weights.ship_weights(
        clients, aws_settings.merged(training={"architecture": "resnet50"}))

    tune(clients, aws_settings, src, run_key="run2")  # efficientnet_lite0: as before
    assert [c["ChannelName"] for c in sent[1]["TrainingJobDefinition"]["InputDataConfig"]] == [
        "training"]


def test_resnet50_without_local_weights_is_refused_before_any_job(clients, aws_settings, hub,
                                                                  tmp_path):
    from dogops.aws.training import train_best
    from dogops.results import TrialResult, TuningResult

    settings = aws_settings.merged(training={"architecture": "resnet50"})
    sent = calls(clients.client("sagemaker"), "CreateHyperParameterTuningJob")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("")
    with pytest.raises(UserInputError, match=r"training.architecture=resnet50.*TORCH_HOME"):
        tune(clients, settings, src)
    best = TrialResult(name="t", hyperparameters={"learning_rate": 0.01, "batch_size": 64,
                                                  "epochs": 1}, state="Completed")
    tuning = TuningResult(job_name="hpo", objective="validation:loss", minimize=True,
                          trials=[best], best=best)
    with pytest.raises(UserInputError, match=re.escape(str(hub))):
        train_best(clients, settings, DATA, tuning, role_arn=ROLE, run_key="r", source_dir=src,
                   poll_s=0, sleep=no_sleep)
    assert sent == []


def test_resnet50_without_local_weights_stops_the_run_before_the_data_sync(aws_settings, hub,
                                                                           tmp_path):
    from dogops.aws.backend import AwsBackend
    from model_code.demo_data import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "dogs", classes=2, train_per_class=1,
                                 valid_per_class=1, test_per_class=1, image_size=32)
    backend = AwsBackend(aws_settings.merged(training={"architecture": "resnet50"}))
    with pytest.raises(UserInputError, match="training.architecture=resnet50"):
        backend.upload_data(data)
    buckets = backend.clients.client("s3").list_buckets()["Buckets"]
    assert buckets == []  # nothing created, nothing uploaded


@pytest.mark.slow
def test_train_py_loads_resnet50_from_the_weights_channel(tmp_path, hub, monkeypatch):
    """What the job does with the channel: SM_CHANNEL_WEIGHTS names the folder SageMaker copied
    it to; the hub cache is empty, as in the container."""
    import torch
    from torchvision.models import resnet50

    from model_code import net, train
    from model_code.demo_data import generate_demo_dataset

    channel = tmp_path / "input" / "data" / "weights"
    channel.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet50(weights=None).state_dict(), channel / "resnet50-11ad3fa6.pth")
    data = generate_demo_dataset(tmp_path / "data", classes=2, train_per_class=2,
                                 valid_per_class=1, test_per_class=1, image_size=32)
    monkeypatch.setenv("SM_CHANNEL_WEIGHTS", str(channel))
    for name in ("SM_CHANNEL_TRAINING", "DOGOPS_CHECKPOINT_DIR", "DOGOPS_FEATURE_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert net.find_resnet50_weights(channel) == channel / "resnet50-11ad3fa6.pth"
    code = train.main(["--data-dir", str(data), "--model-dir", str(tmp_path / "model"),
                       "--architecture", "resnet50", "--image-size", "32", "--epochs", "1",
                       "--num-threads", "1"])
    assert code == 0 and (tmp_path / "model" / "model.pth").is_file()

    empty = tmp_path / "empty-channel"
    empty.mkdir()
    with pytest.raises(net.WeightsNotFoundError, match="has no resnet50-"):
        net.find_resnet50_weights(empty)
