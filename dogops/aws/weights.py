"""Pretrained backbone weights for the SageMaker jobs: shipped to S3 once, read through a channel.

EfficientNet-Lite0's ImageNet weights come in a pip package (`model_code/requirements.txt`), which
the training container installs. torchvision's ResNet-50 weights do not: the container has no copy
and `model_code/net.py` never downloads, so without this every `training.architecture=resnet50`
trial would exit with "weights not found". dogops takes the file from this machine's torch hub
cache (`$TORCH_HOME/hub/checkpoints/resnet50-*.pth`, where torchvision keeps it), uploads it once
under `<prefix>/weights/<sha256[:16]>/` (a folder the execution role may read), and adds the
`weights` input channel; SageMaker copies it to `/opt/ml/input/data/weights` and the training
toolkit names that folder in `SM_CHANNEL_WEIGHTS`, which `train.py` reads. The hash in the key
makes the channel (and so the job's name) change when the file does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dogops.aws.clients import AwsClients
from dogops.aws.objects import object_exists
from dogops.errors import UserInputError
from dogops.hash_cache import file_sha256
from dogops.iam_policies import WEIGHTS_FOLDER
from dogops.settings import Settings

logger = logging.getLogger(__name__)

CHANNEL = "weights"  # train.py reads SM_CHANNEL_WEIGHTS (model_code/train_args.py)


def local_weights_file(settings: Settings) -> Path | None:
    """The weights file the jobs need from this machine; None when the architecture's weights
    reach the container another way (EfficientNet-Lite0: its pip package)."""
    if settings.training.architecture != "resnet50":
        return None
    from model_code.net import WeightsNotFoundError, find_resnet50_weights

    try:
        return find_resnet50_weights()
    except WeightsNotFoundError as exc:
        raise UserInputError(
            "training.architecture=resnet50 on SageMaker needs torchvision's ResNet-50 weights on "
            f"this machine, to ship them to the jobs: {exc} (TORCH_HOME picks another torch hub "
            "folder.)"
        ) from None


def ship_weights(clients: AwsClients, settings: Settings) -> str:
    """Upload the jobs' weights file once per content hash; the channel's s3:// folder URI, or
    "" when the architecture needs none."""
    path = local_weights_file(settings)
    if path is None:
        return ""
    bucket, prefix = settings.aws.bucket, settings.aws.prefix.strip("/")
    folder = f"{prefix}/{WEIGHTS_FOLDER}/{file_sha256(path)[:16]}".lstrip("/")
    key = f"{folder}/{path.name}"
    s3 = clients.client("s3")
    if not object_exists(s3, bucket, key):
        logger.info("uploading %s to s3://%s/%s", path, bucket, key)
        s3.upload_file(str(path), bucket, key)  # managed transfer: multipart for ~100 MB
    return f"s3://{bucket}/{folder}/"


def weights_channel(uri: str) -> list[dict[str, Any]]:
    """The `weights` input channel for `uri` ([] without one)."""
    if not uri:
        return []
    return [{
        "ChannelName": CHANNEL,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                        "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": "File",
    }]
