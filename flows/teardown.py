"""teardown: remove what the project runs for its endpoint, so nothing keeps billing.

Dry run by default: the `teardown` table artifact lists what would be removed; `apply=True`
removes it, in the order the backend requires (on AWS: scaling policy and target, Lambda, endpoint,
endpoint configs, models, the project's roles and policies; locally: the endpoint server processes
and the Lambda packages). Safe to re-run: a second apply finds nothing left. Data, model archives
and the registry stay, so `train-and-deploy` or `rollback` can bring the endpoint back.
"""

from __future__ import annotations

import contextlib

from prefect import flow, get_run_logger

from dogops.backends import get_backend
from dogops.settings import DEFAULT_ENDPOINT, BackendName, EndpointConfig, load_settings
from tasks.live_lock import live_model_lock
from tasks.operations import report_teardown, run_namer, teardown_resources


@flow(name="teardown", flow_run_name=run_namer("teardown"), log_prints=True)
def teardown(
    apply: bool = False,
    backend: BackendName | None = None,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    state_dir: str | None = None,
) -> list[str]:
    """List (dry run) or, with `apply`, delete the endpoint and everything made for it."""
    settings = load_settings(backend=backend, endpoint=endpoint, state_dir=state_dir)
    # Deleting the endpoint changes what serves: not while another run deploys to it.
    with live_model_lock(settings) if apply else contextlib.nullcontext():
        lines = teardown_resources(get_backend(settings), apply)
    report_teardown(lines, apply, settings.backend)
    verb = "removed" if apply else "would remove (dry run; apply=True deletes)"
    get_run_logger().info("%s %d resources: %s", verb, len(lines), ", ".join(lines) or "none")
    return lines


if __name__ == "__main__":
    teardown()
