"""Register and serve every dogops flow as a Prefect deployment: `make serve`.

    train-and-deploy   on demand; every setting editable in the UI form
    retrain            cron `schedules.retrain_cron` (default Mondays 03:00 UTC)
    rollback           on demand
    teardown           on demand (dry run unless apply=true)
    iam-audit          on demand (dry run unless apply=true)
    idle-guard         cron `schedules.idle_guard_cron` (default hourly), sleep after 24 h idle
    wake               on demand: bring a sleeping endpoint back under the same name
    monitor            cron `schedules.monitor_cron` (default daily 06:00 UTC): captured traffic

Every deployment runs with no parameters once one train-and-deploy has filled the registry (the
data and live model come from there). Flow parameters are typed (pydantic models such as
`TuningConfig`), so the UI renders them as forms, each field filled with the value a run with no
parameters would use (the settings this process loaded: defaults, `.env`, `DOGOPS_*`), and
rejects bad values before a run starts. Schedules come from the settings
(`DOGOPS_SCHEDULES__RETRAIN_CRON`, `DOGOPS_SCHEDULES__IDLE_GUARD_CRON`,
`DOGOPS_SCHEDULES__MONITOR_CRON`, `..._TIMEZONE`).

Without `PREFECT_API_URL`, `main()` starts (or reuses) the project's Prefect server on
127.0.0.1:4200 with its state under the state dir, then serves until Ctrl-C: the schedules fire
and UI-triggered runs execute in this process's subprocesses. With `PREFECT_API_URL` set (another
server, Prefect Cloud) it serves against that instead.
"""

from __future__ import annotations

import os
from typing import Any

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from dogops.settings import Settings, load_settings

TAGS = ["dogops"]


def build_deployments(settings: Settings | None = None) -> list[RunnerDeployment]:
    """The eight deployments, built from the flows (nothing is registered yet)."""
    from flows.iam_audit import iam_audit
    from flows.idle_guard import idle_guard
    from flows.monitor import monitor_flow
    from flows.retrain import retrain
    from flows.rollback import rollback
    from flows.teardown import teardown
    from flows.train_and_deploy import train_and_deploy
    from flows.wake import wake

    settings = settings or load_settings()
    timezone = settings.schedules.timezone

    def cron(expression: str) -> list[Any]:
        return [Cron(expression, timezone=timezone)]

    def deployment(flow: Any, name: str, **kwargs: Any) -> RunnerDeployment:
        # `to_deployment` is sync here (it returns a coroutine only in async code).
        built = flow.to_deployment(name=name, tags=TAGS, **kwargs)
        assert isinstance(built, RunnerDeployment)
        return built

    built = [
        deployment(
            train_and_deploy, "train-and-deploy",
            description="Tune, train, deploy, auto-scale, secure and smoke-test the classifier.",
        ),
        deployment(
            retrain, "retrain", schedules=cron(settings.schedules.retrain_cron),
            description="Warm-started retrain; promotes only a candidate that beats the live "
            "model by `margin` on the same test split.",
        ),
        deployment(
            rollback, "rollback",
            description="Redeploy the registry's previous model version (or `to_version`).",
        ),
        deployment(
            teardown, "teardown", parameters={"apply": False},
            description="List (dry run) or, with apply=true, delete the endpoint and everything "
            "made for it.",
        ),
        deployment(
            iam_audit, "iam-audit", parameters={"apply": False},
            description="Find unused customer-managed policies and full-access roles.",
        ),
        deployment(
            idle_guard, "idle-guard", schedules=cron(settings.schedules.idle_guard_cron),
            parameters={"max_idle_hours": 24, "action": "sleep", "apply": True},
            description="Put an endpoint idle for max_idle_hours to sleep (deleted on AWS, "
            "workers stopped locally; model, config and registry kept), or scale-to-min/teardown.",
        ),
        deployment(
            wake, "wake",
            description="Bring a sleeping endpoint back: deploy the registry's live version "
            "under the same name.",
        ),
        deployment(
            monitor_flow, "monitor", schedules=cron(settings.schedules.monitor_cron),
            description="Captured traffic of the endpoint (endpoint.capture_percent > 0): "
            "requests per day, predicted classes vs the test split, top-1 probabilities.",
        ),
    ]
    for item in built:
        show_effective_defaults(item, settings)
    return built


def effective_defaults(settings: Settings) -> dict[str, Any]:
    """Flow parameter -> the value a run with no parameters uses, as JSON."""
    return {
        "backend": settings.backend,
        "tuning": settings.tuning.model_dump(mode="json"),
        "training": settings.training.model_dump(mode="json"),
        "endpoint": settings.endpoint.model_dump(mode="json"),
        "scaling": settings.scaling.model_dump(mode="json"),
        "lambda_config": settings.lambda_.model_dump(mode="json"),
        "monitor_config": settings.monitor.model_dump(mode="json"),
    }


def show_effective_defaults(deployment: RunnerDeployment, settings: Settings) -> None:
    """Put the effective settings into the parameter schema's defaults, which the UI's run form
    shows (the flows' own defaults are "keep the settings", which a form cannot show)."""
    properties = deployment._parameter_openapi_schema.properties
    for name, value in effective_defaults(settings).items():
        if name in properties:
            properties[name]["default"] = value


def main() -> None:
    """Start (or reuse) the local Prefect server unless PREFECT_API_URL is set, then serve."""
    from prefect import serve

    settings = load_settings()
    if "PREFECT_API_URL" not in os.environ:
        from dogops.services import prefect_env, start_prefect_server

        root = settings.state_dir.expanduser().resolve()
        os.environ.update(prefect_env(root))
        os.environ["PREFECT_API_URL"] = start_prefect_server(root)
    api = os.environ["PREFECT_API_URL"]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dogops.services import export_hint, prefect_command_hint

    deployments = build_deployments(settings)
    print(f"serving {len(deployments)} dogops deployments against {api} "
          f"(UI: {api.removesuffix('/api')}); Ctrl-C stops serving, `make stop` the server.\n"
          f"Plain `prefect` commands in another shell need: {export_hint(api)}\n"
          "Trigger a run from another shell (no parameters needed after one train-and-deploy):\n"
          f"  {prefect_command_hint(api, 'deployment', 'run', 'retrain/retrain')}")
    with temporary_settings(updates={PREFECT_API_URL: api}):
        # Prefect's own starting message prints a `prefect deployment run` hint without the
        # API URL, which fails in a fresh shell; ours above carries it.
        serve(*deployments, print_starting_message=False)


if __name__ == "__main__":
    main()
