"""The command line of `train.py`: its options (each in both spellings, `--learning-rate` and
`--learning_rate`, as SageMaker passes hyperparameters), their checks, and the folders they name
or SageMaker's `SM_*` variables give. `train.py` stays the entry point SageMaker starts; this file
ships beside it in `sourcedir.tar.gz`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

try:
    from model_code import checkpoint, net
except ImportError:  # run as `python train.py` inside model_code/ (how SageMaker starts it)
    import checkpoint  # type: ignore[no-redef]
    import net  # type: ignore[no-redef]

# The first paragraph of train.py's docstring: `--help` says what the script is.
DESCRIPTION = (
    "Train the dog-breed classifier: the one script for SageMaker training jobs, tuning trials "
    "and\nplain machines (successor of the original `hpo.py` and `ec2train1.py`)."
)

EXIT_USER_ERROR = 2


class UsageError(ValueError):
    """A bad argument or folder; the message says what to pass instead."""


# --- arguments ---------------------------------------------------------------------------------


def _unquote(value: str) -> str:
    """`'"64"'` -> `64`: the tuner hands back categorical values wrapped in quotes."""
    value = value.strip()
    while len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return value


def _int(value: str) -> int:
    text = _unquote(value)
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    return int(number)


def _float(value: str) -> float:
    try:
        return float(_unquote(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None


def _bool(value: str) -> bool:
    text = _unquote(value).lower()
    if text in {"1", "true", "yes", "y", "on"}:
        return True
    if text in {"0", "false", "no", "n", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true/false")


def _str(value: str) -> str:
    return _unquote(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"ERROR: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Every option takes both spellings, `--learning-rate` and `--learning_rate`."""
    parser = _Parser(description=DESCRIPTION, allow_abbrev=False)

    def add(name: str, **kwargs: Any) -> None:
        parser.add_argument(f"--{name}", f"--{name.replace('-', '_')}", **kwargs)

    add("learning-rate", type=_float, default=0.001, help="Adam learning rate of the head.")
    add("batch-size", type=_int, default=64)
    add("epochs", type=_int, default=8, help="Maximum epochs.")
    add("patience", type=_int, default=3, help="Stop after this many epochs without a better "
        "validation loss.")
    add("architecture", type=_str, default="efficientnet_lite0",
        help=f"One of {', '.join(net.ARCHITECTURES)}.")
    add("image-size", type=_int, default=224)
    add("seed", type=_int, default=42)
    add("augment", type=_bool, nargs="?", const=True, default=False,
        help="Random crops/flips per epoch (turns the train-split feature cache off).")
    add("skip-corrupt", type=_bool, nargs="?", const=True, default=False,
        help="Skip unreadable images with a warning instead of stopping.")
    add("feature-cache-dir", type=_str, default=None,
        help="Folder for cached backbone features (default: env DOGOPS_FEATURE_CACHE_DIR).")
    add("weights", type=_str, default=None, help="torchvision ResNet-50 weights file (default: "
        "env SM_CHANNEL_WEIGHTS, else the torch hub cache).")
    add("num-threads", type=_int, default=None, help="torch CPU threads.")
    add("num-workers", type=_int, default=None, help="DataLoader workers (default 0 on CPU).")
    add("data-dir", type=_str, default=None, help="Default: env SM_CHANNEL_TRAINING.")
    add("model-dir", type=_str, default=None, help="Default: env SM_MODEL_DIR.")
    add("output-dir", type=_str, default=None,
        help="Default: env SM_OUTPUT_DATA_DIR, else the model dir.")
    add("checkpoint-dir", type=_str, default=None,
        help="Checkpoint after every epoch here and resume from it (default: env "
        "DOGOPS_CHECKPOINT_DIR, else /opt/ml/checkpoints when it exists, else none).")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check arguments; unknown ones (e.g. SageMaker's `_tuning_objective_metric`)
    are reported and ignored."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log(f"ignoring unknown arguments: {' '.join(unknown)}")
    checks = [
        (args.learning_rate > 0, f"--learning-rate must be > 0, got {args.learning_rate}"),
        (args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}"),
        (args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}"),
        (args.patience >= 1, f"--patience must be >= 1, got {args.patience}"),
        (args.image_size >= 32, f"--image-size must be >= 32, got {args.image_size}"),
        (
            args.architecture in net.ARCHITECTURES,
            f"--architecture {args.architecture!r} is unknown: use one of "
            f"{', '.join(net.ARCHITECTURES)}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return args


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    model_dir: Path
    output_dir: Path
    cache_dir: Path | None
    checkpoint_dir: Path | None = None
    weights: str | None = None


def resolve_paths(args: argparse.Namespace, env: Any = None) -> Paths:
    """Folders from the arguments, else SageMaker's variables, read now (not at import)."""
    env = os.environ if env is None else env
    data_dir = args.data_dir or env.get("SM_CHANNEL_TRAINING")
    if not data_dir:
        raise UsageError("no data folder: pass --data-dir PATH (or set SM_CHANNEL_TRAINING).")
    model_dir = args.model_dir or env.get("SM_MODEL_DIR")
    if not model_dir:
        raise UsageError("no model folder: pass --model-dir PATH (or set SM_MODEL_DIR).")
    output_dir = args.output_dir or env.get("SM_OUTPUT_DATA_DIR") or model_dir
    cache = args.feature_cache_dir or env.get("DOGOPS_FEATURE_CACHE_DIR") or None
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else checkpoint.default_dir(env)
    # On SageMaker the ResNet-50 weights arrive in the `weights` channel (dogops.aws.weights).
    weights = args.weights or env.get("SM_CHANNEL_WEIGHTS") or None
    return Paths(Path(data_dir), Path(model_dir), Path(output_dir), Path(cache) if cache else None,
                 ckpt, weights)


def log(message: str) -> None:
    """Progress for people; flushed so a parent process reading our stdout sees it at once."""
    print(f"[train] {message}", flush=True)


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """The run's hyperparameters, as metadata.json records them."""
    return {
        "learning_rate": args.learning_rate, "batch_size": args.batch_size,
        "epochs": args.epochs, "patience": args.patience, "architecture": args.architecture,
        "image_size": args.image_size, "seed": args.seed, "augment": args.augment,
        "skip_corrupt": args.skip_corrupt,
    }
