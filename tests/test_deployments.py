"""Deployments: built from the flows, registered on the Prefect test server, schedules present,
UI-style JSON parameters validated by type, one run created from a deployment and executed by a
runner, and `deployments/prefect.yaml` deployed with the real `prefect deploy` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dogops.settings import Settings

REPO = Path(__file__).resolve().parents[1]
NAMES = ["train-and-deploy", "retrain", "rollback", "teardown", "iam-audit", "idle-guard"]
FLOW_NAMES = dict(zip(NAMES, NAMES, strict=True))

# What the UI's form sends for train-and-deploy: plain JSON, nested objects for the pydantic models.
UI_PARAMETERS: dict[str, Any] = {
    "backend": "local",
    "data_dir": "/data/dogs",
    "tuning": {"max_jobs": 6, "max_parallel_jobs": 2, "learning_rate_min": 0.001,
               "learning_rate_max": 0.05, "batch_sizes": [32, 64]},
    "training": {"training_instance_type": "ml.m5.2xlarge"},
    "endpoint": {"name": "dogs-from-the-ui", "instance_type": "ml.m5.xlarge"},
}


@pytest.fixture(scope="module")
def deployments() -> list[Any]:
    from deployments.serve import build_deployments

    return build_deployments(Settings())


def _cron(schedule: Any) -> tuple[str, str]:
    return schedule.schedule.cron, schedule.schedule.timezone


def test_every_flow_has_a_deployment_and_the_schedules(deployments: list[Any]) -> None:
    by_name = {d.name: d for d in deployments}
    assert list(by_name) == NAMES
    assert [d.flow_name for d in deployments] == NAMES
    assert _cron(by_name["retrain"].schedules[0]) == ("0 3 * * 1", "UTC")
    assert _cron(by_name["idle-guard"].schedules[0]) == ("0 * * * *", "UTC")
    assert by_name["idle-guard"].parameters == {
        "max_idle_hours": 24, "action": "scale-to-min", "apply": True}
    assert by_name["teardown"].parameters == {"apply": False}
    assert not by_name["train-and-deploy"].schedules
    # Typed parameters: the UI renders the pydantic models as forms from this schema.
    schema = by_name["train-and-deploy"]._parameter_openapi_schema.model_dump()
    assert {"TuningConfig", "TrainingConfig", "EndpointConfig", "ScalingConfig"} <= set(
        schema["definitions"])
    assert {"enum": ["local", "aws"], "type": "string"} in schema["properties"]["backend"]["anyOf"]


def test_schedule_comes_from_the_settings() -> None:
    from deployments.serve import build_deployments

    settings = Settings().merged(schedules={"retrain_cron": "30 4 * * *",
                                            "timezone": "Europe/Paris"})
    retrain = next(d for d in build_deployments(settings) if d.name == "retrain")
    assert _cron(retrain.schedules[0]) == ("30 4 * * *", "Europe/Paris")


def test_ui_parameters_are_validated_by_type() -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.train_and_deploy import train_and_deploy

    validated = train_and_deploy.validate_parameters(UI_PARAMETERS)
    assert validated["tuning"].max_jobs == 6 and validated["tuning"].batch_sizes == [32, 64]
    assert validated["endpoint"].instance_type == "ml.m5.xlarge"
    for bad in ({"tuning": {"learning_rate_min": 0.5, "learning_rate_max": 0.1}},
                {"tuning": {"max_jobs": 0}}, {"backend": "gcp"},
                {"endpoint": {"name": "not a valid name"}}):
        with pytest.raises(ParameterTypeError):
            train_and_deploy.validate_parameters(bad)


def test_registered_deployments_take_ui_parameters_and_keep_schedules(
    prefect_harness: None, deployments: list[Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    ids = {d.name: d.apply() for d in deployments}
    with get_client(sync_client=True) as client:
        retrain = client.read_deployment_by_name("retrain/retrain")
        assert retrain.id == ids["retrain"]
        assert [(s.schedule.cron, s.active) for s in retrain.schedules] == [("0 3 * * 1", True)]
        assert "TuningConfig" in retrain.parameter_openapi_schema["definitions"]

    # A run triggered like the UI does: JSON parameters, no worker needed to create it.
    run = run_deployment("train-and-deploy/train-and-deploy", parameters=UI_PARAMETERS,
                         timeout=0)
    assert run.deployment_id == ids["train-and-deploy"]
    assert run.parameters == UI_PARAMETERS
    assert run.state is not None and run.state.is_scheduled()


def test_a_run_from_the_teardown_deployment_executes(
    prefect_harness: None, deployments: list[Any], tmp_path: Path
) -> None:
    """A runner (what `make serve` runs) picks up the run and executes the flow."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner

    deployment = next(d for d in deployments if d.name == "teardown")
    parameters = {"apply": False, "backend": "local", "state_dir": str(tmp_path)}
    run = run_deployment("teardown/teardown", parameters=parameters, timeout=0)

    async def run_once() -> None:
        runner = Runner(name="dogops-test-runner", limit=1)
        await runner.aadd_deployment(deployment)
        await runner.start(run_once=True)

    asyncio.run(run_once())
    with get_client(sync_client=True) as client:
        finished = client.read_flow_run(run.id)
    assert finished.state is not None and finished.state.is_completed(), finished.state
    assert finished.parameters == parameters


def test_prefect_yaml_matches_serve_and_deploys_with_the_cli(
    prefect_harness: None, tmp_path: Path
) -> None:
    """`prefect deploy --all` on deployments/prefect.yaml against the test server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    assert [d["name"] for d in spec["deployments"]] == NAMES
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["retrain"]["schedules"][0]["cron"] == Settings().schedules.retrain_cron
    assert by_name["idle-guard"]["schedules"][0]["cron"] == Settings().schedules.idle_guard_cron

    # The pool may exist from an earlier run in this session.
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name="dogops-process", type="process"))
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
         "--prefect-file", "deployments/prefect.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with get_client(sync_client=True) as client:
        for name in NAMES:
            deployment = client.read_deployment_by_name(f"{name}/{name}")
            assert deployment.work_pool_name == "dogops-process"
        retrain = client.read_deployment_by_name("retrain/retrain")
        assert [s.schedule.cron for s in retrain.schedules] == ["0 3 * * 1"]
