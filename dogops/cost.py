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

from dogops.backends import Operations, operations_for
from dogops.errors import UserInputError
from dogops.results import TuningResult
from dogops.settings import Settings

PRICES_FILE = Path(__file__).with_name("prices.json")
SECONDS_PER_HOUR = 3600.0

Period = Literal["this run", "per day", "per month", "so far", "per 1,000 requests"]
# A serverless endpoint bills memory x request duration; the duration is an assumption until
# measured (CloudWatch ModelLatency), and the cost line says so.
SERVERLESS_REQUEST_S = 0.25


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
    sagemaker_serverless_per_gb_second: float | None = Field(
        None, ge=0, description="Serverless Inference duration price per GB-second of memory."
    )
    lambda_: LambdaPrices = Field(alias="lambda")
    checked: list[str] = Field(
        default_factory=list,
        description="Figures someone checked against the provider's price list, as "
        "'<table>/<key>' (e.g. 'sagemaker_hosting_per_hour/ml.m5.large'); every other figure is "
        "marked 'not checked' in the cost tables.",
    )

    def is_checked(self, table: str, key: str) -> bool:
        return f"{table}/{key}" in self.checked


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
    price_checked: bool = Field(
        False, description="The unit price was checked against a price list (prices.json)."
    )


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
                "price_checked": "yes" if line.price_checked else "NOT CHECKED",
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
        if self.backend == "what-if":
            out.append("each line is one option: the instance type as an endpoint, or training")
        else:
            out.append(
                f"this run: {self.total('this run'):,.2f} {self.currency}; endpoint "
                f"{self.total('per day', 'endpoint at min'):,.2f}-"
                f"{self.total('per day', 'endpoint at max'):,.2f} {self.currency}/day; Lambda "
                f"{self.total('per month', 'lambda'):,.2f} {self.currency}/month"
            )
        out += [f"{line.item}: {line.note}" for line in self.lines if line.note]
        unchecked = sorted({line.resource for line in self.lines
                            if not line.price_checked and line.unit_price is not None})
        if unchecked:
            out.append(f"prices NOT checked against a price list: {', '.join(unchecked)} "
                       "(see `checked` in prices.json)")
        out.append(f"prices: {self.prices_source} (as of {self.prices_as_of})")
        return "\n".join(out)


def tuning_seconds(tuning: TuningResult | None) -> float:
    """Instance-seconds the tuning job billed in this run: 0 when an existing job was reused."""
    if tuning is None or tuning.reused:
        return 0.0
    return float(sum(trial.seconds for trial in tuning.trials))


def tuning_billable_seconds(tuning: TuningResult | None) -> float | None:
    """Seconds the tuning job's trials were billed (managed spot: BillableTimeInSeconds, a
    trial without one counted at its run time); None when no trial reports it."""
    if tuning is None or tuning.reused:
        return None
    if all(trial.billable_seconds is None for trial in tuning.trials):
        return None
    return float(sum(trial.seconds if trial.billable_seconds is None else trial.billable_seconds
                     for trial in tuning.trials))


def _priced(
    item: str, resource: str, quantity: float, unit: str, price: float | None, period: Period,
    note: str = "", checked: bool = False,
) -> CostLine:
    missing = f"no price for {resource} in the price table: add it to prices.json"
    return CostLine(
        item=item, resource=resource, quantity=quantity, unit=unit, unit_price=price,
        cost=None if price is None else quantity * price, period=period,
        note=note if price is not None else "; ".join(n for n in (note, missing) if n),
        price_checked=checked and price is not None,
    )


TRAINING, HOSTING = "sagemaker_training_per_hour", "sagemaker_hosting_per_hour"


