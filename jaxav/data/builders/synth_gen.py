"""Procedural audio-visual clips for `synth_av`: numpy only, vectorised over a batch of clips.

Eight audio classes in four families; each class is defined by what a listener hears (pitch
contour, timbre, rhythm, noise colour), never by level or length:

| class           | family  | what defines it                                                  |
|-----------------|---------|------------------------------------------------------------------|
| rising_glide    | contour | soft 3-harmonic tone gliding up 4-12 semitones                   |
| falling_glide   | contour | the same tone and pitch range, gliding down                      |
| bright_tone     | timbre  | steady pitch, all harmonics at 1/k (sawtooth-like, buzzy)        |
| hollow_tone     | timbre  | steady pitch, odd harmonics only at 1/k (square/clarinet-like)   |
| slow_pulses     | rhythm  | tone bursts repeating at 1.5-3 Hz                                |
| fast_pulses     | rhythm  | the same bursts at 6-10 Hz                                       |
| low_rumble      | noise   | noise band (about an octave wide) centred at 150-600 Hz          |
| high_hiss       | noise   | noise band centred at 2.5-6 kHz                                  |

Nuisances, drawn independently of the class: gain over +-12 dB, background noise (white, pink or
brown) at 3-30 dB SNR, event onset and duration (35-100 % of the clip), attack/release, a slow
random amplitude swell, slight vibrato, random harmonic phases and the base pitch within the
class range; bursts are trapezoids (60 % duty) and the noise bands have a partly flattened
envelope, so that crest factor (peak / RMS) stays close across classes. Level, peak, active
duration and clip length therefore carry (almost) no class information (tested: a linear
classifier on them stays near chance).

The video (`num_frames` RGB frames, `size` x `size`) shows one object on a noisy background: its
size follows the sound's amplitude envelope at the frame's instant (40 ms "exposure"), its height
the pitch (or noise-band centre, high pitch = top); its colour, drift and the background are
random. Its shape (disc or square) is drawn independently of the sound: `av_label = 2 * family +
shape` therefore needs both modalities.
"""

import numpy as np

AUDIO_CLASSES = (
    "rising_glide",
    "falling_glide",
    "bright_tone",
    "hollow_tone",
    "slow_pulses",
    "fast_pulses",
    "low_rumble",
    "high_hiss",
)
FAMILIES = ("contour", "timbre", "rhythm", "noise")
SHAPES = ("disc", "square")
AV_CLASSES = tuple(f"{family}_{shape}" for family in FAMILIES for shape in SHAPES)

_REF_RMS = 10 ** (-26 / 20)  # event level before the random gain: -26 dBFS RMS
_TABLE = 2048  # wavetable length


