"""Every SageMaker request dogops sends for one set of settings, built by the backend's own
request builders (no copies), with the context each is checked in: what the rules matrix
(test_sagemaker_rules_matrix.py) and the rule tests (test_sagemaker_rules.py) check."""

from __future__ import annotations

from typing import Any

from dogops.aws import rollout
from dogops.aws.endpoint import VARIANT, config_request, endpoint_request
from dogops.aws.endpoint_model import model_request
from dogops.aws.endpoint_update import (
    fleet_size,
    kept_instance_count,
    needs_deregistration,
    update_request,
)
from dogops.aws.sagemaker_job import framework_image
from dogops.aws.sagemaker_rules import UpdateContext
from dogops.aws.training import training_request
from dogops.aws.tuning import tuning_request
from dogops.results import SyncReport, TrainedModel
from dogops.settings import Settings

ROLE = "arn:aws:iam::123456789012:role/dogops-sagemaker-execution"
DATA = SyncReport(uri="s3://dogops-test/dogops/data", files_total=4, manifest_sha256="ab" * 32)
CHECKPOINTS = "s3://dogops-test/dogops/checkpoints"
WEIGHTS = "s3://dogops-test/dogops/weights/0123456789abcdef/"
ALARMS = ["dogops-classifier-dogops-5xx-rate", "dogops-classifier-dogops-latency-p99"]

Requests = list[tuple[str, dict[str, Any], UpdateContext | None]]


_IMAGES: dict[tuple[str, ...], str] = {}


def image(settings: Settings, instance_type: str, scope: str = "training") -> str:
    """`framework_image`, remembered per lookup: the SDK reads its table (~35 ms) each call, and
    the matrix asks the same few hundred times."""
    training = settings.training
    key = (settings.aws.region, training.framework_version, training.py_version, instance_type,
           scope)
    if key not in _IMAGES:
        _IMAGES[key] = framework_image(settings.aws.region, training, instance_type, scope)
    return _IMAGES[key]


def model(version: str) -> TrainedModel:
    return TrainedModel(job_name=f"job-{version}", hyperparameters={}, version=version,
                        model_uri=f"s3://dogops-test/dogops/training/job-{version}/model.tar.gz")


def job_requests(settings: Settings) -> Requests:
    """CreateHyperParameterTuningJob and CreateTrainingJob, as `run_tuning` / `train_best`."""
    training = settings.training
    # resnet50's weights travel in a channel (`dogops.aws.weights.ship_weights`, which needs
    # the file and S3: its URI is given here); EfficientNet-Lite0's come with a pip package.
    weights = WEIGHTS if training.architecture == "resnet50" else ""
    common: dict[str, Any] = {"run_key": "run1", "data": DATA, "source_uri": "s3://b/code.tgz",
                              "role_arn": ROLE, "checkpoint_uri": CHECKPOINTS,
                              "weights_uri": weights}
    tuning = tuning_request(
        settings, image_uri=image(settings, training.tuning_instance_type),
        output_uri="s3://dogops-test/dogops/tuning", **common)
    final = training_request(
        settings, tuned={"learning_rate": 0.01, "batch_size": 64},
        image_uri=image(settings, training.training_instance_type),
        output_uri="s3://dogops-test/dogops/training", **common)
    return [("CreateHyperParameterTuningJob", tuning, None), ("CreateTrainingJob", final, None)]


def live_endpoint(settings: Settings, instances: int) -> dict[str, Any]:
    """DescribeEndpoint of a live endpoint on `settings`'s capacity running `instances`."""
    variant: dict[str, Any] = {"VariantName": VARIANT}
    if settings.endpoint.mode == "instance":
        variant |= {"CurrentInstanceCount": instances, "DesiredInstanceCount": instances}
    else:
        variant["CurrentServerlessConfig"] = {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    return {"EndpointName": settings.endpoint.name, "EndpointStatus": "InService",
            "ProductionVariants": [variant]}


def endpoint_requests(
    settings: Settings, *, instances: int, previous: Settings | None = None
) -> Requests:
    """CreateModel, CreateEndpointConfig, CreateEndpoint for a first deployment, then the
    CreateModel, CreateEndpointConfig and UpdateEndpoint of a new model onto that endpoint,
    now running `instances` (auto-scaling may have moved it), as `deploy_endpoint` builds them.
    `previous`: the settings the live endpoint was made with (default: the same)."""
    previous = previous or settings
    endpoint = settings.endpoint
    inference = image(settings, endpoint.instance_type, "inference")
    sent: Requests = []
    configs = []
    for version, made_with, count in (("v1", previous, None),
                                      ("v2", settings, kept_instance_count(
                                          settings, live_endpoint(previous, instances), VARIANT))):
        mreq = model_request(made_with, model(version), role_arn=ROLE, image_uri=inference,
                             run_key="run1")
        creq = config_request(made_with, mreq["ModelName"], version, "run1", count)
        configs.append(creq)
        sent += [("CreateModel", mreq, None), ("CreateEndpointConfig", creq, None)]
        if version == "v1":
            sent.append(("CreateEndpoint", endpoint_request(
                made_with, creq["EndpointConfigName"], "run1", version), None))
    old, new = (c["ProductionVariants"] for c in configs)
    registered = ({VARIANT} if previous.scaling.enabled and previous.endpoint.mode == "instance"
                  else set())
    lifted = needs_deregistration(old, new, registered)
    guard, _ = rollout.update_arguments(settings, ALARMS, fleet_size(new))
    update = update_request(endpoint.name, configs[1]["EndpointConfigName"], guard)
    sent.append(("UpdateEndpoint", update, UpdateContext(old, new,
                                                         frozenset(registered - lifted))))
    return sent
