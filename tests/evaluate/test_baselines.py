"""MFCC baseline: shapes, the DCT and deltas against references, and pitch discrimination."""

import importlib

import numpy as np
import pytest

from jaxav.evaluate import baselines, probe

SR = 16000


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return (wave + 0.01 * rng.normal(size=t.shape)).astype(np.float32)


def test_dct_matrix_matches_scipy():
    fft = importlib.import_module("scipy.fft")
    x = np.random.default_rng(0).normal(size=(7, 40)).astype(np.float32)
    ref = fft.dct(x, type=2, norm="ortho", axis=-1)[:, :13]
    np.testing.assert_allclose(x @ baselines.dct_matrix(40, 13), ref, atol=1e-5)


def test_deltas_regression_formula():
    # A linear ramp c_t = 3t has delta 3 in the interior: sum n*(6n) / (2 * 5) = 60 / 20.
    ramp = 3.0 * np.arange(10, dtype=np.float32)[:, None]
    d = baselines.deltas(ramp)
    np.testing.assert_allclose(d[2:-2, 0], 3.0, rtol=1e-6)
    # Edges repeat the first frame: t = 0 -> (1*(3-0) + 2*(6-0)) / 10 = 1.5.
    assert d[0, 0] == pytest.approx(1.5)
    assert np.all(baselines.deltas(np.ones((5, 2))) == 0)


def test_mfcc_features_shape_and_finite():
    rng = np.random.default_rng(0)
    feats = baselines.mfcc_features(_tone(440.0, 1.0, rng), SR, n_mfcc=13)
    assert feats.shape == (52,) and feats.dtype == np.float32
    assert np.all(np.isfinite(feats))
    # Very short and silent clips still give finite vectors.
    assert np.all(np.isfinite(baselines.mfcc_features(np.zeros(100, np.float32), SR)))
    batch = baselines.mfcc_batch([_tone(300.0, 0.5, rng), _tone(300.0, 0.7, rng)], SR)
    assert batch.shape == (2, 80)


def test_mfcc_probe_tells_pitches_apart():
    rng = np.random.default_rng(1)
    freqs = (300.0, 1200.0)
    y = np.arange(48) % 2
    waves = [_tone(freqs[c] * rng.uniform(0.9, 1.1), rng.uniform(0.3, 0.6), rng) for c in y]
    x = baselines.mfcc_batch(waves, SR)
    x_tr, y_tr, x_val, y_val = probe.split_validation(x[:32], y[:32], fraction=0.25)
    res = probe.train_linear_probe(
        x_tr, y_tr, x_val, y_val, multi_label=False, l2_grid=(1e-3, 1e-1), steps=100
    )
    assert probe.evaluate_linear_probe(res, x[32:], y[32:]) >= 0.9
