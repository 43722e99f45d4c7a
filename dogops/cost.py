"""What a run costs on AWS, estimated from a small editable price table (`dogops/prices.json`).

    this run:   tuning instance-seconds x tuning price + training instance-seconds x training price
    standing:   endpoint instance-hours per day at the scaling range's min and max
                Lambda provisioned concurrency per month (count x memory GB x seconds x price)

The local backend gets the same estimate "as if this ran on AWS": its measured CPU seconds priced
at the configured instance types (a GPU instance would usually finish faster, so this is an upper
bound for tuning). The table carries its `source` and `as_of` date: prices change; check them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dogops.errors import UserInputError
from dogops.results import TuningResult
from dogops.settings import Settings

PRICES_FILE = Path(__file__).with_name("prices.json")
SECONDS_PER_HOUR = 3600.0

Period = Literal["this run", "per day", "per month"]


class LambdaPrices(BaseModel):
    provisioned_concurrency_per_gb_second: float = Field(ge=0)
    provisioned_duration_per_gb_second: float = Field(0.0, ge=0)
    on_demand_duration_per_gb_second: float = Field(0.0, ge=0)
    requests_per_million: float = Field(0.0, ge=0)


class Prices(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    source: str = Field(min_length=1, description="Where the prices come from (URL or document).")
    as_of: str = Field(min_length=1, description="Date the prices were read, YYYY-MM-DD.")
    currency: str = "USD"
    region: str = "us-east-1"
    hours_per_month: float = Field(730.0, gt=0)
    sagemaker_training_per_hour: dict[str, float]
    sagemaker_hosting_per_hour: dict[str, float]
    lambda_: LambdaPrices = Field(alias="lambda")


def load_prices(path: Path | None = None) -> Prices:
    """The price table at `path` (default: the one shipped in the package)."""
    path = Path(path) if path else PRICES_FILE
    try:
        return Prices.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise UserInputError(f"price table {path} does not exist: copy {PRICES_FILE}.") from None
    except (ValidationError, ValueError) as exc:
        raise UserInputError(
            f"price table {path} is invalid ({exc}); it needs source, as_of, "
            "sagemaker_training_per_hour, sagemaker_hosting_per_hour and lambda."
        ) from exc


class CostLine(BaseModel):
    item: str
    resource: str
    quantity: float
    unit: str
    unit_price: float | None = Field(description="Price per unit; None when the table lacks it.")
    cost: float | None
    period: Period
    note: str = ""


class CostEstimate(BaseModel):
    backend: str
    label: str = Field(description="How to read the figures (e.g. 'as if this ran on AWS').")
    currency: str
    prices_source: str
    prices_as_of: str
    lines: list[CostLine]

    def total(self, period: Period, item_prefix: str = "") -> float:
        return sum(line.cost or 0.0 for line in self.lines
                   if line.period == period and line.item.startswith(item_prefix))

    def rows(self) -> list[dict[str, Any]]:
        """Rows for a Prefect table artifact (`cost-estimate`) or any table printer."""
        rows = [
            {
                "item": line.item,
                "resource": line.resource,
                "quantity": round(line.quantity, 4),
                "unit": line.unit,
                f"unit_price_{self.currency.lower()}": line.unit_price,
                f"cost_{self.currency.lower()}": None if line.cost is None else round(line.cost, 4),
                "period": line.period,
                "note": line.note,
            }
            for line in self.lines
        ]
        return rows

    def text(self) -> str:
        """A plain-text table for the CLI, with the label and the prices' source and date."""
        header = ("item", "resource", "quantity", "unit", "cost", "period")
        body = [
            (line.item, line.resource, f"{line.quantity:,.2f}", line.unit,
             "n/a" if line.cost is None else f"{line.cost:,.2f} {self.currency}", line.period)
            for line in self.lines
        ]
        widths = [max(len(str(row[i])) for row in (header, *body)) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [f"Estimated cost ({self.label})", fmt.format(*header).rstrip(),
               fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*row).rstrip() for row in body]
        out.append(
            f"this run: {self.total('this run'):,.2f} {self.currency}; endpoint "
            f"{self.total('per day', 'endpoint at min'):,.2f}-"
            f"{self.total('per day', 'endpoint at max'):,.2f} {self.currency}/day; Lambda "
            f"{self.total('per month', 'lambda'):,.2f} {self.currency}/month"
        )
        out += [f"{line.item}: {line.note}" for line in self.lines if line.note]
        out.append(f"prices: {self.prices_source} (as of {self.prices_as_of})")
        return "\n".join(out)


def tuning_seconds(tuning: TuningResult | None) -> float:
    """Instance-seconds the tuning job billed in this run: 0 when an existing job was reused."""
    if tuning is None or tuning.reused:
        return 0.0
    return float(sum(trial.seconds for trial in tuning.trials))


def _priced(
    item: str, resource: str, quantity: float, unit: str, price: float | None, period: Period,
    note: str = "",
) -> CostLine:
    missing = f"no price for {resource} in the price table: add it to prices.json"
    return CostLine(
        item=item, resource=resource, quantity=quantity, unit=unit, unit_price=price,
        cost=None if price is None else quantity * price, period=period,
        note=note if price is not None else "; ".join(n for n in (note, missing) if n),
    )


def estimate_cost(
    settings: Settings,
    tuning_s: float = 0.0,
    training_s: float = 0.0,
    prices: Prices | None = None,
) -> CostEstimate:
    """The cost table for one run of `settings`; see the module docstring for the formulas."""
    prices = prices or load_prices()
    train_prices = prices.sagemaker_training_per_hour
    host_prices = prices.sagemaker_hosting_per_hour
    training = settings.training
    lines = [
        _priced("tuning", training.tuning_instance_type, tuning_s / SECONDS_PER_HOUR,
                "instance-hours", train_prices.get(training.tuning_instance_type), "this run",
                f"{tuning_s:,.0f} instance-seconds" if tuning_s else "reused or no tuning"),
        _priced("training", training.training_instance_type, training_s / SECONDS_PER_HOUR,
                "instance-hours", train_prices.get(training.training_instance_type), "this run",
                f"{training_s:,.0f} instance-seconds" if training_s
                else "reused model: no training billed"),
    ]
    scaling = settings.scaling
    if scaling.enabled:
        low, high = scaling.min_capacity, scaling.max_capacity
    else:
        low = high = settings.endpoint.initial_instance_count
    instance = settings.endpoint.instance_type
    for label, count in (("endpoint at min", low), ("endpoint at max", high)):
        lines.append(_priced(
            label, instance, 24.0 * count, "instance-hours", host_prices.get(instance), "per day",
            f"{count} x {instance} x 24 h",
        ))
    config = settings.lambda_
    concurrency = config.provisioned_concurrency if config.enabled else 0
    gb_seconds = concurrency * (config.memory_mb / 1024) * prices.hours_per_month * SECONDS_PER_HOUR
    lines.append(_priced(
        "lambda provisioned concurrency", config.function_name, gb_seconds, "GB-seconds",
        prices.lambda_.provisioned_concurrency_per_gb_second, "per month",
        f"{concurrency} x {config.memory_mb} MB x {prices.hours_per_month:g} h"
        + ("" if concurrency else " (provisioned concurrency off)"),
    ))
    label = ("as if this ran on AWS: local CPU seconds priced at the configured instance types"
             if settings.backend == "local" else f"AWS {prices.region}, on-demand")
    return CostEstimate(
        backend=settings.backend, label=label, currency=prices.currency,
        prices_source=prices.source, prices_as_of=prices.as_of, lines=lines,
    )
