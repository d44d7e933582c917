"""Tests for jaxav.data.audio_io on files generated in tmp_path."""

import numpy as np
import pytest
import soundfile as sf

from jaxav.data import audio_io
from jaxav.errors import AudioError


def _sine(freq, seconds, rate, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_freq(wave, rate):
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return np.argmax(spec) * rate / wave.size


def test_stereo_44k_to_mono_16k(tmp_path):
    left, right = _sine(440, 1.0, 44100, 0.4), _sine(440, 1.0, 44100, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    wave = audio_io.load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 16000) <= 1
    assert abs(_peak_freq(wave, 16000) - 440) < 3
    # Down-mix is the channel mean: amplitude (0.4 + 0.2) / 2.
    assert np.max(np.abs(wave[1000:-1000])) == pytest.approx(0.3, abs=0.01)


def test_same_rate_is_untouched(tmp_path):
    x = _sine(1000, 0.5, 16000)
    path = tmp_path / "a.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(audio_io.load_audio(path), x)


@pytest.mark.parametrize(
    "fmt, ext, atol", [("FLAC", ".flac", 1e-4), ("OGG", ".ogg", None), ("MP3", ".mp3", None)]
)
def test_compressed_round_trip(tmp_path, fmt, ext, atol):
    x = _sine(660, 1.0, 16000, 0.5)
    path = tmp_path / f"clip{ext}"
    try:
        sf.write(path, x, 16000, format=fmt)
    except (sf.LibsndfileError, TypeError, ValueError) as e:  # pragma: no cover
        pytest.skip(f"libsndfile cannot write {fmt}: {e}")
    wave = audio_io.load_audio(path)
    assert ext in audio_io.AUDIO_EXTENSIONS
    assert abs(_peak_freq(wave, 16000) - 660) < 3
    if atol is not None:
        np.testing.assert_allclose(wave, x, atol=atol)
    else:  # lossy codecs add delay / padding; the tone must survive
        assert abs(wave.size - x.size) < 0.2 * x.size
        assert np.max(np.abs(wave)) == pytest.approx(0.5, abs=0.1)


def _write_bad(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt garbage that is not audio" * 3)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_length":
        sf.write(path, np.zeros((0,), np.float32), 16000)
    elif kind == "nan":
        x = _sine(440, 0.2, 16000)
        x[100] = np.nan
        sf.write(path, x, 16000, subtype="FLOAT")
    elif kind == "inf":
        x = _sine(440, 0.2, 16000)
        x[7] = np.inf
        sf.write(path, x, 16000, subtype="FLOAT")
    elif kind == "silent":
        sf.write(path, np.zeros(3200, np.float32), 16000)
    elif kind == "text":
        path = tmp_path / "notes.wav"
        path.write_text("hello, this is not a wav file\n" * 20)
    elif kind == "missing":
        path = tmp_path / "nowhere.wav"
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("corrupt", "cannot decode"),
        ("empty", "empty file"),
        ("zero_length", "zero-length"),
        ("nan", "NaN"),
        ("inf", "NaN or infinite"),
        ("silent", "all-silent"),
        ("text", "cannot decode"),
        ("missing", "missing file"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path, kind, reason):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(AudioError) as info:
        audio_io.load_audio(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value)
    assert info.value.path == str(path) and reason in info.value.reason


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        audio_io.load_audio(tmp_path)


def test_quiet_but_not_silent_is_kept(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, _sine(440, 0.2, 16000, amp=10 ** (-60 / 20)), 16000, subtype="PCM_16")
    assert np.max(np.abs(audio_io.load_audio(path))) > audio_io.SILENCE_PEAK


def test_pcm16_conversion():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0], np.float32)
    pcm = audio_io.to_pcm16(x)
    assert pcm.dtype == np.int16
    np.testing.assert_array_equal(pcm, [0, 16384, -16384, 32767, -32767, 32767, -32768])
    np.testing.assert_allclose(audio_io.from_pcm16(pcm)[:5], x[:5], atol=1e-4)


def test_is_audio_file():
    assert audio_io.is_audio_file("a/B.WAV") and audio_io.is_audio_file("x.flac")
    assert not audio_io.is_audio_file("x.txt") and not audio_io.is_audio_file("wav")