def estimate_cost(
    settings: Settings,
    tuning_s: float = 0.0,
    training_s: float = 0.0,
    prices: Prices | None = None,
    training_billable_s: float | None = None,
    tuning_billable_s: float | None = None,
    operations: Operations | None = None,
) -> CostEstimate:
    """The cost table for one run of `settings`; see the module docstring for the formulas.
    `training_billable_s` (SageMaker's BillableTimeInSeconds) prices the final training when
    given: with managed spot it is less than `training_s`, and the line says by how much.
    `operations` (a flow run's `backend.operations`) says what the prices stand for."""
    prices = prices or load_prices()
    train_prices = prices.sagemaker_training_per_hour
    training = settings.training
    train_note = (f"{training_s:,.0f} instance-seconds" if training_s
                  else "reused model: no training billed")
    billed_s = training_s
    if training_billable_s is not None and training_s:
        billed_s = training_billable_s
        train_note = spot_note(training_s, training_billable_s,
                               train_prices.get(training.training_instance_type))
    tune_note = f"{tuning_s:,.0f} instance-seconds" if tuning_s else "reused or no tuning"
    tune_billed_s = tuning_s
    if tuning_billable_s is not None and tuning_s:
        tune_billed_s = tuning_billable_s
        tune_note = spot_note(tuning_s, tuning_billable_s,
                              train_prices.get(training.tuning_instance_type), "tuning")
    lines = [
        _priced("tuning", training.tuning_instance_type, tune_billed_s / SECONDS_PER_HOUR,
                "instance-hours", train_prices.get(training.tuning_instance_type), "this run",
                tune_note, prices.is_checked(TRAINING, training.tuning_instance_type)),
        _priced("training", training.training_instance_type, billed_s / SECONDS_PER_HOUR,
                "instance-hours", train_prices.get(training.training_instance_type), "this run",
                train_note, prices.is_checked(TRAINING, training.training_instance_type)),
    ]
    lines += endpoint_lines(settings, prices)
    config = settings.lambda_
    concurrency = config.provisioned_concurrency if config.enabled else 0
    gb_seconds = concurrency * (config.memory_mb / 1024) * prices.hours_per_month * SECONDS_PER_HOUR
    lines.append(_priced(
        "lambda provisioned concurrency", config.function_name, gb_seconds, "GB-seconds",
        prices.lambda_.provisioned_concurrency_per_gb_second, "per month",
        f"{concurrency} x {config.memory_mb} MB x {prices.hours_per_month:g} h"
        + ("" if concurrency else " (provisioned concurrency off)"),
        prices.is_checked("lambda", "provisioned_concurrency_per_gb_second"),
    ))
    label = (operations or operations_for(settings.backend)).price_basis(prices.region)
    return CostEstimate(
        backend=settings.backend, label=label, currency=prices.currency,
        prices_source=prices.source, prices_as_of=prices.as_of, lines=lines,
    )


def endpoint_lines(settings: Settings, prices: Prices) -> list[CostLine]:
    """Instances per day at the scaling range's ends; serverless: idle costs nothing, and a
    price per 1,000 requests (memory x an assumed duration)."""
    endpoint = settings.endpoint
    if endpoint.mode == "serverless":
        gb = endpoint.serverless_memory_mb / 1024
        provisioned = endpoint.serverless_provisioned_concurrency
        idle = ("serverless, no provisioned concurrency: idle costs nothing" if not provisioned
                else f"serverless: {provisioned} provisioned concurrency billed while idle, "
                "not priced here")
        return [
            _priced("endpoint at min", "serverless", 0.0, "GB-seconds", 0.0, "per day", idle),
            _priced("endpoint per 1,000 requests", f"serverless {endpoint.serverless_memory_mb} MB",
                    1000 * SERVERLESS_REQUEST_S * gb, "GB-seconds",
                    prices.sagemaker_serverless_per_gb_second, "per 1,000 requests",
                    f"1,000 x {SERVERLESS_REQUEST_S:g} s (assumed request duration: measure "
                    f"yours, CloudWatch ModelLatency) x {gb:g} GB",
                    prices.is_checked("sagemaker_serverless", "per_gb_second")),
        ]
    scaling = settings.scaling
    if scaling.enabled:
        low, high = scaling.min_capacity, scaling.max_capacity
    else:
        low = high = endpoint.initial_instance_count
    instance = endpoint.instance_type
    return [
        _priced(label, instance, 24.0 * count, "instance-hours",
                prices.sagemaker_hosting_per_hour.get(instance), "per day",
                f"{count} x {instance} x 24 h", prices.is_checked(HOSTING, instance))
        for label, count in (("endpoint at min", low), ("endpoint at max", high))
    ]


