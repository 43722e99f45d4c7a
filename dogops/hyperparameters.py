"""Hyperparameters as both backends hand them to `model_code/train.py`.

One definition, so a trial on the local backend and a SageMaker training job get the same
fixed values and the same string forms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
