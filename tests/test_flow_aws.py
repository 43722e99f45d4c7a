"""The same train-and-deploy flow with `backend="aws"`, against the moto server.

moto runs nothing: tuning jobs complete at once with a fake best job, so the
`realistic_tuning_outcomes` fixture (tests/conftest.py) gives each tuning job a real (moto)
best training job. Provisioned concurrency is not emulated (its API answers 404): with the default
`provisioned_concurrency=2` the Lambda step completes without it and records it as skipped (the
request itself is checked with botocore's Stubber in test_aws_lambda.py). The smoke test is off
because moto's `invoke_endpoint` cannot take image bytes (it answers 500). Everything the flow
leaves in AWS is read back through boto3 from the server.

The last test runs on a moto server nobody patched, with default settings: the flow gets as far
as moto allows (through tuning) and leaves an execution role that passes both policy tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from dogops.settings import TrainingConfig, TuningConfig

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
        run_smoke_test=False,
    )


def _summary(result: Any) -> str:
    """The run-summary artifact of the latest flow run that produced `result`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["run-summary"])),
        )
    assert found, "no run-summary artifact"
    latest = max(found, key=lambda a: a.created)
    return str(latest.data)


def test_flow_on_aws_backend_leaves_the_expected_aws_state_and_reruns_cleanly(
    prefect_harness: None, moto: str, monkeypatch: pytest.MonkeyPatch, data_dir: Path,
    tmp_path: Path, realistic_tuning_outcomes: None, aws_clients_built: list[Any],
) -> None:
    monkeypatch.setenv("DOGOPS_AWS__ENDPOINT_URL", moto)
    monkeypatch.setenv("DOGOPS_AWS__BUCKET", "dogops-flow-test")
    monkeypatch.setenv("DOGOPS_AWS__MAX_ATTEMPTS", "1")

    # A flow run builds its backend once and every task uses it: one set of AWS clients (one
    # credentials lookup, one boto3 session) for the whole run.
    result = _run(data_dir, tmp_path / "state")
    assert result.backend == "aws"
    built = len(aws_clients_built)
    assert built == 1, f"{built} sets of AWS clients in one flow run"

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

    # Provisioned concurrency (default 2) is an API moto lacks: skipped with its reason, in the
    # result and in the run summary, while the function and its alias are complete.
    assert [(s.step, "does not offer" in s.reason) for s in result.lambda_function.skipped] == [
        ("provisioned-concurrency", True)]
    summary = _summary(result)
    assert "provisioned-concurrency skipped: this Lambda endpoint does not offer" in summary
    assert lam.get_alias(FunctionName="dogops-predict", Name="live")["FunctionVersion"] == (
        result.lambda_function.version)

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


def _iam_and_jobs(moto: str) -> dict[str, Any]:
    iam, sm, s3 = _client(moto, "iam"), _client(moto, "sagemaker"), _client(moto, "s3")
    policies = {}
    for policy in iam.list_policies(Scope="Local")["Policies"]:
        versions = iam.list_policy_versions(PolicyArn=policy["Arn"])["Versions"]
        policies[policy["Arn"]] = sorted(v["VersionId"] for v in versions)
    return {
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "policies": policies,
        "tuning": sorted(j["HyperParameterTuningJobName"] for j in
                         sm.list_hyper_parameter_tuning_jobs()[
                             "HyperParameterTuningJobSummaries"]),
        "training": sm.list_training_jobs()["TrainingJobSummaries"],
        "objects": sorted((o["Key"], o["ETag"]) for o in
                          s3.list_objects_v2(Bucket="dogops-data").get("Contents", [])),
    }


def test_plain_moto_default_settings_runs_through_tuning_with_a_working_role(
    prefect_harness: None, moto: str, monkeypatch: pytest.MonkeyPatch, data_dir: Path,
    tmp_path: Path,
) -> None:
    """The first contact of a new user, on a moto server nobody patched: default settings, only
    the endpoint URL points at moto. moto's tuning job "completes" with a fake best job that has
    no tuned hyperparameters, so train-best stops there with a clear error: that is as far as
    moto allows. The role it leaves must work (both tables), and a re-run adds nothing."""
    from iam_tables import lint, refusals, sagemaker_tables

    from dogops.errors import OperationFailedError
    from flows.train_and_deploy import train_and_deploy

    monkeypatch.setenv("DOGOPS_AWS__ENDPOINT_URL", moto)
    monkeypatch.setenv("DOGOPS_AWS__MAX_ATTEMPTS", "1")  # moto's 500s: fail fast, not retried

    def run() -> Any:
        with pytest.raises(OperationFailedError, match="FakeTrainingJobName"):
            train_and_deploy(data_dir=str(data_dir), backend="aws",
                             state_dir=str(tmp_path / "state"))

    run()
    first = _iam_and_jobs(moto)
    assert first["roles"] == ["dogops-sagemaker-execution"]
    assert len(first["tuning"]) == 1 and first["training"] == []
    iam = _client(moto, "iam")
    (policy_arn,) = first["policies"]
    account = policy_arn.split(":")[4]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId="v1")["PolicyVersion"][
        "Document"]
    allow, refuse = sagemaker_tables("us-east-1", account, "763104351884", "dogops-data", "dogops")
    # Everything the run uploaded for the jobs (data and code) must be readable by the role.
    allow += [("s3:GetObject", f"arn:aws:s3:::dogops-data/{key}", {})
              for key, _ in first["objects"] if key.startswith(("dogops/data/", "dogops/code/"))]
    assert refusals(document, allow, refuse) == []
    assert lint(document) == []
    job = _client(moto, "sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=first["tuning"][0])
    assert job["TrainingJobDefinition"]["RoleArn"].endswith(":role/dogops-sagemaker-execution")

    run()
    assert _iam_and_jobs(moto) == first
