"""The same train-and-deploy flow with `backend="aws"`, against the moto server.

moto runs nothing: tuning jobs complete at once with a fake best job, so the
`realistic_tuning_outcomes` fixture (tests/conftest.py) gives each tuning job a real (moto)
best training job. Provisioned concurrency is not emulated (its API answers 404), so it is set to
0 here (the request itself is checked with botocore's Stubber in test_aws_lambda.py), and the
smoke test is off because moto's `invoke_endpoint` cannot take image bytes (it answers 500).
Everything the flow leaves in AWS is read back through boto3 from the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from dogops.settings import LambdaConfig, TrainingConfig, TuningConfig

pytestmark = [pytest.mark.aws, pytest.mark.slow]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    from model_code.demo_data import generate_demo_dataset

    return generate_demo_dataset(
        tmp_path / "dogs", classes=2, train_per_class=3, valid_per_class=2, test_per_class=2,
        image_size=32,
    )


def _client(moto: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=moto, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}))


def _run(data_dir: Path, state_dir: Path) -> Any:
    from flows.train_and_deploy import train_and_deploy

    return train_and_deploy(
        data_dir=str(data_dir),
        backend="aws",
        state_dir=str(state_dir),
        tuning=TuningConfig(max_jobs=2, max_parallel_jobs=1, epochs=3),
        training=TrainingConfig(epochs=3),
        endpoint={"name": "dogs-live"},  # type: ignore[arg-type]
        lambda_config=LambdaConfig(provisioned_concurrency=0),
        run_smoke_test=False,
    )


def test_flow_on_aws_backend_leaves_the_expected_aws_state_and_reruns_cleanly(
    prefect_harness: None, moto: str, monkeypatch: pytest.MonkeyPatch, data_dir: Path,
    tmp_path: Path, realistic_tuning_outcomes: None,
) -> None:
    monkeypatch.setenv("DOGOPS_AWS__ENDPOINT_URL", moto)
    monkeypatch.setenv("DOGOPS_AWS__BUCKET", "dogops-flow-test")
    monkeypatch.setenv("DOGOPS_AWS__MAX_ATTEMPTS", "1")

    result = _run(data_dir, tmp_path / "state")
    assert result.backend == "aws"

    s3 = _client(moto, "s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="dogops-flow-test")["Contents"]}
    assert "dogops/data/_manifest.json" in keys
    assert sum(k.startswith("dogops/data/train/") for k in keys) == 6
    encryption = s3.get_bucket_encryption(Bucket="dogops-flow-test")
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    sm = _client(moto, "sagemaker")
    job = sm.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=result.tuning.job_name
    )
    config = job["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize", "MetricName": "validation:loss"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 2
    assert [r["Name"] for r in config["ParameterRanges"]["ContinuousParameterRanges"]] == [
        "learning_rate"]
    endpoint = sm.describe_endpoint(EndpointName="dogs-live")
    assert endpoint["EndpointStatus"] == "InService"
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"]}
    assert tags["project"] == "dogops"

    scaling = _client(moto, "application-autoscaling")
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        ("endpoint/dogs-live/variant/AllTraffic", 1, 2)]
    policy = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 50.0
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (30, 30)

    lam = _client(moto, "lambda")
    function = lam.get_function(FunctionName="dogops-predict")["Configuration"]
    assert function["Environment"]["Variables"]["ENDPOINT_NAME"] == "dogs-live"
    assert lam.get_alias(FunctionName="dogops-predict", Name="live")["FunctionVersion"] != "$LATEST"

    iam = _client(moto, "iam")
    role_name = function["Role"].rsplit("/", 1)[-1]
    attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    assert attached and all("FullAccess" not in p["PolicyArn"] for p in attached)

    counts_before = (
        len(sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]),
        len(sm.list_endpoint_configs()["EndpointConfigs"]),
        len(sm.list_models()["Models"]),
        len(lam.list_versions_by_function(FunctionName="dogops-predict")["Versions"]),
    )
    again = _run(data_dir, tmp_path / "state")
    assert again.data.uploaded == 0
    assert again.tuning.job_name == result.tuning.job_name
    counts_after = (
        len(sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]),
        len(sm.list_endpoint_configs()["EndpointConfigs"]),
        len(sm.list_models()["Models"]),
        len(lam.list_versions_by_function(FunctionName="dogops-predict")["Versions"]),
    )
    assert counts_after == counts_before
