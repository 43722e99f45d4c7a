"""The model registry: every promoted model, versioned, in one JSON document.

    local: <state_dir>/registry.json          (temp file + rename, under a file lock)
    aws:   s3://<bucket>/<prefix>/registry.json (a PUT conditional on the ETag read: a change
                                                 another run made in between is re-read, never
                                                 overwritten)

Each promotion appends an entry (version 1, 2, ...) with what is needed to judge and rebuild the
model: its URI and content version, metrics, hyperparameters, the data manifest hash, the code
version, the endpoint it went to, when, and which flow run promoted it. A separate `live` pointer
per endpoint says which entry serves now, so a rollback moves the pointer (and leaves an event in
`events`) instead of rewriting history; rolling back twice walks further back.

Recording the model that is already live is a no-op, so a re-run of a flow does not add versions.
Candidates a guarded rollout rolled back are kept apart in `rolled_back`, with the reason and the
figures it was judged on; they never become versions.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from dogops.backends.base import DocumentStore, Store
from dogops.errors import OperationFailedError, UserInputError
from dogops.results import RolledBack, SyncReport, TrainedModel
from dogops.settings import Settings

REGISTRY_NAME = "registry.json"
SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CODE_DIR = REPO_ROOT / "model_code"

_T = TypeVar("_T")
Source = Literal["train-and-deploy", "retrain", "rollback", "rollout", "manual"]


class RegistryEntry(BaseModel):
    """One promoted model."""

    version: int = Field(description="Registry version: 1, 2, ... in promotion order.")
    model_version: str = Field(description="Content hash of model.tar.gz (TrainedModel.version).")
    model_uri: str
    job_name: str
    metrics: dict[str, float] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    class_names: list[str] = Field(default_factory=list)
    data_manifest_sha256: str = ""
    data_uri: str = Field("", description="Object-store URI the model's data was synced to.")
    data_dir: str = Field(
        "", description="The local folder that was synced there (what `resync` syncs again)."
    )
    data_files: int = 0
    code_version: str = Field("", description="git commit of the repo, else sha256 of model_code/.")
    endpoint_name: str
    backend: str
    promoted_at: datetime
    flow_run_id: str | None = None
    source: Source = "manual"
    notes: list[str] = Field(default_factory=list)

    def trained_model(self) -> TrainedModel:
        """The `TrainedModel` the deploy step needs, rebuilt from this entry (for rollback)."""
        return TrainedModel(
            job_name=self.job_name,
            model_uri=self.model_uri,
            hyperparameters=self.hyperparameters,
            metrics=self.metrics,
            class_names=self.class_names,
            reused=True,
            version=self.model_version,
        )


class RegistryEvent(BaseModel):
    """Something that changed which entry is live: a promotion or a rollback."""

    at: datetime
    action: Literal["promote", "rollback", "sleep", "wake"]
    endpoint_name: str
    version: int
    from_version: int | None = None
    flow_run_id: str | None = None
    reason: str = ""


class Asleep(BaseModel):
    """An endpoint idle-guard deleted (AWS) or stopped (local) to stop paying for it; its live
    version, model and config stay, so `wake` (or the next deploy) brings it back."""

    since: datetime
    version: int
    instances: int = Field(description="Instances (workers) it had when it was put to sleep.")
    instance_type: str = ""
    saved_per_day: float | None = Field(None, description="Price of those instances per day.")
    reason: str = ""


class RegistryDocument(BaseModel):
    schema_version: int = SCHEMA_VERSION
    entries: list[RegistryEntry] = Field(default_factory=list)
    live: dict[str, int] = Field(
        default_factory=dict, description="Endpoint name -> registry version serving there."
    )
    asleep: dict[str, Asleep] = Field(
        default_factory=dict, description="Endpoint name -> why and since when it is asleep."
    )
    events: list[RegistryEvent] = Field(default_factory=list)
    rolled_back: list[RolledBack] = Field(default_factory=list)


# The backends' document store (`dogops.backends.DocumentStore`) under the name the registry knew.
RegistryStore = DocumentStore


class Registry:
    """Read and update the registry document through a `RegistryStore`."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    @property
    def uri(self) -> str:
        return self.store.uri

    def load(self) -> RegistryDocument:
        return self._parse(self.store.read())

    def _parse(self, body: bytes | None) -> RegistryDocument:
        if body is None:
            return RegistryDocument()
        try:
            return RegistryDocument.model_validate_json(body)
        except ValueError as exc:
            raise OperationFailedError(
                f"the registry at {self.uri} is not a valid registry document ({exc}); restore "
                "it from a backup or move it aside to start a new one."
            ) from exc

    def _update(self, change: Callable[[RegistryDocument], tuple[bool, _T]]) -> _T:
        """Apply `change` (document -> (changed?, result)) through the store's atomic update;
        on a conflict the store calls it again on the fresh document, so it must only edit it."""
        results: list[_T] = []

        def apply(body: bytes | None) -> bytes | None:
            document = self._parse(body)
            changed, result = change(document)
            results[:] = [result]
            return document.model_dump_json(indent=1).encode() if changed else None

        self.store.update(apply)
        return results[0]

    # -- queries ---------------------------------------------------------------------------
    def history(self, endpoint_name: str | None = None) -> list[RegistryEntry]:
        """Every promoted model, oldest first (only `endpoint_name`'s when given)."""
        entries = self.load().entries
        return [e for e in entries if endpoint_name in (None, e.endpoint_name)]

    def get(self, version: int) -> RegistryEntry:
        for entry in self.load().entries:
            if entry.version == version:
                return entry
        raise UserInputError(
            f"registry {self.uri} has no version {version}; versions: "
            f"{[e.version for e in self.load().entries] or 'none yet'}."
        )

    def live(self, endpoint_name: str) -> RegistryEntry | None:
        """The entry serving on `endpoint_name` now, or None before the first promotion."""
        document = self.load()
        version = document.live.get(endpoint_name)
        return next((e for e in document.entries if e.version == version), None)

    def previous(self, endpoint_name: str) -> RegistryEntry | None:
        """The entry promoted to `endpoint_name` before the live one (what a rollback restores)."""
        document = self.load()
        live = document.live.get(endpoint_name)
        if live is None:
            return None
        older = [
            e for e in document.entries
            if e.endpoint_name == endpoint_name and e.version < live
            and e.model_version != self._model_version(document, live)
        ]
        return older[-1] if older else None

    @staticmethod
    def _model_version(document: RegistryDocument, version: int) -> str | None:
        return next((e.model_version for e in document.entries if e.version == version), None)

    # -- updates ---------------------------------------------------------------------------
    def record(
        self,
        model: TrainedModel,
        endpoint_name: str,
        backend: str,
        data: SyncReport | None = None,
        code_version: str | None = None,
        flow_run_id: str | None = None,
        source: Source = "manual",
        notes: list[str] | None = None,
        data_dir: str | None = None,
    ) -> RegistryEntry:
        """Append `model` as a new version and make it live on `endpoint_name`.

        When that model is already live there, nothing changes and the live entry is returned,
        so a re-run or a retried task does not add a version.
        """
        code = code_version if code_version is not None else current_code_version()

        def promote(document: RegistryDocument) -> tuple[bool, RegistryEntry]:
            current = document.live.get(endpoint_name)
            for entry in document.entries:
                if entry.version == current and entry.model_version == model.version:
                    return self._woke(document, endpoint_name, flow_run_id), entry
            entry = RegistryEntry(
                version=max((e.version for e in document.entries), default=0) + 1,
                model_version=model.version,
                model_uri=model.model_uri,
                job_name=model.job_name,
                metrics=model.metrics,
                hyperparameters=model.hyperparameters,
                class_names=model.class_names,
                data_manifest_sha256=data.manifest_sha256 if data else "",
                data_uri=data.uri if data else "",
                data_dir=data_dir or "",
                data_files=data.files_total if data else 0,
                code_version=code,
                endpoint_name=endpoint_name,
                backend=backend,
                promoted_at=datetime.now(UTC),
                flow_run_id=flow_run_id,
                source=source,
                notes=notes or [],
            )
            document.entries.append(entry)
            document.live[endpoint_name] = entry.version
            self._woke(document, endpoint_name, flow_run_id)
            document.events.append(RegistryEvent(
                at=entry.promoted_at, action="promote", endpoint_name=endpoint_name,
                version=entry.version, from_version=current, flow_run_id=flow_run_id,
                reason=f"{source} promoted model {model.version}",
            ))
            return True, entry

        return self._update(promote)

    def record_rolled_back(self, rejected: RolledBack) -> None:
        """Keep a rolled-back candidate and the reason (the live pointer does not move)."""

        def keep(document: RegistryDocument) -> tuple[bool, None]:
            document.rolled_back.append(rejected)
            return True, None

        self._update(keep)

    def set_live(
        self, endpoint_name: str, version: int, flow_run_id: str | None = None, reason: str = ""
    ) -> RegistryEntry:
        """Point `endpoint_name` at an existing version (a rollback); no-op when already live."""

        def point(document: RegistryDocument) -> tuple[bool, RegistryEntry]:
            entry = next((e for e in document.entries if e.version == version), None)
            if entry is None:
                raise UserInputError(f"registry {self.uri} has no version {version}.")
            current = document.live.get(endpoint_name)
            if current == version:
                return self._woke(document, endpoint_name, flow_run_id), entry
            document.live[endpoint_name] = version
            self._woke(document, endpoint_name, flow_run_id)
            document.events.append(RegistryEvent(
                at=datetime.now(UTC), action="rollback", endpoint_name=endpoint_name,
                version=version, from_version=current, flow_run_id=flow_run_id, reason=reason,
            ))
            return True, entry

        return self._update(point)

    def mark_asleep(
        self, endpoint_name: str, asleep: Asleep, flow_run_id: str | None = None
    ) -> None:
        """Say that `endpoint_name` was deleted/stopped while idle; its live version stays."""

        def sleep(document: RegistryDocument) -> tuple[bool, None]:
            if endpoint_name in document.asleep:
                return False, None
            document.asleep[endpoint_name] = asleep
            document.events.append(RegistryEvent(
                at=asleep.since, action="sleep", endpoint_name=endpoint_name,
                version=asleep.version, flow_run_id=flow_run_id, reason=asleep.reason,
            ))
            return True, None

        self._update(sleep)

    def mark_awake(self, endpoint_name: str, flow_run_id: str | None = None) -> Asleep | None:
        """Clear the asleep mark (after a deploy); returns what it was, or None."""

        def wake(document: RegistryDocument) -> tuple[bool, Asleep | None]:
            was = document.asleep.get(endpoint_name)
            return self._woke(document, endpoint_name, flow_run_id), was

        return self._update(wake)

    def asleep(self, endpoint_name: str) -> Asleep | None:
        return self.load().asleep.get(endpoint_name)

    @staticmethod
    def _woke(document: RegistryDocument, endpoint_name: str, flow_run_id: str | None) -> bool:
        """Drop `endpoint_name`'s asleep mark in `document` (not saved); True if it had one."""
        was = document.asleep.pop(endpoint_name, None)
        if was is None:
            return False
        document.events.append(RegistryEvent(
            at=datetime.now(UTC), action="wake", endpoint_name=endpoint_name,
            version=document.live.get(endpoint_name, was.version), flow_run_id=flow_run_id,
            reason=f"deployed again after sleeping since {was.since:%Y-%m-%d %H:%M} UTC",
        ))
        return True


