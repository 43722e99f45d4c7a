"""Cost estimate: the figures for a known configuration, from the shipped price table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dogops.cost import PRICES_FILE, estimate_cost, load_prices, tuning_seconds
from dogops.errors import UserInputError
from dogops.results import TrialResult, TuningResult
from dogops.settings import Settings


def by_item(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(r["item"]): r for r in rows}


def test_price_table_names_its_source_and_date() -> None:
    prices = load_prices()
    assert prices.source.startswith("AWS") and len(prices.as_of) == 10
    defaults = Settings()
    assert defaults.training.tuning_instance_type in prices.sagemaker_training_per_hour
    assert defaults.training.training_instance_type in prices.sagemaker_training_per_hour
    assert defaults.endpoint.instance_type in prices.sagemaker_hosting_per_hour


def test_original_configuration_costs(tmp_path: Path) -> None:
    """The original project: g4dn tuning, m5.xlarge training, m5.large endpoint scaling 1..2,
    Lambda with provisioned concurrency 2 x 256 MB, priced from prices.json."""
    settings = Settings(backend="aws")
    estimate = estimate_cost(settings, tuning_s=3600, training_s=1800)
    rows = by_item(estimate.rows())
    assert rows["tuning"]["cost_usd"] == pytest.approx(0.736)
    assert rows["training"]["cost_usd"] == pytest.approx(0.115)
    assert rows["endpoint at min"]["cost_usd"] == pytest.approx(24 * 0.115)
    assert rows["endpoint at max"]["cost_usd"] == pytest.approx(2 * 24 * 0.115)
    # 2 x 0.25 GB x 730 h x 3600 s x $0.0000041667 per GB-second
    assert rows["lambda provisioned concurrency"]["cost_usd"] == pytest.approx(5.475, abs=1e-3)
    assert estimate.total("this run") == pytest.approx(0.851)
    assert estimate.label.startswith("AWS us-east-1")
    text = estimate.text()
    assert "this run: 0.85 USD" in text and "2.76-5.52 USD/day" in text
    assert "5.48 USD/month" in text and "as of" in text


def test_local_backend_is_labelled_as_if_on_aws() -> None:
    settings = Settings(backend="local").merged(lambda_config={"provisioned_concurrency": 0})
    estimate = estimate_cost(settings, tuning_s=0, training_s=0)
    assert "as if this ran on AWS" in estimate.label
    rows = by_item(estimate.rows())
    assert rows["lambda provisioned concurrency"]["cost_usd"] == 0
    assert "provisioned concurrency off" in str(rows["lambda provisioned concurrency"]["note"])


def test_unknown_instance_type_is_reported_not_guessed(tmp_path: Path) -> None:
    table = json.loads(PRICES_FILE.read_text())
    table["sagemaker_hosting_per_hour"] = {}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    estimate = estimate_cost(Settings(), 60, 60, prices=load_prices(path))
    row = by_item(estimate.rows())["endpoint at min"]
    assert row["cost_usd"] is None and "add it to prices.json" in str(row["note"])
    with pytest.raises(UserInputError, match="invalid"):
        path.write_text('{"source": "x"}')
        load_prices(path)


def test_tuning_seconds_counts_only_new_trials() -> None:
    trials = [TrialResult(name=f"t{i}", hyperparameters={}, seconds=100.0) for i in range(3)]
    tuning = TuningResult(job_name="j", objective="validation:loss", minimize=True, trials=trials)
    assert tuning_seconds(tuning) == 300.0
    assert tuning_seconds(tuning.model_copy(update={"reused": True})) == 0.0
    assert tuning_seconds(None) == 0.0
