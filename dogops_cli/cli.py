"""`dogops`: run the pipeline, call the endpoint and the Lambda, see and stop what runs."""

from __future__ import annotations

import inspect
import json
import mimetypes
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from dogops.errors import DogopsError, validation_message
from dogops.settings import load_settings
from dogops_cli import render


class _OneLineErrors(TyperGroup):
    """Any command's user error -- a `DogopsError` or a value pydantic refused (an endpoint
    name, a backend, a range), wherever it is raised -- ends as one `error:` line and exit 2,
    never a traceback; only bugs show one."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer bundles its own click)
        try:
            return super().invoke(ctx)
        except DogopsError as exc:
            _fail(str(exc))
        except ValidationError as exc:
            _fail(validation_message(exc))


app = typer.Typer(
    cls=_OneLineErrors,
    help="dogops: an image classifier from a data folder to a live, auto-scaled endpoint.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
)

StateDir = Annotated[
    Path | None, typer.Option(help="Where the local backend keeps its state (default .dogops).")
]
Backend = Annotated[str | None, typer.Option(help="local (default) or aws.")]


def _settings(backend: str | None = None, state_dir: Path | None = None) -> Any:
    return load_settings(backend=backend, state_dir=state_dir)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _run_flow(flow: Any, state_dir: Path | None, parameters: dict[str, Any]) -> Any:
    """Run `flow`, reporting to the project's Prefect server (see `services.project_prefect`)."""
    from dogops.services import export_hint, project_prefect

    settings = _settings(parameters.get("backend"), state_dir)
    # Pass the effective settings for the groups not given, so the run's parameters in the UI
    # show what it used (the flows' own defaults mean "keep the settings").
    accepted = inspect.signature(flow.fn).parameters
    effective = {"tuning": settings.tuning, "training": settings.training,
                 "endpoint": settings.endpoint, "scaling": settings.scaling,
                 "lambda_config": settings.lambda_, "monitor_config": settings.monitor}
    given = {k: v for k, v in parameters.items() if v is not None}
    given |= {k: v for k, v in effective.items() if k in accepted and k not in given}
    with project_prefect(settings.state_dir) as url:
        typer.echo(f"flow runs report to {url.removesuffix('/api')}  "
                   f"(for plain prefect commands: {export_hint(url)})", err=True)
        return flow(**given)  # a DogopsError becomes one line in _OneLineErrors


def _endpoint(name: str | None) -> dict[str, Any]:
    from dogops.settings import EndpointConfig

    return {"endpoint": EndpointConfig(name=name)} if name else {}


EndpointName = Annotated[str | None, typer.Option(help="Endpoint (default: settings).")]


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write train/, valid/, test/ into.")],
    classes: Annotated[int, typer.Option(min=2, help="Number of synthetic breeds.")] = 5,
    train_per_class: Annotated[int, typer.Option(min=1)] = 40,
    valid_per_class: Annotated[int, typer.Option(min=1)] = 10,
    test_per_class: Annotated[int, typer.Option(min=1)] = 10,
    image_size: Annotated[int, typer.Option(min=16)] = 96,
    seed: int = 0,
) -> None:
    """Generate the small, learnable demo data set (no download needed)."""
    from model_code.demo_data import generate_demo_dataset

    path = generate_demo_dataset(
        out, classes=classes, train_per_class=train_per_class,
        valid_per_class=valid_per_class, test_per_class=test_per_class,
        image_size=image_size, seed=seed,
    )
    typer.echo(f"demo data set written to {path}")


