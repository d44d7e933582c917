"""Linear probe and kNN on frozen features, per layer, with L2 chosen on a validation split.

The classifier is logistic regression (softmax cross-entropy for single-label data, per-class
sigmoid BCE for multi-label data) on standardised features, trained full-batch with L-BFGS
(`optax.lbfgs`, zoom line search) until the gradient norm falls under a tolerance or `steps`
iterations. Every L2 strength of the grid is trained at once, as one problem whose parameters have
a leading grid axis and whose loss is the sum of the independent per-strength losses (same optimum
as `jax.vmap` over the grid, half the CPU compile time), so a probe costs one compile per padded
feature shape; layers of equal width share it. The L2 strength is the one with the best validation
accuracy / mAP (ties: the lower validation loss); the test split is scored once with it.

Loss for weights W [D, C], bias b [C] and strength l2 (the bias is not penalised):
  single-label: mean_n CE(x_n W + b, y_n) + l2 * |W|^2
  multi-label:  mean_n sum_c BCE(x_n W_c + b_c, y_nc) + l2 * |W|^2
"""

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxav.evaluate import metrics
from jaxav.evaluate.splits import (  # noqa: F401  (re-exported: probe.split_validation etc.)
    STATS_PREFIX,
    _fit_stats,
    _layer_key,
    sort_layer_names,
    split_validation,
    standardize,
)

_GRAD_TOL = 1e-5  # L-BFGS stops once |grad| (all parameters) is below this.

knn_accuracy = metrics.knn_accuracy  # cosine kNN (numpy), re-exported beside the probe


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """A trained linear probe and how its L2 strength was chosen.

    Attributes:
      l2: the chosen L2 strength.
      val_score: validation accuracy (single-label) or mAP (multi-label) at `l2`.
      metric: "accuracy" or "map".
      l2_grid: every strength tried, and `val_scores` / `val_losses` for each.
      weights: float32[D, C]; bias: float32[C].
      mean, std: float32[..., 1, D] standardisation fitted on the training features.
      multi_label: whether the probe is sigmoid (True) or softmax (False).
      layer_weights: float32[L] softmax fusion weights of a learned layer fusion, else None.
    """

    l2: float
    val_score: float
    metric: str
    l2_grid: list[float]
    val_scores: list[float]
    val_losses: list[float]
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    multi_label: bool
    layer_weights: np.ndarray | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits float32[N, C] for raw features x: float32[N, D] (or [L, N, D] for a fusion)."""
        x = (np.asarray(x, np.float32) - self.mean) / self.std
        if self.layer_weights is not None:
            x = np.einsum("l,lnd->nd", self.layer_weights, x)
        return x @ self.weights + self.bias

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy (y: int[N]) or mAP (y: {0,1}[N, C]) of the probe on features x."""
        return _score(self.predict(x), y, self.multi_label)


def _score(logits: np.ndarray, y: np.ndarray, multi_label: bool) -> float:
    if multi_label:
        return metrics.mean_average_precision(logits, y)
    return metrics.accuracy(logits, y)


def _logits(params: dict, x: jax.Array) -> jax.Array:
    """float32[G, N, C] logits of G probes; x: float32[N, D], or [L, N, D] mixed per probe by
    softmax(params["alpha"]: [G, L])."""
    if "alpha" in params:
        mixed = jnp.einsum("gl,lnd->gnd", jax.nn.softmax(params["alpha"], axis=-1), x)
        return jnp.einsum("gnd,gdc->gnc", mixed, params["w"]) + params["b"][:, None]
    return jnp.einsum("nd,gdc->gnc", x, params["w"]) + params["b"][:, None]


