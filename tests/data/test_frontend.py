"""Tests for jaxav.data.frontend: Kaldi fbank in numpy and JAX against references.

Agreement bounds (log-mel values, natural log):
- numpy path vs a float64 reference (ours, or transformers' ASTFeatureExtractor numpy path):
  1e-5 everywhere (measured ~1e-6: float32 rounding of the output).
- JAX path (float32 FFT) vs either: 1e-4 in bands holding >= 1e-4 of the frame's spectral energy,
  and everywhere ``1e-5 + 4 * eps32 * sqrt(E_frame / E_band)``: float32 FFT rounding is relative to
  the frame's energy, so weak bands lose relative accuracy (measured coefficient <= 2.2).
"""

import importlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.data import frontend as fe

EPS32 = float(np.finfo(np.float32).eps)
SR = 16000


def _signal(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Noise + tone + chirp with some DC, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    w = (
        0.05 * rng.standard_normal(n)
        + 0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.2 * np.sin(2 * np.pi * (100 + 0.1 * sr * t) * t)
        + 0.02
    )
    return w.astype(np.float32)


def _reference(wave, window, sr=SR, num_mel_bins=128):
    """Straightforward float64 per-frame Kaldi fbank. Returns (logmel, mel energy, frame energy)."""
    win, hop, nfft = fe.frame_params(sr)
    fb = fe.mel_filterbank(sr, num_mel_bins, nfft, dtype="float64")
    w = fe.window_function(window, win, "float64")
    logmel, mel, energy = [], [], []
    for i in range(fe.num_frames(len(wave), sr)):
        frame = wave[i * hop : i * hop + win].astype(np.float64)
        frame = frame - frame.mean()
        emph = frame.copy()
        for j in range(win - 1, 0, -1):
            emph[j] = frame[j] - 0.97 * frame[j - 1]
        emph[0] = frame[0] - 0.97 * frame[0]
        buf = np.zeros(nfft)
        buf[:win] = emph * w
        power = np.abs(np.fft.rfft(buf)) ** 2
        m = power @ fb
        logmel.append(np.log(np.maximum(m, fe.LOG_FLOOR)))
        mel.append(m)
        energy.append(power.sum())
    return np.array(logmel), np.array(mel), np.array(energy)[:, None]


def _jax_tolerance(mel, energy):
    """Per-element bound for the float32 JAX path (see module docstring)."""
    return 1e-5 + 4 * EPS32 * np.sqrt(energy / np.maximum(mel, fe.LOG_FLOOR))


@pytest.fixture(scope="module")
def wave():
    return _signal(2.0)


@pytest.fixture(scope="module")
def reference(wave):
    return {w: _reference(wave, w) for w in ("povey", "hanning")}


def test_num_frames_formula():
    assert fe.num_frames(0) == 0
    assert fe.num_frames(399) == 0
    assert fe.num_frames(400) == 1
    assert fe.num_frames(559) == 1
    assert fe.num_frames(560) == 2
    for n in (400, 1000, 16000, 160000, 163_840):
        assert fe.num_frames(n) == 1 + (n - 400) // 160
    assert fe.num_frames(160000) == 998
    assert fe.frame_params(16000) == (400, 160, 512)


@pytest.mark.parametrize(
    "sr,geometry", [(8000, (200, 80, 256)), (22050, (551, 220, 1024)), (44100, (1102, 441, 2048))]
)
def test_other_sample_rates(sr, geometry):
    assert fe.frame_params(sr) == geometry
    win, hop, _ = geometry
    wave = _signal(1.0, sr)
    expected = 1 + (len(wave) - win) // hop
    assert fe.num_frames(len(wave), sr) == expected
    ref, mel, energy = _reference(wave, "povey", sr, 64)
    out = fe.fbank_numpy(wave, sr, 64)
    assert out.shape == ref.shape == (expected, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    out_jax = np.asarray(fe.fbank_jax(jnp.asarray(wave[None]), sr, 64))
    assert out_jax.shape == (1, expected, 64)
    assert (np.abs(out_jax[0] - ref) <= _jax_tolerance(mel, energy)).all()


@pytest.mark.parametrize("window", ["povey", "hanning"])
def test_numpy_matches_float64_loop(wave, reference, window):
    ref, _, _ = reference[window]
    out = fe.fbank_numpy(wave, window=window)
    assert out.shape == ref.shape == (fe.num_frames(len(wave)), 128)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("window", ["povey", "hanning"])
def test_jax_matches_reference_and_numpy(wave, reference, window):
    ref, mel, energy = reference[window]
    out = np.asarray(fe.fbank_jax(jnp.asarray(wave[None]), window=window))[0]
    assert out.shape == ref.shape and out.dtype == np.float32
    err = np.abs(out - ref)
    assert (err <= _jax_tolerance(mel, energy)).all(), err.max()
    strong = mel >= 1e-4 * energy
    assert strong.mean() > 0.5
    assert err[strong].max() <= 1e-4
    np_out = fe.fbank_numpy(wave, window=window)
    diff = np.abs(out - np_out)
    assert diff[strong].max() <= 1e-4
    assert (diff <= _jax_tolerance(mel, energy) + 1e-5).all()


def test_matches_ast_feature_extractor(wave, reference):
    transformers = importlib.import_module("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its 128-bin Kaldi bank has an empty filter, as Kaldi's
        ext = transformers.ASTFeatureExtractor(
            do_normalize=False, max_length=fe.num_frames(len(wave))
        )
    assert hasattr(ext, "mel_filters")  # its numpy path (torchaudio absent), the one we target
    theirs = ext(wave, sampling_rate=SR, return_tensors="np")["input_values"][0]
    ours = fe.fbank_numpy(wave, window="hanning")
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    _, mel, energy = reference["hanning"]
    ours_jax = np.asarray(fe.fbank_jax(jnp.asarray(wave[None]), window="hanning"))[0]
    assert (np.abs(ours_jax - theirs) <= _jax_tolerance(mel, energy)).all()
    strong = mel >= 1e-4 * energy
    assert np.abs(ours_jax - theirs)[strong].max() <= 1e-4


def test_povey_matches_transformers_spectrogram(wave):
    audio_utils = importlib.import_module("transformers.audio_utils")
    theirs = audio_utils.spectrogram(
        wave,
        audio_utils.window_function(400, "povey", periodic=False),
        frame_length=400,
        hop_length=160,
        fft_length=512,
        power=2.0,
        center=False,
        preemphasis=0.97,
        mel_filters=fe.mel_filterbank(dtype="float64"),
        log_mel="log",
        mel_floor=fe.LOG_FLOOR,
        remove_dc_offset=True,
    ).T
    np.testing.assert_allclose(fe.fbank_numpy(wave), theirs, rtol=0, atol=1e-5)


def test_mel_filterbank_matches_kaldi_bank():
    audio_utils = importlib.import_module("transformers.audio_utils")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = audio_utils.mel_filter_bank(
            num_frequency_bins=257,
            num_mel_filters=128,
            min_frequency=20,
            max_frequency=8000,
            sampling_rate=16000,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )
    ours = fe.mel_filterbank(16000, 128, 512, dtype="float64")
    assert ours.shape == (257, 128)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert not ours.flags.writeable
    assert fe.mel_filterbank(16000, 128, 512, dtype="float64") is ours  # cached
    assert (ours[-1] == 0).all() and ours.max() <= 1.0


def test_window_shapes():
    hann = fe.window_function("hanning", 400, "float64")
    povey = fe.window_function("povey", 400, "float64")
    np.testing.assert_allclose(povey, hann**0.85, atol=1e-12)
    np.testing.assert_allclose(hann, np.hanning(400), atol=1e-12)
    with pytest.raises(ValueError, match="unknown window"):
        fe.fbank_numpy(np.zeros(1000, np.float32), window="kaiser")


def test_batch_shapes_and_jit(wave, reference):
    # 8000 samples = 50 hops, so the second clip's frames are rows 50.. of the full reference.
    batch = np.stack([wave[:16000], wave[8000:24000], 0.5 * wave[:16000]])
    out = np.asarray(fe.fbank_jax(jnp.asarray(batch)))
    t = fe.num_frames(16000)
    assert out.shape == (3, t, 128) and out.dtype == np.float32
    ref, mel, energy = reference["povey"]
    for i, rows in enumerate([slice(0, t), slice(50, 50 + t)]):
        assert (np.abs(out[i] - ref[rows]) <= _jax_tolerance(mel[rows], energy[rows])).all()
    # Halving the amplitude shifts log energies by log(1/4) (bands well above the floor).
    strong = mel[:t] >= 1e-4 * energy[:t]
    np.testing.assert_allclose((out[2] - out[0])[strong], np.log(0.25), atol=2e-4)

    @jax.jit
    def normalised(w):
        return fe.normalize(fe.fbank_jax(w), -4.0, 4.5)

    np.testing.assert_allclose(normalised(batch), (out + 4.0) / 9.0, atol=1e-5)


def test_silence_and_short_input():
    silent = np.zeros(4000, np.float32)
    out = fe.fbank_numpy(silent)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.log(fe.LOG_FLOOR), atol=1e-6)
    out_jax = np.asarray(fe.fbank_jax(jnp.zeros((2, 4000))))
    assert np.isfinite(out_jax).all()
    np.testing.assert_allclose(out_jax, np.log(fe.LOG_FLOOR), atol=1e-6)
    assert fe.fbank_numpy(np.zeros(300, np.float32)).shape == (0, 128)
    assert fe.fbank_jax(jnp.zeros((2, 300))).shape == (2, 0, 128)


def test_input_validation():
    with pytest.raises(TypeError, match="float"):
        fe.fbank_numpy(np.zeros(1000, np.int16))
    with pytest.raises(ValueError, match="1-D"):
        fe.fbank_numpy(np.zeros((2, 1000), np.float32))
    with pytest.raises(ValueError, match=r"\[B, n\]"):
        fe.fbank_jax(jnp.zeros(1000))


def test_normalize_numpy_and_jax():
    x = np.array([[-4.0, 5.0], [0.0, 14.0]], np.float32)
    expected = (x - 5.0) / 18.0
    np.testing.assert_allclose(fe.normalize(x, 5.0, 9.0), expected, rtol=1e-6)
    assert isinstance(fe.normalize(x, 5.0, 9.0), np.ndarray)
    np.testing.assert_allclose(fe.normalize(jnp.asarray(x), 5.0, 9.0), expected, rtol=1e-6)
