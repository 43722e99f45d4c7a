"""Serving tasks: deploy, auto-scaling, IAM, Lambda and the smoke test."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import task

from dogops.backends import Backend
from dogops.dataset import split_images
from dogops.errors import OperationFailedError
from dogops.results import (
    EndpointInfo,
    LambdaInfo,
    ScalingInfo,
    SecurityReport,
    StepSkipped,
    TrainedModel,
)
from tasks.common import RETRYING, progress, skippable


@task(name="deploy", task_run_name="deploy-{model.version}", **RETRYING)
def deploy(backend: Backend, model: TrainedModel, run_key: str) -> EndpointInfo:
    return backend.deploy(model, run_key, progress())


@task(name="register-autoscaling", **RETRYING)
@skippable("register-autoscaling")
def register_autoscaling(backend: Backend, endpoint: EndpointInfo) -> ScalingInfo:
    return backend.register_autoscaling(endpoint)


@task(name="secure", **RETRYING)
@skippable("secure")
def secure(backend: Backend, endpoint: EndpointInfo) -> SecurityReport:
    return backend.secure(endpoint)


@task(name="deploy-lambda", **RETRYING)
@skippable("deploy-lambda")
def deploy_lambda(
    backend: Backend, endpoint: EndpointInfo, security: SecurityReport | StepSkipped
) -> LambdaInfo:
    report = security if isinstance(security, SecurityReport) else SecurityReport()
    return backend.deploy_lambda(endpoint, report)


def first_test_image(data_dir: Path) -> tuple[Path, str]:
    """A test image and its class, to check the live endpoint's answer against."""
    for image in split_images(data_dir / "test"):  # the images validation counted
        return image.path, image.class_name
    raise OperationFailedError(f"no test image under {data_dir / 'test'} for the smoke test")


@task(name="smoke-test", **RETRYING)
def smoke_test(backend: Backend, endpoint: EndpointInfo, data_dir: Path) -> dict[str, Any]:
    """Send one test image through boto3's sagemaker-runtime and check the answer's shape."""
    image, expected = first_test_image(data_dir)
    started = time.perf_counter()
    body = backend.invoke_endpoint(endpoint, image.read_bytes(), "image/jpeg")
    latency_ms = (time.perf_counter() - started) * 1000
    try:
        answer = json.loads(body)
        label = answer["label"]
    except (ValueError, KeyError, TypeError) as exc:
        raise OperationFailedError(
            f"endpoint {endpoint.name} answered something that is not a prediction: {body[:200]!r}"
        ) from exc
    progress()(f"smoke test: {image.name} (class {expected}) -> {label} in {latency_ms:.0f} ms")
    return {
        "image": image.name,
        "expected": expected,
        "predicted": label,
        "probability": float(answer.get("probability", 0.0)),
        "correct": label == expected,
        "latency_ms": round(latency_ms, 1),
    }
