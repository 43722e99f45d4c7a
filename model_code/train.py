"""Train the dog-breed classifier: the one script for SageMaker training jobs, tuning trials and
plain machines (successor of the original `hpo.py` and `ec2train1.py`).

    python -m model_code.train --data-dir DATA --model-dir MODEL --learning-rate 0.001 \
        --batch-size 64 --epochs 8                       # from the repo root
    cd model_code && python train.py ...                 # how a SageMaker container starts it

Inside SageMaker the folders come from SM_CHANNEL_TRAINING / SM_MODEL_DIR / SM_OUTPUT_DATA_DIR,
read when the script runs (not when arguments are declared, which crashed the original outside
SageMaker). It trains on train/, picks the best epoch on valid/ (early stopping), reports on
test/, and prints metric lines that `metrics.METRIC_DEFINITIONS` read. The user's mistakes end
with `ERROR: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

try:
    from model_code import checkpoint, data, features, metrics, net
except ImportError:  # run as `python train.py` inside model_code/ (how SageMaker starts it)
    import checkpoint  # type: ignore[no-redef]
    import data  # type: ignore[no-redef]
    import features  # type: ignore[no-redef]
    import metrics  # type: ignore[no-redef]
    import net  # type: ignore[no-redef]

try:
    from model_code.train_args import (
        EXIT_USER_ERROR,
        Paths,
        UsageError,
        hyperparameters,
        log,
        parse_args,
        resolve_paths,
    )
except ImportError:  # run as `python train.py` inside model_code/
    from train_args import (  # type: ignore[no-redef]
        EXIT_USER_ERROR,
        Paths,
        UsageError,
        hyperparameters,
        log,
        parse_args,
        resolve_paths,
    )

try:
    from model_code.train_outputs import (
        per_class_report,
        save_model,
        write_json_atomic,
    )
except ImportError:  # run as `python train.py` inside model_code/
    from train_outputs import (  # type: ignore[no-redef]
        per_class_report,
        save_model,
        write_json_atomic,
    )


# --- training ----------------------------------------------------------------------------------


def emit(line: str) -> None:
    """A metric line (see metrics.py), flushed immediately: tuners read them live."""
    print(line, flush=True)


PROGRESS_EVERY_S = 5.0


def progress_printer(stage: str, every_s: float = PROGRESS_EVERY_S,
                     clock: Any = time.monotonic) -> Any:
    """An `on_batch(done, total)` callback printing a `Progress:` line (metrics.progress_line)
    at the first batch, then at most every `every_s`, and at the last: a long stage never goes
    quiet, and a fast one does not flood the log."""
    last = [-float("inf")]

    def on_batch(done: int, total: int) -> None:
        now = clock()
        if done >= total or now - last[0] >= every_s:
            last[0] = now
            emit(metrics.progress_line(stage, done, total))

    return on_batch


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def select_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def small_op_threads(device: torch.device) -> Iterator[None]:
    """One CPU thread while training the head on cached features: its matrix products are so
    small that extra threads cost more in synchronisation than they save (measured ~10x slower
    with 2 threads on a busy 2-core machine)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    predictions: torch.Tensor
    top5_accuracy: float = 0.0


def evaluate(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, batch_size: int,
             device: torch.device) -> EvalResult:
    """Mean loss per image and accuracy as floats (the original floor-divided both)."""
    head.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, preds, in_top5 = 0.0, [], 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x = feats[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device)
            out = head(x)
            total += float(loss_fn(out, y))
            preds.append(out.argmax(1).cpu())
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            in_top5 += int((top == y[:, None]).any(dim=1).sum())
    predictions = torch.cat(preds)
    accuracy = float((predictions == labels.cpu()).float().mean())
    return EvalResult(total / len(labels), accuracy, predictions, in_top5 / len(labels))


