"""What the CLI prints for a registry, a monitor report and a rollout in progress, as lines.

Plain functions over the library's documents, so `cli.py` keeps to commands and flows.
"""

from __future__ import annotations

from typing import Any

REGISTRY_COLUMNS = ["version", "live", "endpoint", "model", "test_accuracy", "source",
                    "promoted_at", "files", "data", "data_uri"]


def registry_rows(document: Any, endpoint_name: str | None) -> list[dict[str, Any]]:
    """One row per version (of `endpoint_name`'s, when given); a sleeping live one says so."""
    from dogops.registry import history_table

    rows = []
    for entry in document.entries:
        if endpoint_name not in (None, entry.endpoint_name):
            continue
        row = history_table([entry], document.live.get(entry.endpoint_name))[0]
        if row["live"] and entry.endpoint_name in document.asleep:
            row["live"] = "asleep"
        rows.append(row)
    return rows


def table_lines(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """A header and one line per row, columns padded to their widest value."""
    table = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
            for r in [columns, *table]]


def rolled_back_lines(document: Any, endpoint_name: str | None) -> list[str]:
    """Candidates a guarded rollout took off again, with why."""
    return [f"rolled back: {r.model_version} on {r.endpoint_name} at {r.at:%Y-%m-%d %H:%M} UTC "
            f"({r.source}): {r.reason}"
            for r in document.rolled_back if endpoint_name in (None, r.endpoint_name)]


def monitor_lines(report: Any) -> list[str]:
    lines = [f"{report.endpoint}: {report.requests} captured requests "
             f"{report.since}..{report.until} (captures: {report.capture_uri})"]
    lines += [f"  {day}  {count}" for day, count in report.requests_per_day.items()]
    if report.mean_top1 is not None:
        lines.append(f"mean top-1 probability {report.mean_top1:.3f}; under "
                     f"{report.threshold:g}: {report.below_threshold} "
                     f"({100 * (report.share_below_threshold or 0):.1f} %)")
    lines += [f"  {row.label:<30} predicted {row.predicted:>5} "
              f"({100 * row.predicted_share:5.1f} %)  test {100 * row.test_share:5.1f} %"
              for row in report.classes[:10]]
    return lines


def rollout_line(endpoint_name: str, status: dict[str, Any]) -> str | None:
    """A line for a rollout in progress on a local endpoint (its status document), else None."""
    rollout = (status.get("server") or {}).get("rollout") or {}
    if not rollout.get("active"):
        return None
    new = rollout.get("canary") or {}
    return (f"{endpoint_name}: rollout in progress: {rollout['phase']} (new model: "
            f"{new.get('requests', 0)} requests, {new.get('errors_5xx', 0)} 5xx, p99 "
            f"{new.get('p99_ms')} ms)")
