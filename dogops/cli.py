"""`dogops`: run the pipeline, call the endpoint and the Lambda, see and stop what runs."""

from __future__ import annotations

import json
import mimetypes
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from dogops.settings import load_settings

app = typer.Typer(
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
    from dogops.errors import DogopsError
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
        "tuning": TuningConfig.model_validate(tuning) if tuning else None,
        "training": TrainingConfig.model_validate(training) if training else None,
        "endpoint": EndpointConfig(name=endpoint_name) if endpoint_name else None,
        "state_dir": str(state_dir) if state_dir else None,
        "run_smoke_test": smoke_test,
    }
    try:
        result = train_and_deploy(**parameters)
    except DogopsError as exc:
        _fail(str(exc))
        return
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
    from dogops.results import EndpointInfo

    settings = _settings(backend, state_dir)
    name = endpoint_name or settings.endpoint.name
    body, content_type = _payload(image)
    accept = "application/x-logits+json" if logits else "application/json"
    endpoint = _find_endpoint(settings, name) or EndpointInfo(name=name, url="")
    answer = get_backend(settings).invoke_endpoint(endpoint, body, content_type, accept)
    typer.echo(answer.decode())


def _find_endpoint(settings: Any, name: str) -> Any:
    if settings.backend != "local":
        return None
    from dogops.local.endpoint import read_endpoint

    endpoint = read_endpoint(name, settings.state_dir.resolve())
    if endpoint is None:
        _fail(f"no local endpoint named {name!r} is running: run `dogops run` first")
    return endpoint


@app.command("invoke-lambda")
def invoke_lambda(
    event_file: Annotated[Path, typer.Argument(help="JSON event, like the console's Test event.")],
    endpoint_name: Annotated[str | None, typer.Option()] = None,
    state_dir: StateDir = None,
) -> None:
    """Run the packaged Lambda handler locally in its own process, against the local endpoint."""
    from dogops.local.lambda_runner import invoke_local_lambda

    settings = _settings("local", state_dir)
    try:
        event = json.loads(event_file.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read a JSON event from {event_file}: {exc}")
        return
    endpoint = _find_endpoint(settings, endpoint_name or settings.endpoint.name)
    typer.echo(json.dumps(invoke_local_lambda(event, endpoint), indent=1))


@app.command()
def status(state_dir: StateDir = None) -> None:
    """Show the local endpoints, their workers and the Prefect server."""
    from dogops.local.endpoint import endpoint_status, list_endpoints
    from dogops.services import api_url, is_healthy

    settings = _settings("local", state_dir)
    root = settings.state_dir.resolve()
    url = os.environ.get("PREFECT_API_URL") or api_url()
    typer.echo(f"Prefect API {url}: {'up' if is_healthy(url) else 'down'}")
    endpoints = list_endpoints(root)
    if not endpoints:
        typer.echo("no local endpoint running")
    for endpoint in endpoints:
        typer.echo(json.dumps(endpoint_status(endpoint.name, root), indent=1, default=str))


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
) -> None:
    """Estimated cost of the configured setup (prices from dogops/prices.json)."""
    from dogops.cost import estimate_cost

    typer.echo(estimate_cost(_settings(backend), tuning_seconds, training_seconds).text())


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Use this data instead of the demo set.")]
    = None,
    state_dir: StateDir = None,
) -> None:
    """The whole pipeline on the local backend, then one prediction through boto3."""
    from dogops import demo as demo_module

    demo_module.run_demo(data_dir, state_dir)


if __name__ == "__main__":
    app()
