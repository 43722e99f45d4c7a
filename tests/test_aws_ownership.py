"""The ownership rule against the moto server: a same-named resource without dogops's tags stops
the run with a clear error, nothing about it changes, and teardown leaves it alone.

The foreign resources are made here with plain boto3, as another team would have made them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dogops.aws.backend import AwsBackend
from dogops.aws.lambda_deploy import deploy_lambda
from dogops.errors import NotOwnedError
from dogops.results import EndpointInfo, TrainedModel

pytestmark = pytest.mark.aws

S3_FULL = "arn:aws:iam::aws:policy/AmazonS3FullAccess"
ROLE = "dogops-sagemaker-execution"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def _iam_state(iam: Any, account: str) -> dict[str, Any]:
    """Everything the rule protects on the foreign role and policy."""
    role = iam.get_role(RoleName=ROLE)["Role"]
    arn = f"arn:aws:iam::{account}:policy/{ROLE}"
    return {
        "trust": role["AssumeRolePolicyDocument"],
        "tags": iam.list_role_tags(RoleName=ROLE)["Tags"],
        "attached": sorted(p["PolicyArn"] for p in
                           iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"]),
        "policy_tags": iam.list_policy_tags(PolicyArn=arn)["Tags"],
        "policy_versions": [v["VersionId"] for v in
                            iam.list_policy_versions(PolicyArn=arn)["Versions"]],
    }


def make_foreign_role_and_policy(iam: Any) -> str:
    """A role and policy with dogops's names, made by someone else (no dogops tags), with
    AmazonS3FullAccess attached. Returns the account id."""
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                    Tags=[{"Key": "team", "Value": "data-platform"}])
    iam.attach_role_policy(RoleName=ROLE, PolicyArn=S3_FULL)
    policy = iam.create_policy(PolicyName=ROLE, PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    iam.attach_role_policy(RoleName=ROLE, PolicyArn=policy["Policy"]["Arn"])
    return str(policy["Policy"]["Arn"].split(":")[4])


def test_foreign_role_and_policy_stop_the_run_and_survive_teardown(
    aws_settings: Any, tmp_path: Path
) -> None:
    from test_aws_backend import data_tree

    backend = AwsBackend(aws_settings.merged(lambda_={"enabled": False}), poll_s=0)
    iam = backend.clients.client("iam")
    account = make_foreign_role_and_policy(iam)
    before = _iam_state(iam, account)
    assert S3_FULL in before["attached"]

    data = backend.upload_data(data_tree(tmp_path / "data"))
    with pytest.raises(NotOwnedError) as caught:
        backend.tune(data, "run1")
    message = str(caught.value)
    assert f"IAM role {ROLE}" in message and "not dogops's" in message
    assert "DOGOPS_AWS__SAGEMAKER_ROLE_ARN" in message and "DOGOPS_PROJECT" in message
    assert _iam_state(iam, account) == before  # trust, tags, attached policies: unchanged
    sm = backend.clients.client("sagemaker")
    assert sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []

    assert backend.teardown(apply=False) == []
    assert backend.teardown(apply=True) == []
    assert _iam_state(iam, account) == before


def test_foreign_policy_alone_stops_before_the_role_is_created(aws_settings: Any) -> None:
    backend = AwsBackend(aws_settings, poll_s=0)
    iam = backend.clients.client("iam")
    iam.create_policy(PolicyName=ROLE, PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    with pytest.raises(NotOwnedError, match=f"IAM policy .*policy/{ROLE}"):
        backend.sagemaker_role_arn()
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == []  # nothing half-made


def _foreign_endpoint(sm: Any, name: str) -> str:
    sm.create_model(ModelName="theirs", ExecutionRoleArn="arn:aws:iam::123456789012:role/t",
                    PrimaryContainer={"Image": "img"})
    sm.create_endpoint_config(EndpointConfigName="theirs-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "theirs", "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1}])
    return str(sm.create_endpoint(EndpointName=name, EndpointConfigName="theirs-config")
               ["EndpointArn"])


def test_foreign_endpoint_and_its_scaling_are_left_alone(aws_settings: Any) -> None:
    backend = AwsBackend(aws_settings.merged(
        aws={"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r"}), poll_s=0)
    sm = backend.clients.client("sagemaker")
    scaling = backend.clients.client("application-autoscaling")
    arn = _foreign_endpoint(sm, "dogops-classifier")
    rid = "endpoint/dogops-classifier/variant/AllTraffic"
    scaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=rid,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1, MaxCapacity=4)

    model = TrainedModel(job_name="j", model_uri="s3://dogops-test/m/model.tar.gz",
                         hyperparameters={}, version="v1")
    with pytest.raises(NotOwnedError, match="DOGOPS_ENDPOINT__NAME"):
        backend.deploy(model, "run1")
    with pytest.raises(NotOwnedError, match="SageMaker endpoint dogops-classifier"):
        backend.register_autoscaling(EndpointInfo(name="dogops-classifier", url="u", arn=arn))
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["theirs"]
    assert sm.describe_endpoint(EndpointName="dogops-classifier")["EndpointConfigName"] == (
        "theirs-config")
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MaxCapacity"]) for t in targets] == [(rid, 4)]

    from dogops.idle import IdleStatus, put_to_sleep, scale_to_min

    idle = IdleStatus(endpoint_name="dogops-classifier", backend="aws", exists=True, idle=True,
                      max_idle_hours=1, current_instances=3)
    with pytest.raises(NotOwnedError, match="DOGOPS_ENDPOINT__NAME"):
        scale_to_min(backend.settings, idle, apply=True, operations=backend.operations)
    with pytest.raises(NotOwnedError, match="DOGOPS_ENDPOINT__NAME"):
        put_to_sleep(backend.settings, idle, apply=True, operations=backend.operations)

    assert backend.teardown(apply=True) == []
    assert sm.describe_endpoint(EndpointName="dogops-classifier")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]


def test_foreign_lambda_function_is_not_updated(aws_settings: Any) -> None:
    backend = AwsBackend(aws_settings.merged(
        aws={"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r"}), poll_s=0)
    lam = backend.clients.client("lambda")
    from dogops.lambda_package import build_package

    theirs = backend.clients.client("iam").create_role(
        RoleName="theirs", AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]["Arn"]
    lam.create_function(FunctionName="dogops-predict", Runtime="python3.12",
                        Role=theirs, Handler="h.h",
                        Code={"ZipFile": build_package().zip_bytes}, Timeout=3)
    with pytest.raises(NotOwnedError, match="DOGOPS_LAMBDA__FUNCTION_NAME"):
        deploy_lambda(backend.clients, backend.settings, "dogops-classifier",
                      "arn:aws:iam::123456789012:role/ours")
    config = lam.get_function_configuration(FunctionName="dogops-predict")
    assert (config["Role"], config["Timeout"]) == (theirs, 3)
    assert lam.list_aliases(FunctionName="dogops-predict")["Aliases"] == []
    assert lam.list_tags(Resource=config["FunctionArn"])["Tags"] == {}
