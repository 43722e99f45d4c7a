"""monitor: what the live endpoint was asked and how sure it was, from its captured traffic.

Reads the captures the endpoint wrote (SageMaker data capture on AWS, the local endpoint's own
writer locally; `endpoint.capture_percent` > 0 turns them on) for the last
`monitor.lookback_days` UTC days and leaves artifacts: requests per day, the predicted-class
distribution beside the test split's, the mean top-1 probability and the share under
`monitor.low_confidence_threshold`, and a plot. Read-only; scheduled daily by the deployments.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from dogops import monitor
from dogops.backends import get_backend
from dogops.settings import (
    DEFAULT_ENDPOINT,
    DEFAULT_MONITOR,
    BackendName,
    EndpointConfig,
    MonitorConfig,
    load_settings,
)
from tasks.monitor import read_captures, read_test_split, report_monitor, window
from tasks.operations import run_namer


@flow(name="monitor", flow_run_name=run_namer("monitor"), log_prints=True)
def monitor_flow(
    backend: BackendName | None = None,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    monitor_config: MonitorConfig = DEFAULT_MONITOR,
    state_dir: str | None = None,
) -> monitor.MonitorReport:
    """Summarise the endpoint's captured requests of the last `monitor_config.lookback_days`."""
    settings = load_settings(backend=backend, endpoint=endpoint, monitor=monitor_config,
                             state_dir=state_dir)
    platform = get_backend(settings)  # built once; every task of this run gets it
    since, until = window(settings.monitor.lookback_days)
    read = read_captures(platform, since, until)
    test_counts = read_test_split(platform)
    report = monitor.build_report(
        settings.endpoint.name, since, until, read.uri, read.events, read.files, read.bad_lines,
        test_counts, settings.monitor.low_confidence_threshold,
    )
    report_monitor(report, settings.endpoint.capture_percent)
    get_run_logger().info(
        "monitor %s: %d requests, mean top-1 %s, %s under %g", report.endpoint, report.requests,
        report.mean_top1, report.share_below_threshold, report.threshold)
    return report


if __name__ == "__main__":
    monitor_flow()
