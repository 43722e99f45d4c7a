"""Every S3 URI dogops hands SageMaker is allowed, for what SageMaker does with it, by the
execution role dogops creates.

moto's server does not enforce IAM, so a job, model or endpoint pointed at a folder the role
cannot reach succeeds there and fails on a real account ("Failed to download model data", a trial
that cannot read its inputs). Here the real pipeline (sync, tune, train, deploy, a rollout and a
rollback) runs against moto; a botocore event hook records every SageMaker request it sends, and
each S3 URI in them is checked against the role's policy document as dogops left it in IAM, with
moto's IAM evaluator (tests/iam_tables.py), for the action SageMaker needs: read the code, the
inputs (listing the channel's prefix) and the models; write the job outputs and captures; read,
write and list the checkpoints. A URI in a field this file does not know fails too, so a new kind
of location is classified before it can slip through.

What moto cannot do is produced the way the other aws tests do: tuning outcomes by the
`realistic_tuning_outcomes` fixture, UpdateEndpoint by test_aws_rollout's FakeDeployment. The
ResNet-50 weights are a few fake bytes under torchvision's file name (no download here): only
their shipping is under test.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from iam_tables import Row, refusals
from test_aws_rollout import FakeDeployment

from dogops.aws.backend import AwsBackend
from dogops.aws.endpoint import model_request
from dogops.registry import registry_in
from dogops.results import TrainedModel
from dogops.rollout import package_model_dir

pytestmark = pytest.mark.aws

PLACED = ("CreateHyperParameterTuningJob", "CreateTrainingJob", "CreateModel",
          "CreateEndpointConfig")


def s3_uris(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """Every `s3://` string in a request, with the keys that lead to it."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in s3_uris(v, (*path, str(k)))]
    if isinstance(value, list):
        return [hit for item in value for hit in s3_uris(item, path)]
    return [(path, value)] if isinstance(value, str) and value.startswith("s3://") else []


def needs(path: tuple[str, ...], uri: str) -> list[Row] | None:
    """What SageMaker does with the role at `uri` given in field `path`; None: unknown field."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    bucket_arn, obj = f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{key}"
    folder = key.rstrip("/") + "/"
    under = f"{bucket_arn}/{folder}"
    if path[-1] in ("sagemaker_submit_directory", "ModelDataUrl"):  # code, model archives
        return [("s3:GetObject", obj, {})]
    if path[-2:] == ("S3DataSource", "S3Uri"):  # an S3Prefix input channel: list, then read
        return [("s3:ListBucket", bucket_arn, {"s3:prefix": folder}),
                ("s3:GetObject", f"{under}some/object", {})]
    if path[-2:] == ("OutputDataConfig", "S3OutputPath"):  # <path>/<job>/output/model.tar.gz
        return [("s3:PutObject", f"{under}job-1/output/model.tar.gz", {})]
    if path[-2:] == ("CheckpointConfig", "S3Uri"):  # synced both ways, listed to restore
        return [("s3:PutObject", f"{under}trial-1/checkpoint.pt", {}),
                ("s3:GetObject", f"{under}trial-1/checkpoint.pt", {}),
                ("s3:ListBucket", bucket_arn, {"s3:prefix": folder})]
    if path[-2:] == ("DataCaptureConfig", "DestinationS3Uri"):  # <uri>/<ep>/<variant>/<hour>/
        return [("s3:PutObject", f"{under}ep/AllTraffic/2026/12/04/20/x.jsonl", {})]
    return None


def problems(document: dict[str, Any], requests: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Each URI the role cannot use as SageMaker must, and each URI in an unknown field."""
    found: list[str] = []
    for operation, params in requests:
        for path, uri in s3_uris(params):
            rows = needs(path, uri)
            if rows is None:
                found.append(f"{operation} {'.'.join(path)}={uri}: unknown field, classify it")
                continue
            found += [f"{operation} {'.'.join(path)}={uri}: {w}"
                      for w in refusals(document, rows, [])]
    return found


