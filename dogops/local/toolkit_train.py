"""`python -m dogops.local.toolkit_train`: the SageMaker training container's `train` command.

It runs `sagemaker_training.trainer.train()`, the function SageMaker's PyTorch training images run:
it reads the job folder under `SAGEMAKER_BASE_DIR`, unpacks `sagemaker_submit_directory` into
`code/`, sets the `SM_*` variables, and starts `sagemaker_program` with the hyperparameters as
arguments, writing `output/success` or `output/failure`.

One shortcut, taken only when it changes nothing: the container pip-installs the code's
`requirements.txt` before each job. When every line of it is an exact pin this Python already has
installed, that install is a no-op that costs seconds per trial, so it is skipped.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*(#.*)?$")


def requirements_satisfied(path: Path) -> bool:
    """True when every requirement line is `name==version` and that version is installed."""
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _PIN.match(line)
        if match is None:
            return False
        try:
            if metadata.version(match.group(1)) != match.group(2):
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


def main() -> None:
    from sagemaker_training import modules, trainer

    has_requirements = modules.has_requirements

    def needs_install(path: str) -> bool:
        found = bool(has_requirements(path))
        return found and not requirements_satisfied(Path(path) / "requirements.txt")

    modules.has_requirements = needs_install
    trainer.train()  # exits the process with the job's exit code


if __name__ == "__main__":
    main()
