"""The local model store: `state_dir/models/<version>/`, the unpacked models endpoints serve.

It is also the only place a running endpoint loads a new model from (a rollout's `start` on its
control channel): a command that names any other folder is refused, so whoever can send the
command still cannot make the server import code from wherever they like.
"""

from __future__ import annotations

import os
from pathlib import Path

from dogops.errors import UserInputError


def model_store(state_dir: Path) -> Path:
    return Path(state_dir) / "models"


def in_model_store(path: str, store: Path, what: str = "model dir") -> Path:
    """`path` with every symlink resolved, if that lies inside `store` (resolved too); else
    `UserInputError`. Resolving first means a symlink in the store cannot point out of it."""
    root = Path(os.path.realpath(store))
    resolved = Path(os.path.realpath(path))
    if resolved == root or root not in resolved.parents:
        raise UserInputError(
            f"{what} {path} is not inside the model store {root}: a rollout loads only models "
            "that dogops unpacked there (deploy or `dogops rollout --model-dir`)."
        )
    return resolved
