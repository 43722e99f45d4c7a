"""train-and-deploy: from an image folder to a live, auto-scaled, secured prediction service.

    validate -> upload data -> tune -> train best -> evaluate -> deploy -> register auto-scaling
             -> secure (IAM) -> deploy Lambda -> smoke test -> record in registry -> cost estimate

The backend (`local` default, `aws`) is one setting; nothing here branches on it. IAM comes
before the Lambda because the function needs its (least-privilege) role to exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel

from dogops import reporting
from dogops.backends import get_backend
from dogops.errors import OperationFailedError
from dogops.registry import RegistryEntry
from dogops.results import (
    EndpointInfo,
    LambdaInfo,
    ScalingInfo,
    SecurityReport,
    StepSkipped,
    SyncReport,
    TrainedModel,
    TuningResult,
)
from dogops.run_key import run_key as make_run_key
from dogops.settings import (
    DEFAULT_ENDPOINT,
    DEFAULT_LAMBDA,
    DEFAULT_SCALING,
    DEFAULT_TRAINING,
    DEFAULT_TUNING,
    BackendName,
    EndpointConfig,
    LambdaConfig,
    ScalingConfig,
    TrainingConfig,
    TuningConfig,
    load_settings,
)
from tasks.data import data_dir_of_record, upload_data, validate_data
from tasks.endpoint import deploy, deploy_lambda, register_autoscaling, secure, smoke_test
from tasks.live_lock import live_model_lock
from tasks.operations import record_model, report_cost
from tasks.reporting import evaluate, report_endpoint, report_summary, report_tuning
from tasks.rollout import record_rolled_back, report_rollout
from tasks.training import train_best, tune


class PipelineResult(BaseModel):
    backend: str
    run_key: str
    data: SyncReport
    tuning: TuningResult
    model: TrainedModel
    endpoint: EndpointInfo
    scaling: ScalingInfo | StepSkipped
    security: SecurityReport | StepSkipped
    lambda_function: LambdaInfo | StepSkipped
    smoke_test: dict[str, Any] | StepSkipped
    registry: RegistryEntry | None = None


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    backend = params.get("backend") or "default"
    return f"train-and-deploy-{backend}-{flow_run.scheduled_start_time:%Y%m%d-%H%M%S}"


@flow(name="train-and-deploy", flow_run_name=_run_name, log_prints=True)
def train_and_deploy(
    data_dir: str | None = None,
    backend: BackendName | None = None,
    tuning: TuningConfig = DEFAULT_TUNING,
    training: TrainingConfig = DEFAULT_TRAINING,
    endpoint: EndpointConfig = DEFAULT_ENDPOINT,
    scaling: ScalingConfig = DEFAULT_SCALING,
    lambda_config: LambdaConfig = DEFAULT_LAMBDA,
    state_dir: str | None = None,
    run_smoke_test: bool = True,
) -> PipelineResult:
    """Tune, train, deploy and secure the classifier. Unchanged fields keep the settings; with
    no `data_dir` (and no DOGOPS_DATA_DIR) the folder the registry's last model came from."""
    settings = load_settings(
        data_dir=data_dir, backend=backend, tuning=tuning, training=training,
        endpoint=endpoint, scaling=scaling, lambda_config=lambda_config, state_dir=state_dir,
    )
    platform = get_backend(settings)  # built once; every task of this run gets it
    logger = get_run_logger()
    logger.info("backend=%s data_dir=%s endpoint=%s", settings.backend, settings.data_dir,
                settings.endpoint.name)
    summary = validate_data(settings.data_dir or data_dir_of_record(platform))
    logger.info("data: %d classes, images per split %s", summary.num_classes,
                summary.images_per_split)
    data_root = Path(summary.root)

    data = upload_data(platform, data_root)
    key = make_run_key(settings, data)
    tuned = tune(platform, data, key)
    report_tuning(tuned)
    model = train_best(platform, data, tuned, key)
    evaluate(model, tuned)
    with live_model_lock(settings):  # from deploy to the registry: no other run in between
        live = deploy(platform, model, key)
        if live.rollout is not None:  # an update, guarded: a rolled-back model goes no further
            outcome = report_rollout(live, model)
            if not outcome.promoted:
                record_rolled_back(platform, model, outcome, "train-and-deploy")
                raise OperationFailedError(
                    f"the rollout of model {model.version} on {live.name} was rolled back "
                    f"({outcome.reason}); the endpoint keeps serving {outcome.old_version}. "
                    "See the `rollout` artifact and the registry's rolled_back list.")
        report_endpoint(platform, live)
        scaled = register_autoscaling(platform, live)
        security = secure(platform, live)
        function = deploy_lambda(platform, live, security)
        smoke: dict[str, Any] | StepSkipped = (
            smoke_test(platform, live, data_root) if run_smoke_test
            else StepSkipped(step="smoke-test", reason="run_smoke_test=False")
        )
        if isinstance(smoke, StepSkipped):
            logger.warning("step 'smoke-test' skipped: %s", smoke.reason)
        entry = record_model(platform, model, data, live, "train-and-deploy", str(data_root))
    report_cost(platform, tuned, model.training_seconds, model.billable_seconds)
    report_summary(
        reporting.summary_markdown(
            settings.backend, data, tuned, model, live, scaled, security, function, smoke
        )
    )
    return PipelineResult(
        backend=settings.backend, run_key=key, data=data, tuning=tuned, model=model,
        endpoint=live, scaling=scaled, security=security, lambda_function=function,
        smoke_test=smoke, registry=entry,
    )


if __name__ == "__main__":
    train_and_deploy()
