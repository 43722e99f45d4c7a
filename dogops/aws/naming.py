"""Deterministic AWS resource names and the tags every resource carries.

A retried Prefect task or a re-run after a crash must find what the first attempt made instead of
launching a duplicate (SageMaker bills per job). So every job, model and config name is derived from
the flow's run key plus a hash of everything that shapes the resource: same inputs, same name;
changed inputs, new name. Callers describe the name first and create only when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from dogops.settings import Settings

# SageMaker limits: tuning jobs 32 characters, everything else we name here 63.
TUNING_JOB_MAX = 32
NAME_MAX = 63

# The same `project` / `managed-by` pair `dogops.aws.iam` and `lambda_deploy` put on their
# resources, so one tag filter finds everything the project made.
TAG_PROJECT = "project"
TAG_MANAGED_BY = "managed-by"
MANAGED_BY = "dogops"
TAG_RUN_KEY = "flow-run"
TAG_MODEL_VERSION = "model-version"

_NOT_NAME_CHARS = re.compile(r"[^a-zA-Z0-9]+")
_NOT_TAG_CHARS = re.compile(r"[^\w\s.:/=+\-@]")


def short_hash(*parts: Any, length: int = 8) -> str:
    """A stable hex digest of JSON-serialisable parts (dict key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def sanitize(text: str) -> str:
    """Letters, digits and single hyphens only, as SageMaker names require."""
    return _NOT_NAME_CHARS.sub("-", text).strip("-")


def resource_name(prefix: str, run_key: str, digest: str, max_len: int = NAME_MAX) -> str:
    """`<prefix>-<run key>-<digest>`, trimmed to `max_len` without ever cutting the digest.

    The digest keeps names unique when a long run key is trimmed; the run key is there so that a
    person reading the console can tell which flow run made the resource.
    """
    prefix, key = sanitize(prefix), sanitize(run_key)
    room = max_len - len(digest) - 1
    if room <= 0:
        raise ValueError(f"digest {digest!r} does not fit in {max_len} characters")
    head = f"{prefix}-{key}" if key else prefix
    head = head[:room].rstrip("-")
    return f"{head}-{digest}" if head else digest


def tag_value(value: str) -> str:
    """AWS tag values allow letters, digits, spaces and `_ . : / = + - @`, up to 256 characters."""
    return _NOT_TAG_CHARS.sub("-", value)[:256]


def tags(
    settings: Settings, run_key: str, model_version: str | None = None
) -> list[dict[str, str]]:
    """The tags on every resource: project, flow run and (for serving resources) model version."""
    result = [
        {"Key": TAG_PROJECT, "Value": tag_value(settings.project)},
        {"Key": TAG_MANAGED_BY, "Value": MANAGED_BY},
        {"Key": TAG_RUN_KEY, "Value": tag_value(run_key)},
    ]
    if model_version:
        result.append({"Key": TAG_MODEL_VERSION, "Value": tag_value(model_version)})
    return result
