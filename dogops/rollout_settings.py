"""The rollout settings (`Settings.rollout`): how a new model replaces the live one.

Kept apart from `dogops.settings` only for size; `dogops.settings` re-exports both names, which is
where callers import them from.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from dogops.errors import UserInputError

RolloutStrategy = Literal["canary", "linear", "all-at-once"]


class RolloutConfig(BaseModel):
    """How a new model replaces the live one (SageMaker deployment guardrails; the local
    endpoint does the same in-process). Bounds are AWS's own."""

    strategy: RolloutStrategy = Field(
        "canary", description="canary: `canary_percent` of capacity first, then all after "
        "`bake_seconds`; linear: `linear_step_percent` more every `bake_seconds`; all-at-once: "
        "every instance at once, then `termination_wait_s` of watching before the old go.",
    )
    canary_percent: int = Field(
        10, ge=1, le=50, description="CanarySize (CAPACITY_PERCENT): share of capacity (and so "
        "of requests) the new model gets first; AWS allows at most 50.",
    )
    linear_step_percent: int = Field(
        20, ge=10, le=50, description="LinearStepSize (CAPACITY_PERCENT): 10-50 per step.",
    )
    bake_seconds: int = Field(
        300, ge=0, le=3600, description="WaitIntervalInSeconds: how long each step is watched "
        "(the alarms / the local judge) before traffic shifts further; 0-3600.",
    )
    termination_wait_s: int = Field(
        0, ge=0, le=3600, description="TerminationWaitInSeconds: the old fleet is kept this long "
        "after all traffic moved (a late alarm still rolls back); 0-3600.",
    )
    max_execution_timeout_s: int = Field(
        3600, ge=600, le=28800, description="MaximumExecutionTimeoutInSeconds: the whole "
        "deployment's limit, 600-28800, and greater than all its waits together.",
    )
    max_error_rate_percent: float = Field(
        5.0, gt=0, le=100, description="Roll back when more than this share of the requests "
        "(per minute on AWS, over the bake locally) answer 5xx.",
    )
    max_latency_p99_ms: float = Field(
        5000.0, gt=0, le=3_600_000, description="Roll back when the model latency's p99 "
        "(ModelLatency on AWS, the new workers' own timing locally) is above this.",
    )
    min_requests: int = Field(
        5, ge=1, le=100_000, description="Local: answers the new model must have given before "
        "its p99 is judged and before a crossed threshold ends a bake early. A bake with no "
        "traffic passes, as a CloudWatch alarm with no data does not roll back on AWS.",
    )

    def steps(self) -> list[int]:
        """Share of traffic on the new model after each step, e.g. [10, 100] for a canary."""
        if self.strategy == "canary":
            return [self.canary_percent, 100]
        if self.strategy == "linear":
            count = math.ceil(100 / self.linear_step_percent)
            return [min(100, self.linear_step_percent * (i + 1)) for i in range(count)]
        return [100]

    def total_wait_s(self) -> int:
        """Every wait of one deployment: a bake after each step short of 100 %, then the
        termination wait."""
        return self.bake_seconds * (len(self.steps()) - 1) + self.termination_wait_s

    @model_validator(mode="after")
    def _check_timeout(self) -> RolloutConfig:
        waits = self.total_wait_s()
        if self.max_execution_timeout_s <= waits:
            raise UserInputError(
                f"rollout.max_execution_timeout_s ({self.max_execution_timeout_s}) must be greater "
                f"than the {self.strategy} rollout's waits together ({waits} s: bake_seconds "
                f"{self.bake_seconds} x {len(self.steps()) - 1} step(s) + termination_wait_s "
                f"{self.termination_wait_s}): raise it (at most 28800) or shorten the waits."
            )
        return self
