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
NAMES = ["train-and-deploy", "retrain", "rollback", "teardown", "iam-audit", "idle-guard", "wake",
         "monitor"]
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
    assert _cron(by_name["monitor"].schedules[0]) == ("0 6 * * *", "UTC")
    assert by_name["monitor"].parameters == {}  # a daily run needs no parameters
    assert by_name["idle-guard"].parameters == {
        "max_idle_hours": 24, "action": "sleep", "apply": True}
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


def test_prefect_yaml_declares_process_and_ecs_sets_and_deploys_with_the_cli(
    prefect_harness: None, tmp_path: Path
) -> None:
    """`prefect deploy --all` on deployments/prefect.yaml against the test server: the process
    set and the ECS set (prefect-aws's `ecs` worker type) both register."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    names = [d["name"] for d in spec["deployments"]]
    assert names == NAMES + [f"{n}-ecs" for n in NAMES]
    by_name = {d["name"]: d for d in spec["deployments"]}
    for suffix, pool, active in (("", "dogops-process", True), ("-ecs", "dogops-ecs", False)):
        assert by_name[f"retrain{suffix}"]["schedules"][0]["cron"] == (
            Settings().schedules.retrain_cron)
        assert by_name[f"idle-guard{suffix}"]["schedules"][0]["cron"] == (
            Settings().schedules.idle_guard_cron)
        assert by_name[f"monitor{suffix}"]["schedules"][0]["cron"] == (
            Settings().schedules.monitor_cron)
        assert by_name[f"monitor{suffix}"]["schedules"][0]["active"] is active
        # One set's crons are active, so a cron job never runs twice.
        assert by_name[f"retrain{suffix}"]["schedules"][0]["active"] is active
        assert all(by_name[f"{n}{suffix}"]["work_pool"]["name"] == pool for n in NAMES)
        assert by_name[f"idle-guard{suffix}"]["parameters"]["action"] == "sleep"

    # The pools may exist from an earlier run in this session.
    with get_client(sync_client=True) as client:
        for pool, kind in (("dogops-process", "process"), ("dogops-ecs", "ecs")):
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=pool, type=kind))
    role = "arn:aws:iam::123456789012:role/dogops-ecs-flows"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "DOGOPS_ECS_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogops:test",
           "DOGOPS_ECS_TASK_ROLE_ARN": role}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
         "--prefect-file", "deployments/prefect.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with get_client(sync_client=True) as client:
        for name in NAMES:
            deployment = client.read_deployment_by_name(f"{name}/{name}")
            assert deployment.work_pool_name == "dogops-process"
            ecs = client.read_deployment_by_name(f"{name}/{name}-ecs")
            assert ecs.work_pool_name == "dogops-ecs"
            assert ecs.job_variables["task_role_arn"] == role
            assert ecs.job_variables["image"].endswith("/dogops:test")
            assert ecs.job_variables["env"] == {"DOGOPS_BACKEND": "aws"}
        retrain = client.read_deployment_by_name("retrain/retrain")
        assert [(s.schedule.cron, s.active) for s in retrain.schedules] == [("0 3 * * 1", True)]
        retrain_ecs = client.read_deployment_by_name("retrain/retrain-ecs")
        assert [(s.schedule.cron, s.active) for s in retrain_ecs.schedules] == [
            ("0 3 * * 1", False)]


def test_forms_show_the_effective_settings_as_defaults(prefect_harness: None) -> None:
    """Each deployment's parameter schema, read back from the server, has the values a run with
    no parameters would use (settings from the environment here) as its defaults, not None."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ParameterTypeError

    from deployments.serve import build_deployments
    from flows.retrain import retrain

    settings = Settings().merged(
        backend="aws", tuning={"max_jobs": 7, "learning_rate_max": 0.05},
        training={"training_instance_type": "ml.c5.2xlarge"},
        endpoint={"name": "dogs-from-env", "instance_type": "ml.c5.xlarge"},
        scaling={"max_capacity": 5}, monitor={"low_confidence_threshold": 0.3},
    )
    expected = {
        "backend": "aws",
        "tuning": settings.tuning.model_dump(mode="json"),
        "training": settings.training.model_dump(mode="json"),
        "endpoint": settings.endpoint.model_dump(mode="json"),
        "scaling": settings.scaling.model_dump(mode="json"),
        "lambda_config": settings.lambda_.model_dump(mode="json"),
        "monitor_config": settings.monitor.model_dump(mode="json"),
    }
    for deployment in build_deployments(settings):
        deployment.apply()
    seen = set()
    with get_client(sync_client=True) as client:
        for name in NAMES:
            schema = client.read_deployment_by_name(f"{name}/{name}").parameter_openapi_schema
            for parameter, value in expected.items():
                if parameter in schema["properties"]:
                    assert schema["properties"][parameter]["default"] == value, (name, parameter)
                    seen.add(parameter)
            # No model-valued parameter is optional: the form shows its fields, not a switch.
            for parameter in set(expected) - {"backend"}:
                prop = schema["properties"].get(parameter)
                assert prop is None or "anyOf" not in prop, (name, parameter)
    assert seen == set(expected)
    assert expected["tuning"]["max_jobs"] == 7 and expected["endpoint"]["name"] == "dogs-from-env"
    # Bad values are still refused before a run starts.
    for bad in ({"tuning": {**expected["tuning"], "learning_rate_min": 0.5}},
                {"scaling": {**expected["scaling"], "min_capacity": 9}},
                {"margin": -0.1}, {"endpoint": {"name": "no spaces"}}):
        with pytest.raises(ParameterTypeError):
            retrain.validate_parameters(bad)


def test_the_hint_make_serve_prints_works_as_printed(
    prefect_harness: None, deployments: list[Any], tmp_path: Path
) -> None:
    """The `prefect deployment run` line `make serve` prints, run in a shell that has no
    PREFECT_API_URL, creates the run on the server it names."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from dogops.services import prefect_command_hint

    next(d for d in deployments if d.name == "rollback").apply()
    api = str(PREFECT_API_URL.value())
    hint = prefect_command_hint(api, "deployment", "run", "rollback/rollback")
    assert hint.startswith(f"PREFECT_API_URL={api} ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # not the developer's ~/.prefect
    result = subprocess.run(["bash", "-c", hint], env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("rollback/rollback")
        runs = client.read_flow_runs()
    assert any(r.deployment_id == deployment.id for r in runs)
