"""The longest silence in a flow run's logs, read back from the Prefect API.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m bench.log_gaps FLOW_RUN_ID \
        [--from "features-train: started"] [--to "features-train: done"]

A person watching a run in the Prefect UI sees its logs (the flow's and its task runs'); this
prints the longest gap between two consecutive log lines over the whole run and over the window
from the first line containing `--from` to the first later line containing `--to` (e.g. while
the first trial extracts backbone features), with the lines around it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def read_logs(flow_run_id: str) -> list[tuple[float, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    found: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                sort=LogSort.TIMESTAMP_ASC, limit=200, offset=len(found))
            found.extend(page)
            if len(page) < 200:
                break
    return [(log.timestamp.timestamp(), log.message) for log in found]


def longest_gap(logs: list[tuple[float, str]]) -> dict[str, Any]:
    if len(logs) < 2:
        return {"seconds": 0.0, "lines": len(logs)}
    gaps = [(b[0] - a[0], i) for i, (a, b) in enumerate(zip(logs, logs[1:], strict=False))]
    seconds, i = max(gaps)
    return {"seconds": round(seconds, 1), "lines": len(logs),
            "window_seconds": round(logs[-1][0] - logs[0][0], 1),
            "after": logs[i][1][:160], "before": logs[i + 1][1][:160]}


def window(logs: list[tuple[float, str]], start: str, end: str) -> list[tuple[float, str]]:
    first = next((i for i, (_, m) in enumerate(logs) if start in m), None)
    if first is None:
        return []
    last = next((i for i in range(first, len(logs)) if end in logs[i][1]), len(logs) - 1)
    return logs[first:last + 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("flow_run_id")
    p.add_argument("--from", dest="start", default="features-train: started")
    p.add_argument("--to", dest="end", default="features-train: done")
    args = p.parse_args(argv)
    logs = read_logs(args.flow_run_id)
    report = {"whole_run": longest_gap(logs),
              "window": {"from": args.start, "to": args.end,
                         **longest_gap(window(logs, args.start, args.end))}}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
