"""The HEAR benchmark API (hearbenchmark.com) for jaxav checkpoints.

    model = load_model("runs/quickstart")          # a workdir, or runs/quickstart/checkpoints/300
    scene = get_scene_embeddings(audio, model)     # [n_sounds, scene_embedding_size]
    emb, ts = get_timestamp_embeddings(audio, model)  # [n, n_timestamps, D], [n, n_timestamps] ms

`audio` is float32[n_sounds, n_samples] in [-1, 1] at 16 kHz, a torch tensor (as HEAR passes) or
a numpy array; results come back as the same kind. Sounds are cut into non-overlapping windows of
the model's `data.num_frames` log-mel frames (the last zero-padded), normalised with the
pretraining dataset's fbank statistics. Scene embedding: the chosen layer's tokens mean-pooled
over each window, then averaged over the windows. Timestamp embeddings: one per time patch (the
token grid's frequency patches averaged), at the patch centre, `(t * stride + size / 2) * 10 ms`
from the window start. Deterministic (eval mode, no rng).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxav.data import pipeline
from jaxav.errors import CheckpointError
from jaxav.evaluate.features import HOP_MS, Encoder, clip_windows, load_encoder
from jaxav.models.patch import grid_shape

SAMPLE_RATE = 16000
# Log-mel statistics used when the pretraining dataset is not on this machine (AudioSet, AST).
FALLBACK_MEAN, FALLBACK_STD = -4.2677393, 4.5689974


@dataclasses.dataclass
class HearModel:
    """What `load_model` returns; the HEAR functions take it.

    Attributes:
      encoder: the restored `features.Encoder`.
      spec: window length, mel bins and normalisation of the inputs.
      layer: the `encode` output embedded (default: the last `layer_<i>`).
      sample_rate: 16000 Hz.
      scene_embedding_size, timestamp_embedding_size: D of the layer.
      batch_size: windows per forward pass.
    """

    encoder: Encoder
    spec: pipeline.ExampleSpec
    layer: str
    sample_rate: int = SAMPLE_RATE
    scene_embedding_size: int = 0
    timestamp_embedding_size: int = 0
    batch_size: int = 32


def _workdir_and_step(path: str) -> tuple[Path, int | None]:
    p = Path(path).absolute()
    if p.name.isdigit() and p.parent.name == "checkpoints":
        return p.parent.parent, int(p.name)
    return p, None


def _stats(config, mean: float | None, std: float | None, workdir=None) -> tuple[float, float]:
    """The fbank mean/std the encoder was trained with: `WORKDIR/fbank_stats.json` (written by
    the trainer), else the pretraining dataset's if it is prepared here, else the fallback."""
    if mean is not None and std is not None:
        return float(mean), float(std)
    stats_file = Path(workdir) / "fbank_stats.json" if workdir is not None else None
    if stats_file is not None and stats_file.is_file():
        stats = json.loads(stats_file.read_text())
        return float(stats["mean"]), float(stats["std"])
    from jaxav.data.prepare import load_dataset
    from jaxav.errors import JaxavError
    from jaxav.train.trainer import dataset_options

    d = config.data
    try:
        ds = load_dataset(d.dataset, d.source or None, d.data_dir or None, **dataset_options(d))
        return pipeline.dataset_mean_std(ds)
    except (JaxavError, OSError):
        return FALLBACK_MEAN, FALLBACK_STD


def load_model(model_file_path: str = "", **kwargs: Any) -> HearModel:
    """Loads a jaxav checkpoint for HEAR.

    Args:
      model_file_path: a jaxav workdir (latest step) or a step dir `WORKDIR/checkpoints/<step>`.
      **kwargs: `layer` (an `encode` key, default the last `layer_<i>`), `mean` / `std` (fbank
        statistics, default the pretraining dataset's), `batch_size` (windows per pass), `mesh`.

    Raises:
      CheckpointError for a path without checkpoints or an unknown layer.
    """
    workdir, step = _workdir_and_step(model_file_path)
    encoder = load_encoder(workdir, step, mesh=kwargs.get("mesh"))
    c = encoder.config
    mean, std = _stats(c, kwargs.get("mean"), kwargs.get("std"), workdir)
    spec = pipeline.ExampleSpec(
        num_frames=c.data.num_frames,
        num_mel_bins=c.data.num_mel_bins,
        sample_rate=SAMPLE_RATE,
        mean=mean,
        std=std,
        window=c.data.window,
    )
    probe = encoder.encode(np.zeros((1, c.data.num_frames, c.data.num_mel_bins), np.float32))
    layers = sorted((k for k in probe if re.fullmatch(r"layer_\d+", k)), key=lambda k: int(k[6:]))
    layer = kwargs.get("layer") or layers[-1]
    if layer not in probe or probe[layer].ndim != 2:
        raise CheckpointError(f"layer {layer!r} is not a token layer; choose one of {layers}")
    d = int(probe[layer].shape[-1])
    batch_size = int(kwargs.get("batch_size", 32))
    return HearModel(encoder, spec, layer, SAMPLE_RATE, d, d, batch_size)