def registry_in(store: Store) -> Registry:
    """The registry in `store` (a flow run's `backend.store`): a file in the state dir, or an S3
    object by the data."""
    return Registry(store.document(REGISTRY_NAME))


def registry_for(settings: Settings) -> Registry:
    """The registry of `settings.backend`, for callers without a backend at hand (the CLI)."""
    from dogops.backends import store_for

    return registry_in(store_for(settings))


def hash_model_code(folder: Path = MODEL_CODE_DIR) -> str:
    """sha256 over model_code/'s source files (names and bytes), for when git is absent."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".txt"):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def current_code_version(repo: Path = REPO_ROOT) -> str:
    """`git:<commit>` (with `+dirty` when model_code/ differs from it), else `sha256:<hash>`."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "model_code"], cwd=repo,
            capture_output=True, timeout=5,
        ).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return f"sha256:{hash_model_code()[:16]}"
    if not commit:
        return f"sha256:{hash_model_code()[:16]}"
    return f"git:{commit[:12]}" + (f"+dirty-{hash_model_code()[:8]}" if dirty else "")


def history_table(entries: list[RegistryEntry], live_version: int | None) -> list[dict[str, Any]]:
    """Rows for a Prefect table artifact or the CLI."""
    return [
        {
            "version": e.version,
            "live": "yes" if e.version == live_version else "",
            "model": e.model_version,
            "test_accuracy": round(e.metrics.get("test:accuracy", float("nan")), 4),
            "endpoint": e.endpoint_name,
            "promoted_at": e.promoted_at.isoformat(timespec="seconds"),
            "source": e.source,
            "code": e.code_version,
            "data": e.data_manifest_sha256[:12],
            "data_uri": e.data_uri,
            "files": e.data_files,
        }
        for e in entries
    ]