@app.command()
def run(
    data_dir: Annotated[Path | None, typer.Option(help="train/valid/test image folder.")] = None,
    backend: Backend = None,
    state_dir: StateDir = None,
    max_jobs: Annotated[int | None, typer.Option(min=1, help="Tuning trial budget.")] = None,
    max_parallel_jobs: Annotated[int | None, typer.Option(min=1)] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs per trial and final.")] = None,
    image_size: Annotated[int | None, typer.Option(min=32)] = None,
    endpoint_name: Annotated[str | None, typer.Option(help="Stable endpoint name.")] = None,
    smoke_test: Annotated[bool, typer.Option(help="Invoke the endpoint at the end.")] = True,
) -> None:
    """Run the train-and-deploy flow (tune, train, deploy, scale, secure, Lambda)."""
    from dogops.settings import EndpointConfig, TrainingConfig, TuningConfig
    from flows.train_and_deploy import train_and_deploy

    tuning: dict[str, Any] = {k: v for k, v in
                              {"max_jobs": max_jobs, "max_parallel_jobs": max_parallel_jobs,
                               "epochs": epochs}.items() if v is not None}
    training: dict[str, Any] = {k: v for k, v in
                                {"epochs": epochs, "image_size": image_size}.items()
                                if v is not None}
    parameters: dict[str, Any] = {
        "data_dir": str(data_dir) if data_dir else None,
        "backend": backend,
        "state_dir": str(state_dir) if state_dir else None,
        "run_smoke_test": smoke_test,
    }
    if tuning:
        parameters["tuning"] = TuningConfig.model_validate(tuning)
    if training:
        parameters["training"] = TrainingConfig.model_validate(training)
    if endpoint_name:
        parameters["endpoint"] = EndpointConfig(name=endpoint_name)
    result = _run_flow(train_and_deploy, state_dir, parameters)
    typer.echo(json.dumps({"endpoint": result.endpoint.name, "url": result.endpoint.url,
                           "model_version": result.model.version,
                           "metrics": result.model.metrics}, indent=1))


def _payload(image: str) -> tuple[bytes, str]:
    if image.startswith(("http://", "https://", "s3://")):
        return json.dumps({"url": image}).encode(), "application/json"
    path = Path(image)
    if not path.is_file():
        _fail(f"{image} is neither an image file nor an http(s)/s3 URL")
    content_type = mimetypes.guess_type(path.name)[0] or "application/x-image"
    return path.read_bytes(), content_type


@app.command()
def invoke(
    image: Annotated[str, typer.Argument(help="Image file, or an https:// or s3:// URL.")],
    endpoint_name: Annotated[str | None, typer.Option(help="Endpoint (default: settings).")] = None,
    backend: Backend = None,
    state_dir: StateDir = None,
    logits: Annotated[bool, typer.Option(help="Ask for the raw logits.")] = False,
) -> None:
    """Send an image to the endpoint through boto3's sagemaker-runtime client."""
    from dogops.backends import get_backend

    settings = _settings(backend, state_dir)
    name = endpoint_name or settings.endpoint.name
    body, content_type = _payload(image)
    accept = "application/x-logits+json" if logits else "application/json"
    backend_steps = get_backend(settings)  # one set of clients for the lookup and the call
    endpoint = _find_endpoint(backend_steps.operations, settings, name)
    answer = backend_steps.invoke_endpoint(endpoint, body, content_type, accept)
    typer.echo(answer.decode())


def _find_endpoint(operations: Any, settings: Any, name: str) -> Any:
    """How `operations`' backend reaches endpoint `name` (a local one must be running)."""
    return operations.endpoint_address(settings, name)


