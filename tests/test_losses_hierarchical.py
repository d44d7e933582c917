"""Masked symmetric InfoNCE and the hierarchical contrastive loss against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav import losses


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference(a, b, t, valid=None):
    """Plain numpy (float64) symmetric InfoNCE over the valid pairs, loops, no tricks."""
    valid = np.ones(len(a), bool) if valid is None else np.asarray(valid)
    a, b = _unit(np.asarray(a, np.float64))[valid], _unit(np.asarray(b, np.float64))[valid]
    n = len(a)
    if n == 0:
        return 0.0
    total = 0.0
    for i in range(n):
        s_ab = [a[i] @ b[j] / t for j in range(n)]
        s_ba = [b[i] @ a[j] / t for j in range(n)]
        ce_ab = -s_ab[i] + np.log(np.sum(np.exp(s_ab)))
        ce_ba = -s_ba[i] + np.log(np.sum(np.exp(s_ba)))
        total += (ce_ab + ce_ba) / 2
    return total / n


def test_two_pairs_by_hand():
    # a = b = identity rows: cos sim 1 on the diagonal, 0 off it.
    a = b = jnp.eye(2)
    loss, acc = losses.masked_symmetric_info_nce(a, b, 0.5)
    # each direction: -log(e^2 / (e^2 + e^0))
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + 1.0))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(acc) == 1.0


def test_matches_reference_and_unmasked_function():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    loss, _ = losses.masked_symmetric_info_nce(jnp.asarray(a), jnp.asarray(b), 0.1)
    np.testing.assert_allclose(loss, _reference(a, b, 0.1), rtol=1e-5)
    plain, _ = losses.symmetric_info_nce(jnp.asarray(a), jnp.asarray(b), 0.1)
    np.testing.assert_allclose(loss, plain, rtol=1e-5)


def test_invalid_pairs_are_neither_positive_nor_negative():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    valid = np.array([True, False, True, True, False])
    loss, _ = losses.masked_symmetric_info_nce(jnp.asarray(a), jnp.asarray(b), 0.2, valid)
    np.testing.assert_allclose(loss, _reference(a, b, 0.2, valid), rtol=1e-5)
    # Equal to the loss on the valid rows alone, and blind to what the invalid rows hold.
    sub, _ = losses.masked_symmetric_info_nce(jnp.asarray(a[valid]), jnp.asarray(b[valid]), 0.2)
    np.testing.assert_allclose(loss, sub, rtol=1e-6)
    b2 = b.copy()
    b2[~valid] = 1e3 * rng.standard_normal((2, 4))
    loss2, _ = losses.masked_symmetric_info_nce(jnp.asarray(a), jnp.asarray(b2), 0.2, valid)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    grad = jax.grad(lambda bb: losses.masked_symmetric_info_nce(jnp.asarray(a), bb, 0.2, valid)[0])(
        jnp.asarray(b)
    )
    assert np.all(np.asarray(grad)[~valid] == 0)
    assert np.any(np.asarray(grad)[valid] != 0)
    none, acc = losses.masked_symmetric_info_nce(jnp.asarray(a), jnp.asarray(b), 0.2, valid & False)
    assert float(none) == 0.0 and float(acc) == 0.0


def test_hierarchical_weighted_sum_by_hand():
    rng = np.random.default_rng(2)
    # level 1: token features [B, N, D] (mean-pooled inside); level 2: vectors [B, D].
    a1, v1 = rng.standard_normal((4, 3, 6)), rng.standard_normal((4, 5, 6))
    a2, v2 = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    valid = np.array([True, True, False, True])
    loss, metrics = losses.hierarchical_contrastive(
        [jnp.asarray(a1), jnp.asarray(a2)],
        [jnp.asarray(v1), jnp.asarray(v2)],
        (0.25, 2.0),
        0.07,
        jnp.asarray(valid),
    )
    r1 = _reference(a1.mean(1), v1.mean(1), 0.07, valid)
    r2 = _reference(a2, v2, 0.07, valid)
    np.testing.assert_allclose(metrics["nce_1"], r1, rtol=1e-5)
    np.testing.assert_allclose(metrics["nce_2"], r2, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.25 * r1 + 2.0 * r2, rtol=1e-5)
    assert set(metrics) == {"nce_1", "acc_1", "nce_2", "acc_2"}


def test_hierarchical_gradients_only_reach_named_levels():
    rng = np.random.default_rng(3)
    feats = [jnp.asarray(rng.standard_normal((4, 8))) for _ in range(3)]

    def f(a_levels):
        return losses.hierarchical_contrastive(a_levels[:2], feats[:2], (1.0, 0.0), 0.1)[0]

    grads = jax.grad(f)(feats)
    assert np.any(np.asarray(grads[0]) != 0)
    assert np.all(np.asarray(grads[1]) == 0)  # weight 0
    assert np.all(np.asarray(grads[2]) == 0)  # not a level


def test_hierarchical_rejects_mismatched_levels():
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match="levels"):
        losses.hierarchical_contrastive([x, x], [x], (1.0, 1.0), 0.1)
