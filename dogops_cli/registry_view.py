"""`dogops registry`'s rows and its text table (kept apart so the CLI module stays short)."""

from __future__ import annotations

from typing import Any

from dogops.registry import RegistryDocument, history_table

COLUMNS = ["version", "live", "endpoint", "model", "test_accuracy", "source", "promoted_at",
           "files", "data", "data_uri"]


def registry_rows(document: RegistryDocument, endpoint_name: str | None) -> list[dict[str, Any]]:
    """One row per entry (of `endpoint_name` only, when given); a sleeping live one says so."""
    rows = []
    for entry in document.entries:
        if endpoint_name not in (None, entry.endpoint_name):
            continue
        live = document.live.get(entry.endpoint_name)
        row = history_table([entry], live)[0]
        if row["live"] and entry.endpoint_name in document.asleep:
            row["live"] = "asleep"
        rows.append(row)
    return rows


def registry_lines(
    uri: str, document: RegistryDocument, rows: list[dict[str, Any]], endpoint_name: str | None
) -> list[str]:
    """The registry as aligned text, then the candidates a guarded rollout took off again."""
    lines = [f"registry {uri}"]
    if not rows:
        return [*lines, "no model yet: run `dogops run --data-dir FOLDER` (train-and-deploy) first"]
    table = [[str(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(COLUMNS)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in table]
    for rejected in document.rolled_back:  # candidates a guarded rollout took off again
        if endpoint_name in (None, rejected.endpoint_name):
            lines.append(
                f"rolled back: {rejected.model_version} on {rejected.endpoint_name} at "
                f"{rejected.at:%Y-%m-%d %H:%M} UTC ({rejected.source}): {rejected.reason}"
            )
    return lines
