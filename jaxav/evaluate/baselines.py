"""Classical audio front end for a probing baseline: MFCC + delta statistics per clip.

A learned representation should beat this with the same linear probe; `mfcc_features` turns a clip
into one fixed-length vector: the mean and standard deviation over time of the MFCCs (DCT-II of the
log-mel fbank of `jaxav.data.frontend`) and of their deltas.
"""

from collections.abc import Iterable

import numpy as np

from jaxav.data.frontend import fbank_numpy

DELTA_WIDTH = 2  # frames either side in the delta regression


def dct_matrix(num_in: int, num_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: float32[num_in, num_out], `x @ M` = scipy's
    `dct(x, type=2, norm="ortho")[..., :num_out]`."""
    n = np.arange(num_in)[:, None]
    k = np.arange(num_out)[None, :]
    m = np.cos(np.pi / num_in * (n + 0.5) * k) * np.sqrt(2.0 / num_in)
    m[:, 0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def deltas(feats: np.ndarray, width: int = DELTA_WIDTH) -> np.ndarray:
    """Regression deltas over time (HTK / Kaldi formula), edges padded by repetition.

    d_t = sum_{n=1..width} n * (c_{t+n} - c_{t-n}) / (2 * sum_{n=1..width} n^2)

    Args:
      feats: float[T, D] frame features.
      width: frames either side (2 = the standard 5-frame window).

    Returns:
      float32[T, D] deltas.
    """
    feats = np.asarray(feats, np.float32)
    t = feats.shape[0]
    padded = np.pad(feats, ((width, width), (0, 0)), mode="edge")
    num = sum(
        n * (padded[width + n : width + n + t] - padded[width - n : width - n + t])
        for n in range(1, width + 1)
    )
    return (num / (2.0 * sum(n * n for n in range(1, width + 1)))).astype(np.float32)


def mfcc(
    wave: np.ndarray, sample_rate: int = 16000, n_mfcc: int = 20, num_mel_bins: int = 40
) -> np.ndarray:
    """MFCCs of one waveform: float32[T, n_mfcc] (DCT-II of the Kaldi log-mel, 10 ms hop).

    Args:
      wave: float32[n] samples in [-1, 1] (clips shorter than one 25 ms frame are zero-padded).
      sample_rate: Hz.
      n_mfcc: coefficients kept (c0 included), at most `num_mel_bins`.
      num_mel_bins: mel bands of the log-mel fbank.
    """
    if n_mfcc > num_mel_bins:
        raise ValueError(f"n_mfcc={n_mfcc} exceeds num_mel_bins={num_mel_bins}")
    wave = np.asarray(wave, np.float32).reshape(-1)
    min_len = int(round(0.025 * sample_rate))
    if wave.shape[0] < min_len:
        wave = np.pad(wave, (0, min_len - wave.shape[0]))
    logmel = fbank_numpy(wave, sample_rate, num_mel_bins)  # [T, F]
    return logmel @ dct_matrix(num_mel_bins, n_mfcc)


def mfcc_features(
    wave: np.ndarray, sample_rate: int = 16000, n_mfcc: int = 20, num_mel_bins: int = 40
) -> np.ndarray:
    """Fixed-length clip vector from MFCCs and their deltas.

    Args:
      wave: float32[n] samples in [-1, 1].
      sample_rate: Hz.
      n_mfcc: MFCCs per frame.
      num_mel_bins: mel bands of the underlying log-mel fbank.

    Returns:
      float32[4 * n_mfcc]: [mean_t mfcc, std_t mfcc, mean_t delta, std_t delta].
    """
    c = mfcc(wave, sample_rate, n_mfcc, num_mel_bins)
    d = deltas(c)
    return np.concatenate([c.mean(0), c.std(0), d.mean(0), d.std(0)]).astype(np.float32)


def mfcc_batch(
    waves: Iterable[np.ndarray], sample_rate: int = 16000, n_mfcc: int = 20, num_mel_bins: int = 40
) -> np.ndarray:
    """`mfcc_features` of each clip (any lengths) stacked: float32[N, 4 * n_mfcc]."""
    feats = [mfcc_features(w, sample_rate, n_mfcc, num_mel_bins) for w in waves]
    return np.stack(feats) if feats else np.zeros((0, 4 * n_mfcc), np.float32)
