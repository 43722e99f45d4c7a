"""wake: bring an endpoint that idle-guard put to sleep back, under the same name.

    read registry -> deploy its live version -> register auto-scaling -> clear the asleep mark

The live version's model and (on AWS) endpoint config were kept when it went to sleep, so this is
the same deploy step a rollback uses; the Lambda calls the endpoint by name and needs no edit.
Waking an endpoint that is awake redeploys nothing (the deploy step sees it already serves that
model).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from dogops.backends import Backend, get_backend
from dogops.errors import UserInputError
from dogops.registry import Asleep, RegistryEntry, registry_in
from dogops.results import EndpointInfo, ScalingInfo, StepSkipped
from dogops.settings import DEFAULT_ENDPOINT, BackendName, EndpointConfig, load_settings
from tasks.endpoint import deploy, register_autoscaling
from tasks.live_lock import live_model_lock
from tasks.operations import IDLE_KEY, mark_awake, read_live_model, run_namer


class WakeResult(BaseModel):
    live: RegistryEntry
    endpoint: EndpointInfo
    scaling: ScalingInfo | StepSkipped
    was_asleep: Asleep | None = None


@flow(name="wake", flow_run_name=run_namer("wake"), log_prints=True)
def wake(
    backend: BackendName | None = None,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    state_dir: str | None = None,
) -> WakeResult:
    """Deploy the registry's live version again (after idle-guard put the endpoint to sleep)."""
    settings = load_settings(backend=backend, endpoint=endpoint, state_dir=state_dir)
    platform = get_backend(settings)  # built once; every task of this run gets it
    with live_model_lock(settings):  # what is live is read and changed with no run in between
        return _wake(platform)


def _wake(platform: Backend) -> WakeResult:
    name = platform.settings.endpoint.name
    live = read_live_model(platform)
    if live is None:
        raise UserInputError(
            f"nothing to wake on endpoint {name}: the registry "
            f"{registry_in(platform.store).uri} has no live model for it. Run train-and-deploy "
            "first."
        )
    info = deploy(platform, live.trained_model(), f"wake-v{live.version}")
    scaled = register_autoscaling(platform, info)
    was = mark_awake(platform)
    slept = (f"asleep since {was.since:%Y-%m-%d %H:%M} UTC (see `cost-estimate` for the saving)"
             if was else "it was not marked asleep")
    create_markdown_artifact(
        key=IDLE_KEY,
        markdown=f"# Woke `{name}`\n\n- serving v{live.version} `{live.model_version}` again "
        f"at {info.url}\n- {slept}\n",
        description=f"Endpoint {name} woken",
    )
    return WakeResult(live=live, endpoint=info, scaling=scaled, was_asleep=was)


if __name__ == "__main__":
    wake()
