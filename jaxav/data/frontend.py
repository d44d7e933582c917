"""Kaldi-compatible log-mel filterbank features, in numpy (host) and JAX (accelerator).

This is the front end of SSAST, Audio-MAE, CAV-MAE and SSAMBA, which all call
``torchaudio.compliance.kaldi.fbank``: frames of 25 ms every 10 ms with Kaldi's ``snip_edges``
(no padding), per-frame DC removal, pre-emphasis 0.97 (the first sample of a frame is treated as
its own predecessor), a window, a zero-padded FFT of the next power of two, the power spectrum,
Kaldi's triangular mel filters (built in mel space, 20 Hz to Nyquist) and the natural log with a
floor of float32 epsilon. No dither, no energy term.

The window is a parameter. Kaldi's default is the Povey window (``hann ** 0.85``, the default
here); the research recipes call ``fbank(..., window_type="hanning")`` and so does transformers'
``ASTFeatureExtractor``: pass ``window="hanning"`` to reproduce their features exactly.

Waveforms are float in [-1, 1] (what ``torchaudio.load`` and ``soundfile`` return); no int16
rescaling is applied, as in those recipes. ``fbank_numpy`` and ``fbank_jax`` agree to 1e-4 on
log-mel values in every band holding at least 1e-4 of its frame's spectral energy. The numpy path
is float64 up to the power spectrum and matches a float64 reference to ~1e-6 everywhere; the JAX
path runs in float32, whose FFT rounding is relative to the whole frame, so in weak bands it
differs by up to about ``4 * eps32 * sqrt(E_frame / E_band)`` (the same limitation that
torchaudio's float32 Kaldi fbank has).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LOG_FLOOR",
    "WINDOWS",
    "fbank_jax",
    "fbank_numpy",
    "frame_params",
    "mel_filterbank",
    "normalize",
    "num_frames",
    "window_function",
]

LOG_FLOOR = float(np.finfo(np.float32).eps)  # 1.1920929e-07, Kaldi/torchaudio's log floor
WINDOWS = ("povey", "hanning", "hamming", "rectangular")


def frame_params(
    sample_rate: int = 16000, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
) -> tuple[int, int, int]:
    """Frame geometry in samples, computed as Kaldi/torchaudio do.

    Args:
      sample_rate: Hz.
      frame_length_ms: window length in milliseconds.
      frame_shift_ms: hop in milliseconds.

    Returns:
      ``(window_length, hop_length, fft_length)`` in samples; ``fft_length`` is the next power of
      two >= ``window_length``. At 16 kHz: ``(400, 160, 512)``.
    """
    window_length = int(sample_rate * frame_length_ms * 0.001)
    hop_length = int(sample_rate * frame_shift_ms * 0.001)
    if window_length < 2 or hop_length < 1:
        raise ValueError(
            f"frame too short: {frame_length_ms} ms / {frame_shift_ms} ms at {sample_rate} Hz"
        )
    fft_length = 1 << (window_length - 1).bit_length()
    return window_length, hop_length, fft_length


def num_frames(
    num_samples: int,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> int:
    """Number of fbank frames for ``num_samples`` samples (Kaldi ``snip_edges=True``).

    ``1 + (num_samples - window) // hop``, or 0 when shorter than one window; at 16 kHz
    ``1 + (n - 400) // 160``.
    """
    window_length, hop_length, _ = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    if num_samples < window_length:
        return 0
    return 1 + (num_samples - window_length) // hop_length


@functools.lru_cache(maxsize=32)
def window_function(name: str, length: int, dtype: str = "float32") -> np.ndarray:
    """Kaldi analysis window: ``dtype[length]``, read-only.

    ``povey``: symmetric Hann to the power 0.85 (Kaldi's default); ``hanning``: symmetric Hann
    (``torch.hann_window(periodic=False)``); ``hamming``: 0.54 - 0.46 cos; ``rectangular``: ones.
    """
    n = np.arange(length, dtype=np.float64)
    a = 2.0 * np.pi / (length - 1)
    if name == "povey":
        w = (0.5 - 0.5 * np.cos(a * n)) ** 0.85
    elif name == "hanning":
        w = 0.5 - 0.5 * np.cos(a * n)
    elif name == "hamming":
        w = 0.54 - 0.46 * np.cos(a * n)
    elif name == "rectangular":
        w = np.ones(length)
    else:
        raise ValueError(f"unknown window {name!r}; expected one of {WINDOWS}")
    w = w.astype(dtype)
    w.flags.writeable = False
    return w


def _mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq, np.float64) / 700.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    fft_length: int = 512,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    dtype: str = "float32",
) -> np.ndarray:
    """Kaldi's triangular mel filterbank (``torchaudio.compliance.kaldi.get_mel_banks``).

    Filters are triangles in Kaldi mel space (``1127 ln(1 + f / 700)``) with centres equally
    spaced between ``low_freq`` and ``high_freq``, unnormalised (peak 1). The Nyquist bin gets
    weight 0, as in Kaldi.

    Args:
      sample_rate: Hz.
      num_mel_bins: number of filters F.
      fft_length: FFT size (power spectrum has ``fft_length // 2 + 1`` bins).
      low_freq: lower edge in Hz.
      high_freq: upper edge in Hz; ``<= 0`` means Nyquist plus ``high_freq`` (Kaldi's rule).
      dtype: numpy dtype name of the result.

    Returns:
      Read-only ``dtype[fft_length // 2 + 1, F]``; ``power[..., K] @ fb`` gives mel energies.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"bad mel range [{low_freq}, {high_freq}] Hz at {sample_rate} Hz")
    num_bins = fft_length // 2
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    b = np.arange(num_mel_bins, dtype=np.float64)[None, :]
    left = mel_low + b * delta
    center = left + delta
    right = center + delta
    bin_mel = _mel(sample_rate / fft_length * np.arange(num_bins, dtype=np.float64))[:, None]
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb = np.concatenate([fb, np.zeros((1, num_mel_bins))], axis=0).astype(dtype)
    fb.flags.writeable = False
    return fb


def _check_window(window: str) -> None:
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {WINDOWS}")


def fbank_numpy(
    wave: np.ndarray,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    *,
    window: str = "povey",
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    log_floor: float = LOG_FLOOR,
) -> np.ndarray:
    """Log-mel fbank of one waveform on the host (vectorised, float32 out).

    Args:
      wave: float[n], samples in [-1, 1] at ``sample_rate`` Hz. Integer arrays are refused (scale
        int16 PCM by 1 / 32768 first).
      sample_rate: Hz.
      num_mel_bins: F.
      window: one of ``WINDOWS`` (``"povey"`` Kaldi default, ``"hanning"`` as AST/SSAST).
      frame_length_ms, frame_shift_ms: framing in ms (25 / 10).
      preemphasis: pre-emphasis coefficient (0 disables).
      remove_dc_offset: subtract each frame's mean before pre-emphasis.
      low_freq, high_freq: mel range in Hz (``high_freq <= 0``: relative to Nyquist).
      log_floor: mel energies are clipped below at this before the natural log.

    Returns:
      float32[T, F] natural-log mel energies, ``T = num_frames(n, sample_rate, ...)`` (may be 0).
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"fbank_numpy expects a 1-D waveform, got shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.floating):
        raise TypeError(f"waveform must be float in [-1, 1], got dtype {wave.dtype}")
    _check_window(window)
    win, hop, nfft = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    t = num_frames(wave.shape[0], sample_rate, frame_length_ms, frame_shift_ms)
    if t == 0:
        return np.zeros((0, num_mel_bins), np.float32)
    # float64 up to the power spectrum: numpy's float64 FFT is ~5x faster than its float32 one
    # and keeps bands near the floor exact; the mel sum has no cancellation, so float32 is enough.
    wave = wave.astype(np.float64, copy=False)
    frames = np.lib.stride_tricks.sliding_window_view(wave, win)[: (t - 1) * hop + 1 : hop]
    if remove_dc_offset:
        frames = frames - frames.mean(axis=1, keepdims=True)
    if preemphasis:
        emph = np.empty_like(frames)
        emph[:, 1:] = frames[:, 1:] - preemphasis * frames[:, :-1]
        emph[:, 0] = frames[:, 0] * (1.0 - preemphasis)
        frames = emph
    spec = np.fft.rfft(frames * window_function(window, win, "float64"), n=nfft, axis=1)
    power = (np.square(spec.real) + np.square(spec.imag)).astype(np.float32)
    cols, weights, starts = _mel_sparse(sample_rate, num_mel_bins, nfft, low_freq, high_freq)
    mel = np.add.reduceat(power[:, cols] * weights, starts, axis=1)
    return np.log(np.maximum(mel, np.float32(log_floor)))


@functools.lru_cache(maxsize=16)
def _mel_sparse(
    sample_rate: int, num_mel_bins: int, nfft: int, low_freq: float, high_freq: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mel matrix as (columns, weights, segment starts) for `np.add.reduceat`.

    Each triangular filter touches a few FFT bins, so summing them directly is ~50x less work
    than a dense [T, K] @ [K, F] product and needs no BLAS threads (which stall in busy data
    workers). An empty filter gets one zero-weight entry so its segment sums to 0.
    """
    fb = mel_filterbank(sample_rate, num_mel_bins, nfft, low_freq, high_freq, "float32")
    cols, weights, starts = [], [], []
    for f in range(fb.shape[1]):
        nz = np.flatnonzero(fb[:, f])
        starts.append(len(cols))
        if nz.size == 0:
            cols.append(0)
            weights.append(0.0)
        else:
            cols.extend(nz.tolist())
            weights.extend(fb[nz, f].tolist())
    out = (
        np.asarray(cols, np.int64),
        np.asarray(weights, np.float32),
        np.asarray(starts, np.int64),
    )
    for a in out:
        a.flags.writeable = False
    return out


@functools.partial(
    jax.jit,
    static_argnames=(
        "sample_rate",
        "num_mel_bins",
        "window",
        "frame_length_ms",
        "frame_shift_ms",
        "preemphasis",
        "remove_dc_offset",
        "low_freq",
        "high_freq",
        "log_floor",
    ),
)
def fbank_jax(
    wave: jax.Array,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    *,
    window: str = "povey",
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    log_floor: float = LOG_FLOOR,
) -> jax.Array:
    """Batched log-mel fbank in JAX (jitted; all options static), same maths as ``fbank_numpy``.

    Args:
      wave: float32[B, n], samples in [-1, 1] at ``sample_rate`` Hz (one static length ``n``).
      sample_rate, num_mel_bins, window, ...: as in ``fbank_numpy``.

    Returns:
      float32[B, T, F] natural-log mel energies with ``T = num_frames(n, sample_rate, ...)``.
    """
    if wave.ndim != 2:
        raise ValueError(f"fbank_jax expects a [B, n] batch of waveforms, got shape {wave.shape}")
    _check_window(window)
    win, hop, nfft = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    fb = mel_filterbank(sample_rate, num_mel_bins, nfft, low_freq, high_freq, "float32")
    t = num_frames(wave.shape[1], sample_rate, frame_length_ms, frame_shift_ms)
    wave = wave.astype(jnp.float32)
    if t == 0:
        return jnp.zeros((wave.shape[0], 0, num_mel_bins), jnp.float32)
    idx = np.arange(t)[:, None] * hop + np.arange(win)[None, :]  # [T, win] static
    frames = wave[:, idx]  # [B, T, win]
    if remove_dc_offset:
        frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    if preemphasis:
        prev = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
        frames = frames - preemphasis * prev
    spec = jnp.fft.rfft(frames * jnp.asarray(window_function(window, win)), n=nfft, axis=-1)
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    mel = jnp.matmul(power, jnp.asarray(fb), precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, log_floor))


def normalize(fbank: Any, mean: Any, std: Any) -> Any:
    """AST-convention normalisation ``(fbank - mean) / (2 * std)``.

    Args:
      fbank: float32[..., T, F] log-mel (numpy or jax array).
      mean, std: dataset statistics (scalars or broadcastable arrays), log-mel units.

    Returns:
      Same type and shape as ``fbank``.
    """
    return (fbank - mean) / (2 * std)
