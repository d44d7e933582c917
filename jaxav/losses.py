"""Loss functions shared by the pretraining objectives (pure functions, computed in float32).

Weights and temperatures are arguments: the values live in configs, never here.

- `masked_mse`: reconstruction error over the masked patches (SSAST generative, Audio-MAE, CAV-MAE).
- `normalize_patches`: per-patch mean/variance normalisation of targets (MAE's `norm_pix_loss`).
- `info_nce`: row i of `query` against all rows of `keys`, positive = key i (SSAST discriminative).
- `symmetric_info_nce`: CLIP-style audio <-> video contrastive loss (CAV-MAE).
"""

import jax
import jax.numpy as jnp


def normalize_patches(patches: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Normalises each patch to zero mean and unit variance over its values (MAE norm_pix_loss).

    Args:
        patches: float[..., P] (P = values per patch).
        eps: added to the variance before the square root.

    Returns:
        float32[..., P]: `(patches - mean) / sqrt(var + eps)`, mean/var over the last axis.
    """
    patches = patches.astype(jnp.float32)
    mean = patches.mean(axis=-1, keepdims=True)
    var = patches.var(axis=-1, keepdims=True)
    return (patches - mean) / jnp.sqrt(var + eps)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error per patch, averaged over the patches where `mask` is true.

    Args:
        pred: float[..., N, P] predicted patches.
        target: float[..., N, P] target patches.
        mask: bool or float[..., N]; 1/True = the patch counts (e.g. masked patches for MAE).
            None = every patch counts.

    Returns:
        float32 scalar: `sum_n mask_n * mean_p (pred - target)^2 / sum_n mask_n`
        (0 when the mask is empty).
    """
    err = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
    if mask is None:
        return err.mean()
    mask = mask.astype(jnp.float32)
    return jnp.sum(err * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def info_nce(
    query: jax.Array, keys: jax.Array, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """InfoNCE: each query must pick its own key among all keys of the same group.

    logits[..., i, j] = query_i . keys_j / temperature; row i's positive is j = i. Vectors are
    used as given (not L2-normalised), as SSAST does with temperature 1.

    Args:
        query: float[..., M, D] (leading axes are independent groups, e.g. clips).
        keys: float[..., M, D].
        temperature: divides the logits.

    Returns:
        (loss, accuracy): float32 scalars; loss = mean over groups and rows of the cross-entropy
        `-log softmax_j(logits[i])[i]`; accuracy = fraction of rows whose argmax is i.
    """
    q = query.astype(jnp.float32)
    k = keys.astype(jnp.float32)
    logits = jnp.einsum("...id,...jd->...ij", q, k) / temperature
    return _diagonal_cross_entropy(logits)


def symmetric_info_nce(
    a: jax.Array, b: jax.Array, temperature: float, normalize: bool = True
) -> tuple[jax.Array, jax.Array]:
    """CLIP-style contrastive loss between paired embeddings, averaged over both directions.

    Args:
        a: float[B, D] (e.g. audio clip embeddings).
        b: float[B, D] (e.g. video clip embeddings); pair i is (a_i, b_i).
        temperature: divides the logits (CAV-MAE uses 0.05).
        normalize: L2-normalise `a` and `b` inside (default True), so logits are cosine
            similarities / temperature.

    Returns:
        (loss, accuracy): float32 scalars; loss = (CE(a -> b) + CE(b -> a)) / 2, accuracy = mean
        of the two directions' top-1 accuracies.
    """
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    if normalize:
        a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    logits = a @ b.T / temperature
    loss_ab, acc_ab = _diagonal_cross_entropy(logits)
    loss_ba, acc_ba = _diagonal_cross_entropy(logits.T)
    return (loss_ab + loss_ba) / 2, (acc_ab + acc_ba) / 2


def _diagonal_cross_entropy(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and accuracy with target i for row i. logits: float32[..., M, M]."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    diag = jnp.diagonal(log_probs, axis1=-2, axis2=-1)
    target = jnp.arange(logits.shape[-1])
    acc = jnp.mean((jnp.argmax(logits, axis=-1) == target).astype(jnp.float32))
    return -jnp.mean(diag), acc


def masked_symmetric_info_nce(
    a: jax.Array,
    b: jax.Array,
    temperature: float | jax.Array,
    valid: jax.Array | None = None,
    normalize: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """`symmetric_info_nce` over the valid pairs only (clips without frames excluded).

    A pair i with `valid[i]` False is neither a positive nor a negative: its row and column are
    removed from the logits (by `where`, so nothing computed from it reaches the loss or its
    gradients). Under `jit` the batch axis is the global batch, so negatives come from every
    device.

    Args:
        a: float[B, D] (e.g. pooled audio features).
        b: float[B, D] (e.g. pooled video features); pair i is (a_i, b_i).
        temperature: divides the logits (a float or a traced scalar, e.g. a learned one).
        valid: bool[B] or None (= all valid).
        normalize: L2-normalise `a` and `b` (cosine logits).

    Returns:
        (loss, accuracy): float32 scalars; loss = mean over valid i of
        (CE_i(a -> b) + CE_i(b -> a)) / 2, accuracy likewise; both 0 when no pair is valid.
    """
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    if normalize:
        a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    n = a.shape[0]
    valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
    logits = (a @ b.T) / temperature
    pair = valid[:, None] & valid[None, :]
    logits = jnp.where(pair, logits, -1e9)
    eye = jnp.eye(n, dtype=bool)
    ce_ab = -jnp.sum(jnp.where(eye, jax.nn.log_softmax(logits, axis=1), 0.0), axis=1)
    ce_ba = -jnp.sum(jnp.where(eye, jax.nn.log_softmax(logits, axis=0), 0.0), axis=0)
    idx = jnp.arange(n)
    acc_ab = (jnp.argmax(logits, axis=1) == idx).astype(jnp.float32)
    acc_ba = (jnp.argmax(logits, axis=0) == idx).astype(jnp.float32)
    w = valid.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(w), 1.0)
    loss = jnp.sum(jnp.where(valid, (ce_ab + ce_ba) / 2, 0.0)) / count
    acc = jnp.sum(jnp.where(valid, (acc_ab + acc_ba) / 2, 0.0)) / count
    return loss, acc


def hierarchical_contrastive(
    audio_feats: list[jax.Array],
    video_feats: list[jax.Array],
    weights: list[float] | tuple[float, ...],
    temperature: float | jax.Array,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of audio <-> video InfoNCE terms at several encoder levels (HiCMAE).

    Each level's features are mean-pooled over tokens when 3-D, L2-normalised, and scored with
    `masked_symmetric_info_nce` (negatives: the rest of the (global) batch).

    Args:
        audio_feats: list of L arrays float[B, N_a, D] or float[B, D], one per level.
        video_feats: list of L arrays float[B, N_v, D] or float[B, D].
        weights: L floats; loss = sum_l weights[l] * nce_l.
        temperature: shared by the levels (float or traced scalar).
        valid: bool[B] or None; pairs with False are excluded (clips without frames).

    Returns:
        (loss float32 scalar, metrics {"nce_<l>", "acc_<l>"} float32 scalars, l = 1 .. L).
    """
    if not (len(audio_feats) == len(video_feats) == len(weights)):
        raise ValueError(
            f"hierarchical_contrastive: {len(audio_feats)} audio levels, {len(video_feats)} "
            f"video levels and {len(weights)} weights must match"
        )
    total = jnp.zeros((), jnp.float32)
    metrics = {}
    for level, (fa, fv, w) in enumerate(zip(audio_feats, video_feats, weights), start=1):
        fa = fa.mean(axis=1) if fa.ndim == 3 else fa
        fv = fv.mean(axis=1) if fv.ndim == 3 else fv
        nce, acc = masked_symmetric_info_nce(fa, fv, temperature, valid)
        total = total + w * nce
        metrics[f"nce_{level}"] = nce
        metrics[f"acc_{level}"] = acc
    return total, metrics
