"""Hyperparameters as both backends hand them to `model_code/train.py`.

One definition, so a trial on the local backend and a SageMaker training job get the same
fixed values and the same string forms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dogops.settings import TrainingConfig, TuningConfig


def hp_value(value: Any) -> str:
    """SageMaker hyperparameters are strings; booleans as JSON so train.py's parser reads them."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def as_arguments(hyperparameters: Mapping[str, Any]) -> list[str]:
    """`--name value` pairs, as the SageMaker container passes hyperparameters to an entry point."""
    args: list[str] = []
    for name, value in hyperparameters.items():
        args += [f"--{name}", hp_value(value)]
    return args


def static_hyperparameters(tuning: TuningConfig, training: TrainingConfig) -> dict[str, Any]:
    """What every tuning trial gets unchanged (SageMaker's StaticHyperParameters)."""
    return {
        "epochs": tuning.epochs,
        "patience": training.patience,
        "architecture": training.architecture,
        "image_size": training.image_size,
        "seed": training.seed,
        "augment": training.augment,
    }


@dataclass(frozen=True)
class SearchSpace:
    """What tuning searches, for both backends: the local tuner (Optuna) and SageMaker's tuner.

    The learning rate is drawn on a log scale whenever the range is a range: 0.001..0.1 spans two
    decades, and a uniform draw would spend 90% of the budget above 0.01 (SageMaker's Auto scaling
    type picks logarithmic here too). A one-point range (min == max) is drawn linearly.
    """

    learning_rate_min: float
    learning_rate_max: float
    learning_rate_log: bool
    batch_sizes: tuple[int, ...]


def search_space(tuning: TuningConfig) -> SearchSpace:
    """The one search-space definition (settings bound it: min > 0, min <= max)."""
    return SearchSpace(
        learning_rate_min=tuning.learning_rate_min,
        learning_rate_max=tuning.learning_rate_max,
        learning_rate_log=tuning.learning_rate_max > tuning.learning_rate_min,
        batch_sizes=tuple(tuning.batch_sizes),
    )
