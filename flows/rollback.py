"""rollback: put the registry's previous model (or a chosen version) back on the endpoint.

    read registry -> deploy the target version -> register auto-scaling -> mark it live

The model is rebuilt from its registry entry (its archive URI and content version), so the deploy
task is the same one train-and-deploy uses: on the local backend it restarts the server on the old
model without downtime, on AWS it swaps the endpoint to that model's config. Rolling back twice
walks further back in the registry's history.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from dogops.backends import Backend, get_backend
from dogops.errors import OperationFailedError, UserInputError
from dogops.registry import RegistryEntry, registry_in
from dogops.results import EndpointInfo, ScalingInfo, StepSkipped
from dogops.settings import DEFAULT_ENDPOINT, BackendName, EndpointConfig, load_settings
from tasks.endpoint import deploy, register_autoscaling
from tasks.live_lock import live_model_lock
from tasks.operations import ROLLBACK_KEY, read_live_model, run_namer, set_live_version
from tasks.rollout import report_rollout


class RollbackResult(BaseModel):
    restored: RegistryEntry
    replaced: RegistryEntry | None
    endpoint: EndpointInfo
    scaling: ScalingInfo | StepSkipped


@flow(name="rollback", flow_run_name=run_namer("rollback"), log_prints=True)
def rollback(
    to_version: int | None = None,
    backend: BackendName | None = None,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    state_dir: str | None = None,
) -> RollbackResult:
    """Redeploy the registry's previous version (or `to_version`) and record it as live."""
    settings = load_settings(backend=backend, endpoint=endpoint, state_dir=state_dir)
    platform = get_backend(settings)  # built once; every task of this run gets it
    with live_model_lock(settings):  # what is live is read and changed with no run in between
        return _roll_back(platform, to_version)


def _roll_back(platform: Backend, to_version: int | None) -> RollbackResult:
    settings = platform.settings
    logger = get_run_logger()
    registry = registry_in(platform.store)
    name = settings.endpoint.name
    current = read_live_model(platform)
    target = registry.get(to_version) if to_version is not None else registry.previous(name)
    if target is None and current is None:
        raise UserInputError(
            f"nothing to roll back on endpoint {name}: the registry {registry.uri} has no model "
            "for it. Run train-and-deploy first."
        )
    if target is None:
        raise UserInputError(
            f"nothing to roll back to on endpoint {name}: the registry {registry.uri} has "
            f"{'no live version' if current is None else f'only version {current.version}'} "
            "for it. Pass to_version to pick one explicitly."
        )
    if target.endpoint_name != name:
        raise UserInputError(
            f"registry version {target.version} was promoted to endpoint {target.endpoint_name}, "
            f"not {name}: pass endpoint={{'name': '{target.endpoint_name}'}}."
        )
    logger.info("rolling %s back from v%s to v%d (%s)", name,
                current.version if current else "-", target.version, target.model_version)
    live = deploy(platform, target.trained_model(), f"rollback-v{target.version}")
    if live.rollout is not None:  # the way back is guarded too
        outcome = report_rollout(live, target.trained_model())
        if not outcome.promoted:
            raise OperationFailedError(
                f"rolling {name} back to v{target.version} was itself rolled back "
                f"({outcome.reason}); v{current.version if current else '-'} keeps serving.")
    scaled = register_autoscaling(platform, live)
    reason = (f"rollback from v{current.version} ({current.model_version})" if current
              else "rollback")
    restored = set_live_version(platform, target.version, reason)
    create_markdown_artifact(
        key=ROLLBACK_KEY,
        markdown=(
            f"# Rollback of `{name}`\n\n"
            f"- now live: v{restored.version} `{restored.model_version}` "
            f"(promoted {restored.promoted_at:%Y-%m-%d %H:%M} UTC by {restored.source}, "
            f"test accuracy {restored.metrics.get('test:accuracy', float('nan')):.4f})\n"
            + (f"- replaced: v{current.version} `{current.model_version}`\n" if current else "")
        ),
        description=f"Endpoint {name} rolled back",
    )
    return RollbackResult(restored=restored, replaced=current, endpoint=live, scaling=scaled)


if __name__ == "__main__":
    rollback()
