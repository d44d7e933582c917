"""Feature-set helpers of the probe: natural layer order, standardisation, validation splits."""

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _layer_key(name: str) -> tuple:
    """Natural sort key: "layer_2" before "layer_10"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


STATS_PREFIX = "stats_"  # name prefix of mean+std (statistics) pooled feature sets


def sort_layer_names(names: Sequence[str]) -> list[str]:
    """Names sorted with their numbers compared as numbers (layer_2 before layer_10)."""
    return sorted(names, key=_layer_key)


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Standardises features with the mean / std of `train` over its example axis.

    Args:
      train: float[..., N, D] training features; the statistics are taken over axis -2.
      *others: float[..., M, D] arrays (validation, test) standardised with the same statistics.

    Returns:
      (train, *others) standardised, float32; features constant on train map to 0.
    """
    mean, std = _fit_stats(train)
    return tuple((np.asarray(a, np.float32) - mean) / std for a in (train, *others))


def _fit_stats(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32[..., 1, D] mean and std (floored at 1e-6) of train: float[..., N, D] over N."""
    train = np.asarray(train, np.float32)
    mean = train.mean(axis=-2, keepdims=True)
    return mean, np.maximum(train.std(axis=-2, keepdims=True), 1e-6)


def split_validation(
    x: np.ndarray | Mapping[str, np.ndarray], y: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    """Holds out a validation split from a training split.

    Single-label y (int[N]) is split stratified: each class with at least two examples gives
    round(fraction * count) of them (at least one) to validation. Multi-label y ({0,1}[N, C]) is
    split uniformly at random.

    Args:
      x: float[N, D] features, or a dict name -> float[N, ...] (all split alike).
      y: int[N] or {0,1}[N, C] labels.
      fraction: share of the examples for validation.
      seed: seed of the permutation.

    Returns:
      (x_train, y_train, x_val, y_val), x of the same kind as given.
    """
    y = np.asarray(y)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    if y.ndim == 1:
        val_idx = []
        for c in np.unique(y):
            idx = rng.permutation(np.nonzero(y == c)[0])
            if idx.size >= 2:
                val_idx.append(idx[: max(1, round(fraction * idx.size))])
        val = np.sort(np.concatenate(val_idx)) if val_idx else np.zeros(0, np.int64)
    else:
        val = np.sort(rng.permutation(n)[: round(fraction * n)])
    train = np.setdiff1d(np.arange(n), val)

    def take(a, idx):
        if isinstance(a, Mapping):
            return {k: np.asarray(v)[idx] for k, v in a.items()}
        return np.asarray(a)[idx]

    return take(x, train), y[train], take(x, val), y[val]