def spot_note(training_s: float, billable_s: float, price_per_hour: float | None,
              what: str = "training") -> str:
    """`billed 300 of 1,000 training seconds (managed spot: 70 % saved, 0.16 USD)`."""
    saved_s = max(training_s - billable_s, 0.0)
    share = saved_s / training_s if training_s else 0.0
    money = ("" if price_per_hour is None
             else f", {saved_s / SECONDS_PER_HOUR * price_per_hour:,.2f}")
    kind = "managed spot" if billable_s < training_s else "on-demand"
    return (f"billed {billable_s:,.0f} of {training_s:,.0f} {what} seconds "
            f"({kind}: {share:.0%} saved{money})")


def hosting_price(instance_type: str, prices: Prices | None = None) -> float | None:
    """On-demand price per instance-hour of a SageMaker hosting instance, or None if unknown."""
    return (prices or load_prices()).sagemaker_hosting_per_hour.get(instance_type)


def idle_savings(
    settings: Settings, instances: int, asleep_hours: float, prices: Prices | None = None,
    operations: Operations | None = None,
) -> CostEstimate:
    """What an endpoint asleep (deleted/stopped by idle-guard) saves: per day, and so far."""
    prices = prices or load_prices()
    instance = settings.endpoint.instance_type
    price = hosting_price(instance, prices)
    checked = prices.is_checked(HOSTING, instance)
    lines = [
        _priced("saved while asleep", instance, 24.0 * instances, "instance-hours", price,
                "per day", f"{instances} x {instance} x 24 h not billed", checked),
        _priced("saved while asleep", instance, asleep_hours * instances, "instance-hours",
                price, "so far", f"asleep {asleep_hours:.2f} h", checked),
    ]
    label = (operations or operations_for(settings.backend)).price_basis(prices.region,
                                                                          short=True)
    return CostEstimate(backend=settings.backend, label=f"idle savings, {label}",
                        currency=prices.currency, prices_source=prices.source,
                        prices_as_of=prices.as_of, lines=lines)


def what_if(
    instance_type: str, hours: float, count: int = 1, prices: Prices | None = None
) -> CostEstimate:
    """`count` x `instance_type` for `hours`: as a hosting and as a training instance, where the
    price table has it; an instance type it has under neither is a user error naming the file."""
    prices = prices or load_prices()
    lines = []
    for item, table, by_type in (("endpoint", HOSTING, prices.sagemaker_hosting_per_hour),
                                 ("training", TRAINING, prices.sagemaker_training_per_hour)):
        if instance_type in by_type:
            lines.append(_priced(
                item, instance_type, hours * count, "instance-hours", by_type[instance_type],
                "this run", f"{count} x {instance_type} x {hours:g} h",
                prices.is_checked(table, instance_type),
            ))
    if not lines:
        known = sorted({*prices.sagemaker_hosting_per_hour, *prices.sagemaker_training_per_hour})
        raise UserInputError(
            f"no price for {instance_type} in {PRICES_FILE.name}: add it there (hosting or "
            f"training), or pick one of {', '.join(known)}."
        )
    return CostEstimate(
        backend="what-if", label=f"what-if: {count} x {instance_type} for {hours:g} h",
        currency=prices.currency, prices_source=prices.source, prices_as_of=prices.as_of,
        lines=lines,
    )
