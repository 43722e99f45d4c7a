"""Metric lines the training script prints and the regexes that read them back.

SageMaker's tuner (and the local tuner, which reads the lines live from the trial's stdout)
extract metrics from log text with `METRIC_DEFINITIONS`. Values are printed in fixed notation
because the regexes (`[0-9\\.]+`) do not match scientific notation.
"""

from __future__ import annotations

import re

METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "validation:loss", "Regex": r"Validation Loss: ([0-9\.]+)"},
    {"Name": "validation:accuracy", "Regex": r"Validation Accuracy: ([0-9\.]+)"},
    # The original project's line and regex, kept so its tuner definitions still work.
    {"Name": "test:loss", "Regex": r"Testing Loss: ([0-9\.]+)"},
    {"Name": "test:accuracy", "Regex": r"Testing Accuracy: ([0-9\.]+)"},
    {"Name": "test:top5_accuracy", "Regex": r"Testing Top-5 Accuracy: ([0-9\.]+)"},
    {"Name": "train:loss", "Regex": r"Train Loss: ([0-9\.]+)"},
    {"Name": "epoch", "Regex": r"Epoch: ([0-9]+)"},
]


def fmt(value: float) -> str:
    """A float in fixed notation, never `1e-05` (the regexes would miss it)."""
    return f"{float(value):.6f}"


def epoch_line(epoch: int, train_loss: float, val_loss: float, val_accuracy: float) -> str:
    """One line per epoch, e.g. `Epoch: 3 Train Loss: 0.5 Validation Loss: 0.4 ...`."""
    return (
        f"Epoch: {int(epoch)} Train Loss: {fmt(train_loss)} "
        f"Validation Loss: {fmt(val_loss)} Validation Accuracy: {fmt(val_accuracy)}"
    )


def validation_line(loss: float, accuracy: float) -> str:
    """The selected model's validation metrics: printed last, since tuners take the last value."""
    return f"Validation Loss: {fmt(loss)} Validation Accuracy: {fmt(accuracy)}"


def test_lines(loss: float, accuracy: float, top5_accuracy: float | None = None) -> list[str]:
    """The original's `Testing Loss:` line plus `Testing Accuracy:` (and top-5 when given)."""
    lines = [f"Testing Loss: {fmt(loss)}", f"Testing Accuracy: {fmt(accuracy)}"]
    if top5_accuracy is not None:
        lines.append(f"Testing Top-5 Accuracy: {fmt(top5_accuracy)}")
    return lines


def parse_metrics(text: str) -> dict[str, list[float]]:
    """Every value of every defined metric in `text`, in order of appearance."""
    found: dict[str, list[float]] = {}
    for definition in METRIC_DEFINITIONS:
        values = []
        for match in re.findall(definition["Regex"], text):
            try:
                values.append(float(match))
            except ValueError:  # e.g. a stray "." matched by [0-9\.]+
                continue
        if values:
            found[definition["Name"]] = values
    return found


def last_metrics(text: str) -> dict[str, float]:
    """The last value of each metric, which is what SageMaker reports as the final value."""
    return {name: values[-1] for name, values in parse_metrics(text).items()}


# --- progress lines ------------------------------------------------------------------------------
# Not metrics: lines such as `Progress: features-train 480/6650 images` that say how far a long
# stage is, printed a few seconds apart so whoever reads the log live (the local tuner, a
# person) can show a share done, a rate and an ETA. No METRIC_DEFINITIONS regex matches them.

_PROGRESS = re.compile(r"^Progress: (?P<stage>[\w.:-]+) (?P<done>[0-9]+)/(?P<total>[0-9]+) "
                       r"(?P<unit>\w+)")


def progress_line(stage: str, done: int, total: int, unit: str = "images") -> str:
    """`Progress: features-train 480/6650 images`."""
    return f"Progress: {stage} {int(done)}/{int(total)} {unit}"


def parse_progress(line: str) -> tuple[str, int, int, str] | None:
    """(stage, done, total, unit) of a progress line, else None."""
    match = _PROGRESS.match(line.strip())
    if match is None:
        return None
    return match["stage"], int(match["done"]), int(match["total"]), match["unit"]
