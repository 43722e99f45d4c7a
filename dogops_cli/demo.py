"""`make demo`: the whole pipeline on the embedded local backend, with a Prefect UI to look at."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import typer

DEMO_TUNING = {"max_jobs": 4, "max_parallel_jobs": 2, "epochs": 6}
DEMO_TRAINING = {"epochs": 6, "image_size": 128}


def run_demo(data_dir: Path | None, state_dir: Path | None) -> None:
    from dogops.services import export_hint, project_prefect

    root = (state_dir or Path(os.environ.get("DOGOPS_STATE_DIR", ".dogops"))).resolve()
    started = time.perf_counter()
    typer.secho("1/4 starting (or reusing) the Prefect server on 127.0.0.1:4200 ...", bold=True)
    with project_prefect(root) as api:
        ui = api.removesuffix("/api")
        typer.echo(f"    Prefect UI: {ui}   ({export_hint(api)} for plain prefect commands)")
        _pipeline(root, data_dir, ui, started)


def _pipeline(root: Path, data_dir: Path | None, ui: str, started: float) -> None:
    """Steps 2-4 of the demo, reporting to the Prefect server at `ui`."""
    if data_dir is None:
        from model_code.demo_data import generate_demo_dataset

        data_dir = root / "demo-data"
        if not (data_dir / "test").is_dir():
            typer.secho("2/4 generating the demo data set ...", bold=True)
            generate_demo_dataset(data_dir)
        else:
            typer.secho(f"2/4 reusing the demo data set in {data_dir}", bold=True)
    else:
        typer.secho(f"2/4 using your data in {data_dir}", bold=True)

    typer.secho("3/4 running the train-and-deploy flow (progress below) ...", bold=True)
    from dogops.settings import TrainingConfig, TuningConfig
    from flows.train_and_deploy import train_and_deploy

    result = train_and_deploy(
        data_dir=str(data_dir),
        backend="local",
        tuning=TuningConfig.model_validate(DEMO_TUNING),
        training=TrainingConfig.model_validate(DEMO_TRAINING),
        state_dir=str(root),
    )

    typer.secho("4/4 asking the endpoint through boto3 sagemaker-runtime ...", bold=True)
    from dogops.local.backend import LocalBackend
    from dogops.settings import load_settings
    from tasks.endpoint import first_test_image

    image, expected = first_test_image(data_dir)
    backend = LocalBackend(load_settings(state_dir=root))
    answer = json.loads(backend.invoke_endpoint(result.endpoint, image.read_bytes(), "image/jpeg"))
    typer.echo(f"    {image.relative_to(data_dir)} (true class {expected})")
    typer.echo(f"    -> predicted {answer['label']} with probability {answer['probability']:.3f}")
    event_file = root / "lambda-test-event.json"
    event_file.write_text(json.dumps({"image": base64.b64encode(image.read_bytes()).decode()}))
    accuracy = result.model.metrics.get("test:accuracy")
    elapsed = time.perf_counter() - started
    typer.secho(f"\nDone in {elapsed:.0f} s.", fg=typer.colors.GREEN, bold=True)
    typer.echo(
        f"  test accuracy      {accuracy:.3f}\n" if accuracy is not None else "",
    )
    typer.echo(
        f"  endpoint           {result.endpoint.url}\n"
        f"  Prefect UI         {ui}  (flow runs, task runs, artifacts)\n"
        f"  try it             .venv/bin/dogops invoke {image}\n"
        f"  the Lambda         .venv/bin/dogops invoke-lambda {event_file}\n"
        f"  status             .venv/bin/dogops status\n"
        f"  stop everything    .venv/bin/dogops stop   (or: make stop)"
    )
