"""What a confusion matrix says about each class, at any number of classes.

Plain maths over the test confusion matrix that `model_code/train.py` records (rows: true class,
columns: predicted class): which classes are worst and what they are mistaken for, which pairs
are confused most, and macro-averaged precision, recall and F1 (every class counts the same,
however many test images it has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Matrix = Sequence[Sequence[int]]


@dataclass(frozen=True)
class MacroScores:
    precision: float
    recall: float
    f1: float


def _check(matrix: Matrix, names: Sequence[str]) -> int:
    n = len(matrix)
    if any(len(row) != n for row in matrix):
        raise ValueError("the confusion matrix must be square")
    if names and len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    return n


def _name(names: Sequence[str], index: int) -> str:
    return names[index] if names else str(index)


def accuracy(matrix: Matrix) -> float:
    """Top-1 accuracy: the diagonal's share of all test images."""
    total = sum(map(sum, matrix))
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0


def macro_scores(matrix: Matrix) -> MacroScores:
    """Macro precision/recall/F1 over the classes with test images; a class never predicted has
    precision 0 (as scikit-learn's `zero_division=0`)."""
    n = _check(matrix, [])
    precisions, recalls, f1s = [], [], []
    for i in range(n):
        support = sum(matrix[i])
        if support == 0:
            continue
        predicted = sum(matrix[r][i] for r in range(n))
        p = matrix[i][i] / predicted if predicted else 0.0
        r = matrix[i][i] / support
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    if not recalls:
        return MacroScores(0.0, 0.0, 0.0)
    k = len(recalls)
    return MacroScores(sum(precisions) / k, sum(recalls) / k, sum(f1s) / k)


def per_class_rows(matrix: Matrix, names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class, worst accuracy first, with its most frequent wrong answer."""
    n = _check(matrix, names)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        support = sum(matrix[i])
        wrong = [(matrix[i][j], -j) for j in range(n) if j != i and matrix[i][j] > 0]
        top_count, top_j = max(wrong) if wrong else (0, 1)
        rows.append({
            "class": _name(names, i),
            "test_images": support,
            "correct": matrix[i][i],
            "test_accuracy": round(matrix[i][i] / support, 4) if support else 0.0,
            "most_frequent_wrong_answer": _name(names, -top_j) if wrong else "",
            "times": top_count,
        })
    rows.sort(key=lambda r: (r["test_accuracy"], -r["test_images"], r["class"]))
    return rows


def most_confused(matrix: Matrix, names: Sequence[str], limit: int = 25) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images: (true, predicted, count, share of the true
    class's test images), largest first."""
    n = _check(matrix, names)
    cells = []
    for i in range(n):
        support = sum(matrix[i])
        for j in range(n):
            if i != j and matrix[i][j] > 0:
                cells.append((matrix[i][j], matrix[i][j] / support, i, j))
    cells.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
    return [
        {"true_class": _name(names, i), "predicted_class": _name(names, j), "count": count,
         "share_of_true_class": round(share, 4)}
        for count, share, i, j in cells[:limit]
    ]


def focus_classes(matrix: Matrix, worst: int = 12, cap: int = 20) -> list[int]:
    """Indices to draw a readable confusion matrix of a many-class model: the `worst` classes by
    accuracy and what each is most often mistaken for, at most `cap`, in class order."""
    n = _check(matrix, [])
    rows = per_class_rows(matrix, [str(i) for i in range(n)])
    chosen: list[int] = []
    for row in rows[:worst]:
        for key in ("class", "most_frequent_wrong_answer"):
            if row[key] != "" and int(row[key]) not in chosen and len(chosen) < cap:
                chosen.append(int(row[key]))
    return sorted(chosen)
