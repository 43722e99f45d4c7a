"""Warm start of a SageMaker tuning job from the project's previous one, with the right type.

SageMaker offers two types: IDENTICAL_DATA_AND_ALGORITHM (the parent's trials count as if they
ran on this very data) and TRANSFER_LEARNING (they are prior knowledge only). The data always
lives at the same S3 prefix, so equal channel URIs prove nothing: the type is IDENTICAL only when
the parent's data manifest hash (the `data-manifest` tag each tuning job carries), its image and
its static hyperparameters equal this job's. Anything else, including a parent without the tag,
is TRANSFER_LEARNING.
"""

from __future__ import annotations

from typing import Any

from dogops.aws import naming
from dogops.aws.clients import AwsClients
from dogops.aws.ownership import sagemaker_tags, tag_map
from dogops.results import SyncReport
from dogops.settings import Settings

DATA_MANIFEST_TAG = "data-manifest"
IDENTICAL = "IDENTICAL_DATA_AND_ALGORITHM"
TRANSFER = "TRANSFER_LEARNING"


def warm_start_config(
    clients: AwsClients, request: dict[str, Any], parent: str, data: SyncReport
) -> dict[str, Any] | None:
    """Warm start from `parent`, or None when its objective differs (SageMaker requires the same).

    IDENTICAL_DATA_AND_ALGORITHM only when the parent tuned on the same data manifest, image and
    static hyperparameters as `request`; else TRANSFER_LEARNING.
    """
    sm = clients.client("sagemaker")
    described = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=parent)
    objective = request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    theirs_config = described.get("HyperParameterTuningJobConfig") or {}
    if theirs_config.get("HyperParameterTuningJobObjective") != objective:
        return None
    their_manifest = tag_map(sagemaker_tags(sm, described["HyperParameterTuningJobArn"])).get(
        DATA_MANIFEST_TAG
    )
    theirs = described.get("TrainingJobDefinition") or {}
    ours = request["TrainingJobDefinition"]
    same = (
        bool(data.manifest_sha256)
        and their_manifest == data.manifest_sha256
        and theirs.get("InputDataConfig") == ours["InputDataConfig"]
        and theirs.get("AlgorithmSpecification", {}).get("TrainingImage")
        == ours["AlgorithmSpecification"]["TrainingImage"]
        and theirs.get("StaticHyperParameters") == ours["StaticHyperParameters"]
    )
    return {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": parent}],
        "WarmStartType": IDENTICAL if same else TRANSFER,
    }


def latest_completed_job(clients: AwsClients, settings: Settings, exclude: str) -> str | None:
    """The newest completed tuning job of this project (a warm-start parent), if any."""
    answer = clients.client("sagemaker").list_hyper_parameter_tuning_jobs(
        NameContains=f"{naming.sanitize(settings.project)[:8]}-hpo-",
        StatusEquals="Completed",
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=10,
    )
    for summary in answer.get("HyperParameterTuningJobSummaries", []):
        if summary["HyperParameterTuningJobName"] != exclude:
            return str(summary["HyperParameterTuningJobName"])
    return None