def _to_numpy(audio) -> tuple[np.ndarray, bool]:
    """(float32[n_sounds, n_samples], whether `audio` was a torch tensor)."""
    if type(audio).__module__.startswith("torch"):
        return audio.detach().cpu().numpy().astype(np.float32), True
    return np.asarray(audio, np.float32), False


def _like(x: np.ndarray, torch_out: bool):
    if torch_out:
        import torch

        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def _windows(audio: np.ndarray, model: HearModel) -> np.ndarray:
    """float32[n_sounds, W, T, F] windows (the same W for every sound of one length)."""
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples], got shape {audio.shape}")
    return np.stack([clip_windows(w, model.spec) for w in audio])


def _tokens(windows: np.ndarray, model: HearModel) -> np.ndarray:
    """float32[n, W, N, D] tokens of `model.layer` for windows float32[n, W, T, F]."""
    n, w = windows.shape[:2]
    flat = windows.reshape(n * w, *windows.shape[2:])
    out = model.encoder.encode_all(flat, batch_size=model.batch_size, pool=False)[model.layer]
    return out.reshape(n, w, *out.shape[1:])


def get_scene_embeddings(audio, model: HearModel):
    """One embedding per sound: float32[n_sounds, scene_embedding_size] (same kind as `audio`).

    Args:
      audio: float32[n_sounds, n_samples] at 16 kHz, torch.Tensor or numpy.
      model: from `load_model`.
    """
    x, was_torch = _to_numpy(audio)
    tokens = _tokens(_windows(x, model), model)  # [n, W, N, D]
    return _like(tokens.mean(axis=(1, 2)).astype(np.float32), was_torch)


def get_timestamp_embeddings(audio, model: HearModel):
    """Embeddings per time patch and their centre times.

    Args:
      audio: float32[n_sounds, n_samples] at 16 kHz, torch.Tensor or numpy.
      model: from `load_model`.

    Returns:
      (float32[n_sounds, n_timestamps, timestamp_embedding_size], float32[n_sounds, n_timestamps]
      timestamps in ms), as the kind of `audio`; patches whose centre lies after the audio's end
      (in the padding of the last window) are dropped.
    """
    x, was_torch = _to_numpy(audio)
    spec = model.spec
    tokens = _tokens(_windows(x, model), model)  # [n, W, N, D]
    model_ = model.encoder.model
    (p_f, p_t), (s_f, s_t) = model_.patch_size, model_.patch_stride
    n_f, n_t = grid_shape(spec.num_frames, spec.num_mel_bins, (p_f, p_t), (s_f, s_t))
    n, w = tokens.shape[:2]
    per_time = tokens.reshape(n, w, n_f, n_t, -1).mean(axis=2)  # [n, W, T_p, D]
    centres = (np.arange(n_t) * s_t + p_t / 2.0) * HOP_MS  # ms within a window
    times = (np.arange(w)[:, None] * spec.num_frames * HOP_MS + centres[None]).reshape(-1)
    emb = per_time.reshape(n, w * n_t, -1)
    duration_ms = 1000.0 * x.shape[1] / spec.sample_rate
    keep = times <= max(duration_ms, centres[0])
    emb, times = emb[:, keep], times[keep].astype(np.float32)
    ts = np.broadcast_to(times, (n, times.size)).copy()
    return _like(emb.astype(np.float32), was_torch), _like(ts, was_torch)
