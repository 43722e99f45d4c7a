"""Teardown on AWS: delete what dogops made for the endpoint, in the order AWS requires.

    1. scaling policies, then the scalable target   (AWS refuses to delete an endpoint whose
                                                      variant is still a scalable target)
    2. Lambda provisioned concurrency, alias, function (it calls the endpoint)
    3. the endpoint, then waits until it is gone, then its rollout alarms (CloudWatch)
    4. its endpoint configs, then its models          (every version, not only the live one)
    5. the roles and customer-managed policies dogops created

Only resources tagged `project=<project>` and `managed-by=dogops` are deleted, each checked right
before its deletion (`dogops.aws.ownership`); anything else with a matching name is left and
logged. Scaling policies and targets carry no tags of their own here: they are removed only when
the endpoint they scale is ours. Dry run (`apply=False`) returns the same list without
deleting. Safe to re-run: what is already gone is not listed. The S3 data, model artifacts and the
registry stay, so a later run (or a rollback) can bring the endpoint back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from dogops.aws import autoscaling, endpoint, iam, lambda_deploy, ownership, rollout
from dogops.aws.clients import AwsClients
from dogops.settings import Settings

log = logging.getLogger(__name__)

DELETE_TIMEOUT_S = 1800.0
POLL_S = 15.0


def is_ours(tags: list[dict[str, str]], project: str) -> bool:
    return ownership.is_ours(tags, project)


def _tags(sm: Any, arn: str) -> list[dict[str, str]]:
    return ownership.sagemaker_tags(sm, arn)


def _listed(sm: Any, operation: str, key: str, prefix: str) -> list[dict[str, Any]]:
    """Items of a SageMaker list call named `prefix` + the 12-hex digest the deploy step uses."""
    pattern = re.compile(re.escape(prefix) + f"[0-9a-f]{{{endpoint.DIGEST_LEN}}}")
    name_key = "EndpointConfigName" if key == "EndpointConfigs" else "ModelName"
    items: list[dict[str, Any]] = []
    for page in sm.get_paginator(operation).paginate(NameContains=prefix):
        items.extend(i for i in page.get(key, []) if pattern.fullmatch(i[name_key]))
    return sorted(items, key=lambda i: str(i[name_key]))


def scaling_resources(clients: AwsClients, endpoint_name: str) -> list[str]:
    """`scaling-policy:NAME` and `scalable-target:RESOURCE_ID` registered for the variant."""
    client = clients.client("application-autoscaling")
    rid = autoscaling.resource_id(endpoint_name, endpoint.VARIANT)
    policies = client.describe_scaling_policies(
        ServiceNamespace=autoscaling.NAMESPACE, ResourceId=rid,
        ScalableDimension=autoscaling.DIMENSION,
    ).get("ScalingPolicies", [])
    targets = client.describe_scalable_targets(
        ServiceNamespace=autoscaling.NAMESPACE, ResourceIds=[rid],
        ScalableDimension=autoscaling.DIMENSION,
    ).get("ScalableTargets", [])
    return ([f"scaling-policy:{p['PolicyName']}" for p in policies]
            + [f"scalable-target:{t['ResourceId']}" for t in targets])


def _wait_gone(
    clients: AwsClients, name: str, timeout_s: float, poll_s: float,
    sleep: Callable[[float], None],
) -> None:
    endpoint.wait_endpoint_deleted(
        clients, name, timeout_s=timeout_s, poll_s=poll_s,
        then="check it in the SageMaker console, then re-run teardown.",
    )


def teardown_aws(
    clients: AwsClients,
    settings: Settings,
    apply: bool,
    *,
    timeout_s: float = DELETE_TIMEOUT_S,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """`kind:name` for each resource deleted (or, without `apply`, that would be deleted)."""
    name = settings.endpoint.name
    project = settings.project
    sm = clients.client("sagemaker")
    done: list[str] = []

    described = endpoint.describe_endpoint(clients, name)
    owned = described is not None and ownership.endpoint_owned(sm, described, project)
    scaling = scaling_resources(clients, name)
    if scaling and not owned:
        log.warning("Leaving the scaling of endpoint %s: the endpoint %s", name,
                    "does not exist" if described is None else "is not tagged as ours")
    elif scaling:
        if apply:
            autoscaling.deregister_autoscaling(clients, name, endpoint.VARIANT)
        done += scaling

    done += lambda_deploy.delete_lambda(clients, settings, apply)

    if described is not None:
        if owned:
            if apply:
                if described["EndpointStatus"] != "Deleting":
                    sm.delete_endpoint(EndpointName=name)
                _wait_gone(clients, name, timeout_s, poll_s, sleep)
            done.append(f"endpoint:{name}")
        else:
            log.warning("Leaving endpoint %s: not tagged project=%s, managed-by=dogops",
                        name, project)

    done += rollout.delete_alarms(clients, name, project, apply)

    for config in _listed(sm, "list_endpoint_configs", "EndpointConfigs",
                          endpoint.child_prefix(name, "c")):
        if not is_ours(_tags(sm, config["EndpointConfigArn"]), project):
            continue
        if apply:
            sm.delete_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
        done.append(f"endpoint-config:{config['EndpointConfigName']}")
    for model in _listed(sm, "list_models", "Models", endpoint.child_prefix(name, "m")):
        if not is_ours(_tags(sm, model["ModelArn"]), project):
            continue
        if apply:
            sm.delete_model(ModelName=model["ModelName"])
        done.append(f"model:{model['ModelName']}")

    done += iam.delete_project_roles(clients, settings, apply)
    verb = "deleted" if apply else "would delete"
    log.info("teardown %s: %s", verb, ", ".join(done) or "nothing")
    return done
