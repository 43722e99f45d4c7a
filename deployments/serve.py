"""Register and serve every dogops flow as a Prefect deployment: `make serve`.

    train-and-deploy   on demand; every setting editable in the UI form
    retrain            cron `schedules.retrain_cron` (default Mondays 03:00 UTC)
    rollback           on demand
    teardown           on demand (dry run unless apply=true)
    iam-audit          on demand (dry run unless apply=true)
    idle-guard         cron `schedules.idle_guard_cron` (default hourly), scale-to-min after 24 h

Flow parameters are typed (pydantic models such as `TuningConfig`), so the UI renders them as
forms and rejects bad values before a run starts. Schedules come from the settings
(`DOGOPS_SCHEDULES__RETRAIN_CRON`, `DOGOPS_SCHEDULES__IDLE_GUARD_CRON`, `..._TIMEZONE`).

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
    """The six deployments, built from the flows (nothing is registered yet)."""
    from flows.iam_audit import iam_audit
    from flows.idle_guard import idle_guard
    from flows.retrain import retrain
    from flows.rollback import rollback
    from flows.teardown import teardown
    from flows.train_and_deploy import train_and_deploy

    settings = settings or load_settings()
    timezone = settings.schedules.timezone

    def cron(expression: str) -> list[Any]:
        return [Cron(expression, timezone=timezone)]

    def deployment(flow: Any, name: str, **kwargs: Any) -> RunnerDeployment:
        # `to_deployment` is sync here (it returns a coroutine only in async code).
        built = flow.to_deployment(name=name, tags=TAGS, **kwargs)
        assert isinstance(built, RunnerDeployment)
        return built

    return [
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
            parameters={"max_idle_hours": 24, "action": "scale-to-min", "apply": True},
            description="Scale an endpoint idle for max_idle_hours to its minimum (or tear it "
            "down with action=teardown).",
        ),
    ]


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
    print(f"serving dogops deployments against {api} (UI: {api.removesuffix('/api')}); "
          "Ctrl-C stops serving, `make stop` stops the server")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        serve(*build_deployments(settings))


if __name__ == "__main__":
    main()
