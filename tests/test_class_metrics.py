"""Reports that scale with the number of classes: the maths over the confusion matrix and the
tables and plot a person reads at 3 and at 133 classes."""

from __future__ import annotations

import base64
import io

import pytest

from dogops import class_metrics, reporting
from dogops.results import TrainedModel

# rows: true a, b, c; columns: predicted a, b, c
MATRIX = [
    [8, 2, 0],  # a: 80 %, twice taken for b
    [3, 5, 2],  # b: 50 %, mostly taken for a
    [0, 0, 10],  # c: perfect
]
NAMES = ["001.a", "002.b", "003.c"]


def test_macro_scores_match_hand_computed_values() -> None:
    scores = class_metrics.macro_scores(MATRIX)
    precision = (8 / 11 + 5 / 7 + 10 / 12) / 3
    recall = (0.8 + 0.5 + 1.0) / 3
    f1 = sum(2 * p * r / (p + r) for p, r in [(8 / 11, 0.8), (5 / 7, 0.5), (10 / 12, 1.0)]) / 3
    assert scores.precision == pytest.approx(precision)
    assert scores.recall == pytest.approx(recall)
    assert scores.f1 == pytest.approx(f1)
    assert class_metrics.accuracy(MATRIX) == pytest.approx(23 / 30)


def test_a_never_predicted_class_has_precision_zero_and_empty_classes_do_not_count() -> None:
    scores = class_metrics.macro_scores([[2, 0, 0], [2, 0, 0], [0, 0, 0]])
    assert scores.recall == pytest.approx(0.5)  # a: 1.0, b: 0.0; c has no test images
    assert scores.precision == pytest.approx(0.25)  # a: 2/4, b: never predicted -> 0


def test_per_class_rows_worst_first_with_most_frequent_wrong_answer() -> None:
    rows = class_metrics.per_class_rows(MATRIX, NAMES)
    assert [r["class"] for r in rows] == ["002.b", "001.a", "003.c"]
    assert rows[0] == {"class": "002.b", "test_images": 10, "correct": 5, "test_accuracy": 0.5,
                       "most_frequent_wrong_answer": "001.a", "times": 3}
    assert rows[2]["most_frequent_wrong_answer"] == "" and rows[2]["times"] == 0


def test_most_confused_pairs_with_share_of_the_true_class() -> None:
    rows = class_metrics.most_confused(MATRIX, NAMES)
    assert rows[0] == {"true_class": "002.b", "predicted_class": "001.a", "count": 3,
                       "share_of_true_class": 0.3}
    assert [(r["true_class"], r["predicted_class"]) for r in rows[1:]] == [
        ("001.a", "002.b"), ("002.b", "003.c")]
    assert class_metrics.most_confused(MATRIX, NAMES, limit=1) == rows[:1]


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        class_metrics.macro_scores([[1, 2]])
    with pytest.raises(ValueError, match="2 class names"):
        class_metrics.per_class_rows(MATRIX, NAMES[:2])


def _many_class_model(n: int = 133) -> TrainedModel:
    """Class i is right 4 times out of 6 and twice taken for class (i+1) % n; class 7 is the
    worst (only 1 right) and mostly taken for class 99."""
    matrix = [[0] * n for _ in range(n)]
    for i in range(n):
        matrix[i][i] = 4
        matrix[i][(i + 1) % n] = 2
    matrix[7] = [0] * n
    matrix[7][7], matrix[7][99] = 1, 5
    names = [f"{i + 1:03d}.Synthetic_Breed_{i}" for i in range(n)]
    return TrainedModel(
        job_name="job", model_uri="file:///m", hyperparameters={}, class_names=names,
        confusion_matrix=matrix, metrics={"test:accuracy": 0.66, "test:top5_accuracy": 0.97},
        per_class_accuracy={name: matrix[i][i] / 6 for i, name in enumerate(names)},
    )


def test_reports_at_133_classes_name_the_worst_and_the_confusions() -> None:
    model = _many_class_model()
    confused = reporting.most_confused_table(model)
    assert len(confused) == 25
    assert confused[0] == {"true_class": "008.Synthetic_Breed_7",
                           "predicted_class": "100.Synthetic_Breed_99", "count": 5,
                           "share_of_true_class": pytest.approx(5 / 6, abs=1e-4)}
    per_class = reporting.per_class_table(model)
    assert len(per_class) == 133 and per_class[0]["class"] == "008.Synthetic_Breed_7"
    assert per_class[0]["most_frequent_wrong_answer"] == "100.Synthetic_Breed_99"
    markdown = reporting.metrics_markdown(model)
    assert "| top-5 accuracy | 0.9700 |" in markdown and "| macro F1 |" in markdown
    assert "on 133 classes" in markdown


def test_confusion_plot_at_133_classes_has_no_unreadable_tick_labels() -> None:
    """The whole matrix is drawn by class index (sparse numeric ticks); the labelled panel holds at
    most 20 classes, the worst one among them."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = _many_class_model()
    drawn: list[list[str]] = []
    original = reporting._draw_matrix

    def spy(ax, matrix, names, title):  # type: ignore[no-untyped-def]
        drawn.append(names)
        original(ax, matrix, names, title)

    reporting._draw_matrix = spy  # type: ignore[assignment]
    try:
        png = reporting.plots_png(None, model)
    finally:
        reporting._draw_matrix = original  # type: ignore[assignment]
    assert png is not None and png.startswith(b"\x89PNG")
    assert len(drawn) == 1 and len(drawn[0]) <= 20 and "008.Synthetic_Breed_7" in drawn[0]
    image = plt.imread(io.BytesIO(png))
    assert image.shape[1] < 2000  # three panels at 90 dpi, not a 133-label-wide canvas
    assert base64.b64encode(png)
    plt.close("all")


def test_model_without_matrix_still_lists_classes_worst_first() -> None:
    model = TrainedModel(job_name="j", model_uri="file:///m", hyperparameters={},
                         per_class_accuracy={"b": 0.9, "a": 0.5})
    assert [r["class"] for r in reporting.per_class_table(model)] == ["a", "b"]
    assert reporting.most_confused_table(model) == []