def _wavetables(amps: np.ndarray, rng) -> np.ndarray:
    """Harmonic amplitudes float[B, K] -> one period of each waveform float32[B, _TABLE].

    Harmonic phases are random per clip (a nuisance: same spectrum, different waveform/crest).
    """
    k = np.arange(1, amps.shape[1] + 1)
    phi = 2 * np.pi * rng.random(amps.shape)  # [B, K]
    arg = 2 * np.pi * np.outer(k, np.arange(_TABLE) / _TABLE)  # [K, TABLE]
    tables = (amps * np.cos(phi)) @ np.sin(arg) + (amps * np.sin(phi)) @ np.cos(arg)
    return (tables / np.maximum(np.abs(tables).max(axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _tone(f0: np.ndarray, amps: np.ndarray, sample_rate: int, rng) -> np.ndarray:
    """f0: float[B, n] Hz track, amps: float[B, K] -> float32[B, n] by wavetable lookup."""
    tables = _wavetables(amps, rng)
    start = rng.random((f0.shape[0], 1)).astype(np.float32)
    pos = ((np.cumsum(f0.astype(np.float32) / sample_rate, axis=1) + start) % 1.0) * _TABLE
    i0 = pos.astype(np.int32)
    frac = pos - i0
    i0 %= _TABLE
    a = np.take_along_axis(tables, i0, axis=1)
    b = np.take_along_axis(tables, (i0 + 1) % _TABLE, axis=1)
    return a + frac * (b - a)


def _coloured_noise(rng, shape: tuple[int, int], gain_fn, flatten=None) -> np.ndarray:
    """White noise float[B, n] shaped in frequency by gain_fn(freqs[1, F]) -> [B, F]; unit RMS.

    flatten: optional float[B, 1] in [0, 1]; divides the analytic signal by |envelope|**flatten,
    so 1 gives constant-envelope (sine-like crest) noise with about the same band.
    """
    bsz, n = shape
    spec = np.fft.rfft(rng.standard_normal(shape, dtype=np.float32), axis=1)
    freqs = np.fft.rfftfreq(n).astype(np.float32)[None, :]  # cycles per sample
    spec *= gain_fn(freqs).astype(np.float32)
    if flatten is None:
        out = np.fft.irfft(spec, n=n, axis=1).astype(np.float32)
    else:
        full = np.zeros((bsz, n), np.complex64)
        full[:, : spec.shape[1]] = 2 * spec
        full[:, 0] = spec[:, 0]
        z = np.fft.ifft(full, axis=1).astype(np.complex64)
        mag = np.maximum(np.abs(z), 1e-12)
        out = (z.real / mag ** flatten.astype(np.float32)).astype(np.float32)
    return out / np.maximum(np.sqrt(np.mean(out**2, axis=1, keepdims=True)), 1e-9)


def _harmonic_amps(f_max: np.ndarray, sample_rate: int, profile: str, k_max: int = 24):
    """Per-clip harmonic amplitudes float[B, k_max], band-limited below 0.47 * sample_rate."""
    k = np.arange(1, k_max + 1)[None, :]
    if profile == "soft":
        amps = np.where(k <= 3, 1.0 / (k.astype(float) ** 1.5), 0.0)
    elif profile == "bright":
        amps = 1.0 / k
    elif profile == "odd":
        amps = np.where(k % 2 == 1, 1.0 / k, 0.0)
    else:
        raise ValueError(profile)
    return amps * (k * f_max[:, None] < 0.47 * sample_rate)


def _log_uniform(rng, low: float, high: float, size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def generate_clips(
    rng: np.random.Generator,
    labels: np.ndarray,
    clip_seconds: float = 2.0,
    sample_rate: int = 16000,
    num_frames: int = 8,
    size: int = 32,
):
    """Synthesises one batch of clips.

    Args:
      rng: numpy Generator (the only source of randomness: same state -> same clips).
      labels: int[B] audio class indices into `AUDIO_CLASSES`.
      clip_seconds, sample_rate: clip length in seconds and its rate in Hz.
      num_frames, size: video frames per clip and their square side in pixels.

    Returns:
      audio float32[B, n] in [-1, 1] (n = round(clip_seconds * sample_rate)),
      video uint8[B, num_frames, size, size, 3], shape int64[B] (0 disc, 1 square).
    """
    labels = np.asarray(labels, np.int64)
    bsz, n = labels.shape[0], int(round(clip_seconds * sample_rate))
    t = np.arange(n, dtype=np.float32)[None, :] / sample_rate  # [1, n] seconds

    def draw(low, high, size=bsz):  # float32[size, 1] uniform draws
        return rng.uniform(low, high, size).astype(np.float32)[:, None]

    # Event timing and envelope (class-independent).
    dur = draw(0.35, 1.0) * clip_seconds
    onset = draw(0.0, 1.0) * (clip_seconds - dur)
    attack, release = draw(0.005, 0.05), draw(0.01, 0.15)
    rel_t = t - onset
    env = np.clip(np.minimum(rel_t / attack, (dur - rel_t) / release), 0.0, 1.0)
    swell = 1 - draw(0.0, 0.6) * (0.5 + 0.5 * np.sin(2 * np.pi * (draw(0.3, 1.2) * t + draw(0, 1))))
    env *= swell
    extent = np.maximum(np.sum(env > 0.05, axis=1), 1)  # event length in samples
    progress = np.clip(rel_t / dur, 0.0, 1.0)  # 0 -> 1 over the event

    # Per-class sound; pitch (or noise-band centre) track in Hz for the video.
    vib = draw(0.0, 0.2) * np.sin(2 * np.pi * draw(4.0, 6.0) * t)  # semitones
    semis = draw(4.0, 12.0)
    pitch = np.empty((bsz, n), np.float32)
    event = np.zeros((bsz, n), np.float32)
    gate = np.ones((bsz, n), np.float32)  # rhythmic bursts (1 for non-rhythm classes)
    for c in range(len(AUDIO_CLASSES)):
        idx = np.nonzero(labels == c)[0]
        if idx.size == 0:
            continue
        m = idx.size
        if c in (0, 1):  # glides over the same range, up or down
            base = _log_uniform(rng, 200, 600, m)[:, None]
            steps = semis[idx] * (progress[idx] if c == 0 else 1.0 - progress[idx])
            f0 = base * 2 ** ((steps + vib[idx]) / 12)
            event[idx] = _tone(f0, _harmonic_amps(f0.max(1), sample_rate, "soft"), sample_rate, rng)
        elif c in (2, 3, 4, 5):  # steady-pitch tones
            low, high = (150, 450) if c in (2, 3) else (300, 900)
            f0 = _log_uniform(rng, low, high, m)[:, None] * 2 ** (vib[idx] / 12)
            profile = {2: "bright", 3: "odd"}.get(c, "soft")
            event[idx] = _tone(
                f0, _harmonic_amps(f0.max(1), sample_rate, profile), sample_rate, rng
            )
            if c in (4, 5):  # trapezoid bursts, 60 % duty
                rate = draw(1.5, 3.0, m) if c == 4 else draw(6.0, 10.0, m)
                frac = (rate * t + draw(0.0, 1.0, m)) % 1.0
                gate[idx] = np.clip(np.minimum(frac, 0.6 - frac) / 0.06, 0.0, 1.0)
        else:  # noise bands, about an octave wide, partly flattened envelope
            fc = _log_uniform(rng, 150, 600, m) if c == 6 else _log_uniform(rng, 2500, 6000, m)
            centre, width = (fc / sample_rate)[:, None], draw(0.4, 0.6, m)  # width in octaves

            def band(f, centre=centre, width=width):
                return np.exp(-0.5 * (np.log2(np.maximum(f, 1e-6) / centre) / width) ** 2)

            event[idx] = _coloured_noise(rng, (m, n), band, flatten=draw(0.5, 1.0, m))
            f0 = np.broadcast_to(fc[:, None], (m, n))
        pitch[idx] = f0
    env *= gate
    event *= env

    # Level: event RMS over its extent -> reference * random gain; background at random SNR.
    ev_rms = np.sqrt(np.sum(event**2, axis=1) / extent)
    event *= (_REF_RMS / np.maximum(ev_rms, 1e-9))[:, None]
    alpha = rng.choice(np.array([0.0, 1.0, 2.0], np.float32), bsz)[:, None]  # white/pink/brown

    def tilt(f):
        return np.where(f > 0, (np.maximum(f, 1e-4) / 0.01) ** (-alpha / 2), 0.0)

    noise = _coloured_noise(rng, (bsz, n), tilt)
    audio = event + noise * (_REF_RMS * 10 ** (-draw(3.0, 30.0) / 20))
    audio *= 10 ** (draw(-12.0, 12.0) / 20)
    peak = np.abs(audio).max(axis=1, keepdims=True)
    audio *= np.minimum(1.0, 0.98 / np.maximum(peak, 1e-9))
    video, shape = _render_video(rng, env, pitch, num_frames, size, sample_rate)
    return audio, video, shape


def _render_video(rng, env, pitch, num_frames: int, size: int, sample_rate: int):
    """Renders the object: size ~ envelope, height ~ log pitch; returns uint8 video, int64 shape."""
    bsz, n = env.shape
    centres = ((np.arange(num_frames) + 0.5) * n / num_frames).astype(int)
    half = int(0.02 * sample_rate)  # 40 ms exposure window
    win = np.clip(centres[:, None] + np.arange(-half, half + 1)[None, :], 0, n - 1)  # [F, W]
    level = env[:, win].mean(axis=2)  # [B, F]
    level = level / np.maximum(level.max(axis=1, keepdims=True), 1e-6)
    logf = np.log(pitch[:, centres].astype(np.float64))  # [B, F]
    height = (logf - np.log(100.0)) / (np.log(8000.0) - np.log(100.0))
    cy = size * (0.85 - 0.7 * np.clip(height, 0, 1))
    x0, vx = rng.uniform(0.3, 0.7, bsz) * size, rng.uniform(-0.25, 0.25, bsz) * size
    cx = x0[:, None] + vx[:, None] * np.linspace(-0.5, 0.5, num_frames)[None, :]
    radius = size * (0.04 + 0.22 * level)  # [B, F] pixels
    cy, cx, radius = (v.astype(np.float32) for v in (cy, cx, radius))
    shape = rng.integers(0, 2, bsz)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy = yy[None, None] - cy[:, :, None, None]
    dx = xx[None, None] - cx[:, :, None, None]
    r = radius[:, :, None, None]
    disc = dy**2 + dx**2 <= r**2
    square = np.maximum(np.abs(dy), np.abs(dx)) <= r * 0.886  # same area as the disc
    inside = np.where(shape[:, None, None, None] == 1, square, disc)
    hue = rng.random(bsz)
    colour = 255 * np.clip(np.abs((hue[:, None] * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)
    colour = np.maximum(colour, 60.0).astype(np.float32)  # bright, saturated object colour [B, 3]
    bg = rng.uniform(10, 70, (bsz, 1, 1, 1, 3)).astype(np.float32)
    frames = bg + 10 * rng.standard_normal((bsz, num_frames, size, size, 3), dtype=np.float32)
    frames = np.where(inside[..., None], colour[:, None, None, None, :], frames)
    return np.clip(np.round(frames), 0, 255).astype(np.uint8), shape.astype(np.int64)
