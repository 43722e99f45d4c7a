"""Target-tracking auto-scaling for the local endpoint, as plain logic with an injectable clock.

It mirrors what Application Auto Scaling does for a SageMaker variant with a target-tracking policy
on `SageMakerVariantInvocationsPerInstance`: that metric is invocations per instance *per minute*,
and the desired capacity is `ceil(total invocations per minute / target)`, clamped to
[min, max]. Cooldowns follow AWS's meaning:

- scale-out cooldown: after a scale-out, no further scale-out until it has passed;
- scale-in cooldown: no scale-in until it has passed since the last scaling activity of either
  kind. AWS measures it from the last scale-in only, but its scale-in alarm also needs 15 low
  minutes in a row; here the cooldown after any activity stands in for that, so a burst that just
  scaled out is not undone a second later.

The knobs are the settings' (`ScalingConfig`), checked by the settings' one check when a policy
is built. Plain logic: the endpoint server's front process runs it (no torch there), and tests
drive it with a fake clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from dogops.settings import ScalingConfig, check_scaling

Clock = Callable[[], float]


@dataclass(frozen=True)
class ScalingPolicy:
    """The numbers of one target-tracking policy, under the settings' names (`ScalingConfig`;
    defaults: the original project's). Checked by `dogops.settings.check_scaling`, the one check
    of these knobs: a bad one raises `UserInputError` (a `ValueError`) naming it."""

    min_capacity: int = 1
    max_capacity: int = 2
    target_invocations_per_instance: float = 50.0
    scale_in_cooldown_s: int = 30
    scale_out_cooldown_s: int = 30

    def __post_init__(self) -> None:
        check_scaling(ScalingConfig.model_construct(**asdict(self)))

    def clamp(self, workers: int) -> int:
        return max(self.min_capacity, min(self.max_capacity, workers))

    def desired_for(self, rate_per_minute: float) -> int:
        """Workers needed so that each sees at most the target rate, clamped to [min, max]."""
        if rate_per_minute <= 0:
            return self.min_capacity
        # The small epsilon keeps 100/50 from becoming 3 through float noise.
        return self.clamp(math.ceil(rate_per_minute / self.target_invocations_per_instance - 1e-9))


@dataclass(frozen=True)
class ScalingEvent:
    """One scaling activity, kept for `GET /dogops/status`."""

    at: float
    from_workers: int
    to_workers: int
    rate_per_minute: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvocationCounter:
    """Counts invocations in a sliding window and reports them as a per-minute rate.

    The rate is `count in the last window_s seconds * 60 / window_s`, like a CloudWatch Sum over
    a one-minute period when the window is 60 s. Thread-safe: requests record, the scaler reads.
    """

    def __init__(self, window_s: float = 60.0, clock: Clock = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}.")
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.total = 0

    def record(self, n: int = 1) -> None:
        now = self._clock()
        with self._lock:
            self.total += n
            self._times.extend([now] * n)
            self._trim(now)

    def count(self) -> int:
        with self._lock:
            self._trim(self._clock())
            return len(self._times)

    def rate_per_minute(self) -> float:
        return self.count() * 60.0 / self.window_s

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()


@dataclass
class TargetTrackingScaler:
    """Decides the worker count from the measured rate, honouring the policy's cooldowns."""

    policy: ScalingPolicy
    clock: Clock = time.monotonic
    current: int = 0
    events: list[ScalingEvent] = field(default_factory=list)
    _last_scale_out: float | None = None
    _last_activity: float | None = None

    def __post_init__(self) -> None:
        self.current = self.policy.clamp(self.current or self.policy.min_capacity)
        if self.current > self.policy.min_capacity:
            # Starting above min (one worker of a scale-to-zero pool, to prove the model loads)
            # counts as an activity: idle, it scales in after the scale-in cooldown, not at once.
            self._last_activity = self.clock()

    def wake(self, rate_per_minute: float) -> ScalingEvent | None:
        """A request found no worker (scaled to zero): go to one worker now, without waiting
        for the next evaluation or a scale-out cooldown (the first request starts a worker)."""
        if self.current > 0:
            return None
        now = self.clock()
        event = ScalingEvent(at=now, from_workers=0, to_workers=1,
                             rate_per_minute=round(rate_per_minute, 3),
                             reason="scale-out from zero: a request arrived (cold start)")
        self._last_activity = now
        self.current = 1
        self.events.append(event)
        return event

    def evaluate(self, rate_per_minute: float) -> ScalingEvent | None:
        """Apply one evaluation; return the scaling event when the desired count changed."""
        now = self.clock()
        desired = self.policy.desired_for(rate_per_minute)
        if desired == self.current:
            return None
        if desired > self.current:
            if not self._cooled(self._last_scale_out, self.policy.scale_out_cooldown_s, now):
                return None
            kind = "scale-out"
        else:
            if not self._cooled(self._last_activity, self.policy.scale_in_cooldown_s, now):
                return None
            kind = "scale-in"
        per_worker = rate_per_minute / self.current
        event = ScalingEvent(
            at=now,
            from_workers=self.current,
            to_workers=desired,
            rate_per_minute=round(rate_per_minute, 3),
            reason=(
                f"{kind}: {per_worker:.1f} invocations/worker/min against a target of "
                f"{self.policy.target_invocations_per_instance:g}"
            ),
        )
        if kind == "scale-out":
            self._last_scale_out = now
        self._last_activity = now
        self.current = desired
        self.events.append(event)
        return event

    @staticmethod
    def _cooled(last: float | None, cooldown_s: float, now: float) -> bool:
        return last is None or now - last >= cooldown_s