@functools.partial(jax.jit, static_argnames=("multi_label", "num_classes", "steps", "batch_size"))
def _fit_grid(x, y, mask, l2s, key, lr, *, multi_label, num_classes, steps, batch_size):
    """Trains G = len(l2s) independent probes as one problem (the sum of their losses).

    x: float32[N, D] or [L, N, D]; y: int32[N] or float32[N, C]; mask: float32[N] (0 = padding
    row); l2s: float32[G]. batch_size None: full-batch L-BFGS (at most `steps` iterations, until
    |grad| < _GRAD_TOL); else Adam (cosine-decayed lr) for `steps` mini-batches of real rows, the
    same for every probe. Returns params {"w": [G, D, C], "b": [G, C], ("alpha": [G, L])}.
    """
    g = l2s.shape[0]
    params0 = {"w": jnp.zeros((g, x.shape[-1], num_classes)), "b": jnp.zeros((g, num_classes))}
    if x.ndim == 3:
        params0["alpha"] = jnp.zeros((g, x.shape[0]))

    def loss(p, idx=None):
        xb, yb, mb = (x, y, mask) if idx is None else (jnp.take(x, idx, -2), y[idx], mask[idx])
        logits = _logits(p, xb)
        if multi_label:
            per = optax.sigmoid_binary_cross_entropy(logits, yb[None]).sum(-1)
        else:
            per = optax.softmax_cross_entropy_with_integer_labels(logits, yb[None])
        data = (per * mb).sum(-1) / jnp.maximum(mb.sum(), 1.0)
        return jnp.sum(data + l2s * jnp.sum(p["w"] ** 2, axis=(1, 2)))

    if batch_size is None:
        opt, value_and_grad = optax.lbfgs(), optax.value_and_grad_from_state(loss)

        def step(carry):
            p, state = carry
            value, grad = value_and_grad(p, state=state)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
            return optax.apply_updates(p, updates), state

        def keep_going(carry):
            count = optax.tree_utils.tree_get(carry[1], "count")
            grad_norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(carry[1], "grad"))
            return (count == 0) | ((count < steps) & (grad_norm >= _GRAD_TOL))

        return jax.lax.while_loop(keep_going, step, (params0, opt.init(params0)))[0]

    prob = mask / mask.sum()
    draw = lambda k: jax.random.choice(k, x.shape[-2], (batch_size,), replace=False, p=prob)
    batches = jax.vmap(draw)(jax.random.split(key, steps))
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def adam_step(carry, idx):
        updates, state = opt.update(jax.grad(loss)(carry[0], idx), carry[1], carry[0])
        return (optax.apply_updates(carry[0], updates), state), None

    return jax.lax.scan(adam_step, (params0, opt.init(params0)), batches)[0][0]


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _np_loss(logits: np.ndarray, y: np.ndarray, multi_label: bool) -> float:
    """Mean cross-entropy (softmax) or summed-over-classes BCE (sigmoid) of float[M, C] logits."""
    z = logits.astype(np.float64)
    if multi_label:
        bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        return float(bce.sum(-1).mean()) if len(z) else float("nan")
    zmax = z.max(-1, keepdims=True)
    lse = (zmax + np.log(np.exp(z - zmax).sum(-1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(z)), y])) if len(z) else float("nan")