def train_epoch_on_features(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor,
                            optimizer: torch.optim.Optimizer, batch_size: int,
                            generator: torch.Generator, device: torch.device) -> float:
    """One epoch of head training on cached features; returns the mean training loss."""
    head.train()
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(labels), generator=generator)
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x, y = feats[idx].to(device), labels[idx].to(device)
        optimizer.zero_grad()
        loss = loss_fn(head(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(order)


@dataclass
class AugmentedTrainer:
    """One epoch of full forward passes with per-epoch random augmentation (cache off)."""

    model: net.Classifier
    dataset: data.ImageDataset
    batch_size: int
    num_workers: int
    skip_corrupt: bool
    skipped: set[str] = field(default_factory=set)

    def epoch(self, optimizer: torch.optim.Optimizer, generator: torch.Generator,
              device: torch.device) -> float:
        self.model.train()
        loss_fn = nn.CrossEntropyLoss()
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True,
                            generator=generator, num_workers=self.num_workers)
        total, count = 0.0, 0
        for images, targets, indices in loader:
            bad = targets < 0
            for index in indices[bad].tolist():
                path = self.dataset.split.samples[index][0]
                if not self.skip_corrupt:
                    raise data.corrupt_image_error(path)
                self.skipped.add(str(path))
            if bad.all():
                continue
            x, y = images[~bad].to(device), targets[~bad].to(device)
            optimizer.zero_grad()
            loss = loss_fn(self.model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
        return total / max(count, 1)


# --- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """The whole training run; returns the metadata it saved."""
    started = time.time()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    seed_everything(args.seed)  # before the head is initialised
    device = select_device()
    num_workers = args.num_workers if args.num_workers is not None else (
        min(4, os.cpu_count() or 1) if device.type == "cuda" else 0)
    log(f"device {device}, data {paths.data_dir}, model {paths.model_dir}")

    splits = data.scan_dataset(paths.data_dir)  # checks the layout before loading any model
    class_names = list(splits["train"].class_names)
    log(f"{len(class_names)} classes; " + ", ".join(f"{k}: {len(v)} images"
                                                    for k, v in splits.items()))

    model = net.build_model(args.architecture, len(class_names), image_size=args.image_size,
                            pretrained=True, weights=paths.weights).to(device)
    weights_id = net.weights_identity(args.architecture, paths.weights)
    feature_sets, cache_hit = _split_features(args, paths, splits, model, device, weights_id)

    # Re-seed so training does not depend on whether the features came from the cache
    # (computing them draws from the global RNG through the DataLoader).
    generator = seed_everything(args.seed)
    head = model.head
    optimizer = torch.optim.Adam(head.parameters(), lr=args.learning_rate)
    augmenter = None
    if args.augment:
        augmenter = AugmentedTrainer(
            model, data.ImageDataset(splits["train"],
                                     net.train_transform(args.image_size, True), args.image_size),
            args.batch_size, num_workers, args.skip_corrupt)
    valid = feature_sets["valid"]
    valid_feats, valid_labels = valid.features.to(device), valid.labels.to(device)
    train = None
    if not args.augment:
        train = (feature_sets["train"].features.to(device),
                 feature_sets["train"].labels.to(device))

    run_id = _run_id(args, weights_id, class_names, splits)
    progress = _resume(paths, run_id, head, optimizer, generator)
    _train_epochs(args, paths, run_id, progress, head, optimizer, generator, device, augmenter,
                  train, (valid_feats, valid_labels))

    metric_values, per_class, confusion = _final_metrics(
        head, device, (valid_feats, valid_labels), feature_sets["test"], class_names, progress)
    skipped = sorted({str(splits[n].root / r) for n, fs in feature_sets.items()
                      for r in fs.skipped} | (augmenter.skipped if augmenter else set()))
    if skipped:
        log(f"WARNING: skipped {len(skipped)} unreadable image(s) (--skip-corrupt)")
    metadata = {
        "architecture": args.architecture,
        "image_size": args.image_size,
        "class_names": class_names,
        "num_classes": len(class_names),
        "hyperparameters": hyperparameters(args),
        "metrics": metric_values,
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion,
        "epochs_run": progress.epoch,
        "best_epoch": progress.best_epoch,
        "resumed_from_epoch": progress.resumed_from,
        "feature_cache_hit": cache_hit,
        "skipped_images": skipped,
        "seconds": round(time.time() - started, 3),
        "device": device.type,
    }
    save_model(paths.model_dir, model.cpu(), metadata)
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.output_dir / "metrics.json",
                      {"metrics": metric_values, "history": progress.history,
                       "best_epoch": progress.best_epoch, "epochs_run": progress.epoch,
                       "feature_cache_hit": cache_hit})
    log(f"saved {paths.model_dir / 'model.pth'} in {metadata['seconds']:.1f} s")
    return metadata


def _split_features(args: argparse.Namespace, paths: Paths, splits: dict[str, Any],
                    model: net.Classifier, device: torch.device,
                    weights_id: str) -> tuple[dict[str, features.FeatureSet], bool]:
    """The frozen backbone's features of the splits the run uses (from the cache when it has
    them; not train's when augmenting), and whether the cache had them all."""
    eval_tf = net.eval_transform(args.image_size)
    extract_batch = 128 if device.type == "cuda" else 16  # CPU: bounds activation memory

    def split_features(name: str) -> tuple[features.FeatureSet, bool]:
        dataset = data.ImageDataset(splits[name], eval_tf, args.image_size)
        workers = features.extraction_workers(device, len(dataset), args.num_workers)
        fs, hit = features.cached_features(
            splits[name], cache_dir=paths.cache_dir, architecture=args.architecture,
            image_size=args.image_size, weights_id=weights_id, skip_corrupt=args.skip_corrupt,
            compute=lambda out_dir: features.extract_features(
                model, dataset, batch_size=extract_batch, device=device,
                skip_corrupt=args.skip_corrupt, num_workers=workers, out_dir=out_dir,
                on_batch=progress_printer(f"features-{name}")))
        state = "hit" if hit else ("miss" if paths.cache_dir else "off (in memory only)")
        log(f"feature cache {state} for {name}: {len(fs.labels)} images")
        for rel in fs.skipped:
            log(f"WARNING: skipped unreadable image {splits[name].root / rel}")
        return fs, hit

    used = ("valid", "test") if args.augment else ("train", "valid", "test")
    feature_sets, hits = {}, []
    for name in used:
        feature_sets[name], hit = split_features(name)
        hits.append(hit)
    return feature_sets, paths.cache_dir is not None and all(hits)


def _run_id(args: argparse.Namespace, weights_id: str, class_names: list[str],
            splits: dict[str, Any]) -> str:
    """What a checkpoint must match to be resumed: the settings and data that shape training."""
    return checkpoint.fingerprint({
        "learning_rate": args.learning_rate, "batch_size": args.batch_size,
        "architecture": args.architecture, "image_size": args.image_size, "seed": args.seed,
        "augment": args.augment, "skip_corrupt": args.skip_corrupt, "weights": weights_id,
        "classes": class_names, "sizes": {k: len(v) for k, v in splits.items()}})


def _resume(paths: Paths, run_id: str, head: nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator) -> checkpoint.Progress:
    """A fresh start, or the state of the last checkpoint of this same run (`run_id`)."""
    resume, why = checkpoint.load(paths.checkpoint_dir, run_id)
    if resume is None:
        log(f"starting at epoch 1 ({why})")
        return checkpoint.Progress()
    head.load_state_dict(resume["head"])
    optimizer.load_state_dict(resume["optimizer"])
    checkpoint.restore_rng_states(resume["rng"], generator)
    log(f"resumed from epoch {resume['epoch']} ({why})")
    return checkpoint.Progress(
        epoch=resume["epoch"], stopped=resume["stopped"], history=resume["history"],
        best_loss=resume["best_loss"], best_epoch=resume["best_epoch"],
        best_state=resume["best_head"], stale=resume["stale"], resumed_from=resume["epoch"])


def _train_epochs(args: argparse.Namespace, paths: Paths, run_id: str, p: checkpoint.Progress,
                  head: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                  device: torch.device, augmenter: AugmentedTrainer | None,
                  train: tuple[torch.Tensor, torch.Tensor] | None,
                  valid: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The epochs left after `p`, with early stopping and a checkpoint after each; then the head
    gets the best epoch's weights."""
    for epoch in range(p.epoch + 1, 0 if p.stopped else args.epochs + 1):
        p.epoch = epoch
        if augmenter is not None:
            train_loss = augmenter.epoch(optimizer, generator, device)
        else:
            assert train is not None
            with small_op_threads(device):
                train_loss = train_epoch_on_features(head, *train, optimizer,
                                                     args.batch_size, generator, device)
        with small_op_threads(device):
            result = evaluate(head, *valid, 512, device)
        p.history.append({"epoch": epoch, "train_loss": train_loss,
                          "validation_loss": result.loss, "validation_accuracy": result.accuracy})
        if result.loss < p.best_loss:  # NaN never counts as better
            p.best_loss, p.best_epoch, p.stale = result.loss, epoch, 0
            p.best_state = copy.deepcopy(head.state_dict())
        else:
            p.stale += 1
            p.stopped = p.stale >= args.patience
        if paths.checkpoint_dir is not None:
            checkpoint.save(paths.checkpoint_dir, {
                "fingerprint": run_id, "epoch": epoch, "stopped": p.stopped, "history": p.history,
                "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                "best_head": p.best_state, "best_loss": p.best_loss, "best_epoch": p.best_epoch,
                "stale": p.stale, "rng": checkpoint.rng_states(generator)})
            log(f"checkpoint after epoch {epoch} saved")
        # After the checkpoint: whoever sees epoch N's line may stop us and we resume after N.
        emit(metrics.epoch_line(epoch, train_loss, result.loss, result.accuracy))
        if p.stopped:
            log(f"early stopping after epoch {epoch}: no better validation loss for "
                f"{p.stale} epochs")
            break
    if p.best_state is not None:
        head.load_state_dict(p.best_state)
    else:
        p.best_epoch = p.epoch
    log(f"selected epoch {p.best_epoch} of {p.epoch}")


def _final_metrics(
    head: nn.Module, device: torch.device, valid: tuple[torch.Tensor, torch.Tensor],
    test: features.FeatureSet, class_names: list[str], p: checkpoint.Progress,
) -> tuple[dict[str, float], dict[str, float], list[list[int]]]:
    """The selected head on valid and test: the metric lines the tuner reads, the metric values,
    the per-class test accuracy and the confusion matrix."""
    final_valid = evaluate(head, *valid, 512, device)
    emit(metrics.validation_line(final_valid.loss, final_valid.accuracy))
    test_result = evaluate(head, test.features.to(device), test.labels.to(device), 512, device)
    for line in metrics.test_lines(test_result.loss, test_result.accuracy,
                                   test_result.top5_accuracy):
        emit(line)
    per_class, confusion = per_class_report(test_result.predictions, test.labels, class_names)
    metric_values = {
        "validation:loss": final_valid.loss,
        "validation:accuracy": final_valid.accuracy,
        "test:loss": test_result.loss,
        "test:accuracy": test_result.accuracy,
        "test:top5_accuracy": test_result.top5_accuracy,
        "train:loss": p.history[p.best_epoch - 1]["train_loss"],
    }
    return metric_values, per_class, confusion


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for the user's mistakes)."""
    try:
        args = parse_args(argv)
        paths = resolve_paths(args)
        run(args, paths)
    except (UsageError, data.DataError, net.WeightsNotFoundError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
