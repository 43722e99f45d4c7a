"""Score models on the held-out test split with their own serving code, and the quality gate.

The gate must compare like with like: the candidate and the live model are scored on the SAME
test images, each through the `code/inference.py` packed inside its own model.tar.gz (the code
that will serve it), via the serving contract `model_fn -> input_fn -> predict_fn -> output_fn`.
So an older live model is judged by its own preprocessing, not by today's.

The model's code runs in a child process whose environment holds no AWS credentials
(`score_model_dir`), never in the flow's process: the archive comes from S3, which the SageMaker
role can write.

When a model's archive cannot be read (moto names a model.tar.gz it never writes), its score falls
back to the metrics recorded when it was trained or promoted, and the score says so; the gate's
markdown then warns that the comparison is not on the same images.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, Field

from dogops.backends.base import Store
from dogops.dataset import split_images
from dogops.errors import OperationFailedError, UserInputError
from dogops.settings import Settings

# The model's code/ folder holds inference.py and the helpers it imports by plain name (net.py).
_HELPERS = ("net",)
_IMPORT_LOCK = threading.Lock()
_MIN_PROBABILITY = 1e-12  # caps the loss of a class the model cannot predict at -ln(1e-12)


class Score(BaseModel):
    """One model's test-split result."""

    accuracy: float
    loss: float | None = None
    n: int = 0
    source: Literal["evaluated", "recorded-metrics"] = "evaluated"
    note: str = ""
    per_class_accuracy: dict[str, float] = Field(default_factory=dict)
    unknown_classes: list[str] = Field(
        default_factory=list, description="Test classes the model has no output for."
    )
    seconds: float = 0.0


class GateDecision(BaseModel):
    """Whether the candidate replaces the live model, and why."""

    promote: bool
    reason: str
    margin: float
    candidate_version: str
    live_version: str | None = None
    candidate: Score
    live: Score | None = None

    @property
    def delta(self) -> float | None:
        return None if self.live is None else self.candidate.accuracy - self.live.accuracy


# --------------------------------------------------------------------------------------------
# Loading a model's own serving code


def load_inference_module(code_dir: Path) -> ModuleType:
    """Import `code_dir/inference.py` under a unique module name, with its own helpers.

    `inference.py` does `from model_code import net` and falls back to `import net`; while it
    loads, `model_code` is hidden and `net` is this folder's `net.py`, so the model's own code is
    used, not the repo's. Modules are cached by folder and content, so scoring twice is cheap.
    """
    code_dir = Path(code_dir).resolve()
    source = code_dir / "inference.py"
    if not source.is_file():
        raise UserInputError(
            f"{source} is missing: a model folder must hold code/inference.py next to model.pth "
            "(the layout model_code/train.py writes)."
        )
    digest = hashlib.sha256(str(code_dir).encode() + source.read_bytes()).hexdigest()[:12]
    name = f"_dogops_eval_{digest}"
    with _IMPORT_LOCK:
        if name in sys.modules:
            return sys.modules[name]
        hidden = ("model_code", "model_code.net", *_HELPERS)
        saved = {key: sys.modules[key] for key in hidden if key in sys.modules}
        try:
            sys.modules["model_code"] = None  # type: ignore[assignment] # makes the import fail
            sys.modules.pop("model_code.net", None)
            for helper in _HELPERS:
                path = code_dir / f"{helper}.py"
                if path.is_file():
                    sys.modules[helper] = _exec_module(f"{name}_{helper}", path)
            return _exec_module(name, source)
        finally:
            for key in hidden:
                sys.modules.pop(key, None)
            sys.modules.update(saved)


def _exec_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for non-.py paths
        raise UserInputError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# --------------------------------------------------------------------------------------------
# Scoring


def list_test_images(test_dir: Path) -> list[tuple[Path, str]]:
    """(image, class name) for every image under `test_dir/<class>/`, sorted."""
    test_dir = Path(test_dir)
    if not test_dir.is_dir():
        raise UserInputError(f"test split {test_dir} does not exist: pass the data folder's test/.")
    # The walk validation and training use: a candidate is scored on exactly the test images.
    found = [(image.path, image.class_name) for image in split_images(test_dir)]
    if not found:
        raise UserInputError(f"test split {test_dir} holds no images in class folders.")
    return found


