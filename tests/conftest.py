"""Shared test fixtures: one moto server and one Prefect test harness per session.

The moto server is a real HTTP peer on 127.0.0.1 (started here, or reused when `.ci/run`
exported `DOGOPS_TEST_MOTO_URL`). `aws_settings` points every dogops client at it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

# A redeploy goes through the guarded rollout, whose default bake is 5 minutes per step: tests
# that only need the new model live skip the bake; the rollout tests set their own.
os.environ.setdefault("DOGOPS_ROLLOUT__BAKE_SECONDS", "0")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Fake credentials so boto3 never looks for real ones; moto accepts anything.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """URL of a moto server on 127.0.0.1."""
    existing = os.environ.get("DOGOPS_TEST_MOTO_URL")
    if existing:
        yield existing
        return
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto(moto_url: str) -> Iterator[str]:
    """A moto server wiped before each test."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=60).raise_for_status()
    yield moto_url


@pytest.fixture
def aws_settings(moto: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings for the aws backend pointed at the (reset) moto server."""
    from dogops.settings import Settings

    return Settings(
        backend="aws",
        state_dir=tmp_path / "state",
        aws={
            "endpoint_url": moto, "region": "us-east-1", "bucket": "dogops-test",
            "max_attempts": 1,
        },
    )


@pytest.fixture
def aws_clients_built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every `AwsClients` built from here on, in order: how a test shows that a flow run shares
    one set of clients. A spy, not a stand-in: the real constructor runs."""
    from dogops.aws.clients import AwsClients

    built: list[Any] = []
    real_init = AwsClients.__init__

    def counting_init(self: AwsClients, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(AwsClients, "__init__", counting_init)
    return built


@pytest.fixture
def toolkit_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that run the serving toolkit in this process: its HandlerService prepends the
    model's code dir to os.environ["PYTHONPATH"] and the worker sets SAGEMAKER_PROGRAM and puts
    the code dir on sys.path. Undo all of it afterwards, so later subprocesses are unaffected."""
    import sys

    for key in ("PYTHONPATH", "SAGEMAKER_PROGRAM", "SM_MODEL_DIR"):
        original = os.environ.get(key)
        monkeypatch.setenv(key, original or "-")  # records the original for teardown
        if original is None:
            monkeypatch.delenv(key)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "inference", sys.modules.get("inference"))  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "inference")


@pytest.fixture(scope="session")
def parity_trial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small model trained by the local tuner, shared by the parity tests
    (tests/parity_cases.py): trained once per session, whichever of them runs first."""
    from parity_cases import train_trial

    return train_trial(tmp_path_factory.mktemp("parity"))


@pytest.fixture(scope="session")
def drip_url() -> Iterator[str]:
    """An image server on 127.0.0.1 that sends its headers, then one byte every 0.5 s."""
    from parity_cases import drip_server

    yield from drip_server()


@pytest.fixture(scope="session")
def image_url(parity_trial: dict[str, Any]) -> Iterator[str]:
    """An image server on 127.0.0.1 serving the parity trial's test image."""
    from parity_cases import image_server, sample_jpeg

    yield from image_server(sample_jpeg(parity_trial))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session (starting one costs ~20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def realistic_tuning_outcomes(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto completes a tuning job at once with a fake best job ("FakeTrainingJobName", no tuned
    hyperparameters, no training job behind it). Patch the in-process moto server so each new
    tuning job also gets the outcome SageMaker would produce: a real (moto) training job, made from
    the job's own training definition with tuned values, as its BestTrainingJob. Server-side, so
    it holds for every boto3 client in this process (a flow test can use it as is)."""
    if os.environ.get("DOGOPS_TEST_MOTO_URL"):
        pytest.skip("patches the in-process moto server; an external one is in use")
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.create_hyper_parameter_tuning_job
    tuned = {"learning_rate": "0.0123", "batch_size": '"64"'}

    def create(self: Any, **kwargs: Any) -> str:
        arn = original(self, **kwargs)
        name = kwargs["hyper_parameter_tuning_job_name"]
        definition = kwargs["training_job_definition"]
        best = f"{name}-001-abcd"
        self.create_training_job(
            training_job_name=best,
            hyper_parameters={**definition["StaticHyperParameters"], **tuned},
            algorithm_specification=definition["AlgorithmSpecification"],
            role_arn=definition["RoleArn"],
            input_data_config=definition.get("InputDataConfig"),
            output_data_config=definition["OutputDataConfig"],
            resource_config=definition["ResourceConfig"],
            vpc_config=None,
            stopping_condition=definition["StoppingCondition"],
            tags=[],
            enable_network_isolation=False,
            enable_inter_container_traffic_encryption=False,
            enable_managed_spot_training=False,
            checkpoint_config=None,
            debug_hook_config=None,
            debug_rule_configurations=None,
            tensor_board_output_config=None,
            experiment_config=None,
        )
        job = self.hyper_parameter_tuning_jobs[name]
        job.best_training_job = {
            **job.best_training_job,
            "TrainingJobName": best,
            "TrainingJobArn": self.training_jobs[best].arn,
            "TuningJobName": name,
            "TunedHyperParameters": tuned,
            "FailureReason": "",
            "FinalHyperParameterTuningJobObjectiveMetric": {
                "Type": "Minimize", "MetricName": "validation:loss", "Value": 0.42,
            },
        }
        return str(arn)

    monkeypatch.setattr(SageMakerModelBackend, "create_hyper_parameter_tuning_job", create)
