"""Monitor tasks: read the endpoint's captures and publish what they show.

Thin wrappers over `dogops.capture` (the reader, the same for both backends) and
`dogops.monitor` (the figures). Artifacts carry counts, shares and probabilities only: the
captured images are never decoded, logged or published.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from dogops import capture, monitor
from dogops.backends import Backend
from dogops.reporting import png_markdown
from tasks.common import RETRYING

MONITOR_KEY = "monitor"
PER_DAY_KEY = "monitor-requests-per-day"
CLASSES_KEY = "monitor-predicted-classes"
PLOT_KEY = "monitor-plot"


def window(lookback_days: int, today: date | None = None) -> tuple[date, date]:
    """The UTC days read: `lookback_days` of them, today included."""
    until = today or datetime.now(UTC).date()
    return until - timedelta(days=lookback_days - 1), until


@task(name="read-captures", **RETRYING)
def read_captures(backend: Backend, since: date, until: date) -> capture.CaptureRead:
    settings = backend.settings
    store = backend.store.objects(settings.aws.bucket)
    read = capture.read_captures(store, capture.capture_key_prefix(settings),
                                 settings.endpoint.name, since, until)
    get_run_logger().info("read %d captured requests from %d files (%s to %s)",
                          len(read.events), read.files, since, until)
    return read


@task(name="read-test-split", **RETRYING)
def read_test_split(backend: Backend) -> dict[str, int]:
    """Test images per class, from the data manifest the sync wrote next to the data."""
    aws = backend.settings.aws
    key = f"{aws.prefix.strip('/')}/data/_manifest.json".lstrip("/")
    counts = monitor.split_class_counts(backend.store.objects(aws.bucket).read(key))
    if not counts:
        get_run_logger().warning("no data manifest with a test split at %s: the class "
                                 "distribution is shown without the test split's", key)
    return counts


@task(name="report-monitor")
def report_monitor(report: monitor.MonitorReport, capture_percent: int) -> None:
    create_markdown_artifact(
        key=MONITOR_KEY, markdown=monitor.summary_markdown(report, capture_percent),
        description=f"Captured traffic of {report.endpoint}",
    )
    create_table_artifact(key=PER_DAY_KEY, table=monitor.per_day_table(report),
                          description="Captured requests per UTC day")
    if report.classes:
        create_table_artifact(
            key=CLASSES_KEY, table=monitor.classes_table(report),
            description="Predicted classes (captured) beside the test split's, most predicted "
            "first",
        )
    png = monitor.plot_png(report)
    if png is not None:
        create_markdown_artifact(
            key=PLOT_KEY, markdown=png_markdown(png, "Captured traffic"),
            description="Requests per day, predicted vs test classes, top-1 probabilities",
        )
