"""Evaluation metrics in numpy: accuracy, mAP, retrieval recall@k, kNN accuracy.

Small, dependency-free and hand-checkable; the probe (`jaxav.evaluate.probe`) and the tests use
them. All functions take array-likes and return Python floats (or dicts of them), so the results
go straight into JSON.
"""

from collections.abc import Sequence

import numpy as np


def accuracy(logits_or_pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct predictions.

    Args:
      logits_or_pred: float[N, C] scores (the argmax over C is the prediction) or int[N] predicted
        class indices.
      labels: int[N] true class indices.

    Returns:
      accuracy in [0, 1] (0.0 for N = 0).
    """
    pred = np.asarray(logits_or_pred)
    labels = np.asarray(labels).reshape(-1)
    if pred.ndim == 2:
        pred = pred.argmax(axis=-1)
    pred = pred.reshape(-1)
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {pred.shape} and labels {labels.shape} differ in length")
    if labels.size == 0:
        return 0.0
    return float(np.mean(pred == labels))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class (as sklearn's `average_precision_score`).

    Items are ranked by decreasing score; AP = sum over distinct score thresholds of
    (recall_n - recall_{n-1}) * precision_n. Without tied scores this is the mean, over the
    positives, of the precision at each positive's rank.

    Args:
      scores: float[N] scores for the class.
      targets: {0, 1}[N] whether each item belongs to the class.

    Returns:
      AP in [0, 1], or NaN when there is no positive.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).reshape(-1) > 0
    num_pos = int(targets.sum())
    if num_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], targets[order]
    tp = np.cumsum(t)
    # Last index of each group of tied scores: precision/recall are only defined there.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = tp[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / num_pos
    recall_gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_gain * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes of the per-class average precision (AudioSet mAP).

    Args:
      scores: float[N, C] scores (logits or probabilities; only the order matters).
      targets: {0, 1}[N, C] multi-hot ground truth.

    Returns:
      mAP in [0, 1] over the classes that have at least one positive (NaN if none has).
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be [N, C]")
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    aps = [ap for ap in aps if not np.isnan(ap)]
    return float(np.mean(aps)) if aps else float("nan")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of float[N, D] scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def retrieval_recall(
    query: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Recall@k of cross-modal (or any paired) retrieval by cosine similarity.

    Query i's one correct match is gallery item i. Recall@k is the fraction of queries whose match
    ranks within the k most similar gallery items (ties counted against the query: a match tied
    with a wrong item ranks after it).

    Args:
      query: float[N, D] query embeddings.
      gallery: float[N, D] gallery embeddings, row i paired with query row i.
      ks: the cut-offs k.

    Returns:
      {"r1": ..., "r5": ..., "num": N}: one `r{k}` entry per k, in [0, 1].
    """
    q, g = _unit_rows(query), _unit_rows(gallery)
    if q.shape != g.shape or q.ndim != 2:
        raise ValueError(f"query {q.shape} and gallery {g.shape} must both be [N, D]")
    sim = q @ g.T  # [N, N]
    match = np.diag(sim)[:, None]
    # Rank (0-based) of the match: gallery items at least as similar, other than itself.
    rank = np.sum(sim >= match, axis=1) - 1
    out: dict[str, float] = {f"r{k}": float(np.mean(rank < k)) for k in ks}
    out["num"] = int(q.shape[0])
    return out


def knn_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    k: int = 10,
    weighted: bool = False,
) -> float:
    """Accuracy of a cosine-similarity k-nearest-neighbour classifier (single-label).

    Features are centred with the training mean, then L2-normalised. Each test item takes the class
    with the most votes among its k most similar training items (each vote weighs 1, or its cosine
    similarity when `weighted`); ties go to the lowest class index.

    Args:
      x_train: float[N, D], y_train: int[N]; x_test: float[M, D], y_test: int[M].
      k: neighbours (clipped to N).

    Returns:
      accuracy in [0, 1].
    """
    x_train = np.asarray(x_train, np.float32)
    mean = x_train.mean(axis=0, keepdims=True)
    tr = _unit_rows(x_train - mean)
    te = _unit_rows(np.asarray(x_test, np.float32) - mean)
    y_train = np.asarray(y_train).astype(np.int64)
    num_classes = int(max(y_train.max(initial=0), np.max(y_test, initial=0))) + 1
    k = min(k, tr.shape[0])
    preds = []
    for start in range(0, te.shape[0], 1024):
        sim = te[start : start + 1024] @ tr.T  # [m, N]
        nn_idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # [m, k]
        nn_sim = np.take_along_axis(sim, nn_idx, axis=1)
        votes = np.zeros((sim.shape[0], num_classes), np.float64)
        weights = nn_sim if weighted else np.ones_like(nn_sim)
        np.add.at(votes, (np.arange(sim.shape[0])[:, None], y_train[nn_idx]), weights)
        preds.append(votes.argmax(axis=1))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return accuracy(pred, y_test)
