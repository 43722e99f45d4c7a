"""`AwsBackend` end to end against the moto server: every step, then the same steps again.

moto runs nothing, so one outcome is supplied by patching the in-process server (the
`realistic_tuning_outcomes` fixture): each new tuning job's fake `BestTrainingJob` is replaced by
a real (moto) training job with tuned values. Everything else is moto's own answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dogops.aws.backend import AwsBackend, default_model_code_dir
from dogops.backends.base import Backend, StepNotSupported
from dogops.errors import DataLayoutError

pytestmark = pytest.mark.aws

ROLE = "arn:aws:iam::123456789012:role/dogops-sagemaker-execution"


def data_tree(root: Path) -> Path:
    for split in ("train", "valid", "test"):
        for cls in ("001.Affenpinscher", "002.Afghan_hound"):
            path = root / split / cls / f"{split}-{cls[:3]}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{split}/{cls}".encode())
    return root


def count(client: Any, service: str, operations: list[str]) -> dict[str, int]:
    """Count requests per operation with a botocore event hook (the real calls, not mocked)."""
    seen = dict.fromkeys(operations, 0)
    for op in operations:
        def hit(op: str = op, **_: Any) -> None:
            seen[op] += 1

        client.meta.events.register(f"before-parameter-build.{service}.{op}", hit)
    return seen


@pytest.fixture
def backend(aws_settings) -> AwsBackend:  # type: ignore[no-untyped-def]
    settings = aws_settings.merged(aws={"sagemaker_role_arn": ROLE}, lambda_={"enabled": False})
    return AwsBackend(settings, poll_s=0)


def test_is_a_backend(backend: AwsBackend):
    assert isinstance(backend, Backend)
    assert backend.name == "aws"
    assert (default_model_code_dir() / "train.py").is_file()


def test_whole_pipeline_then_rerun_creates_nothing(
    backend: AwsBackend, tmp_path: Path, realistic_tuning_outcomes: None
):
    data_dir = data_tree(tmp_path / "data")
    sm = backend.clients.client("sagemaker")
    creates = count(sm, "sagemaker", [
        "CreateHyperParameterTuningJob", "CreateTrainingJob", "CreateModel",
        "CreateEndpointConfig", "CreateEndpoint",
    ])
    lines: list[str] = []

    def run() -> Any:
        data = backend.upload_data(data_dir, lines.append)
        tuned = backend.tune(data, "run1", lines.append)
        model = backend.train_best(data, tuned, "run1", lines.append)
        endpoint = backend.deploy(model, "run1", lines.append)
        scaling = backend.register_autoscaling(endpoint)
        return data, tuned, model, endpoint, scaling

    data, tuned, model, endpoint, scaling = run()
    assert data.uri == "s3://dogops-test/dogops/data" and data.files_total == 6
    assert tuned.best is not None and tuned.best_hyperparameters["batch_size"] == 64
    assert model.reused and model.job_name == tuned.best.name  # same epochs: trial reused
    assert endpoint.name == "dogops-classifier" and endpoint.arn
    assert scaling.resource_id == "endpoint/dogops-classifier/variant/AllTraffic"
    # No final training job: the best trial (made by the fixture, moto runs none) is reused.
    assert creates == {"CreateHyperParameterTuningJob": 1, "CreateTrainingJob": 0,
                       "CreateModel": 1, "CreateEndpointConfig": 1, "CreateEndpoint": 1}

    # moto's runtime answers every invocation with a canned body (and rejects non-UTF-8 bodies):
    # this checks the call path only; real answers are tested on the local backend.
    body = b'{"url": "https://example.com/dog.jpg"}'
    assert isinstance(backend.invoke_endpoint(endpoint, body, "application/json"), bytes)

    again = run()
    assert again[0].uploaded == 0 and again[0].manifest_sha256 == data.manifest_sha256
    assert again[1].reused and again[1].job_name == tuned.job_name
    assert again[3].config_name == endpoint.config_name and not again[3].updated
    assert creates == {"CreateHyperParameterTuningJob": 1, "CreateTrainingJob": 0,
                       "CreateModel": 1, "CreateEndpointConfig": 1, "CreateEndpoint": 1}
    assert any("attaching" in line for line in lines)

    planned = backend.teardown(apply=False)
    # The order AWS needs: scaling first (an endpoint with a scalable target cannot go).
    assert planned[:3] == [
        "scaling-policy:dogops-classifier-AllTraffic-invocations-per-instance",
        "scalable-target:endpoint/dogops-classifier/variant/AllTraffic",
        "endpoint:dogops-classifier",
    ]
    assert sm.list_endpoints()["Endpoints"]
    assert backend.teardown(apply=True) == planned
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert backend.teardown(apply=True) == []


def test_bad_layout_fails_before_any_aws_call(backend: AwsBackend, tmp_path: Path):
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataLayoutError):
        backend.upload_data(tmp_path / "data")
    assert backend.clients.client("s3").list_buckets()["Buckets"] == []


def test_disabled_steps_are_skipped_with_a_reason(backend: AwsBackend):
    from dogops.results import EndpointInfo, SecurityReport

    endpoint = EndpointInfo(name="dogops-classifier", url="u", arn="arn")
    with pytest.raises(StepNotSupported, match="lambda.enabled"):
        backend.deploy_lambda(endpoint, SecurityReport(lambda_role_arn="arn:role"))
    off = AwsBackend(backend.settings.merged(scaling={"enabled": False}))
    with pytest.raises(StepNotSupported, match="scaling.enabled"):
        off.register_autoscaling(endpoint)


def test_secure_and_lambda_use_the_endpoint_arn(aws_settings):  # type: ignore[no-untyped-def]
    """The IAM and Lambda modules (their own tests cover them) wired to the deployed endpoint."""
    from dogops.results import TrainedModel

    settings = aws_settings.merged(lambda_={"provisioned_concurrency": 0})
    backend = AwsBackend(settings, poll_s=0)
    # Under training/: the role dogops creates reads models there (test_aws_s3_access.py).
    model = TrainedModel(job_name="j", model_uri="s3://dogops-test/dogops/training/m.tar.gz",
                         hyperparameters={}, version="v1")
    endpoint = backend.deploy(model, "run1")  # the SageMaker role is created on the way
    security = backend.secure(endpoint)
    assert security.lambda_role_arn and security.sagemaker_role_arn
    assert security.sagemaker_role_arn.endswith(":role/dogops-sagemaker-execution")
    info = backend.deploy_lambda(endpoint, security)
    assert info.function_name == settings.lambda_.function_name
    config = backend.clients.client("lambda").get_function_configuration(
        FunctionName=info.function_name
    )
    assert endpoint.name in str(config.get("Environment"))
