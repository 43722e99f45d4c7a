"""Deterministic names for a run's jobs, derived from its inputs.

The same data and configuration give the same key, so a re-run after a crash (a new flow run)
or a retried task attaches to the tuning job, training job and model it made before instead of
launching duplicates. Any change of data or configuration gives a new key, hence new jobs.
"""

from __future__ import annotations

import hashlib
import json

from dogops.results import SyncReport
from dogops.settings import Settings


def run_key(settings: Settings, data: SyncReport) -> str:
    relevant = {
        "data": data.manifest_sha256,
        "tuning": settings.tuning.model_dump(),
        "training": settings.training.model_dump(
            exclude={"training_instance_type", "tuning_instance_type", "reuse_best_trial"}
        ),
    }
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return digest[:10]
