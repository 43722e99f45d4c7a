"""Data tasks: check the folder's layout, then sync it to the object store."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from dogops import data_source
from dogops.backends import Backend
from dogops.dataset import DatasetSummary, inspect_dataset
from dogops.registry import RegistryEntry, registry_in
from dogops.results import SyncReport
from tasks.common import RETRYING, progress


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(data_dir: Path | str | None) -> DatasetSummary:
    """Fail fast, before anything is uploaded or trained, on a wrong data folder."""
    return inspect_dataset(data_dir)


@task(name="upload-data", task_run_name="upload-{data_dir.name}", **RETRYING)
def upload_data(backend: Backend, data_dir: Path) -> SyncReport:
    report = backend.upload_data(data_dir, progress())
    progress()(
        f"synced {report.files_total} files to {report.uri}: {report.uploaded} uploaded, "
        f"{report.skipped} unchanged, {report.deleted} deleted in {report.seconds:.1f} s"
    )
    return report


@task(name="data-of-record", **RETRYING)
def data_of_record(backend: Backend, what: str) -> RegistryEntry:
    """The registry entry whose data a run without a data folder uses; a clear error (run
    train-and-deploy first) when there is none."""
    entry = data_source.require_entry(registry_in(backend.store),
                                      backend.settings.endpoint.name, what)
    progress()(f"data of record: {entry.data_uri} (v{entry.version}, manifest "
               f"{entry.data_manifest_sha256[:12]}, synced from {entry.data_dir or '?'})")
    return entry


@task(name="refresh-data", task_run_name="refresh-{uri}", **RETRYING)
def refresh_data(backend: Backend, uri: str) -> SyncReport:
    """The data under `uri` in the object store now (picks up images added there)."""
    report = backend.store.data_now(uri)
    progress()(f"{uri}: {report.files_total} files now, manifest {report.manifest_sha256[:12]}")
    return report


@task(name="fetch-test-split", **RETRYING)
def fetch_test_split(backend: Backend, data: SyncReport) -> Path:
    """A local folder with the data's test split: the store folder itself locally, a download
    (skipping files already there with the same size) on AWS."""
    return backend.store.test_split(data)


@task(name="data-dir-of-record", **RETRYING)
def data_dir_of_record(backend: Backend) -> str | None:
    """The folder the endpoint's last registered model was synced from, or None."""
    entry = data_source.last_entry(registry_in(backend.store), backend.settings.endpoint.name)
    if entry is None or not entry.data_dir:
        return None
    progress()(f"no data_dir given: using {entry.data_dir}, the data of registry v{entry.version}")
    return entry.data_dir
