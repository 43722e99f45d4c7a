"""What the `monitor` flow computes from the captures: plain functions over `CapturedEvent`s.

- requests per UTC day (every captured request, answered or not);
- the predicted-class distribution beside the test split's (from the data manifest): a model
  that suddenly predicts one class far more than the test split holds it is worth a look;
- the mean top-1 probability and the share of predictions under a threshold (unsure answers).

Captures are a sample (`endpoint.capture_percent`), so counts are those of the sample.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from typing import Any

from pydantic import BaseModel

from dogops.capture import CapturedEvent, days


class ClassShare(BaseModel):
    label: str
    predicted: int
    predicted_share: float
    test_images: int
    test_share: float

    @property
    def difference(self) -> float:
        return self.predicted_share - self.test_share


class MonitorReport(BaseModel):
    endpoint: str
    since: date
    until: date
    capture_uri: str
    files: int
    bad_lines: int
    requests: int
    predictions: int
    requests_per_day: dict[str, int]
    classes: list[ClassShare]
    mean_top1: float | None
    threshold: float
    below_threshold: int
    share_below_threshold: float | None
    top1_probabilities: list[float]


def requests_per_day(events: list[CapturedEvent], since: date, until: date) -> dict[str, int]:
    """ISO day -> captured requests, every day of the window present (0 for none)."""
    counts = Counter(e.inference_time.date().isoformat() for e in events)
    return {d.isoformat(): counts.get(d.isoformat(), 0) for d in days(since, until)}


def split_class_counts(manifest: bytes | None) -> dict[str, int]:
    """Class folder -> test images, from a data manifest (`{"files": {"test/<class>/<file>"}}`),
    the same file on both backends. Empty when there is no manifest."""
    if not manifest:
        return {}
    files = json.loads(manifest).get("files", {})
    counts: Counter[str] = Counter()
    for key in files:
        parts = str(key).split("/")
        if len(parts) >= 3 and parts[0] == "test":
            counts[parts[1]] += 1
    return dict(counts)


def class_distribution(
    events: list[CapturedEvent], test_counts: dict[str, int]
) -> list[ClassShare]:
    """Every class predicted or in the test split, most predicted first."""
    predicted = Counter(e.label for e in events if e.label is not None)
    total_predicted = sum(predicted.values())
    total_test = sum(test_counts.values())
    labels = set(predicted) | set(test_counts)
    rows = [
        ClassShare(
            label=label,
            predicted=predicted.get(label, 0),
            predicted_share=predicted.get(label, 0) / total_predicted if total_predicted else 0.0,
            test_images=test_counts.get(label, 0),
            test_share=test_counts.get(label, 0) / total_test if total_test else 0.0,
        )
        for label in labels
    ]
    rows.sort(key=lambda r: (-r.predicted, -r.test_images, r.label))
    return rows


def confidence(
    events: list[CapturedEvent], threshold: float
) -> tuple[float | None, int, float | None]:
    """(mean top-1 probability, predictions under `threshold`, their share); None without any."""
    probabilities = [e.probability for e in events if e.probability is not None]
    if not probabilities:
        return None, 0, None
    below = sum(1 for p in probabilities if p < threshold)
    return sum(probabilities) / len(probabilities), below, below / len(probabilities)


def build_report(
    endpoint: str, since: date, until: date, capture_uri: str, events: list[CapturedEvent],
    files: int, bad_lines: int, test_counts: dict[str, int], threshold: float,
) -> MonitorReport:
    mean, below, share = confidence(events, threshold)
    return MonitorReport(
        endpoint=endpoint, since=since, until=until, capture_uri=capture_uri, files=files,
        bad_lines=bad_lines, requests=len(events),
        predictions=sum(1 for e in events if e.label is not None),
        requests_per_day=requests_per_day(events, since, until),
        classes=class_distribution(events, test_counts),
        mean_top1=mean, threshold=threshold, below_threshold=below, share_below_threshold=share,
        top1_probabilities=[e.probability for e in events if e.probability is not None],
    )


# -- what a person reads ---------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def summary_markdown(report: MonitorReport, capture_percent: int | None = None) -> str:
    lines = [f"# Monitor: `{report.endpoint}`, {report.since} to {report.until} (UTC)", ""]
    if not report.requests:
        where = report.capture_uri
        hint = ("" if capture_percent else " Data capture is off (`endpoint.capture_percent` "
                "is 0): set DOGOPS_ENDPOINT__CAPTURE_PERCENT and deploy again.")
        return "\n".join([*lines, f"No captured requests under `{where}` in this window.{hint}"])
    sample = f" (a {capture_percent} % sample)" if capture_percent else ""
    lines += [
        f"- captured requests: **{report.requests}**{sample} in {report.files} files; "
        f"with a prediction: {report.predictions}",
        f"- mean top-1 probability: **{_fmt(report.mean_top1)}**",
        f"- top-1 probability under {report.threshold:g}: **{report.below_threshold}** "
        f"({_pct(report.share_below_threshold)})",
    ]
    if report.bad_lines:
        lines.append(f"- capture lines that could not be read: {report.bad_lines}")
    lines += ["", f"Captures: `{report.capture_uri}`"]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def per_day_table(report: MonitorReport) -> list[dict[str, Any]]:
    return [{"day": day, "requests": n} for day, n in report.requests_per_day.items()]


def classes_table(report: MonitorReport) -> list[dict[str, Any]]:
    return [
        {"class": c.label, "predicted": c.predicted,
         "predicted_share": round(c.predicted_share, 4), "test_images": c.test_images,
         "test_share": round(c.test_share, 4), "difference": round(c.difference, 4)}
        for c in report.classes
    ]


PLOTTED_CLASSES = 30  # more would not be readable side by side; the table has them all


def plot_png(report: MonitorReport) -> bytes | None:
    """Requests per day, predicted vs test class shares, and the top-1 probability histogram."""
    if not report.requests:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dogops.reporting import _png

    fig, axes = plt.subplots(1, 3, figsize=(16.5, 4.2))
    per_day = report.requests_per_day
    axes[0].bar(range(len(per_day)), list(per_day.values()), color="tab:blue")
    axes[0].set_xticks(range(len(per_day)), labels=[d[5:] for d in per_day], rotation=60,
                       fontsize=7)
    axes[0].set_title("captured requests per day (UTC)")
    shown = report.classes[:PLOTTED_CLASSES]
    xs = range(len(shown))
    axes[1].bar([x - 0.2 for x in xs], [c.predicted_share for c in shown], 0.4,
                label="predicted")
    axes[1].bar([x + 0.2 for x in xs], [c.test_share for c in shown], 0.4, label="test split")
    short = [c.label if len(c.label) <= 20 else c.label[:19] + "~" for c in shown]
    axes[1].set_xticks(list(xs), labels=short, rotation=60, ha="right", fontsize=7)
    axes[1].set_ylabel("share")
    axes[1].legend()
    axes[1].set_title("predicted classes vs the test split"
                      + (f" (top {PLOTTED_CLASSES})" if len(report.classes) > len(shown) else ""))
    axes[2].hist(report.top1_probabilities, bins=20, range=(0, 1), color="tab:gray")
    axes[2].axvline(report.threshold, color="tab:red", linestyle="--",
                    label=f"threshold {report.threshold:g}")
    axes[2].legend()
    axes[2].set_xlabel("top-1 probability")
    axes[2].set_title(f"top-1 probability, mean {_fmt(report.mean_top1)}")
    png = _png(fig)
    plt.close(fig)
    return png
