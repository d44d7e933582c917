"""Reading audio files: decode, down-mix to mono, resample, validate; errors name the file.

Every clip that enters a dataset goes through `load_audio`, so a corrupt, empty, silent or
non-finite file is caught once, at `jaxav prepare` time, with a message naming the file.
"""

import os

import numpy as np
import soundfile as sf
import soxr

from jaxav.errors import AudioError

# Suffixes (lower case) the folder and manifest builders pick up; all decoded by libsndfile.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au")

# A clip whose peak |sample| is below this is treated as silent: -80 dBFS, about 3 LSB of 16-bit
# PCM, so every clip that passes still has non-zero int16 samples once stored.
SILENCE_PEAK = 1e-4


def is_audio_file(path: str | os.PathLike) -> bool:
    """True when `path`'s suffix is one of `AUDIO_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in AUDIO_EXTENSIONS


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Reads one audio file as mono float32 at `sample_rate`.

    Args:
      path: a wav / flac / ogg / mp3 (anything libsndfile decodes) file.
      sample_rate: output rate in Hz; the file is resampled with soxr (high quality) if it differs.

    Returns:
      float32[n] samples in [-1, 1] (channels averaged), n >= 1.

    Raises:
      AudioError(path, reason): missing, unreadable/corrupt, empty (0 bytes), zero frames,
        NaN/inf samples, or all-silent (peak below `SILENCE_PEAK`, -80 dBFS).
    """
    path = str(path)
    if not os.path.exists(path):
        raise AudioError(path, "missing file")
    if os.path.isdir(path):
        raise AudioError(path, "is a directory, not an audio file")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise AudioError(path, f"cannot read ({e.strerror or e})") from e
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for bad files
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        reason = reason.replace(f"Error opening {path!r}: ", "")  # the path is named already
        raise AudioError(path, f"cannot decode ({reason})") from e
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(path, "zero-length audio (no frames)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wave)):
        raise AudioError(path, "contains NaN or infinite samples")
    if rate != sample_rate:
        wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype(np.float32)
        if wave.size == 0:
            raise AudioError(path, f"too short to resample from {rate} Hz to {sample_rate} Hz")
    peak = float(np.max(np.abs(wave)))
    if peak < SILENCE_PEAK:
        raise AudioError(path, f"all-silent audio (peak {peak:.2g} below -80 dBFS)")
    return np.ascontiguousarray(wave, dtype=np.float32)


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    """float32[n] in [-1, 1] -> int16[n] PCM (values outside [-1, 1] are clipped)."""
    return np.clip(np.round(np.asarray(wave, np.float32) * 32767.0), -32768, 32767).astype(np.int16)


def from_pcm16(pcm: np.ndarray) -> np.ndarray:
    """int16[n] PCM -> float32[n] in [-1, 1) (divides by 32768, the contract's convention)."""
    return np.asarray(pcm, np.float32) / 32768.0
