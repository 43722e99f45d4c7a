"""What a training run leaves behind: the model dir (model.pth, metadata.json, the serving code
in code/) and the per-class test report. A sibling of train.py, shipped with it in model_code/."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

try:
    from model_code import net
except ImportError:  # run as `python train.py` inside model_code/ (how SageMaker starts it)
    import net  # type: ignore[no-redef]

SERVING_FILES = ("inference.py", "net.py", "url_fetch.py", "requirements.txt")


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def save_model(model_dir: Path, model: net.Classifier, metadata: dict[str, Any]) -> None:
    """model.pth, metadata.json and code/ (serving code), each written under a temporary name
    and renamed, so a failed run never leaves a half-written model behind."""
    model_dir.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    tmp_model = model_dir / ".model.pth.tmp"
    tmp_code = Path(tempfile.mkdtemp(dir=model_dir, prefix=".code."))
    try:
        torch.save(model.state_dict(), tmp_model)
        for name in SERVING_FILES:
            shutil.copy2(here / name, tmp_code / name)
        tmp_code.chmod(0o755)
        code_dir = model_dir / "code"
        if code_dir.exists():
            shutil.rmtree(code_dir)
        os.replace(tmp_code, code_dir)
        os.replace(tmp_model, model_dir / "model.pth")
        write_json_atomic(model_dir / "metadata.json", metadata)
    finally:
        tmp_model.unlink(missing_ok=True)
        shutil.rmtree(tmp_code, ignore_errors=True)


def per_class_report(predictions: torch.Tensor, labels: torch.Tensor,
                     class_names: Sequence[str]) -> tuple[dict[str, float], list[list[int]]]:
    """Test accuracy per class name and the confusion matrix (rows: true, columns: predicted)."""
    n = len(class_names)
    matrix = torch.zeros(n, n, dtype=torch.long)
    for true, pred in zip(labels.tolist(), predictions.tolist(), strict=True):
        matrix[true, pred] += 1
    per_class = {}
    for i, name in enumerate(class_names):
        row_total = int(matrix[i].sum())
        per_class[name] = float(matrix[i, i]) / row_total if row_total else 0.0
    return per_class, matrix.tolist()
