"""Progress of a long step, for a person watching it: one object, three views.

- In a Prefect flow or task run, a progress artifact (`create_progress_artifact`, then
  `update_progress_artifact`) that shows the share done in the UI, updated at most every
  `artifact_every_s` so thousands of small steps do not flood the API.
- A log line at least every `log_every_s` (while updates come in) with the count, the rate and
  the estimated time left, to the run's logger (or the `say` callback the step was given).
- On a terminal (stderr is a TTY), a one-line bar redrawn in place.

Outside a run context the artifact is skipped and the lines go to `say` or the `dogops` logger,
so plain functions can use it unconditionally. Failures to write the artifact never fail the step.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

SayFn = Callable[[str], None]
LOG_EVERY_S = 15.0  # the bound: a line at least every 15-30 s
ARTIFACT_EVERY_S = 2.0
BAR_EVERY_S = 0.5
BAR_WIDTH = 24


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`; `?` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[#########---------------]` for a share in 0..1 (clamped)."""
    filled = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _run_context_active() -> bool:
    if "prefect" not in sys.modules:
        # No flow or task run without Prefect loaded; importing it only to find that out costs
        # seconds (a first `sync_folder` outside a flow paid ~14 s of it at load 6).
        return False
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency; model code may lack it
        return False
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def default_say() -> SayFn:
    if _run_context_active():
        from prefect import get_run_logger

        return get_run_logger().info
    return logging.getLogger("dogops.progress").info


def _terminal() -> TextIO | None:
    if os.environ.get("DOGOPS_PROGRESS_BAR", "1") == "0":
        return None
    stream = sys.stderr
    try:
        return stream if stream.isatty() else None
    except (AttributeError, ValueError):
        return None


class Progress:
    """Share done of one step (`total` units), with rate and ETA. Thread-safe.

    `update(done)` sets the count, `advance(n)` adds to it, `finish()` closes the step. `total`
    may be None (unknown): lines then say how much is done and for how long, without an ETA.
    """

    def __init__(
        self,
        title: str,
        total: float | None = None,
        unit: str = "items",
        *,
        say: SayFn | None = None,
        log_every_s: float = LOG_EVERY_S,
        artifact_every_s: float = ARTIFACT_EVERY_S,
        artifact: bool = True,
        terminal: TextIO | None | bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.title = title
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.note = ""
        self.finished = False
        self._say = say or default_say()
        self._log_every_s = log_every_s
        self._artifact_every_s = artifact_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self._last_log = self._last_artifact = self._last_bar = self.started
        self._terminal = _terminal() if terminal is True else (terminal or None)
        self.artifact_id: Any = self._create_artifact() if artifact else None
        self.lines = 0
        self._emit(f"{title}: started" + (f" ({total:g} {unit})" if total else ""))

    # -- state --------------------------------------------------------------------------------

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(max(self.done / self.total, 0.0), 1.0)

    def rate(self) -> float:
        """Units per second since the start."""
        elapsed = self._clock() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done, 0.0) / rate

    def status_line(self) -> str:
        elapsed = self._clock() - self.started
        if self.total:
            head = f"{self.done:g}/{self.total:g} {self.unit} ({100 * (self.fraction or 0):.0f}%)"
            tail = f", ETA {duration(self.eta_s())}"
        else:
            head, tail = f"{self.done:g} {self.unit}", ""
        rate = self.rate()
        rate_text = f"{rate:.3g} {self.unit}/s" if rate else "no rate yet"
        note = f"; {self.note}" if self.note else ""
        return f"{self.title}: {head}, {rate_text}{tail}, {duration(elapsed)} elapsed{note}"

    # -- updates ------------------------------------------------------------------------------

    def update(self, done: float, total: float | None = None, note: str | None = None) -> None:
        with self._lock:
            if self.finished:
                return
            self.done = float(done)
            if total is not None:
                self.total = total
            if note is not None:
                self.note = note
            now = self._clock()
            if now - self._last_log >= self._log_every_s:
                self._last_log = now
                self._emit(self.status_line())
            if now - self._last_artifact >= self._artifact_every_s:
                self._last_artifact = now
                self._update_artifact()
            if self._terminal is not None and now - self._last_bar >= BAR_EVERY_S:
                self._last_bar = now
                self._draw_bar()

    def advance(self, n: float = 1.0, note: str | None = None) -> None:
        self.update(self.done + n, note=note)

    def finish(self, note: str | None = None, completed: bool = True) -> None:
        """Close the step with a line giving the overall rate. Completed: the artifact goes to
        100 %; not completed (failed, killed): it keeps the share actually done."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            if note is not None:
                self.note = note
            self._update_artifact(final=completed)
            if self._terminal is not None:
                self._draw_bar()
                self._terminal.write("\n")
            elapsed = self._clock() - self.started
            verdict = "done" if completed else "stopped"
            self._emit(f"{self.title}: {verdict}, {self.done:g} {self.unit} in {duration(elapsed)} "
                       f"({self.rate():.3g} {self.unit}/s)" + (f"; {self.note}" if self.note
                                                               else ""))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.finish()

    # -- outputs ------------------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        self.lines += 1
        try:
            self._say(line)
        except Exception:  # noqa: BLE001 - progress must never fail the step it reports on
            logging.getLogger("dogops.progress").debug("progress line lost", exc_info=True)

    def _percent(self, final: bool = False) -> float:
        if final:
            return 100.0
        return round(100.0 * (self.fraction or 0.0), 1)

    def _create_artifact(self) -> Any:
        if not _run_context_active():
            return None
        try:
            from prefect.artifacts import create_progress_artifact

            return create_progress_artifact(progress=0.0, description=self.title)
        except Exception:  # noqa: BLE001 - e.g. no API reachable: the log lines still run
            logging.getLogger("dogops.progress").debug("no progress artifact", exc_info=True)
            return None

    def _update_artifact(self, final: bool = False) -> None:
        if self.artifact_id is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact_id, progress=self._percent(final))
        except Exception:  # noqa: BLE001 - the log lines still say how far the step is
            logging.getLogger("dogops.progress").debug("progress artifact update failed",
                                                       exc_info=True)

    def _draw_bar(self) -> None:
        assert self._terminal is not None
        share = self.fraction
        left = bar(share) + f" {100 * share:3.0f}%" if share is not None else ""
        eta = f" ETA {duration(self.eta_s())}" if self.total else ""
        text = f"\r{self.title[:40]} {left} {self.done:g}/{self.total or '?'} {self.unit}" \
               f" {self.rate():.3g}/s{eta}"
        try:
            self._terminal.write(text[:160].ljust(100))
            self._terminal.flush()
        except (OSError, ValueError):
            self._terminal = None
