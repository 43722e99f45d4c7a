"""dogops.progress: log lines with rate and ETA on a time budget, a Prefect progress artifact in
a run, nothing broken outside one; and the tuner's view of train.py's output lines."""

from __future__ import annotations

import io
from typing import Any

import pytest

from dogops.local.trial_progress import TrainingWatcher
from dogops.progress import Progress, bar, duration
from model_code import metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_most_every_interval_with_rate_and_eta() -> None:
    clock, lines = Clock(), []
    p = Progress("features", 600, "images", say=lines.append, log_every_s=15, clock=clock)
    for done in range(10, 601, 10):  # 10 images/s, one update a second for 60 s
        clock.now += 1.0
        p.update(done)
    p.finish()
    assert lines[0] == "features: started (600 images)"
    assert len(lines) == 1 + 4 + 1  # start, one per 15 s, the closing line
    assert lines[1] == "features: 150/600 images (25%), 10 images/s, ETA 45s, 15s elapsed"
    assert lines[-1] == "features: done, 600 images in 1m00s (10 images/s)"


def test_unknown_total_and_notes() -> None:
    clock, lines = Clock(), []
    p = Progress("waiting", None, "polls", say=lines.append, log_every_s=0, clock=clock)
    clock.now += 30
    p.update(3, note="Creating")
    assert lines[-1] == "waiting: 3 polls, 0.1 polls/s, 30s elapsed; Creating"
    assert p.fraction is None and p.eta_s() is None


def test_outside_a_run_there_is_no_artifact_and_nothing_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="dogops.progress")
    p = Progress("plain", 2, log_every_s=0)
    p.update(1)
    p.finish()
    assert p.artifact_id is None
    assert "plain: done" in caplog.text


def test_a_step_that_did_not_complete_says_stopped_not_done() -> None:
    clock, lines = Clock(), []
    p = Progress("features", 100, "images", say=lines.append, clock=clock)
    clock.now += 10
    p.update(40)
    p.finish(completed=False)
    assert lines[-1] == "features: stopped, 40 images in 10s (4 images/s)"
    assert p._percent(final=False) == 40.0  # what the artifact keeps


def test_a_failing_log_callback_never_fails_the_step() -> None:
    def broken(_: str) -> None:
        raise RuntimeError("logger gone")

    p = Progress("step", 3, say=broken, log_every_s=0)
    p.update(2)
    p.finish()
    assert p.finished


def test_terminal_bar_is_redrawn_in_place() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress("sync", 4, "files", say=lambda _: None, terminal=out, clock=clock)
    clock.now += 1
    p.update(2)
    p.finish()
    text = out.getvalue()
    assert text.startswith("\rsync [") and " 50% 2/4 files" in text and text.endswith("\n")
    assert bar(0.5, 4) == "[##--]" and bar(2.0, 4) == "[####]"
    assert duration(59) == "59s" and duration(61) == "1m01s" and duration(7300) == "2h01m"


def test_progress_artifact_in_a_flow_run(prefect_harness: None) -> None:
    """In a flow run the step keeps one progress artifact, updated to 100 at the end."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow
    def long_step() -> Any:
        with Progress("copy files", 10, "files", artifact_every_s=0) as p:
            for i in range(1, 6):
                p.update(i)
            return p.artifact_id

    artifact_id = long_step()
    assert artifact_id is not None
    with get_client(sync_client=True) as client:
        artifact = client.read_artifacts()
    found = [a for a in artifact if a.id == artifact_id]
    assert found and found[0].type == "progress" and float(found[0].data) == 100.0
    assert found[0].description == "copy files"


def test_training_watcher_turns_script_lines_into_stages() -> None:
    lines: list[str] = []
    watcher = TrainingWatcher("tune-000", epochs=4, say=lines.append)
    for line in (
        "[train] device cpu",
        metrics.progress_line("features-train", 16, 32),
        metrics.progress_line("features-train", 32, 32),
        metrics.progress_line("features-valid", 8, 8),
        metrics.epoch_line(1, 0.5, 0.4, 0.9),
        metrics.epoch_line(2, 0.4, 0.3, 0.95),
    ):
        watcher.feed(line)
    assert watcher.current is not None and watcher.current.done == 2
    watcher.close()
    assert [ln for ln in lines if "started" in ln] == [
        "tune-000 features-train: started (32 images)",
        "tune-000 features-valid: started (8 images)",
        "tune-000 epochs: started (4 epochs)",
    ]
    assert lines[-1].startswith("tune-000 epochs: done, 2 epochs")
    assert lines[0] == "tune-000: device cpu"  # the script's own lines are passed on