def train_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    multi_label: bool,
    l2_grid: Sequence[float],
    steps: int,
    lr: float = 1e-2,
    batch_size: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> ProbeResult:
    """Trains logistic regression on standardised features, one per L2 value, keeps the val-best.

    Rows and feature columns are zero-padded (N to a multiple of 128, D of 64; padding is masked or
    stays at zero weight, so results are exact) so that similar shapes share one compile.

    Args:
      x_train: float[N, D] training features, or float[L, N, D] same-width layers for a learned
        softmax-weighted layer fusion (fusion weights trained jointly with the classifier).
      y_train: int[N] class indices (single-label) or {0,1}[N, C] multi-hot (multi-label).
      x_val, y_val: the validation split, shaped alike ([M, D] / [L, M, D]).
      multi_label: sigmoid BCE + mAP (True) or softmax CE + accuracy (False).
      l2_grid: the L2 strengths tried (all trained together in one problem).
      steps: maximum L-BFGS iterations (full batch), or Adam steps when `batch_size` is set.
      lr: Adam peak learning rate (cosine decay); unused by full-batch L-BFGS.
      batch_size: None (or >= N) for full-batch L-BFGS, else mini-batch Adam with this batch.
      seed: seed of the mini-batch order (full batch is deterministic).
      num_classes: C for single-label data; default max label + 1.

    Returns:
      The ProbeResult at the chosen L2 (best val score, ties to the lower val loss).
    """
    mean, std = _fit_stats(x_train)
    x_tr = (np.asarray(x_train, np.float32) - mean) / std
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    if multi_label:
        num_classes, yt = y_train.shape[-1], y_train.astype(np.float32)
    else:
        if min(y_train.min(initial=0), y_val.min(initial=0)) < 0:
            raise ValueError("single-label probe needs labels >= 0 (filter unlabelled examples)")
        if num_classes is None:
            num_classes = int(max(y_train.max(initial=0), y_val.max(initial=0))) + 1
        yt = y_train.astype(np.int32)
    n, d = x_tr.shape[-2:]
    pad_n, pad_d = _round_up(n, 128) - n, _round_up(d, 64) - d
    x_pad = np.pad(x_tr, [(0, 0)] * (x_tr.ndim - 2) + [(0, pad_n), (0, pad_d)])
    y_pad = np.pad(yt, [(0, pad_n)] + [(0, 0)] * (yt.ndim - 1))
    mask = np.pad(np.ones(n, np.float32), (0, pad_n))
    batch_size = None if batch_size is not None and batch_size >= n else batch_size
    grid = [float(v) for v in l2_grid]
    params = jax.device_get(_fit_grid(
        x_pad, y_pad, mask, np.asarray(grid, np.float32), jax.random.key(seed), lr,
        multi_label=multi_label, num_classes=num_classes, steps=int(steps), batch_size=batch_size,
    ))  # fmt: skip
    alpha = params.get("alpha")
    mix = None if alpha is None else np.asarray(jax.nn.softmax(alpha, axis=-1))
    results = [
        ProbeResult(
            l2,
            0.0,
            "map" if multi_label else "accuracy",
            grid,
            [],
            [],
            np.asarray(params["w"][i, :d]),
            np.asarray(params["b"][i]),
            mean,
            std,
            multi_label,
            None if mix is None else mix[i],
        )  # fmt: skip
        for i, l2 in enumerate(grid)
    ]
    logits = [r.predict(x_val) for r in results]
    val_scores = [_score(z, y_val, multi_label) for z in logits]
    val_losses = [_np_loss(z, y_val, multi_label) for z in logits]
    losses = np.nan_to_num(np.asarray(val_losses), nan=np.inf)
    scores = np.nan_to_num(np.asarray(val_scores, np.float64), nan=-np.inf)
    best = int(np.lexsort((losses, -scores))[0])
    return dataclasses.replace(
        results[best], val_score=val_scores[best], val_scores=val_scores, val_losses=val_losses
    )


