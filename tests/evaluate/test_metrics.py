"""Metrics against small examples worked out by hand."""

import importlib

import numpy as np
import pytest

from jaxav.evaluate import metrics


def test_accuracy_from_logits_and_predictions():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    assert metrics.accuracy(logits, labels) == 0.5  # rows 0 and 1 right
    assert metrics.accuracy(np.array([0, 1, 1, 2]), labels) == 1.0
    with pytest.raises(ValueError):
        metrics.accuracy(np.array([0, 1]), labels)


def test_average_precision_by_hand():
    # Ranked by score: pos, neg, pos, neg, pos -> precisions at the positives 1/1, 2/3, 3/5.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = np.array([1, 0, 1, 0, 1])
    expected = (1.0 + 2 / 3 + 3 / 5) / 3
    assert metrics.average_precision(scores, targets) == pytest.approx(expected)
    # Order of the input does not matter, only of the scores.
    perm = np.array([4, 2, 0, 3, 1])
    assert metrics.average_precision(scores[perm], targets[perm]) == pytest.approx(expected)


def test_average_precision_ties_as_sklearn():
    # Scores 0.5 tie for one pos and one neg ranked first: one threshold with precision 1/2,
    # recall 1/2; then the pos at 0.1 gives precision 2/3 at recall 1 -> 1/2*1/2 + 1/2*2/3.
    scores = np.array([0.5, 0.5, 0.1])
    targets = np.array([1, 0, 1])
    assert metrics.average_precision(scores, targets) == pytest.approx(0.25 + 1 / 3)


def test_mean_average_precision_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.7, 0.3, 0.5]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    # class 0: positive ranked first -> AP 1. class 1: ranks 0.8 (neg), 0.3 (pos), 0.1 -> 1/2.
    # class 2: no positive, skipped.
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(0.75)


def test_mean_average_precision_matches_sklearn():
    sklearn_metrics = importlib.import_module("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = (rng.random((50, 4)) < 0.3).astype(int)
    scores = np.round(rng.normal(size=(50, 4)) + targets, 1)  # rounding makes ties
    ref = np.mean(
        [sklearn_metrics.average_precision_score(targets[:, c], scores[:, c]) for c in range(4)]
    )
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(ref)


def test_retrieval_recall_by_hand():
    # Unit vectors: g0 = (1, 0), g1 = (0, 1), g2 = (.707, .707).
    # q0 ~ (.999, .050): cos to g0, g1, g2 = .999, .050, .742 -> its match g0 ranks first.
    # q1 ~ (.514, .857): .514, .857, .970 -> g2 above its match g1: rank 1.
    # q2 ~ (.981, .196): .981, .196, .832 -> g0 above its match g2: rank 1.
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query = np.array([[2.0, 0.1], [0.6, 1.0], [1.0, 0.2]])
    sim = metrics._unit_rows(query) @ metrics._unit_rows(gallery).T
    ranks = [int(np.sum(sim[i] > sim[i, i])) for i in range(3)]
    assert ranks == [0, 1, 1]
    out = metrics.retrieval_recall(query, gallery, ks=(1, 2, 5))
    assert out == {"r1": pytest.approx(1 / 3), "r2": 1.0, "r5": 1.0, "num": 3}


def test_knn_accuracy_separable_clusters():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 5
    y_tr, y_te = rng.integers(0, 4, 200), rng.integers(0, 4, 80)
    x_tr = centers[y_tr] + rng.normal(size=(200, 16))
    x_te = centers[y_te] + rng.normal(size=(80, 16))
    assert metrics.knn_accuracy(x_tr, y_tr, x_te, y_te, k=5) == 1.0
    assert metrics.knn_accuracy(x_tr, y_tr, x_te, y_te, k=5, weighted=True) == 1.0
    shuffled = metrics.knn_accuracy(x_tr, rng.permutation(y_tr), x_te, y_te, k=5)
    assert shuffled < 0.5