def evaluate_model_dir(model_dir: Path, test_dir: Path, threads: int = 1) -> dict[str, Any]:
    """Accuracy, mean cross-entropy loss and n of the model in `model_dir` on `test_dir`.

    Each image goes through the model's serving contract as a JSON request asking for every
    class's probability, exactly as the endpoint would answer it. One image at a time is faster
    on one torch thread (measured ~5x on 2 busy cores), so `threads` applies while it runs.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _evaluate(Path(model_dir), Path(test_dir))
    finally:
        torch.set_num_threads(before)


def _evaluate(model_dir: Path, test_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    module = load_inference_module(model_dir / "code")
    model = module.model_fn(str(model_dir))
    images = list_test_images(test_dir)
    correct = 0
    total_loss = 0.0
    per_class: dict[str, list[int]] = {}
    classes_seen: set[str] = set()
    for image, label in images:
        body = json.dumps({"image": base64.b64encode(image.read_bytes()).decode(),
                           "top_k": 1_000_000})
        request = module.input_fn(body.encode(), "application/json")
        answer = json.loads(module.output_fn(module.predict_fn(request, model), "application/json"))
        probabilities = {p["label"]: float(p["probability"]) for p in answer["predictions"]}
        classes_seen.update(probabilities)
        hit = answer["label"] == label
        correct += hit
        total_loss -= math.log(max(probabilities.get(label, 0.0), _MIN_PROBABILITY))
        per_class.setdefault(label, []).append(int(hit))
    n = len(images)
    return {
        "accuracy": correct / n,
        "loss": total_loss / n,
        "n": n,
        "per_class_accuracy": {k: sum(v) / len(v) for k, v in sorted(per_class.items())},
        "unknown_classes": sorted(set(per_class) - classes_seen),
        "seconds": round(time.perf_counter() - started, 3),
    }


# The only variables a scoring child gets. Everything else, AWS_* credentials, AWS_PROFILE,
# container/web-identity credential pointers and Prefect API keys included, stays behind.
_CHILD_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS")
# ...plus these, so that boto3 in the child finds no credentials anywhere: no config or
# credentials file, and no instance-metadata (IMDS) role.
_CHILD_ENV_NO_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                     "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
SCORE_TIMEOUT_S = 3600.0


def scoring_environment(home: Path) -> dict[str, str]:
    """The environment of the process that runs a model's own code: no credentials."""
    import dogops

    env = {k: os.environ[k] for k in _CHILD_ENV_KEEP if k in os.environ}
    env.update(_CHILD_ENV_NO_AWS)
    env["HOME"] = str(home)  # not the operator's home, where ~/.aws lives
    env["PYTHONPATH"] = str(Path(dogops.__file__).resolve().parents[1])  # this dogops
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def score_model_dir(model_dir: Path, test_dir: Path, timeout_s: float = SCORE_TIMEOUT_S) -> Score:
    """Score a model with its own code in a child process that holds no AWS credentials.

    The code in a model.tar.gz comes from S3, which the SageMaker role can write: it must never
    run in the flow's process, next to the operator's credentials. The child sees only the model
    folder and the test images; its JSON answer on stdout is the score.
    """
    with tempfile.TemporaryDirectory(prefix="dogops-score-") as home:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "dogops.evaluation", str(Path(model_dir).resolve()),
                 str(Path(test_dir).resolve())],
                env=scoring_environment(Path(home)), cwd=home, capture_output=True, text=True,
                timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OperationFailedError(
                f"scoring {model_dir} took over {timeout_s:.0f} s: its inference code hangs."
            ) from exc
    if done.returncode != 0:
        raise OperationFailedError(
            f"scoring {model_dir} with its own code/inference.py failed (exit "
            f"{done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    lines = done.stdout.strip().splitlines()
    return Score(source="evaluated", **json.loads(lines[-1]))


def recorded_score(metrics: dict[str, float], why: str) -> Score:
    """A score from metrics recorded at training time (not comparable image for image)."""
    if "test:accuracy" not in metrics:
        raise UserInputError(
            f"cannot score the model: {why}, and it has no recorded test:accuracy metric."
        )
    return Score(
        accuracy=float(metrics["test:accuracy"]),
        loss=float(metrics["test:loss"]) if "test:loss" in metrics else None,
        source="recorded-metrics",
        note=f"{why}; used the test metrics recorded at training time",
    )


def fetch_model_dir(
    model_uri: str, version: str, settings: Settings, store: Store | None = None
) -> Path | None:
    """Unpack the model's archive in `store` (default: `settings.backend`'s) into
    `<state_dir>/evaluation/<version>/` (once); None when the archive does not exist (e.g. on
    moto, which never writes one)."""
    from dogops.backends import store_for
    from dogops.local.training import extract_model_archive

    dest = settings.state_dir.expanduser().resolve() / "evaluation" / (version or "unversioned")
    if (dest / "code" / "inference.py").is_file():
        return dest
    scratch = dest.with_name(dest.name + ".tar.gz")
    archive = (store or store_for(settings)).archive_file(model_uri, scratch)
    if archive is None:
        return None
    try:
        return extract_model_archive(archive, dest)
    finally:
        scratch.unlink(missing_ok=True)


def score_model(
    model_uri: str, version: str, metrics: dict[str, float], test_dir: Path, settings: Settings,
    store: Store | None = None,
) -> Score:
    """Evaluate the archived model (in `store`, default `settings.backend`'s) on `test_dir`, or
    fall back to its recorded metrics."""
    model_dir = fetch_model_dir(model_uri, version, settings, store)
    if model_dir is None:
        return recorded_score(metrics, f"its archive {model_uri} does not exist")
    return score_model_dir(model_dir, test_dir)


# --------------------------------------------------------------------------------------------
# The gate


def decide(
    candidate: Score, live: Score | None, margin: float, candidate_version: str,
    live_version: str | None = None,
) -> GateDecision:
    """Promote when there is no live model, or the candidate's test accuracy beats the live
    model's by at least `margin` (absolute, e.g. 0.01 = one percentage point)."""
    if not math.isfinite(margin) or margin < 0:
        raise UserInputError(f"margin must be a finite number >= 0, got {margin}.")
    promote, reason = _verdict(candidate, live, margin, candidate_version, live_version)
    return GateDecision(
        promote=promote, reason=reason, margin=margin, candidate_version=candidate_version,
        live_version=live_version, candidate=candidate, live=live,
    )


def _verdict(
    candidate: Score, live: Score | None, margin: float, candidate_version: str,
    live_version: str | None,
) -> tuple[bool, str]:
    if live is None:
        return True, "no live model yet: the candidate is the first"
    if live_version is not None and candidate_version == live_version:
        return False, (f"the candidate is the live model ({live_version}): same content, "
                       "nothing to promote")
    delta = candidate.accuracy - live.accuracy
    # A tiny epsilon so that "exactly the margin" promotes despite float rounding.
    if delta + 1e-9 >= margin:
        return True, (f"candidate test accuracy {candidate.accuracy:.4f} beats the live model's "
                      f"{live.accuracy:.4f} by {delta:+.4f} (margin {margin:.4f})")
    return False, (f"candidate test accuracy {candidate.accuracy:.4f} vs live "
                   f"{live.accuracy:.4f}: {delta:+.4f} is below the margin {margin:.4f}; the "
                   "live endpoint keeps its model")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def gate_markdown(decision: GateDecision, approval: str | None = None) -> str:
    """The `quality-gate` artifact: the decision, both scores, and caveats."""
    verdict = "PROMOTE" if decision.promote else "KEEP THE LIVE MODEL"
    lines = [f"# Quality gate: {verdict}", "", decision.reason, "",
             "| model | version | test accuracy | test loss | images | scored by |",
             "|---|---|---|---|---|---|"]
    rows: list[tuple[str, str, Score]] = [
        ("candidate", decision.candidate_version, decision.candidate)
    ]
    if decision.live is not None:
        rows.append(("live", decision.live_version or "?", decision.live))
    for role, version, score in rows:
        lines.append(f"| {role} | `{version}` | {_fmt(score.accuracy)} | {_fmt(score.loss)} | "
                     f"{score.n or 'n/a'} | {score.source} |")
    lines += ["", f"Margin: candidate must beat live test accuracy by {decision.margin:.4f}."]
    if decision.delta is not None:
        lines.append(f"Difference (candidate - live): {decision.delta:+.4f}.")
    scored = [("candidate", decision.candidate)]
    if decision.live is not None:
        scored.append(("live", decision.live))
    notes = [f"{role}: {score.note}" for role, score in scored if score.note]
    if any(score.source == "recorded-metrics" for _, score in scored):
        notes.append("At least one score comes from recorded metrics, not from the same test "
                     "images: the comparison is approximate.")
    for role, score in scored:
        if score.unknown_classes:
            notes.append(f"The {role} model has no output for test classes "
                         f"{', '.join(score.unknown_classes)} (counted as wrong).")
    if approval:
        notes.append(approval)
    if notes:
        lines += ["", "Notes:", *[f"- {note}" for note in notes]]
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    """`python -m dogops.evaluation MODEL_DIR TEST_DIR`: the scoring child (see
    `score_model_dir`); prints the result as one JSON line."""
    if len(argv) != 2:
        print("usage: python -m dogops.evaluation MODEL_DIR TEST_DIR", file=sys.stderr)
        return 2
    result = evaluate_model_dir(Path(argv[0]), Path(argv[1]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
