"""The SageMaker Model of a deployment: its name (from content), the inference container's
environment and the `CreateModel` request. Pure functions: `dogops.aws.endpoint` sends them, the
rules matrix test builds the same requests from them."""

from __future__ import annotations

from typing import Any

from dogops.aws import naming
from dogops.results import TrainedModel
from dogops.serving_env import serving_environment
from dogops.settings import Settings

DIGEST_LEN = 12


def child_prefix(endpoint_name: str, kind: str) -> str:
    """`<endpoint>-m-` for models, `<endpoint>-c-` for configs (endpoint part trimmed to fit)."""
    room = naming.NAME_MAX - DIGEST_LEN - len(kind) - 2
    return f"{endpoint_name[:room].rstrip('-')}-{kind}-"


def child_name(endpoint_name: str, kind: str, *parts: Any) -> str:
    return child_prefix(endpoint_name, kind) + naming.short_hash(*parts, length=DIGEST_LEN)


def model_version(model: TrainedModel) -> str:
    return model.version or naming.short_hash(model.job_name, model.model_uri, length=16)


def container_environment(settings: Settings) -> dict[str, str]:
    """What the PyTorch inference container's toolkits read: the entry point and where it is,
    the model server's workers and timeout, TorchServe's batching when it is on, plus what
    `inference.py` itself reads.

    TorchServe batching is opt-in (`endpoint.container_batching`): the pinned toolkit would run
    each batch one request at a time anyway (see the setting). `sagemaker-pytorch-inference`
    (ts_environment.py) turns any
    `SAGEMAKER_TS_*` variable into a per-model TorchServe block whose workers default to 1 and
    whose timeout to 60 s, whatever SAGEMAKER_MODEL_SERVER_WORKERS / _TIMEOUT say: so the batch
    settings come with the workers and timeout repeated in its own names.
    """
    endpoint = settings.endpoint
    workers, timeout = str(endpoint.model_server_workers), str(endpoint.model_server_timeout_s)
    environment = {
        **serving_environment(settings),
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_REGION": settings.aws.region,
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_MODEL_SERVER_WORKERS": workers,
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": timeout,
    }
    if endpoint.container_batching:
        environment |= {
            "SAGEMAKER_TS_BATCH_SIZE": str(endpoint.batch_size),
            "SAGEMAKER_TS_MAX_BATCH_DELAY": str(endpoint.max_batch_delay_ms),
            "SAGEMAKER_TS_MIN_WORKERS": workers,
            "SAGEMAKER_TS_MAX_WORKERS": workers,
            "SAGEMAKER_TS_RESPONSE_TIMEOUT": timeout,
        }
    return environment


def model_request(
    settings: Settings, model: TrainedModel, *, role_arn: str, image_uri: str, run_key: str
) -> dict[str, Any]:
    """`CreateModel`: the PyTorch inference container running our code/inference.py.

    model.tar.gz already holds `code/` (train.py puts the serving code there), which the
    container finds through SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code.
    """
    body = {
        "PrimaryContainer": {
            "Image": image_uri,
            "ModelDataUrl": model.model_uri,
            "Environment": container_environment(settings),
        },
        "ExecutionRoleArn": role_arn,
    }
    version = model_version(model)
    name = child_name(settings.endpoint.name, "m", body, version)
    return {"ModelName": name, **body, "Tags": naming.tags(settings, run_key, version)}
