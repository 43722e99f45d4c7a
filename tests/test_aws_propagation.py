"""A fresh role is not assumable for some seconds on real AWS (IAM propagates); moto never refuses.

So the refusal is injected: botocore's Stubber for the mechanism itself, and a `before-call` event
hook on the real (moto-backed) clients for the three SageMaker create calls the pipeline makes.
The hook answers exactly what SageMaker answers (HTTP 400 ValidationException "Could not assume
role ...") the first two times, then lets the call through to moto.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from dogops.aws import propagation
from dogops.aws.backend import AwsBackend
from dogops.aws.propagation import ROLE_RETRY_DELAYS_S, call_with_role
from dogops.errors import (
    OperationFailedError,
    PermissionDeniedError,
    RoleNotAssumableYet,
    TransientError,
    is_transient,
)

ROLE = "arn:aws:iam::123456789012:role/dogops-sagemaker-execution"
NOT_YET = (f"Could not assume role {ROLE}. Please ensure that the role exists and allows "
           "principal 'sagemaker.amazonaws.com' to assume the role.")
DENIED = ("User: arn:aws:sts::123456789012:assumed-role/ops/me is not authorized to perform: "
          f"iam:PassRole on resource: {ROLE} because no identity-based policy allows it")


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(propagation, "_sleep", waits.append)
    return waits


def _stubbed() -> tuple[Any, Stubber]:
    client = boto3.client("sagemaker", region_name="us-east-1")
    return client, Stubber(client)


def test_not_assumable_twice_then_success(slept: list[float]) -> None:
    client, stubber = _stubbed()
    for _ in range(2):
        stubber.add_client_error("create_model", "ValidationException", NOT_YET)
    stubber.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:1:model/m"})
    with stubber:
        answer = call_with_role(client.create_model, ROLE, "CreateModel", ModelName="m",
                                ExecutionRoleArn=ROLE)
    assert answer["ModelArn"].endswith("model/m")
    assert slept == [2, 4]
    stubber.assert_no_pending_responses()


def test_access_denied_fails_at_once_naming_role_and_permission(slept: list[float]) -> None:
    client, stubber = _stubbed()
    stubber.add_client_error("create_model", "AccessDeniedException", DENIED, 400)
    with stubber, pytest.raises(PermissionDeniedError) as caught:
        call_with_role(client.create_model, ROLE, "CreateModel", ModelName="m",
                       ExecutionRoleArn=ROLE)
    assert ROLE in str(caught.value) and "iam:PassRole" in str(caught.value)
    assert slept == []
    assert not is_transient(caught.value)


def test_still_not_assumable_after_the_bound_fails_clearly(slept: list[float]) -> None:
    client, stubber = _stubbed()
    for _ in range(len(ROLE_RETRY_DELAYS_S) + 1):
        stubber.add_client_error("create_model", "ValidationException", NOT_YET)
    with stubber, pytest.raises(OperationFailedError, match="trust policy"):
        call_with_role(client.create_model, ROLE, "CreateModel", ModelName="m")
    assert slept == list(ROLE_RETRY_DELAYS_S)
    assert 100 <= sum(slept) <= 150  # bounded: about two minutes


def test_other_validation_errors_are_not_retried(slept: list[float]) -> None:
    client, stubber = _stubbed()
    stubber.add_client_error("create_model", "ValidationException", "Invalid image URI")
    with stubber, pytest.raises(ClientError, match="Invalid image URI"):
        call_with_role(client.create_model, ROLE, "CreateModel", ModelName="m")
    assert slept == []


def test_exception_tree_calls_it_transient() -> None:
    assert issubclass(RoleNotAssumableYet, TransientError)
    not_yet = ClientError({"Error": {"Code": "ValidationException", "Message": NOT_YET}}, "X")
    lam = ClientError({"Error": {"Code": "InvalidParameterValueException", "Message":
                                 "The role defined for the function cannot be assumed by Lambda."}},
                      "CreateFunction")
    other = ClientError({"Error": {"Code": "ValidationException", "Message": "bad name"}}, "X")
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": DENIED}}, "X")
    assert is_transient(not_yet) and is_transient(lam)
    assert not is_transient(other) and not is_transient(denied)


# --- the pipeline's own create calls, against moto ---------------------------------------------

CREATES = ["CreateHyperParameterTuningJob", "CreateTrainingJob", "CreateModel"]


def _refuse(client: Any, operation: str, times: int, code: str, message: str) -> list[int]:
    """Answer `operation` with `code` the first `times` calls, then let it reach moto."""
    calls = [0]

    def hook(**_: Any) -> Any:
        calls[0] += 1
        if calls[0] > times:
            return None
        error = {"Error": {"Code": code, "Message": message},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
        return SimpleNamespace(status_code=400), error

    client.meta.events.register(f"before-call.sagemaker.{operation}", hook)
    return calls


@pytest.mark.aws
def test_pipeline_creates_wait_for_a_fresh_role(
    aws_settings: Any, tmp_path: Path, slept: list[float], realistic_tuning_outcomes: None
) -> None:
    from test_aws_backend import data_tree

    # No role ARN configured: the backend creates the scoped role, as on a first real run.
    settings = aws_settings.merged(training={"reuse_best_trial": False},
                                   lambda_={"enabled": False})
    backend = AwsBackend(settings, poll_s=0)
    sm = backend.clients.client("sagemaker")
    calls = {op: _refuse(sm, op, 2, "ValidationException", NOT_YET) for op in CREATES}

    data = backend.upload_data(data_tree(tmp_path / "data"))
    tuned = backend.tune(data, "run1")
    model = backend.train_best(data, tuned, "run1")
    endpoint = backend.deploy(model, "run1")

    assert {op: c[0] for op, c in calls.items()} == dict.fromkeys(CREATES, 3)
    assert slept == [2, 4] * 3
    assert not model.reused  # the final training job was created, after two refusals
    assert sm.describe_model(ModelName=endpoint.model_name)["ExecutionRoleArn"].endswith(
        ":role/dogops-sagemaker-execution")


@pytest.mark.aws
def test_pipeline_create_access_denied_fails_at_once(
    aws_settings: Any, slept: list[float]
) -> None:
    from dogops.results import TrainedModel

    backend = AwsBackend(aws_settings.merged(aws={"sagemaker_role_arn": ROLE}), poll_s=0)
    sm = backend.clients.client("sagemaker")
    calls = _refuse(sm, "CreateModel", 99, "AccessDeniedException", DENIED)
    model = TrainedModel(job_name="j", model_uri="s3://dogops-test/m/model.tar.gz",
                         hyperparameters={}, version="v1")
    with pytest.raises(PermissionDeniedError, match="iam:PassRole") as caught:
        backend.deploy(model, "run1")
    assert ROLE in str(caught.value)
    assert calls[0] == 1 and slept == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []  # stopped before the next step
