"""Frozen features of a pretrained encoder: restore its params, window clips, embed whole splits.

`load_encoder` restores a checkpoint's parameters alone (no optimizer state) replicated over any
mesh (a checkpoint written on 8 devices restores onto 1) and builds the model from the config
saved with the checkpoint. `embed_split` runs the model's `encode` over a split, jitted once, with
the batch split over the mesh's ("data", "fsdp") axes and the params replicated.

Clips keep their full length: a clip of T log-mel frames becomes ceil((T - num_frames) / hop) + 1
windows of `num_frames` frames (hop = num_frames, or num_frames // 2 with `overlap`; the last
window zero-padded in the waveform, as `pipeline.crop_or_pad` pads short clips), each window is
encoded, token outputs `[W, N, D]` are mean-pooled over N and the clip's feature is the mean over
its windows. Each token set also gives a statistics-pooled set `stats_<name>` `[2D]`: the mean and
the standard deviation over N (x-vector statistics pooling; the MFCC baseline pools its frames the
same way), so that how features vary over a clip (rhythm, onsets) reaches the linear probe too.
Clips whose decoding raises are skipped and counted (`SplitFeatures.num_failed`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxav.data import frontend, pipeline
from jaxav.evaluate.report import reconstruct  # noqa: F401 (re-exported for notebooks)
from jaxav.evaluate.splits import STATS_PREFIX
from jaxav.models.registry import build_model
from jaxav.train import checkpoint as ckpt
from jaxav.train import sharding as shd

HOP_MS = 10.0  # log-mel frame hop


@dataclasses.dataclass
class Encoder:
    """A model, its params (replicated on `mesh`) and the config it was built from.

    Attributes:
      config: the full config saved with the checkpoint.
      model: the flax module (`build_model(config)`), whose `encode` gives per-layer features.
      params: the parameter pytree, replicated over `mesh`.
      step: the checkpoint step, or None for a randomly initialised encoder.
      mesh: the device mesh; batches are split over its ("data", "fsdp") axes.
    """

    config: ml_collections.ConfigDict
    model: nn.Module
    params: Any
    step: int | None
    mesh: jax.sharding.Mesh

    @property
    def with_video(self) -> bool:
        """Whether `encode` takes (audio, video) (audio-visual checkpoints)."""
        return bool(self.config.data.with_video)

    @property
    def batch_devices(self) -> int:
        """Devices a batch is split over (the product of the mesh's data and fsdp sizes)."""
        return int(np.prod([self.mesh.shape[a] for a in shd.BATCH_AXES]))

    @functools.cached_property
    def _fns(self) -> dict:
        return {pool: self._jit(pool) for pool in (True, False)}

    def _jit(self, pool: bool):
        model = self.model

        def fn(params, audio, video):
            args = (audio,) if video is None else (audio, video)
            out = model.apply({"params": params}, *args, method="encode")
            if pool:
                out = pool_tokens(out)
            return {k: v.astype(jnp.float32) for k, v in out.items()}

        return jax.jit(fn, out_shardings=shd.replicated(self.mesh))

    def encode(
        self, audio: np.ndarray, video: np.ndarray | None = None, *, pool: bool = True
    ) -> dict[str, np.ndarray]:
        """Per-layer features of a batch (padded to a multiple of `batch_devices` and back).

        Args:
          audio: float32[B, T, F] normalised log-mel windows.
          video: float32[B, Tv, H, W, 3] normalised frames (audio-visual models only).
          pool: pool token outputs over tokens (`pool_tokens`).

        Returns:
          name -> float32 numpy: pooled `[B, D]` and `stats_<name>` `[B, 2D]` sets and `cls_i`
          `[B, D]`, or without `pool` `[B, N, D]` tokens and `cls_i`.
        """
        n, sharding = len(audio), shd.batch_sharding(self.mesh)
        b = _round_up(n, self.batch_devices)
        put = lambda x: (lambda p: jax.make_array_from_callback(p.shape, sharding, p.__getitem__))(
            _pad_rows(x, b)
        )
        video = put(video) if self.with_video else None
        out = jax.device_get(self._fns[pool](self.params, put(audio), video))
        return {k: np.asarray(v)[:n] for k, v in out.items()}

    def encode_all(
        self,
        audio: np.ndarray,
        video: np.ndarray | None = None,
        *,
        batch_size: int = 64,
        pool: bool = True,
    ) -> dict[str, np.ndarray]:
        """`encode` over any number of windows, in fixed-size padded batches (one compile).

        Args:
          audio: float32[W, T, F]; video: float32[W, Tv, H, W, 3] or None.
          batch_size: windows per batch (rounded up to a multiple of `batch_devices`).

        Returns:
          name -> float32[W, ...].
        """
        b = _round_up(min(batch_size, max(len(audio), 1)), self.batch_devices)
        outs: list[dict[str, np.ndarray]] = []
        for start in range(0, len(audio), b):
            a = _pad_rows(audio[start : start + b], b)
            v = None if video is None else _pad_rows(video[start : start + b], b)
            n = min(b, len(audio) - start)
            outs.append({k: x[:n] for k, x in self.encode(a, v, pool=pool).items()})
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else {}


def pool_tokens(features: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Pools the token sets of `Encoder.encode` over their tokens.

    Args:
      features: name -> `[B, N, D]` token outputs or `[B, D]` vectors (cls tokens).

    Returns:
      name -> `[B, D]`: token sets mean-pooled, vectors as they are; plus, for each token set,
      `stats_<name>` -> `[B, 2D]`: its mean and standard deviation over the N tokens.
    """
    out: dict[str, jax.Array] = {}
    for name, v in features.items():
        if v.ndim != 3:
            out[name] = v
            continue
        v32 = v.astype(jnp.float32)
        out[name] = v32.mean(axis=1)
        out[STATS_PREFIX + name] = jnp.concatenate([out[name], v32.std(axis=1)], axis=-1)
    return out


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (
        np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])
        if len(x) < rows
        else x
    )


def probe_mesh(devices=None) -> jax.sharding.Mesh:
    """A data-parallel mesh over `devices` (default: all): batch split, params replicated."""
    return shd.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1}), devices)


def load_encoder(workdir, step: int | None = None, *, mesh=None, config=None) -> Encoder:
    """Restores a checkpoint's encoder params alone onto `mesh` (default: all devices).

    Args:
      workdir: the training workdir (with `checkpoints/<step>/`).
      step: checkpoint step (default: the latest).
      mesh: target mesh; the params are replicated on it whatever mesh wrote them.
      config: when given, the checkpoint's model must match it (else CheckpointError).

    Raises:
      CheckpointError: no checkpoint, a missing step (lists the available ones), another model.
    """
    mesh = probe_mesh() if mesh is None else mesh
    if config is not None:
        ckpt.check_same_model(ckpt.saved_config(workdir, step)[0], config)
    saved, params, step = ckpt.restore_params(workdir, step, sharding=shd.replicated(mesh))
    return Encoder(saved, build_model(saved), params, int(step), mesh)


def window_starts(total_frames: int, num_frames: int, hop: int) -> list[int]:
    """First frames of the windows covering `total_frames` frames: [0, hop, ...], >= 1 window."""
    if total_frames <= num_frames:
        return [0]
    return [i * hop for i in range(-(-(total_frames - num_frames) // hop) + 1)]


def clip_windows(wave: np.ndarray, spec: pipeline.ExampleSpec, overlap: bool = False) -> np.ndarray:
    """A whole clip as normalised log-mel windows.

    Args:
      wave: float32[n] samples in [-1, 1] at `spec.sample_rate`.
      spec: num_frames (window length), mel bins, window function, normalisation stats.
      overlap: hop num_frames // 2 (50% overlap) instead of num_frames.

    Returns:
      float32[W, num_frames, num_mel_bins]; the waveform is zero-padded to fill the last window
      (a last window with fewer than num_frames // 4 real frames is dropped, unless the only one).
    """
    nf = spec.num_frames
    hop = max(nf // 2, 1) if overlap else nf
    total = frontend.num_frames(wave.shape[0], spec.sample_rate)
    starts = window_starts(total, nf, hop)
    if len(starts) > 1 and total - starts[-1] < max(nf // 4, 1):
        starts = starts[:-1]  # a last window of under 1/4 real frames adds mostly padding
    hop_samples = int(round(HOP_MS / 1000 * spec.sample_rate))
    wave = pipeline.crop_or_pad(wave, spec.num_samples + starts[-1] * hop_samples, 0)
    fb = frontend.fbank_numpy(wave, spec.sample_rate, spec.num_mel_bins, window=spec.window)
    fb = frontend.normalize(fb, spec.mean, spec.std).astype(np.float32)
    return np.stack([fb[s : s + nf] for s in starts])


def wave_of(example: Mapping) -> np.ndarray:
    """float32[n] waveform of a stored example (int16 PCM scaled by 1 / 32768).

    Raises ValueError for audio that is not numeric, empty or not finite (the clip is skipped).
    """
    wave = np.asarray(example["audio"])
    if wave.dtype.kind not in "iuf" or wave.size == 0:
        raise ValueError(f"no decodable audio (dtype {wave.dtype}, {wave.size} samples)")
    if wave.dtype.kind == "f" and not np.isfinite(wave).all():
        raise ValueError("audio has NaN or inf samples")
    if wave.dtype == np.int16:
        wave = wave.astype(np.float32) / 32768.0
    return wave.astype(np.float32, copy=False).reshape(-1)


def labels_of(example: Mapping, num_classes: int) -> dict[str, np.ndarray]:
    """`label` int64 (-1: none), `labels` float32[C] (when num_classes), `av_label` (synth_av)."""
    out = {"label": np.int64(example.get("label", -1))}
    if num_classes:
        out["labels"] = np.asarray(example.get("labels", np.zeros(num_classes)), np.float32)
    if "av_label" in example:
        out["av_label"] = np.int64(example["av_label"])
    return out


@dataclasses.dataclass(frozen=True)
class WindowTransform:
    """Stored example -> {"audio": float32[W, T, F] windows, labels, "video"?}; picklable."""

    spec: pipeline.ExampleSpec
    overlap: bool = False

    def __call__(self, example: Mapping) -> dict:
        """Windows of the whole clip plus `label`, `labels`, `av_label` and (AV) `video`."""
        out = {"audio": clip_windows(wave_of(example), self.spec, self.overlap)}
        out.update(labels_of(example, self.spec.num_classes))
        if self.spec.with_video:
            video = example.get("video")
            s = self.spec
            if video is None or np.asarray(video).shape[0] == 0:
                out["video"] = np.zeros((s.video_frames, s.video_size, s.video_size, 3), np.float32)
            else:
                out["video"] = pipeline.pick_frames(
                    np.asarray(video), s.video_frames, s.video_size, None
                )
        return out


@dataclasses.dataclass
class SplitFeatures:
    """Features of the clips of one split that decoded, in split order.

    Attributes:
      features: name -> float32[N, D] (window- and token-mean-pooled).
      labels: "label" int64[N], "labels" float32[N, C] (when the dataset has classes),
        "av_label" int64[N] (synth_av).
      index: int64[N] position of each clip in the split.
      num_failed: clips skipped because decoding raised; `failures` lists (index, reason).
      num_windows: windows encoded in all.
    """

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    index: np.ndarray
    num_failed: int = 0
    failures: list = dataclasses.field(default_factory=list)
    num_windows: int = 0


class _Decoded:
    """grain map fn: split position -> (position, transformed example or the error's text)."""

    def __init__(self, source, transform):
        self.source, self.transform = source, transform

    def __call__(self, i: int):
        try:
            return int(i), self.transform(self.source[int(i)])
        except Exception as e:  # noqa: BLE001 - any decode failure skips (and counts) the clip
            return int(i), f"{type(e).__name__}: {e}"


def embed_split(
    encoder: Encoder,
    source,
    spec: pipeline.ExampleSpec,
    *,
    batch_size: int = 64,
    overlap: bool = False,
    desc: str = "embed",
    progress: bool = True,
) -> SplitFeatures:
    """Encodes every clip of a split (windowed, see the module docstring).

    Args:
      encoder: from `load_encoder` / `random_encoder`.
      source: random-access data source (`PreparedDataset.source(split)`), examples with
        `audio` int16[n] (or float32) at spec.sample_rate, `label`, `labels`, ...
      spec: `pipeline.spec_from_config(encoder.config, dataset)`: num_frames is the window.
      batch_size: windows per device batch (rounded up to the mesh's batch devices).
      overlap: 50%-overlapping windows.
      desc, progress: the tqdm bar (shown on process 0).

    Returns:
      SplitFeatures: per-layer float32[N_clips, D] features, labels, failures.
    """
    from tqdm.auto import tqdm

    n = len(source)
    b = _round_up(batch_size, encoder.batch_devices)
    ds = grain.MapDataset.range(n).map(_Decoded(source, WindowTransform(spec, overlap)))
    bar = tqdm(total=n, desc=desc, unit="clip", disable=not progress or jax.process_index() != 0)
    sums: dict[str, np.ndarray] = {}
    kept: list[dict] = []
    failures: list = []
    pending: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # (slot, window, video)
    counts: list[int] = []
    num_windows = 0

    def flush(final: bool) -> None:
        nonlocal pending
        while len(pending) >= b or (final and pending):
            chunk, pending = pending[:b], pending[b:]
            audio = _pad_rows(np.stack([c[1] for c in chunk]), b)
            video = None
            if encoder.with_video:
                video = _pad_rows(np.stack([c[2] for c in chunk]), b)
            out = encoder.encode(audio, video)
            slots = np.asarray([c[0] for c in chunk])
            for k, v in out.items():
                if k not in sums:
                    sums[k] = np.zeros((n, v.shape[-1]), np.float64)
                np.add.at(sums[k], slots, v[: len(chunk)])

    for i, item in ds.to_iter_dataset():
        bar.update(1)
        if isinstance(item, str):
            failures.append((i, item))
            continue
        slot = len(kept)
        windows = item.pop("audio")
        video = item.pop("video", None)
        kept.append({"index": i, **item})
        counts.append(len(windows))
        num_windows += len(windows)
        pending.extend((slot, w, video) for w in windows)
        flush(final=False)
    flush(final=True)
    bar.close()
    m = len(kept)
    denom = np.maximum(np.asarray(counts, np.float64), 1)[:, None]
    features = {k: (v[:m] / denom).astype(np.float32) for k, v in sums.items()}
    labels = {k: np.stack([e[k] for e in kept]) for k in (kept[0] if kept else {}) if k != "index"}
    index = np.asarray([e["index"] for e in kept], np.int64)
    return SplitFeatures(features, labels, index, len(failures), failures, num_windows)
