"""The shared kit of dogops's SageMaker jobs (tuning trials and final training alike): the
framework image and the toolkit versions it runs, the reproducible `sourcedir.tar.gz` and its
upload, the static hyperparameters, the data channel, and parsing the hyperparameters SageMaker
hands back. `dogops.aws.tuning` and `dogops.aws.training` build their requests from it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

from dogops.aws.clients import AwsClients
from dogops.aws.objects import object_exists
from dogops.errors import UserInputError
from dogops.hyperparameters import hp_value
from dogops.hyperparameters import static_hyperparameters as trial_static_hyperparameters
from dogops.results import SyncReport
from dogops.settings import Settings, TrainingConfig

logger = logging.getLogger(__name__)

ENTRY_POINT = "train.py"
CHANNEL = "training"
DEFAULT_TIMEOUT_S = 12 * 3600.0
DEFAULT_POLL_S = 30.0
DEFAULT_MAX_RUNTIME_S = 3 * 3600
TUNED_NAMES = ("learning_rate", "batch_size")


# Used only when the SDK's image table cannot be imported. AWS Deep Learning Containers account,
# and the framework / Python pairs of the PyTorch images dogops was checked against, so that the
# fallback never names an image that does not exist (the job would fail at image pull, minutes
# after launch, instead of here).
_DLC_ACCOUNT = "763104351884"
_DLC_PY_VERSIONS: dict[str, tuple[str, ...]] = {"2.5": ("py311",)}


def objective_type(metric: str) -> str:
    """Losses are minimised, everything else (accuracy) maximised."""
    return "Minimize" if metric.endswith("loss") else "Maximize"


def metric_definitions() -> list[dict[str, str]]:
    from model_code.metrics import METRIC_DEFINITIONS

    return [{"Name": d["Name"], "Regex": d["Regex"]} for d in METRIC_DEFINITIONS]


# The SageMaker toolkits the PyTorch DLC images of each `framework_version` run: the training
# image starts train.py with sagemaker-training, the inference image serves inference.py with
# sagemaker-inference + sagemaker-pytorch-inference. pyproject.toml pins the same versions, so the
# local backend runs what these images run (tests/test_toolkit_parity.py checks the pins match).
TOOLKIT_VERSIONS: dict[str, dict[str, str]] = {
    "2.5": {
        "sagemaker-training": "5.1.4",
        "sagemaker-inference": "1.10.1",
        "sagemaker-pytorch-inference": "2.0.25",
    },
}


def toolkit_versions(training: TrainingConfig) -> dict[str, str]:
    """The toolkit versions of the image `framework_image` picks for `training`."""
    try:
        return TOOLKIT_VERSIONS[training.framework_version]
    except KeyError:
        raise UserInputError(
            f"training.framework_version {training.framework_version!r} has no recorded "
            f"SageMaker toolkit versions (known: {', '.join(sorted(TOOLKIT_VERSIONS))}): add them "
            "to dogops.aws.sagemaker_job.TOOLKIT_VERSIONS and pin the same in pyproject.toml."
        ) from None


def _unsupported(training: TrainingConfig, why: str) -> UserInputError:
    return UserInputError(
        f"training.framework_version {training.framework_version!r} with training.py_version "
        f"{training.py_version!r} has no SageMaker PyTorch image ({why}): set "
        "DOGOPS_TRAINING__FRAMEWORK_VERSION / DOGOPS_TRAINING__PY_VERSION to a pair AWS "
        "publishes, e.g. 2.5 / py311."
    )


def framework_image(
    region: str, training: TrainingConfig, instance_type: str, scope: str = "training"
) -> str:
    """The PyTorch Deep Learning Container URI for `region` (training or inference).

    The SDK's table decides; a pair it does not list (e.g. 2.5 with py312) is the user's
    `UserInputError` now, not a URI that fails at image pull. The built-in table serves only
    when the SDK cannot be imported at all."""
    try:
        from sagemaker.core import image_uris
    except ImportError as exc:
        logger.info("sagemaker image_uris unavailable (%s): using the built-in table", exc)
        known = _DLC_PY_VERSIONS.get(training.framework_version, ())
        if training.py_version not in known:
            raise _unsupported(training, f"the built-in table knows {_DLC_PY_VERSIONS}") from None
        device = "gpu" if instance_type.split(".")[1][:1] in ("g", "p") else "cpu"
        return (
            f"{_DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-{scope}:"
            f"{training.framework_version}-{device}-{training.py_version}"
        )
    try:
        return str(
            image_uris.retrieve(
                "pytorch", region, version=training.framework_version,
                py_version=training.py_version, instance_type=instance_type, image_scope=scope,
            )
        )
    except ValueError as exc:  # the SDK's "Unsupported Python version: py312 ..."
        raise _unsupported(training, str(exc).split(". ")[0]) from None


# -- source code --------------------------------------------------------------------------------

def _source_files(source_dir: Path) -> list[Path]:
    return sorted(
        p for p in source_dir.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and not any(part.startswith(".") for part in p.relative_to(source_dir).parts)
        and p.suffix != ".pyc"
    )


def source_archive(source_dir: Path) -> tuple[bytes, str]:
    """A byte-for-byte reproducible sourcedir.tar.gz of `source_dir` and its sha256."""
    if not (source_dir / ENTRY_POINT).is_file():
        raise UserInputError(f"{source_dir} has no {ENTRY_POINT}: point model_code_dir at it.")
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _source_files(source_dir):
            info = tarfile.TarInfo(path.relative_to(source_dir).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def upload_source(clients: AwsClients, source_dir: Path, bucket: str, prefix: str) -> str:
    """Upload model code once per content hash; returns its s3:// URI."""
    data, digest = source_archive(source_dir)
    key = f"{prefix}/code/{digest[:16]}/sourcedir.tar.gz"
    s3 = clients.client("s3")
    if not object_exists(s3, bucket, key):
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/gzip")
    return f"s3://{bucket}/{key}"


# -- the request --------------------------------------------------------------------------------

def static_hyperparameters(settings: Settings, source_uri: str) -> dict[str, str]:
    """What every trial gets unchanged: the same set the local tuner passes, plus the framework
    container's `sagemaker_*` keys (the container strips those before calling train.py)."""
    values: dict[str, Any] = {
        **trial_static_hyperparameters(settings.tuning, settings.training),
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": settings.aws.region,
        "sagemaker_container_log_level": 20,
    }
    return {k: hp_value(v) for k, v in values.items()}


def data_channel(data: SyncReport) -> list[dict[str, Any]]:
    return [
        {
            "ChannelName": CHANNEL,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": data.uri.rstrip("/") + "/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": "File",
        }
    ]


# -- reading results ----------------------------------------------------------------------------

def parse_hp(value: Any) -> Any:
    """`'"64"'` -> 64, `'0.01'` -> 0.01, `'true'` -> True, `'resnet50'` -> 'resnet50'.

    SageMaker returns every hyperparameter as a string, and categorical values chosen by a tuner
    that the v2 SDK set up come back JSON-quoted (`'"64"'`), the original notebook's pitfall.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_hyperparameters(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Our hyperparameters, parsed; the container's `sagemaker_*` and SageMaker's `_*` dropped."""
    return {
        k: parse_hp(v) for k, v in (raw or {}).items()
        if not k.startswith(("sagemaker_", "_"))
    }
