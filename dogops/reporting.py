"""What a person sees of a run: tables, markdown and plots, built from the step records.

Plain functions that return data; `tasks.reporting` turns them into Prefect artifacts.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from dogops.results import (
    EndpointInfo,
    LambdaInfo,
    ScalingInfo,
    SecurityReport,
    StepSkipped,
    SyncReport,
    TrainedModel,
    TuningResult,
)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "" if value is None else str(value)


def trials_table(tuning: TuningResult) -> list[dict[str, Any]]:
    """One row per trial, in launch order, the best one marked."""
    best = tuning.best.name if tuning.best else None
    return [
        {
            "trial": t.name,
            "learning_rate": _fmt(t.hyperparameters.get("learning_rate")),
            "batch_size": t.hyperparameters.get("batch_size"),
            tuning.objective: _fmt(t.objective),
            "state": t.state,
            "epochs": t.epochs_run,
            "seconds": round(t.seconds, 1),
            "best": "yes" if t.name == best else "",
            "note": t.failure_reason or "",
        }
        for t in tuning.trials
    ]


def best_hyperparameters_markdown(tuning: TuningResult) -> str:
    if tuning.best is None:
        return (f"# No best trial\nTuning job `{tuning.job_name}` has no completed trial.\n\n"
                f"{warm_start_line(tuning)}")
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in tuning.best.hyperparameters.items())
    return (
        f"# Best hyperparameters\nTuning job `{tuning.job_name}`, best trial "
        f"`{tuning.best.name}`: **{tuning.objective} = {_fmt(tuning.best.objective)}**"
        f"{' (reused)' if tuning.reused else ''}\n\n{warm_start_line(tuning)}"
        f"| hyperparameter | value |\n|---|---|\n{rows}\n"
    )


_WARM_START_WHY = {
    "IDENTICAL_DATA_AND_ALGORITHM": "same data manifest, image and static hyperparameters as "
                                    "the parent",
    "TRANSFER_LEARNING": "the data (manifest) or the algorithm differs from the parent's, so its "
                         "trials count as prior knowledge only",
}


def warm_start_line(tuning: TuningResult) -> str:
    """Which warm start the tuning job used, and why (empty when it started cold)."""
    if not tuning.warm_start_type:
        return ""
    why = _WARM_START_WHY.get(tuning.warm_start_type, "")
    return (f"Warm start: **{tuning.warm_start_type}** from `{tuning.warm_start_parent}`"
            f"{f' ({why})' if why else ''}.\n\n")


def per_class_table(model: TrainedModel) -> list[dict[str, Any]]:
    return [
        {"class": name, "test_accuracy": round(float(acc), 4)}
        for name, acc in sorted(model.per_class_accuracy.items())
    ]


def metrics_markdown(model: TrainedModel) -> str:
    if not model.metrics:
        return (
            f"# Test metrics\nModel `{model.job_name}` reported no metrics (the model archive "
            "carries no metadata.json)."
        )
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in sorted(model.metrics.items()))
    return (
        f"# Test metrics\nModel `{model.job_name}` version `{model.version}`"
        f"{' (reused)' if model.reused else ''}.\n\n| metric | value |\n|---|---|\n{rows}\n"
    )


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def plots_png(tuning: TuningResult | None, model: TrainedModel | None) -> bytes | None:
    """Trial objective in launch order beside the test confusion matrix, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = int(bool(tuning and tuning.trials)) + int(bool(model and model.confusion_matrix))
    if panels == 0:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2))
    axes = list(axes) if panels > 1 else [axes]
    i = 0
    if tuning and tuning.trials:
        ax = axes[i]
        i += 1
        xs = [n for n, t in enumerate(tuning.trials, 1) if t.objective is not None]
        ys = [t.objective for t in tuning.trials if t.objective is not None]
        colors = ["tab:green" if tuning.best and t.name == tuning.best.name else "tab:blue"
                  for t in tuning.trials if t.objective is not None]
        ax.scatter(xs, ys, c=colors)
        if ys:
            running = []
            best_so_far = ys[0]
            for y in ys:
                best_so_far = min(best_so_far, y) if tuning.minimize else max(best_so_far, y)
                running.append(best_so_far)
            ax.step(xs, running, where="post", color="tab:green", label="best so far")
            ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("trial")
        ax.set_ylabel(tuning.objective)
        ax.set_title(f"tuning: {tuning.objective} per trial")
    if model and model.confusion_matrix:
        ax = axes[i]
        matrix = model.confusion_matrix
        ax.imshow(matrix, cmap="Blues")
        names = [n.split(".", 1)[-1][:14] for n in model.class_names] or None
        ticks = range(len(matrix))
        ax.set_xticks(list(ticks), labels=names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(list(ticks), labels=names, fontsize=7)
        if len(matrix) <= 20:
            for r, row in enumerate(matrix):
                for c, v in enumerate(row):
                    ax.text(c, r, str(v), ha="center", va="center", fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("test confusion matrix")
    png = _png(fig)
    plt.close(fig)
    return png


def png_markdown(png: bytes, title: str) -> str:
    encoded = base64.b64encode(png).decode()
    return f"# {title}\n\n![{title}](data:image/png;base64,{encoded})\n"


def summary_markdown(
    backend: str,
    data: SyncReport | None,
    tuning: TuningResult | None,
    model: TrainedModel | None,
    endpoint: EndpointInfo | None,
    scaling: ScalingInfo | StepSkipped | None,
    security: SecurityReport | StepSkipped | None,
    lambda_info: LambdaInfo | StepSkipped | None,
    smoke: dict[str, Any] | StepSkipped | None,
) -> str:
    lines = [f"# train-and-deploy on the `{backend}` backend", ""]

    def row(step: str, text: str) -> None:
        lines.append(f"| {step} | {text} |")

    lines += ["| step | result |", "|---|---|"]
    if data:
        row("upload", f"{data.files_total} files at `{data.uri}`: {data.uploaded} copied, "
                      f"{data.skipped} unchanged, {data.deleted} deleted ({data.seconds:.1f} s)")
    if tuning:
        states: dict[str, int] = {}
        for t in tuning.trials:
            states[t.state] = states.get(t.state, 0) + 1
        best = (f"best `{tuning.best.name}` {tuning.objective}={_fmt(tuning.best.objective)}"
                if tuning.best else "no best trial")
        warm = (f"; warm start {tuning.warm_start_type} from `{tuning.warm_start_parent}`"
                if tuning.warm_start_type else "")
        row("tune", f"`{tuning.job_name}`{' (reused)' if tuning.reused else ''}: "
                    f"{', '.join(f'{v} {k}' for k, v in states.items())}; {best}{warm}")
    if model:
        acc = model.metrics.get("test:accuracy")
        row("train best", f"`{model.job_name}` version `{model.version}`"
                          f"{' (reused)' if model.reused else ''}"
                          + (f", test accuracy {acc:.3f}" if acc is not None else ""))
    if endpoint:
        row("deploy", f"endpoint `{endpoint.name}` {endpoint.status} at {endpoint.url}"
                      f"{' (updated in place)' if endpoint.updated else ''}")
    for step, record in (("auto-scaling", scaling), ("secure (IAM)", security),
                         ("Lambda", lambda_info), ("smoke test", smoke)):
        if isinstance(record, StepSkipped):
            row(step, f"skipped: {record.reason}")
        elif isinstance(record, ScalingInfo):
            row(step, f"{record.min_capacity}..{record.max_capacity} instances, target "
                      f"{record.target:g} invocations/instance, cooldowns "
                      f"{record.scale_in_cooldown_s}/{record.scale_out_cooldown_s} s")
        elif isinstance(record, SecurityReport):
            row(step, f"lambda role {record.lambda_role_arn or 'n/a'}; "
                      + "; ".join(record.notes))
        elif isinstance(record, LambdaInfo):
            row(step, f"`{record.function_name}:{record.alias}` version {record.version}, "
                      f"{record.package_bytes} bytes, provisioned concurrency "
                      f"{record.provisioned_concurrency}"
                      + "".join(f"; {s.step} skipped: {s.reason}" for s in record.skipped))
        elif isinstance(record, dict):
            row(step, ", ".join(f"{k}={_fmt(v)}" for k, v in record.items()))
    return "\n".join(lines) + "\n"