@app.command("invoke-lambda")
def invoke_lambda(
    event_file: Annotated[Path, typer.Argument(help="JSON event, like the console's Test event.")],
    endpoint_name: Annotated[str | None, typer.Option()] = None,
    state_dir: StateDir = None,
) -> None:
    """Run the packaged Lambda handler locally in its own process, against the local endpoint."""
    from dogops.backends import operations_for
    from dogops.local.lambda_runner import invoke_local_lambda

    settings = _settings("local", state_dir)
    try:
        event = json.loads(event_file.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read a JSON event from {event_file}: {exc}")
        return
    endpoint = _find_endpoint(operations_for("local"), settings,
                              endpoint_name or settings.endpoint.name)
    typer.echo(json.dumps(invoke_local_lambda(event, endpoint), indent=1))


@app.command()
def status(state_dir: StateDir = None) -> None:
    """Show the local endpoints, their workers and the Prefect server."""
    from dogops.local.endpoint import endpoint_status, list_endpoints
    from dogops.services import api_url, export_hint, is_healthy

    settings = _settings("local", state_dir)
    root = settings.state_dir.resolve()
    url = os.environ.get("PREFECT_API_URL") or api_url()
    typer.echo(f"Prefect API {url}: {'up' if is_healthy(url) else 'down'}")
    typer.echo(f"  for plain prefect commands: {export_hint(url)}")
    endpoints = list_endpoints(root)
    if not endpoints:
        typer.echo("no local endpoint running")
    for endpoint in endpoints:
        document = endpoint_status(endpoint.name, root)
        in_progress = render.rollout_line(endpoint.name, document)
        if in_progress:
            typer.echo(in_progress)
        typer.echo(json.dumps(document, indent=1, default=str))


@app.command()
def stop(
    state_dir: StateDir = None,
    prefect: Annotated[bool, typer.Option(help="Also stop the Prefect server.")] = True,
) -> None:
    """Stop the local endpoints and the local Prefect server."""
    from dogops.local.endpoint import list_endpoints, stop_endpoint
    from dogops.services import stop_prefect_server

    settings = _settings("local", state_dir)
    root = settings.state_dir.resolve()
    for endpoint in list_endpoints(root):
        stop_endpoint(endpoint.name, root)
        typer.echo(f"stopped endpoint {endpoint.name}")
    if prefect and stop_prefect_server(root):
        typer.echo("stopped the Prefect server")


@app.command()
def cost(
    backend: Backend = None,
    tuning_seconds: Annotated[float, typer.Option(min=0, help="Tuning instance-seconds.")] = 0,
    training_seconds: Annotated[float, typer.Option(min=0, help="Training instance-seconds.")]
    = 0,
    instance_type: Annotated[str | None, typer.Option(help="What-if: this instance type...")]
    = None,
    hours: Annotated[float | None, typer.Option(min=0, help="... for this many hours.")] = None,
    count: Annotated[int, typer.Option(min=1, help="... this many instances.")] = 1,
) -> None:
    """Estimated cost of the configured setup, or what-if `--instance-type T --hours H`
    (prices from dogops/prices.json)."""
    from dogops.cost import estimate_cost, what_if

    if instance_type is not None or hours is not None:
        if instance_type is None or hours is None:
            _fail("a what-if needs both --instance-type and --hours")
            return
        typer.echo(what_if(instance_type, hours, count).text())
        return
    typer.echo(estimate_cost(_settings(backend), tuning_seconds, training_seconds).text())


@app.command()
def retrain(
    data_dir: Annotated[Path | None, typer.Option(help="Default: the registry's data.")] = None,
    resync: Annotated[bool, typer.Option(help="Sync the registry's source folder again.")]
    = False,
    margin: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    backend: Backend = None,
    state_dir: StateDir = None,
    endpoint_name: EndpointName = None,
) -> None:
    """Retrain (warm start) and promote only a better model; no options needed after one run."""
    from flows.retrain import retrain as retrain_flow

    result = _run_flow(retrain_flow, state_dir, {
        "data_dir": str(data_dir) if data_dir else None, "resync": resync, "margin": margin,
        "backend": backend, "state_dir": str(state_dir) if state_dir else None,
        **_endpoint(endpoint_name),
    })
    typer.echo(json.dumps({
        "promoted": result.promoted, "reason": result.reason,
        "candidate": result.candidate.version,
        "data": result.data.uri if result.data else None,
        "data_files": result.data.files_total if result.data else None,
        "live": (result.registry_entry or result.live_before).version
        if (result.registry_entry or result.live_before) else None,
    }, indent=1))


@app.command()
def rollback(
    to_version: Annotated[int | None, typer.Option(min=1, help="Default: the previous one.")]
    = None,
    backend: Backend = None,
    state_dir: StateDir = None,
    endpoint_name: EndpointName = None,
) -> None:
    """Put the registry's previous model (or --to-version) back on the endpoint."""
    from flows.rollback import rollback as rollback_flow

    result = _run_flow(rollback_flow, state_dir, {
        "to_version": to_version, "backend": backend,
        "state_dir": str(state_dir) if state_dir else None, **_endpoint(endpoint_name),
    })
    replaced = f" (was v{result.replaced.version})" if result.replaced else ""
    typer.echo(f"{result.endpoint.name} now serves v{result.restored.version} "
               f"{result.restored.model_version}{replaced}")


@app.command()
def rollout(
    model_dir: Annotated[Path, typer.Option(help="A model folder as train.py writes it.")],
    canary_percent: Annotated[int | None, typer.Option(min=1, max=50, help=(
        "Share of capacity/requests for the new model first (default: settings, 10)."))] = None,
    bake_seconds: Annotated[int | None, typer.Option(min=0, max=3600, help=(
        "How long each step is watched (default: settings, 300)."))] = None,
    backend: Backend = None,
    state_dir: StateDir = None,
    endpoint_name: EndpointName = None,
) -> None:
    """Roll a model folder onto the endpoint through the guarded rollout; exit 0 when promoted,
    3 when rolled back, with the decision and the figures it was made on."""
    from dogops.rollout import EXIT_PROMOTED, EXIT_ROLLED_BACK, decision_text
    from flows.rollout import rollout as rollout_flow

    result = _run_flow(rollout_flow, state_dir, {
        "model_dir": str(model_dir), "canary_percent": canary_percent,
        "bake_seconds": bake_seconds, "backend": backend,
        "state_dir": str(state_dir) if state_dir else None, **_endpoint(endpoint_name),
    })
    typer.echo(decision_text(result.outcome))
    raise typer.Exit(EXIT_PROMOTED if result.outcome.promoted else EXIT_ROLLED_BACK)


@app.command()
def teardown(
    apply: Annotated[bool, typer.Option(help="Delete; without it, only list (dry run).")]
    = False,
    backend: Backend = None,
    state_dir: StateDir = None,
    endpoint_name: EndpointName = None,
) -> None:
    """List (dry run) or, with --apply, delete what runs for the endpoint; data, models and the
    registry stay."""
    from flows.teardown import teardown as teardown_flow

    lines = _run_flow(teardown_flow, state_dir, {
        "apply": apply, "backend": backend, "state_dir": str(state_dir) if state_dir else None,
        **_endpoint(endpoint_name),
    })
    verb = "deleted" if apply else "would delete (dry run; --apply deletes)"
    typer.echo(f"{verb}: {len(lines)}")
    for line in lines:
        typer.echo(f"  {line}")


@app.command()
def wake(
    backend: Backend = None,
    state_dir: StateDir = None,
    endpoint_name: EndpointName = None,
) -> None:
    """Bring an endpoint idle-guard put to sleep back, under the same name."""
    from flows.wake import wake as wake_flow

    result = _run_flow(wake_flow, state_dir, {
        "backend": backend, "state_dir": str(state_dir) if state_dir else None,
        **_endpoint(endpoint_name),
    })
    slept = (f" (asleep since {result.was_asleep.since:%Y-%m-%d %H:%M} UTC)"
             if result.was_asleep else "")
    typer.echo(f"{result.endpoint.name} serves v{result.live.version} "
               f"{result.live.model_version} at {result.endpoint.url}{slept}")


@app.command()
def monitor(
    backend: Backend = None,
    state_dir: StateDir = None,
    endpoint_name: EndpointName = None,
    days: Annotated[int | None, typer.Option(help="UTC days to read, today included.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Top-1 probability under which an answer is unsure.")
    ] = None,
) -> None:
    """Summarise the endpoint's captured traffic (endpoint.capture_percent > 0): requests per
    day, predicted classes vs the test split, top-1 probabilities; the artifacts are in the UI."""
    from dogops.settings import MonitorConfig
    from flows.monitor import monitor_flow

    chosen = {k: v for k, v in (("lookback_days", days), ("low_confidence_threshold", threshold))
              if v is not None}
    report = _run_flow(monitor_flow, state_dir, {
        "backend": backend, "state_dir": str(state_dir) if state_dir else None,
        **_endpoint(endpoint_name),
        "monitor_config": MonitorConfig(**chosen) if chosen else None,
    })
    typer.echo("\n".join(render.monitor_lines(report)))


@app.command("registry")
def registry_table(
    backend: Backend = None,
    state_dir: StateDir = None,
    endpoint_name: Annotated[str | None, typer.Option(help="Only this endpoint's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Rows as JSON.")] = False,
) -> None:
    """The model registry: versions, metrics, data, and which one is live (or asleep)."""
    from dogops.registry import registry_for

    reg = registry_for(_settings(backend, state_dir))
    document = reg.load()
    rows = render.registry_rows(document, endpoint_name)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    typer.echo(f"registry {reg.uri}")
    if not rows:
        typer.echo("no model yet: run `dogops run --data-dir FOLDER` (train-and-deploy) first")
        return
    lines = render.table_lines(rows, render.REGISTRY_COLUMNS)
    typer.echo("\n".join(lines + render.rolled_back_lines(document, endpoint_name)))


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Use this data instead of the demo set.")]
    = None,
    state_dir: StateDir = None,
) -> None:
    """The whole pipeline on the local backend, then one prediction through boto3."""
    from dogops_cli import demo as demo_module

    demo_module.run_demo(data_dir, state_dir)


if __name__ == "__main__":
    app()
