"""Losses against values worked out with numpy from the formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxav import losses


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_masked_mse_counts_only_masked_patches():
    pred = np.array([[[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]]])  # [1, 3, 2]
    target = np.array([[[0.0, 0.0], [5.0, 5.0], [1.0, 2.0]]])
    mask = np.array([[True, False, True]])
    # patch errors: (1 + 4) / 2 = 2.5, (25 + 25) / 2 = 25, (4 + 1) / 2 = 2.5
    assert float(losses.masked_mse(pred, target, mask)) == pytest.approx(2.5)
    assert float(losses.masked_mse(pred, target)) == pytest.approx(30.0 / 3)
    assert float(losses.masked_mse(pred, target, np.zeros((1, 3), bool))) == 0.0


def test_normalize_patches():
    p = np.array([[1.0, 2.0, 3.0, 6.0]])
    expected = (p - 3.0) / np.sqrt(p.var() + 1e-6)
    np.testing.assert_allclose(losses.normalize_patches(jnp.asarray(p)), expected, rtol=1e-6)
    out = np.asarray(losses.normalize_patches(jnp.asarray(np.random.randn(2, 5, 16) * 3 + 7)))
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(-1), 1.0, atol=1e-4)


def test_info_nce_hand_computed():
    q = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    k = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    t = 0.5
    logits = q @ k.T / t
    expected = -np.mean(np.diag(_log_softmax(logits)))
    expected_acc = np.mean(logits.argmax(-1) == np.arange(3))  # rows pick 0, 1 (tie->first), 1
    loss, acc = losses.info_nce(jnp.asarray(q), jnp.asarray(k), t)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(acc) == pytest.approx(expected_acc)
    # Leading axes are independent groups: a stack of two groups averages their losses.
    q2, k2 = np.stack([q, k]), np.stack([k, q])
    expected2 = (expected + -np.mean(np.diag(_log_softmax(k @ q.T / t)))) / 2
    assert float(losses.info_nce(q2, k2, t)[0]) == pytest.approx(expected2, rel=1e-6)


def test_info_nce_perfect_match_is_accurate():
    keys = np.eye(4) * 10.0
    loss, acc = losses.info_nce(jnp.asarray(keys), jnp.asarray(keys))
    assert float(acc) == 1.0
    assert float(loss) < 1e-3


def test_symmetric_info_nce_hand_computed():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    t = 0.1
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = an @ bn.T / t
    ce_ab = -np.mean(np.diag(_log_softmax(logits)))
    ce_ba = -np.mean(np.diag(_log_softmax(logits.T)))
    acc = (
        np.mean(logits.argmax(1) == np.arange(5)) + np.mean(logits.argmax(0) == np.arange(5))
    ) / 2
    loss, got_acc = losses.symmetric_info_nce(jnp.asarray(a), jnp.asarray(b), t)
    assert float(loss) == pytest.approx((ce_ab + ce_ba) / 2, rel=1e-5)
    assert float(got_acc) == pytest.approx(acc)
    raw = a @ b.T
    expected_raw = (
        -np.mean(np.diag(_log_softmax(raw))) - np.mean(np.diag(_log_softmax(raw.T)))
    ) / 2
    loss_raw, _ = losses.symmetric_info_nce(jnp.asarray(a), jnp.asarray(b), 1.0, normalize=False)
    assert float(loss_raw) == pytest.approx(expected_raw, rel=1e-5)
