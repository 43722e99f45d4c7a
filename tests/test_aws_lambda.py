"""Lambda deployment against the moto server, plus botocore `Stubber` where moto cannot answer.

moto is real for functions, code hashes, versions, aliases and reserved concurrency. It does not
implement provisioned concurrency (every call answers 404) and never refuses a freshly created
role, so those requests are checked with `Stubber` and the exact parameters AWS must receive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

import dogops.aws.lambda_deploy as lambda_deploy
from dogops.aws import propagation
from dogops.aws.clients import AwsClients
from dogops.aws.iam import ensure_lambda_role
from dogops.aws.lambda_deploy import (
    PC_TAG,
    delete_lambda,
    deploy_lambda,
    desired_configuration,
    ensure_provisioned_concurrency,
)
from dogops.errors import OperationFailedError
from dogops.lambda_package import HANDLER_DIR, build_package

pytestmark = pytest.mark.aws

ENDPOINT = "dogops-classifier"
ENDPOINT_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}"
MUTATIONS = {
    "CreateFunction",
    "UpdateFunctionCode",
    "UpdateFunctionConfiguration",
    "PublishVersion",
    "CreateAlias",
    "UpdateAlias",
    "PutFunctionConcurrency",
}


def _settings(aws_settings: Any, **lambda_fields: Any) -> Any:
    # Provisioned concurrency off by default here: moto answers 404 for it (see the Stubber tests).
    return aws_settings.merged(**{"lambda": {"provisioned_concurrency": 0, **lambda_fields}})


def _record_calls(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register("before-call.lambda.*", lambda model, **_: calls.append(model.name))
    return calls


def _stubbed_lambda() -> tuple[Any, Stubber]:
    client = boto3.client("lambda", region_name="us-east-1")
    return client, Stubber(client)


@pytest.fixture
def deployed(aws_settings: Any) -> tuple[AwsClients, Any, str]:
    settings = _settings(aws_settings)
    clients = AwsClients(settings.aws)
    role_arn = ensure_lambda_role(clients, settings, ENDPOINT_ARN).lambda_role_arn
    assert role_arn
    return clients, settings, role_arn


def test_deploy_creates_function_version_and_alias(deployed: tuple[AwsClients, Any, str]) -> None:
    clients, settings, role_arn = deployed
    info = deploy_lambda(clients, settings, ENDPOINT, role_arn)
    package = build_package()

    client = clients.client("lambda")
    function = client.get_function(FunctionName="dogops-predict")
    config = function["Configuration"]
    assert config["Runtime"] == "python3.12"
    assert config["Handler"] == "handler.lambda_handler"
    assert config["Role"] == role_arn
    assert config["Environment"]["Variables"] == {"ENDPOINT_NAME": ENDPOINT, "READ_TIMEOUT_S": "25"}
    assert (config["Timeout"], config["MemorySize"]) == (30, 256)
    assert config["CodeSha256"] == package.code_sha256_b64
    assert function["Tags"] == {"project": "dogops", "managed-by": "dogops"}

    versions = client.list_versions_by_function(FunctionName="dogops-predict")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]
    assert client.get_alias(FunctionName="dogops-predict", Name="live")["FunctionVersion"] == "1"
    assert info.version == "1" and info.alias == "live" and info.updated
    assert info.code_sha256 == package.code_sha256_b64
    assert info.package_bytes == package.size_bytes == len(package.zip_bytes)
    assert info.arn == f"{config['FunctionArn']}:live"


def test_redeploy_unchanged_publishes_nothing(deployed: tuple[AwsClients, Any, str]) -> None:
    clients, settings, role_arn = deployed
    deploy_lambda(clients, settings, ENDPOINT, role_arn)
    calls = _record_calls(clients.client("lambda"))

    info = deploy_lambda(clients, settings, ENDPOINT, role_arn)

    assert not MUTATIONS & set(calls), calls
    assert info.version == "1" and not info.updated
    versions = clients.client("lambda").list_versions_by_function(FunctionName="dogops-predict")
    assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1"]


def test_changes_update_only_what_changed_and_publish(
    deployed: tuple[AwsClients, Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients, settings, role_arn = deployed
    client = clients.client("lambda")
    deploy_lambda(clients, settings, ENDPOINT, role_arn)

    calls = _record_calls(client)
    info = deploy_lambda(clients, settings, "dogops-classifier-v2", role_arn)  # new endpoint name
    assert "UpdateFunctionConfiguration" in calls and "UpdateFunctionCode" not in calls
    assert info.version == "2" and info.updated
    assert client.get_alias(FunctionName="dogops-predict", Name="live")["FunctionVersion"] == "2"
    version = client.get_function_configuration(FunctionName="dogops-predict", Qualifier="2")
    assert version["Environment"]["Variables"] == {
        "ENDPOINT_NAME": "dogops-classifier-v2", "READ_TIMEOUT_S": "25"}

    # A changed handler (a real zip from a copy of the source) uploads code, not configuration.
    source = tmp_path / "handler"
    source.mkdir()
    (source / "handler.py").write_text((HANDLER_DIR / "handler.py").read_text() + "\n# v3\n")
    changed = build_package(source)
    monkeypatch.setattr(lambda_deploy, "build_package", lambda: changed)
    calls.clear()
    info = deploy_lambda(clients, settings, "dogops-classifier-v2", role_arn)
    assert "UpdateFunctionCode" in calls and "UpdateFunctionConfiguration" not in calls
    assert info.version == "3" and info.code_sha256 == changed.code_sha256_b64
    assert client.get_function_configuration(FunctionName="dogops-predict")["CodeSha256"] == (
        changed.code_sha256_b64
    )


def test_reserved_concurrency(deployed: tuple[AwsClients, Any, str]) -> None:
    clients, settings, role_arn = deployed
    settings = settings.merged(**{"lambda": {"reserved_concurrency": 5}})
    deploy_lambda(clients, settings, ENDPOINT, role_arn)
    client = clients.client("lambda")
    assert (
        client.get_function_concurrency(FunctionName="dogops-predict")[
            "ReservedConcurrentExecutions"
        ]
        == 5
    )
    calls = _record_calls(client)
    deploy_lambda(clients, settings, ENDPOINT, role_arn)
    assert "PutFunctionConcurrency" not in calls


def test_provisioned_concurrency_moto_lacks_is_skipped_with_its_reason(
    deployed: tuple[AwsClients, Any, str],
) -> None:
    # moto does not implement the API (a bare 404): the function and alias are deployed in full,
    # and the skipped part is recorded with its reason, never passed over silently.
    clients, settings, role_arn = deployed
    settings = settings.merged(**{"lambda": {"provisioned_concurrency": 2}})
    info = deploy_lambda(clients, settings, ENDPOINT, role_arn)
    assert [s.step for s in info.skipped] == ["provisioned-concurrency"]
    assert "does not offer provisioned concurrency" in info.skipped[0].reason
    assert "DOGOPS_LAMBDA__PROVISIONED_CONCURRENCY=0" in info.skipped[0].reason
    assert info.provisioned_concurrency == 0
    client = clients.client("lambda")
    alias = client.get_alias(FunctionName="dogops-predict", Name="live")
    assert alias["FunctionVersion"] == info.version != "$LATEST"
    assert PC_TAG not in client.get_function(FunctionName="dogops-predict")["Tags"]
    again = deploy_lambda(clients, settings, ENDPOINT, role_arn)
    assert (again.version, again.updated) == (info.version, False)


# --- Stubber: what moto cannot emulate -----------------------------------------------------------


def test_provisioned_concurrency_put_on_alias_exact_request() -> None:
    client, stubber = _stubbed_lambda()
    where = {"FunctionName": "dogops-predict", "Qualifier": "live"}
    stubber.add_client_error(
        "get_provisioned_concurrency_config",
        service_error_code="ProvisionedConcurrencyConfigNotFoundException",
        http_status_code=404,
        expected_params=where,
    )
    stubber.add_response(
        "put_provisioned_concurrency_config",
        {"RequestedProvisionedConcurrentExecutions": 2, "Status": "IN_PROGRESS"},
        expected_params={**where, "ProvisionedConcurrentExecutions": 2},
    )
    with stubber:
        assert ensure_provisioned_concurrency(client, "dogops-predict", "live", 2, 0) is True
    stubber.assert_no_pending_responses()


def test_provisioned_concurrency_unchanged_and_turned_off() -> None:
    client, stubber = _stubbed_lambda()
    where = {"FunctionName": "dogops-predict", "Qualifier": "live"}
    ready = {
        "RequestedProvisionedConcurrentExecutions": 2,
        "AllocatedProvisionedConcurrentExecutions": 2,
        "Status": "READY",
    }
    stubber.add_response("get_provisioned_concurrency_config", ready, expected_params=where)
    stubber.add_response("get_provisioned_concurrency_config", ready, expected_params=where)
    stubber.add_response("delete_provisioned_concurrency_config", {}, expected_params=where)
    with stubber:
        assert ensure_provisioned_concurrency(client, "dogops-predict", "live", 2, 2) is False
        assert ensure_provisioned_concurrency(client, "dogops-predict", "live", 0, 2) is True
        # 0 and never set by dogops: no call at all (a stubbed call would fail as unexpected).
        assert ensure_provisioned_concurrency(client, "dogops-predict", "live", 0, 0) is False
    stubber.assert_no_pending_responses()


def test_provisioned_concurrency_resource_not_found_is_raised() -> None:
    client, stubber = _stubbed_lambda()
    stubber.add_client_error(
        "get_provisioned_concurrency_config",
        service_error_code="ResourceNotFoundException",
        service_message="Function not found: dogops-predict:live",
        http_status_code=404,
    )
    with stubber, pytest.raises(OperationFailedError, match="404 ResourceNotFoundException"):
        ensure_provisioned_concurrency(client, "dogops-predict", "live", 2, 0)


def test_create_retries_while_new_role_cannot_be_assumed(
    aws_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real IAM needs seconds before Lambda can assume a new role; moto never refuses, so stub it.
    slept: list[float] = []
    monkeypatch.setattr(propagation, "_sleep", slept.append)
    client, stubber = _stubbed_lambda()
    package = build_package()
    settings = _settings(aws_settings)
    desired = desired_configuration(settings, ENDPOINT, "arn:aws:iam::1:role/r", package)
    for _ in range(2):
        stubber.add_client_error(
            "create_function",
            service_error_code="InvalidParameterValueException",
            service_message="The role defined for the function cannot be assumed by Lambda.",
        )
    stubber.add_response(
        "create_function",
        {"FunctionName": "dogops-predict", "FunctionArn": "arn:f"},
        expected_params={
            "FunctionName": "dogops-predict",
            "Code": {"ZipFile": package.zip_bytes},
            "Description": ANY,
            "Publish": False,
            "Tags": {"project": "dogops", "managed-by": "dogops"},
            **desired,
        },
    )
    with stubber:
        lambda_deploy._create_function(client, settings, desired, package)
    assert slept == [2, 4]

    stubber.add_client_error(
        "create_function",
        service_error_code="InvalidParameterValueException",
        service_message="Unsupported runtime",
    )
    with stubber, pytest.raises(Exception, match="Unsupported runtime"):
        lambda_deploy._create_function(client, settings, desired, package)  # not retried
    assert slept == [2, 4]


# --- delete --------------------------------------------------------------------------------------


def test_delete_lambda(deployed: tuple[AwsClients, Any, str]) -> None:
    clients, settings, role_arn = deployed
    client = clients.client("lambda")
    deploy_lambda(clients, settings, ENDPOINT, role_arn)

    planned = delete_lambda(clients, settings, apply=False)
    assert planned == ["alias:dogops-predict:live", "function:dogops-predict"]
    assert client.get_function(FunctionName="dogops-predict")  # dry run kept it
    assert PC_TAG not in client.get_function(FunctionName="dogops-predict")["Tags"]

    assert delete_lambda(clients, settings, apply=True) == planned
    assert client.list_functions()["Functions"] == []
    assert delete_lambda(clients, settings, apply=True) == []


def test_delete_lambda_leaves_functions_not_ours(deployed: tuple[AwsClients, Any, str]) -> None:
    clients, settings, role_arn = deployed
    client = clients.client("lambda")
    client.create_function(
        FunctionName="dogops-predict",
        Runtime="python3.12",
        Role=role_arn,
        Handler="handler.lambda_handler",
        Code={"ZipFile": build_package().zip_bytes},
    )
    assert delete_lambda(clients, settings, apply=True) == []
    assert client.get_function(FunctionName="dogops-predict")


def _function(state: str, update: str | None = None, reason: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"FunctionName": "dogops-predict", "State": state}
    if update is not None:
        config["LastUpdateStatus"] = update
    if reason is not None:
        config["LastUpdateStatusReason"] = reason
    return config


def test_wait_until_ready_waits_out_pending_and_an_update_one_call_per_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto's functions are Active at once, so the states in between come from Stubber. Each
    look is one GetFunctionConfiguration, and its answer is what the wait returns."""
    slept: list[float] = []
    monkeypatch.setattr(lambda_deploy, "_sleep", slept.append)
    client, stub = _stubbed_lambda()
    name = {"FunctionName": "dogops-predict"}
    stub.add_response("get_function_configuration", _function("Pending"), name)
    stub.add_response("get_function_configuration", _function("Active", "InProgress"), name)
    stub.add_response("get_function_configuration", _function("Active", "Successful"), name)
    with stub:
        ready = lambda_deploy.wait_until_ready(client, "dogops-predict")
    assert (ready["State"], ready["LastUpdateStatus"]) == ("Active", "Successful")
    assert slept == [lambda_deploy.WAIT_POLL_S] * 2
    stub.assert_no_pending_responses()


def test_wait_until_ready_takes_an_inactive_function_as_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A function idle for weeks is Inactive; updating it reactivates it, so it is not waited on
    (boto3's function_active_v2 waiter would spin on it until its timeout)."""
    monkeypatch.setattr(lambda_deploy, "_sleep", lambda _: None)
    client, stub = _stubbed_lambda()
    stub.add_response("get_function_configuration", _function("Inactive", "Successful"),
                      {"FunctionName": "dogops-predict"})
    with stub:
        assert lambda_deploy.wait_until_ready(client, "dogops-predict")["State"] == "Inactive"


def test_wait_until_ready_fails_with_lambdas_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambda_deploy, "_sleep", lambda _: None)
    client, stub = _stubbed_lambda()
    name = {"FunctionName": "dogops-predict"}
    stub.add_response("get_function_configuration", _function("Active", "InProgress"), name)
    stub.add_response("get_function_configuration",
                      _function("Active", "Failed", "The role cannot be assumed by Lambda."), name)
    with stub, pytest.raises(OperationFailedError,
                             match="dogops-predict failed: The role cannot be assumed"):
        lambda_deploy.wait_until_ready(client, "dogops-predict")
