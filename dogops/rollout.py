"""`dogops rollout`: a model folder onto the configured endpoint through the guarded rollout.

The folder is the one `train.py` writes (model.pth, metadata.json, code/inference.py). It is
packed like SageMaker's model.tar.gz, reproducibly, so its version is a content hash (a patched
copy of a model is a new version), and put where the backend deploys from (`store_model`: the
local store, or S3 under `<prefix>/rollouts/<version>/` on AWS). The deploy step then updates
the endpoint through the rollout (canary / linear / all at once, judged on the same thresholds on
both backends).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dogops.errors import UserInputError
from dogops.local.training import make_model_archive, read_metadata
from dogops.results import EndpointInfo, RolledBack, RolloutOutcome, TrainedModel

EXIT_PROMOTED = 0
EXIT_ROLLED_BACK = 3
FIGURES_HEADER = "| step | side | requests | 5xx | 5xx % | p99 ms |"  # _figure_lines' columns


def package_model_dir(model_dir: Path, store: Callable[[Path, str], str]) -> TrainedModel:
    """Pack `model_dir` and `store(archive, version)` it where the backend deploys from (the
    backend's `store_model`); its `TrainedModel`."""
    model_dir = Path(model_dir).expanduser().resolve()
    for needed in ("model.pth", "metadata.json", "code/inference.py"):
        if not (model_dir / needed).is_file():
            raise UserInputError(
                f"{model_dir} has no {needed}: --model-dir takes a model folder as train.py "
                "writes it (model.pth, metadata.json, code/inference.py)."
            )
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "model.tar.gz"
        version = make_model_archive(model_dir, archive)[:16]
        uri = store(archive, version)
    return TrainedModel.from_metadata(read_metadata(model_dir), job_name=f"rollout-{version}",
                                      model_uri=uri, hyperparameters={}, reused=True,
                                      version=version)


def outcome_of(endpoint: EndpointInfo, model: TrainedModel) -> RolloutOutcome:
    """The rollout's outcome; a first deployment (no live model to guard) is promoted."""
    if endpoint.rollout is not None:
        return endpoint.rollout
    reason = ("the endpoint already served this model" if not endpoint.updated
              and endpoint.model_name in (model.version, None) else "no live model to guard")
    return RolloutOutcome(decision="promoted", strategy="none", steps=[100], reason=reason,
                          new_version=model.version)


def rolled_back_record(endpoint_name: str, model: TrainedModel, outcome: RolloutOutcome,
                       source: str, flow_run_id: str | None) -> RolledBack:
    from datetime import UTC, datetime

    return RolledBack(at=datetime.now(UTC), endpoint_name=endpoint_name,
                      model_version=model.version, model_uri=model.model_uri,
                      reason=outcome.reason, figures=outcome.figures, source=source,
                      flow_run_id=flow_run_id)


def _figure_lines(figures: dict[str, Any]) -> list[str]:
    lines = []
    for step, value in figures.items():
        if isinstance(value, dict) and "new" in value:
            for side, f in (("new model", value["new"]), ("old model", value["old"])):
                p99 = "n/a" if f["p99_ms"] is None else f"{f['p99_ms']:.0f}"
                lines.append(f"| {step} | {side} | {f['requests']} | {f['errors_5xx']} | "
                             f"{f['error_rate_percent']:.1f} | {p99} |")
        else:
            lines.append(f"| {step} | alarm | {value} | | | |")
    return lines


def rollout_markdown(outcome: RolloutOutcome, endpoint_name: str) -> str:
    """The `rollout` artifact: the decision, the figures it was made on, every phase."""
    verdict = "PROMOTED" if outcome.promoted else "ROLLED BACK"
    lines = [f"# Rollout on {endpoint_name}: {verdict}", "",
             f"- new model `{outcome.new_version}`, old model `{outcome.old_version or '-'}`",
             f"- {outcome.strategy}, steps {outcome.steps} %, bake {outcome.bake_seconds} s",
             f"- decision: {outcome.decision}: {outcome.reason}"]
    if outcome.alarms:
        lines.append(f"- auto-rollback alarms: {', '.join(outcome.alarms)}")
    if outcome.figures:
        lines += ["", FIGURES_HEADER,
                  "|---|---|---|---|---|---|", *_figure_lines(outcome.figures)]
    if outcome.phases:
        lines += ["", "## Phases", "", *[f"1. {p}" for p in outcome.phases]]
    return "\n".join(lines) + "\n"


def decision_text(outcome: RolloutOutcome) -> str:
    """What `dogops rollout` prints: the decision and the figures it was made on."""
    header = [FIGURES_HEADER] if outcome.figures else []
    return "\n".join([f"rollout: {outcome.decision} ({outcome.reason})", *header,
                      *_figure_lines(outcome.figures)])
