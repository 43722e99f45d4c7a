"""What a person sees of a run: tables, markdown and plots, built from the step records.

Plain functions that return data; `tasks.reporting` turns them into Prefect artifacts.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from dogops import class_metrics
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


def _has_matrix(model: TrainedModel) -> bool:
    return bool(model.confusion_matrix) and len(model.confusion_matrix) == len(model.class_names)


def per_class_table(model: TrainedModel) -> list[dict[str, Any]]:
    """Worst class first, with what it is most often mistaken for (from the confusion matrix;
    a model recorded without one lists its per-class accuracy, worst first)."""
    if _has_matrix(model):
        return class_metrics.per_class_rows(model.confusion_matrix, model.class_names)
    rows = [{"class": name, "test_accuracy": round(float(acc), 4)}
            for name, acc in model.per_class_accuracy.items()]
    return sorted(rows, key=lambda r: (r["test_accuracy"], r["class"]))


def most_confused_table(model: TrainedModel, limit: int = 25) -> list[dict[str, Any]]:
    """The `most-confused` artifact: true class, predicted class, count, share of the true class."""
    if not _has_matrix(model):
        return []
    return class_metrics.most_confused(model.confusion_matrix, model.class_names, limit)


def headline_metrics(model: TrainedModel) -> dict[str, float]:
    """Top-1 and top-5 accuracy and macro precision/recall/F1 on the test split."""
    found: dict[str, float] = {}
    if "test:accuracy" in model.metrics:
        found["top-1 accuracy"] = model.metrics["test:accuracy"]
    if "test:top5_accuracy" in model.metrics:
        found["top-5 accuracy"] = model.metrics["test:top5_accuracy"]
    if _has_matrix(model):
        found.setdefault("top-1 accuracy", class_metrics.accuracy(model.confusion_matrix))
        macro = class_metrics.macro_scores(model.confusion_matrix)
        found.update({"macro precision": macro.precision, "macro recall": macro.recall,
                      "macro F1": macro.f1})
    return found


def metrics_markdown(model: TrainedModel) -> str:
    if not model.metrics:
        return (
            f"# Test metrics\nModel `{model.job_name}` reported no metrics (the model archive "
            "carries no metadata.json)."
        )
    headline = "\n".join(f"| {k} | {v:.4f} |" for k, v in headline_metrics(model).items())
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in sorted(model.metrics.items()))
    classes = f" on {len(model.class_names)} classes" if model.class_names else ""
    return (
        f"# Test metrics\nModel `{model.job_name}` version `{model.version}`"
        f"{' (reused)' if model.reused else ''}{classes}.\n\n| test | value |\n|---|---|\n"
        f"{headline}\n\n| metric | value |\n|---|---|\n{rows}\n"
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

    many = bool(model and len(model.confusion_matrix) > LABELLED_CLASSES)
    panels = int(bool(tuning and tuning.trials)) + int(bool(model and model.confusion_matrix))
    panels += int(many)
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
        _confusion_panels(axes[i:], model)
    png = _png(fig)
    plt.close(fig)
    return png


LABELLED_CLASSES = 20  # above this, tick labels would overlap: see _confusion_panels


def _draw_matrix(ax: Any, matrix: list[list[int]], names: list[str], title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    # The folder's number stays: it matches the index axis of the whole-matrix panel.
    short = [n if len(n) <= 24 else n[:23] + "~" for n in names] if names else None
    ticks = list(range(len(matrix)))
    ax.set_xticks(ticks, labels=short, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, labels=short, fontsize=7)
    for r, row in enumerate(matrix):
        for c, v in enumerate(row):
            if v:
                ax.text(c, r, str(v), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def _confusion_panels(axes: list[Any], model: TrainedModel) -> None:
    """Up to 20 classes: the labelled matrix. More: the whole matrix unlabelled (its shape:
    a clean diagonal or not) beside a labelled one of the worst classes and what they are
    mistaken for; the `most-confused` and `per-class-accuracy` tables name the rest."""
    matrix = model.confusion_matrix
    names = list(model.class_names) if len(model.class_names) == len(matrix) else []
    if len(matrix) <= LABELLED_CLASSES:
        _draw_matrix(axes[0], matrix, names, "test confusion matrix")
        return
    whole = axes[0]
    whole.imshow(matrix, cmap="Blues", vmax=max(1, max(max(r) for r in matrix) // 2))
    whole.set_title(f"test confusion matrix, {len(matrix)} classes (by class index)")
    whole.set_xlabel("predicted class index (0 = the first class folder)")
    whole.set_ylabel("true class index")
    keep = class_metrics.focus_classes(matrix)
    sub = [[matrix[r][c] for c in keep] for r in keep]
    _draw_matrix(axes[1], sub, [names[k] for k in keep] if names else [str(k) for k in keep],
                 "worst classes and what they are taken for")


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
