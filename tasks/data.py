"""Data tasks: check the folder's layout, then sync it to the object store."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from dogops.dataset import DatasetSummary, inspect_dataset
from dogops.results import SyncReport
from dogops.settings import Settings
from tasks.common import RETRYING, backend_for, progress


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(data_dir: Path | None) -> DatasetSummary:
    """Fail fast, before anything is uploaded or trained, on a wrong data folder."""
    return inspect_dataset(data_dir)


@task(name="upload-data", task_run_name="upload-{data_dir.name}", **RETRYING)
def upload_data(settings: Settings, data_dir: Path) -> SyncReport:
    report = backend_for(settings).upload_data(data_dir, progress())
    progress()(
        f"synced {report.files_total} files to {report.uri}: {report.uploaded} uploaded, "
        f"{report.skipped} unchanged, {report.deleted} deleted in {report.seconds:.1f} s"
    )
    return report