def record_requests(sm: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every request the client sends, as (operation, parameters): a botocore hook, no mock."""
    sent: list[tuple[str, dict[str, Any]]] = []
    sm.meta.events.register("before-parameter-build.sagemaker",
                            lambda params, model, **_: sent.append((model.name,
                                                                    copy.deepcopy(params))))
    return sent


def role_document(backend: AwsBackend) -> dict[str, Any]:
    """The policy document of the execution role dogops created, as IAM holds it."""
    iam = backend.clients.client("iam")
    name = backend.sagemaker_role_arn().rsplit("/", 1)[1]
    (attached,) = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
    version = iam.get_policy_version(PolicyArn=policy["Arn"],
                                     VersionId=policy["DefaultVersionId"])["PolicyVersion"]
    document = version["Document"]
    return dict(json.loads(document) if isinstance(document, str) else document)


def model_folder(root: Path, label: str) -> Path:
    """A model folder as train.py writes it (contents are stand-ins: nothing serves it)."""
    (root / "code").mkdir(parents=True)
    (root / "model.pth").write_bytes(f"weights of {label}".encode())
    (root / "metadata.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    (root / "code" / "inference.py").write_text("# serving code\n")
    return root


@pytest.fixture
def fake_resnet_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for torchvision's ResNet-50 file in a fresh torch hub cache (no internet)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path = checkpoints / "resnet50-11ad3fa6.pth"
    path.write_bytes(b"not really resnet50 weights")
    return path


@pytest.mark.slow
def test_every_s3_uri_handed_to_sagemaker_is_reachable_by_the_role(
    aws_settings, tmp_path, monkeypatch, realistic_tuning_outcomes, fake_resnet_weights
):
    from model_code.demo_data import generate_demo_dataset

    # Everything that adds a location: spot checkpoints, data capture, the weights channel.
    settings = aws_settings.merged(
        training={"spot": True, "architecture": "resnet50", "reuse_best_trial": False},
        tuning={"max_jobs": 2, "max_parallel_jobs": 2}, endpoint={"capture_percent": 10})
    backend = AwsBackend(settings, poll_s=0, timeout_s=60, endpoint_timeout_s=60)
    sm = backend.clients.client("sagemaker")
    sent = record_requests(sm)
    data = backend.upload_data(generate_demo_dataset(
        tmp_path / "dogs", classes=2, train_per_class=2, valid_per_class=1, test_per_class=1,
        image_size=32))

    tuning = backend.tune(data, "run1")
    model = backend.train_best(data, tuning, "run1")
    backend.deploy(model, "run1")
    registry = registry_in(backend.store)
    registry.record(model, settings.endpoint.name, "aws")
    FakeDeployment(sm, monkeypatch)  # moto has no UpdateEndpoint
    rolled = package_model_dir(model_folder(tmp_path / "new-model", "v2"), backend.store_model)
    backend.deploy(rolled, "rollout-1")
    registry.record(rolled, settings.endpoint.name, "aws")
    target = registry.previous(settings.endpoint.name)
    assert target is not None
    backend.deploy(target.trained_model(), "rollback-v1")

    operations = {operation for operation, _ in sent}
    assert set(PLACED) <= operations, operations
    # Every model a deploy, rollout or rollback uses, also the ones whose Model already existed.
    models = [("registry", {"ModelDataUrl": e.model_uri})
              for e in registry.history(settings.endpoint.name)]
    uris = {uri for _, params in sent for _, uri in s3_uris(params)}
    # The locations this run had to produce, so the check below cannot pass on an empty list.
    assert any("/rollouts/" in u for u in uris) and any("/weights/" in u for u in uris)
    assert any("/checkpoints/" in u for u in uris) and any("/captures" in u for u in uris)
    assert problems(role_document(backend), [*sent, *models]) == []


def test_a_location_the_role_cannot_reach_fails_the_check(aws_settings, monkeypatch):
    """The checker's own proof: a model in a folder the policy does not name, an output written
    where only reads are allowed, and an S3 field nobody classified are all reported."""
    from dogops import iam_policies

    backend = AwsBackend(aws_settings)
    backend.clients.client("s3").create_bucket(Bucket=aws_settings.aws.bucket)
    document = role_document(backend)
    bucket = f"s3://{aws_settings.aws.bucket}/dogops"
    good = [("CreateModel", {"PrimaryContainer": {"ModelDataUrl": f"{bucket}/training/m.tar.gz"}})]
    assert problems(document, good) == []

    # A new folder for rollouts that the role's policy does not grant: the real request fails.
    monkeypatch.setattr(iam_policies, "ROLLOUT_FOLDER", "rollouts-v2")
    archive = Path(__file__)  # any file: only the key it is stored under matters
    uri = backend.store_model(archive, "0123456789abcdef")
    stored = TrainedModel(job_name="r", model_uri=uri, hyperparameters={}, version="v")
    request = model_request(aws_settings, stored, role_arn=backend.sagemaker_role_arn(),
                            image_uri="img", run_key="k")
    (found,) = problems(document, [("CreateModel", request)])
    assert "rollouts-v2/" in found and "not allowed but must be: s3:GetObject" in found

    wrong = [("CreateTrainingJob", {"OutputDataConfig": {"S3OutputPath": f"{bucket}/code"}}),
             ("CreateTrainingJob", {"NewField": {"S3Uri": f"{bucket}/training/x"}})]
    found_all = problems(document, wrong)
    assert len(found_all) == 2
    assert "s3:PutObject" in found_all[0] and "unknown field" in found_all[1]


def test_deploying_a_model_the_role_cannot_read_is_refused_before_any_request(aws_settings):
    """A registry entry or model from anywhere else (another bucket, another folder) would fail
    on AWS once the endpoint update began; it is refused up front, naming the fix."""
    from dogops.errors import UserInputError

    backend = AwsBackend(aws_settings)
    sent = record_requests(backend.clients.client("sagemaker"))
    for uri in ("s3://someone-elses-bucket/dogops/training/m.tar.gz",
                f"s3://{aws_settings.aws.bucket}/dogops/elsewhere/m.tar.gz",
                f"s3://{aws_settings.aws.bucket}/other-project/training/m.tar.gz"):
        model = TrainedModel(job_name="j", model_uri=uri, hyperparameters={}, version="v")
        with pytest.raises(UserInputError, match="DOGOPS_AWS__SAGEMAKER_ROLE_ARN"):
            backend.deploy(model, "run1")
    assert sent == []
