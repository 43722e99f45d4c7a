"""Artifacts every run leaves in the Prefect UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from dogops import reporting
from dogops.backends import Backend
from dogops.results import EndpointInfo, TrainedModel, TuningResult


@task(name="report-tuning")
def report_tuning(tuning: TuningResult) -> None:
    create_table_artifact(
        key="tuning-trials", table=reporting.trials_table(tuning),
        description=f"Trials of tuning job {tuning.job_name}",
    )
    create_markdown_artifact(
        key="best-hyperparameters", markdown=reporting.best_hyperparameters_markdown(tuning),
        description="The winning trial's hyperparameters",
    )


@task(name="evaluate")
def evaluate(model: TrainedModel, tuning: TuningResult | None = None) -> dict[str, float]:
    """Publish the final model's test metrics, per-class accuracy and plots."""
    create_markdown_artifact(
        key="test-metrics", markdown=reporting.metrics_markdown(model),
        description="Test metrics of the deployed model",
    )
    if model.per_class_accuracy or model.confusion_matrix:
        create_table_artifact(
            key="per-class-accuracy", table=reporting.per_class_table(model),
            description="Test accuracy by class, worst first, with its most frequent wrong answer",
        )
    if model.confusion_matrix:
        confused = reporting.most_confused_table(model) or [
            {"true_class": "(none)", "predicted_class": "(none)", "count": 0,
             "share_of_true_class": 0.0}  # every test image right: say so, not a missing table
        ]
        create_table_artifact(
            key="most-confused", table=confused,
            description="Test images of one class predicted as another, most frequent first",
        )
    png = reporting.plots_png(tuning, model)
    if png is not None:
        create_markdown_artifact(
            key="tuning-and-confusion-plot",
            markdown=reporting.png_markdown(png, "Tuning progress and test confusion matrix"),
            description="Trial objective per trial and the test confusion matrix",
        )
    return model.metrics


@task(name="report-endpoint", cache_policy=NO_CACHE)
def report_endpoint(backend: Backend, endpoint: EndpointInfo) -> None:
    link = backend.operations.console_link(endpoint, backend.settings.aws.region)
    create_link_artifact(
        key="endpoint", link=link, link_text=f"endpoint {endpoint.name}",
        description=f"Live endpoint ({backend.name} backend); invoke at {endpoint.url}",
    )


@task(name="report-summary")
def report_summary(markdown: str) -> None:
    create_markdown_artifact(key="run-summary", markdown=markdown, description="What this run did")
