"""One run at a time changes an endpoint's live model (`tasks.live_lock`): a Prefect global
concurrency limit per backend and endpoint, against the session's Prefect test server (real
slots and leases, nothing mocked)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dogops.errors import ConcurrentUpdateError, is_transient
from dogops.registry import RegistryEntry
from dogops.settings import Settings
from flows.retrain import live_moved
from flows.rollback import rollback
from flows.teardown import teardown
from flows.wake import wake
from tasks.live_lock import limit_name, live_model_lock

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DOGOPS_LIVE_LOCK_TIMEOUT_S", "2")
    monkeypatch.setenv("DOGOPS_ENDPOINT__NAME", f"lock-{tmp_path.name[-20:]}".replace("_", "-"))
    return Settings(state_dir=tmp_path / "state")


@pytest.fixture
def held_elsewhere(settings: Settings) -> Iterator[threading.Event]:
    """Another run (a thread) holding the endpoint's slot until the returned event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with live_model_lock(settings):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(30)
    yield release
    release.set()
    thread.join(30)


def test_the_second_run_waits_for_the_first(settings: Settings) -> None:
    spans: list[tuple[float, float]] = []

    def change() -> None:
        with live_model_lock(settings.model_copy(update={"live_lock_timeout_s": 30})):
            start = time.monotonic()
            time.sleep(0.5)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=change) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    first, second = sorted(spans)
    assert second[0] >= first[1]  # never both inside


def test_a_run_nested_in_its_own_section_does_not_wait_for_itself(settings: Settings) -> None:
    with live_model_lock(settings), live_model_lock(settings):
        pass  # with a 2 s timeout, waiting for itself would raise


def test_an_endpoint_busy_too_long_fails_clearly(
    settings: Settings, held_elsewhere: threading.Event
) -> None:
    with pytest.raises(ConcurrentUpdateError) as caught, live_model_lock(settings):
        pass
    message = str(caught.value)
    assert settings.endpoint.name in message and limit_name(settings) in message
    assert "changed nothing" in message and is_transient(caught.value)
    other = settings.model_copy(update={"endpoint": settings.endpoint.model_copy(
        update={"name": settings.endpoint.name + "-other"})})
    with live_model_lock(other):  # another endpoint is not held up
        pass


@pytest.mark.parametrize(
    "run",
    [lambda s: wake(state_dir=str(s.state_dir)),
     lambda s: rollback(state_dir=str(s.state_dir)),
     lambda s: teardown(apply=True, state_dir=str(s.state_dir))],
    ids=["wake", "rollback", "teardown-apply"],
)
def test_flows_that_change_the_live_model_take_the_slot_first(
    settings: Settings, held_elsewhere: threading.Event, run: Callable[[Settings], object]
) -> None:
    """With the slot held by another run, each flow waits and then fails before it reads or
    changes anything (without the slot, wake and rollback would say "nothing to ...")."""
    with pytest.raises(ConcurrentUpdateError, match="changed nothing"):
        run(settings)


def test_a_dry_run_teardown_does_not_wait(
    settings: Settings, held_elsewhere: threading.Event
) -> None:
    assert teardown(apply=False, state_dir=str(settings.state_dir)) == []


def entry(version: int) -> RegistryEntry:
    return RegistryEntry(version=version, model_version=f"m{version}", model_uri="file:///m",
                         job_name="j", endpoint_name="ep", backend="local",
                         promoted_at=datetime.now(UTC))


def test_retrain_does_not_promote_over_a_live_model_it_was_not_judged_against() -> None:
    assert live_moved(None, None) is None and live_moved(entry(1), entry(1)) is None
    assert "v1 -> v2" in (live_moved(entry(1), entry(2)) or "")
    assert "v- -> v1" in (live_moved(None, entry(1)) or "")


def test_idle_guard_judges_again_after_waiting_for_the_slot(
    settings: Settings, held_elsewhere: threading.Event, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """idle-guard found the endpoint idle, then waited for a run that held the slot (a deploy
    that got traffic): once it has the slot it looks again and does not put the live model to
    sleep. The idle measurement is scripted (a real one needs hours without traffic) and the
    sleep is a spy; the slot is the real Prefect limit, held by another thread."""
    from dogops.local.operations import LocalOperations
    from dogops.results import IdleStatus
    from flows.idle_guard import idle_guard

    looks: list[bool] = []
    slept: list[str] = []

    def idle_status(self: LocalOperations, s: Settings, hours: float, now: datetime) -> IdleStatus:
        idle = not looks  # idle at the first look; the other run's traffic arrives meanwhile
        looks.append(idle)
        if idle:
            held_elsewhere.set()  # the other run finishes and gives the slot back
        return IdleStatus(endpoint_name=s.endpoint.name, backend="local", exists=True,
                          idle=idle, max_idle_hours=hours, idle_hours=0.0, last_active_at=now,
                          detail="scripted")

    def put_to_sleep(self: LocalOperations, s: Settings, status: IdleStatus,
                     apply: bool) -> list[str]:
        slept.append(status.endpoint_name)
        return [f"stopped {status.endpoint_name}"]

    monkeypatch.setattr(LocalOperations, "idle_status", idle_status)
    monkeypatch.setattr(LocalOperations, "put_to_sleep", put_to_sleep)
    monkeypatch.setenv("DOGOPS_LIVE_LOCK_TIMEOUT_S", "60")  # Prefect retries a slot in seconds
    result = idle_guard(max_idle_hours=1, apply=True, backend="local",
                        endpoint=settings.endpoint, state_dir=str(settings.state_dir))
    assert looks == [True, False]
    assert slept == [] and not result.applied and result.changes == []
