"""One run at a time changes an endpoint's live model, on both backends.

A manual rollout while the cron retrain promotes, or a rollback during a wake, would otherwise
interleave their deploys and registry writes, and the registry could end up naming a model that
is not the one serving. Every flow section that changes what serves on an endpoint (deploy ...
record in the registry, rollback, wake, idle-guard's sleep, teardown) holds one slot of a Prefect
global concurrency limit named after the backend and endpoint, with limit 1: the second run
waits (up to `live_lock_timeout_s`) and then goes ahead on the result of the first.

The limit is created on first use (Prefect 3.9 no longer creates one on acquire). The slot is
held under a lease that Prefect renews while the run lives, so a killed run frees it when the
lease runs out (5 minutes) instead of blocking the endpoint for ever. Re-entrant within a run: a
section nested in another one that holds the slot does not wait for itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from dogops.errors import ConcurrentUpdateError
from dogops.settings import Settings

LEASE_S = 300
_HELD: ContextVar[frozenset[str]] = ContextVar("dogops_live_locks", default=frozenset())


def limit_name(settings: Settings) -> str:
    """The global concurrency limit of `settings`' endpoint (one per backend and endpoint)."""
    return f"dogops-live-{settings.backend}-{settings.endpoint.name}"


def ensure_limit(name: str) -> None:
    """Create the limit (1 slot) unless it exists; two runs creating it at once is fine."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1)
            )


@contextlib.contextmanager
def live_model_lock(settings: Settings) -> Iterator[None]:
    """Hold the endpoint's live-model slot for the `with` block (see the module docstring)."""
    name = limit_name(settings)
    held = _HELD.get()
    if name in held:
        yield
        return
    ensure_limit(name)
    token = _HELD.set(held | {name})
    try:
        with contextlib.ExitStack() as stack:
            try:
                # A failed lease renewal (an API blip) must not cancel a run mid-deploy: that
                # would leave the endpoint half-changed, which is worse than a lease that ends.
                stack.enter_context(concurrency(
                    name, occupy=1, timeout_seconds=settings.live_lock_timeout_s,
                    lease_duration=LEASE_S, strict=True, raise_on_lease_renewal_failure=False,
                ))
            except TimeoutError as exc:
                raise ConcurrentUpdateError(
                    f"another run has been changing endpoint {settings.endpoint.name}'s live "
                    f"model for over {settings.live_lock_timeout_s} s (Prefect concurrency "
                    f"limit {name}), so this run changed nothing: re-run it once that run has "
                    "finished (see the flow runs in the UI), or raise live_lock_timeout_s."
                ) from exc
            yield
    finally:
        _HELD.reset(token)
