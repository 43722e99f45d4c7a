"""The ownership rule: dogops changes (updates, tags, detaches, deletes) only what carries its tags.

Every AWS resource dogops creates gets `project=<project>` and `managed-by=dogops`. Before a call
that would change an existing resource, its tags are read. A same-named resource without both
tags belongs to someone else: the run stops with `NotOwnedError`, which names the resource and
the setting that picks another name, and nothing about the resource is changed (dogops never adds
its tags to something it did not create). Teardown asks the same question before each deletion
and leaves, and reports, what is not ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dogops.aws.naming import MANAGED_BY, TAG_MANAGED_BY, TAG_PROJECT
from dogops.errors import NotOwnedError

Tags = list[dict[str, str]] | Mapping[str, str]

# The setting that renames each kind of resource (environment variable form).
ENDPOINT_SETTING = "DOGOPS_ENDPOINT__NAME"
FUNCTION_SETTING = "DOGOPS_LAMBDA__FUNCTION_NAME"
SAGEMAKER_ROLE_SETTING = (
    "DOGOPS_PROJECT (the role is named <project>-sagemaker-execution), or "
    "DOGOPS_AWS__SAGEMAKER_ROLE_ARN to use a role you manage yourself"
)
LAMBDA_ROLE_SETTING = (
    "DOGOPS_PROJECT or DOGOPS_LAMBDA__FUNCTION_NAME (the role is named "
    "<project>-lambda-<function>)"
)


def tag_map(tags: Tags | None) -> dict[str, str]:
    """`[{"Key": k, "Value": v}]` (IAM, SageMaker) or `{k: v}` (Lambda) as one dict."""
    if tags is None:
        return {}
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    return {str(t.get("Key")): str(t.get("Value")) for t in tags}


def is_ours(tags: Tags | None, project: str) -> bool:
    found = tag_map(tags)
    return found.get(TAG_PROJECT) == project and found.get(TAG_MANAGED_BY) == MANAGED_BY


def require_ours(tags: Tags | None, project: str, what: str, setting: str) -> None:
    """Raise `NotOwnedError` unless `tags` mark the resource as this project's."""
    if is_ours(tags, project):
        return
    raise NotOwnedError(
        f"{what} already exists but is not dogops's: it lacks the tags {TAG_PROJECT}={project} "
        f"and {TAG_MANAGED_BY}={MANAGED_BY}, so dogops leaves it exactly as it is. Pick another "
        f"name with {setting}; or, if it really should be this project's, delete it or tag it "
        "yourself."
    )


def sagemaker_tags(sm: Any, arn: str) -> list[dict[str, str]]:
    """All tags of a SageMaker resource (ListTags pages)."""
    pages = sm.get_paginator("list_tags").paginate(ResourceArn=arn)
    return [tag for page in pages for tag in page.get("Tags", [])]


def endpoint_owned(sm: Any, described: Mapping[str, Any], project: str) -> bool:
    """Whether a described endpoint (`DescribeEndpoint`'s answer) carries our tags."""
    return is_ours(sagemaker_tags(sm, str(described["EndpointArn"])), project)


def require_endpoint_ours(sm: Any, described: Mapping[str, Any], project: str) -> None:
    require_ours(
        sagemaker_tags(sm, str(described["EndpointArn"])), project,
        f"SageMaker endpoint {described['EndpointName']}", ENDPOINT_SETTING,
    )