def evaluate_linear_probe(result: ProbeResult, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy (y_test: int[N]) or mAP (y_test: {0,1}[N, C]) of a trained probe."""
    return result.score(x_test, y_test)


def fuse_layers(features: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Concatenates feature sets: float[N, D_i] for each name -> float32[N, sum_i D_i]."""
    return np.concatenate([np.asarray(features[n], np.float32) for n in names], axis=-1)


def learned_layer_fusion(
    train_feats: Mapping[str, np.ndarray],
    val_feats: Mapping[str, np.ndarray],
    names: Sequence[str],
    y_train: np.ndarray,
    y_val: np.ndarray,
    **probe_kwargs: Any,
) -> ProbeResult:
    """A softmax-weighted sum of same-width layers, weights trained jointly with the classifier.

    Args:
      train_feats, val_feats: name -> float[N, D] (all `names` of one width D).
      names: the layers mixed, in order (`result.layer_weights[i]` belongs to names[i]).
      y_train, y_val, **probe_kwargs: as `train_linear_probe` (multi_label, l2_grid, steps, ...).

    Returns:
      ProbeResult whose `predict` takes float[L, M, D] (`np.stack([feats[n] for n in names])`).
    """
    stack = lambda f: np.stack([np.asarray(f[n], np.float32) for n in names])
    return train_linear_probe(stack(train_feats), y_train, stack(val_feats), y_val, **probe_kwargs)


_LAYER_RE = re.compile(r"(?:^|_)layer_\d+$")


def _pool(x: np.ndarray) -> np.ndarray:
    """float[N, D] as is; float[N, T, D] token features mean-pooled over T."""
    x = np.asarray(x, np.float32)
    return x.mean(axis=1) if x.ndim == 3 else x


def _cfg(config_probe: Any, key: str, default: Any) -> Any:
    """config_probe[key] for a ConfigDict or dict, `default` when absent."""
    try:
        return config_probe[key]
    except (KeyError, AttributeError, TypeError):
        return default


def probe_all_layers(
    train_feats: Mapping[str, np.ndarray],
    val_feats: Mapping[str, np.ndarray],
    test_feats: Mapping[str, np.ndarray],
    y_train: np.ndarray,
    y_val: np.ndarray,
    y_test: np.ndarray,
    *,
    multi_label: bool,
    config_probe: Any,
    learned_fusion: bool = True,
) -> dict[str, Any]:
    """Linear probe (and kNN for single-label) on every feature set, plus layer fusions.

    Args:
      train_feats, val_feats, test_feats: name -> float[N, D] features (float[N, T, D] tokens are
        mean-pooled over T), the same names in each.
      y_train, y_val, y_test: int[N] class indices or {0,1}[N, C] multi-hot labels.
      multi_label: score by mAP with a sigmoid probe (True) or accuracy with softmax (False).
      config_probe: the `probe` config group (`l2_grid`, `steps`, `knn_k`); its `batch_size` is
        for feature extraction, the probe here trains full batch.
      learned_fusion: also train a softmax-weighted fusion of the `*layer_<i>` sets (when they share
        one width).

    Returns:
      JSON-serialisable dict: {"layers": {name: {metric, "val_" + metric, "l2", "knn_accuracy"}},
      "fusion": {...} (concatenation of the `*layer_<i>` sets), "learned_fusion": {...,
      "layer_weights": {name: w}} (when trained), "best": {"layer", metric, "val_" + metric,
      "knn_accuracy"} (the best layer by validation score), "protocol": {...}}; metric is
      "accuracy" or "map", names in numeric order.
    """
    metric = "map" if multi_label else "accuracy"
    l2_grid = [float(v) for v in _cfg(config_probe, "l2_grid", (1e-4, 1e-3, 1e-2, 1e-1))]
    steps = int(_cfg(config_probe, "steps", 300))
    knn_k = int(_cfg(config_probe, "knn_k", 10))
    num_classes = None
    if not multi_label:
        num_classes = int(max(np.max(y, initial=0) for y in (y_train, y_val, y_test))) + 1
    kw = dict(multi_label=multi_label, l2_grid=l2_grid, steps=steps, num_classes=num_classes)
    names = sort_layer_names(list(train_feats))
    tr = {n: _pool(train_feats[n]) for n in names}
    va = {n: _pool(val_feats[n]) for n in names}
    te = {n: _pool(test_feats[n]) for n in names}

    def entry(res: ProbeResult, x_test: np.ndarray) -> dict[str, Any]:
        return {metric: res.score(x_test, y_test), f"val_{metric}": res.val_score, "l2": res.l2}

    layers: dict[str, dict[str, Any]] = {}
    for n in names:
        res = train_linear_probe(tr[n], y_train, va[n], y_val, **kw)
        layers[n] = entry(res, te[n])
        if not multi_label:
            layers[n]["knn_accuracy"] = knn_accuracy(tr[n], y_train, te[n], y_test, k=knn_k)
    out: dict[str, Any] = {"layers": layers}

    fused = [n for n in names if _LAYER_RE.search(n) and not n.startswith(STATS_PREFIX)]
    if len(fused) >= 2:
        res = train_linear_probe(
            fuse_layers(tr, fused), y_train, fuse_layers(va, fused), y_val, **kw
        )
        out["fusion"] = {**entry(res, fuse_layers(te, fused)), "layers": fused}
        if learned_fusion and len({tr[n].shape[-1] for n in fused}) == 1:
            res = learned_layer_fusion(tr, va, fused, y_train, y_val, **kw)
            out["learned_fusion"] = {
                **entry(res, np.stack([te[n] for n in fused])),
                "layer_weights": {
                    n: float(w) for n, w in zip(fused, res.layer_weights, strict=True)
                },
            }
    if names:
        # Best by validation score (NaN counts as worst); ties go to the earlier layer.
        val = {n: np.nan_to_num(layers[n][f"val_{metric}"], nan=-np.inf) for n in names}
        best = max(names, key=lambda n: (val[n], -names.index(n)))
        out["best"] = {"layer": best, **{k: v for k, v in layers[best].items() if k != "l2"}}
    out["protocol"] = {
        "classifier": "logistic regression on standardised features, full-batch L-BFGS",
        "loss": "sigmoid BCE" if multi_label else "softmax cross-entropy",
        "metric": metric,
        "l2_grid": l2_grid,
        "max_steps": steps,
        "selection": f"L2 and best layer by validation {metric} (ties: lower val loss)",
        "knn": None if multi_label else f"cosine, train-mean centred, k={knn_k}, majority vote",
        "pooling": f"mean over tokens; {STATS_PREFIX}*: mean and std over tokens",
        "num_train": int(len(y_train)),
        "num_val": int(len(y_val)),
        "num_test": int(len(y_test)),
    }
    return out
