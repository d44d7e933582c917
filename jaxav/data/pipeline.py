"""grain input pipelines: TFDS data source -> crop/pad -> log-mel -> normalise -> batches on a Mesh.

The training pipeline is a `grain.MapDataset` (seeded global shuffle per epoch, this process's
share of the examples, per-example random crop) turned into an `IterDataset` (batch, optional
worker processes). Its iterator is checkpointable (`get_state`/`set_state`, or Orbax through
`grain.checkpoint.CheckpointSave`): restoring it yields exactly the batches that would have come
next. `global_batch` assembles the per-process batches into global `jax.Array`s sharded over the
mesh's batch axes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import grain
import jax
import numpy as np

from jaxav.data import frontend

HOP_SAMPLES_PER_SECOND = 100  # 10 ms hop
VIDEO_MEAN, VIDEO_STD = 0.5, 0.25  # uint8 frames are mapped to (x / 255 - mean) / std


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What one example becomes: `num_frames` normalised log-mel frames (+ video frames)."""

    num_frames: int = 256
    num_mel_bins: int = 128
    sample_rate: int = 16000
    mean: float = 0.0
    std: float = 0.5
    with_video: bool = False
    video_frames: int = 4
    video_size: int = 32
    num_classes: int = 0
    window: str = "povey"

    @property
    def num_samples(self) -> int:
        """Waveform samples that give exactly `num_frames` Kaldi frames (25 ms win, 10 ms hop)."""
        win = int(round(0.025 * self.sample_rate))
        hop = int(round(0.010 * self.sample_rate))
        return (self.num_frames - 1) * hop + win


def spec_from_config(config, dataset) -> ExampleSpec:
    """Builds the `ExampleSpec` for `config.data` and a `PreparedDataset`'s statistics."""
    mean, std = dataset_mean_std(dataset)
    return ExampleSpec(
        num_frames=config.data.num_frames,
        num_mel_bins=config.data.num_mel_bins,
        sample_rate=config.data.sample_rate,
        mean=mean,
        std=std,
        with_video=config.data.with_video,
        video_frames=config.data.video_frames,
        video_size=config.data.video_size,
        num_classes=len(dataset.class_names or ()),
        window=config.data.window,
    )


def dataset_mean_std(dataset) -> tuple[float, float]:
    """(mean, std) of the dataset's log-mel features, as computed at prepare time."""
    stats = dataset.stats
    if isinstance(stats, Mapping):
        return float(stats["mean"]), float(stats["std"])
    if isinstance(stats, Sequence):
        return float(stats[0]), float(stats[1])
    return float(stats.mean), float(stats.std)


def crop_or_pad(wave: np.ndarray, length: int, offset: int | None) -> np.ndarray:
    """Cuts `length` samples starting at `offset` (None: centre), zero-padding short clips.

    Args:
      wave: float32[n] waveform.
      length: samples wanted.
      offset: first sample of the window; None centres it.
    Returns:
      float32[length].
    """
    n = wave.shape[0]
    if n >= length:
        start = (n - length) // 2 if offset is None else offset
        return wave[start : start + length]
    out = np.zeros((length,), np.float32)
    out[:n] = wave
    return out


def pick_frames(video: np.ndarray, count: int, size: int, offset: int | None) -> np.ndarray:
    """Takes `count` evenly spaced frames (from `offset`, None: centred) resized to `size`.

    Args:
      video: uint8[T, H, W, 3].
    Returns:
      float32[count, size, size, 3], normalised.
    """
    t = video.shape[0]
    if t == 0:
        return np.zeros((count, size, size, 3), np.float32)
    stride = max(t // count, 1)
    span = stride * (count - 1) + 1
    start = 0 if t <= span else ((t - span) // 2 if offset is None else offset % (t - span + 1))
    idx = np.minimum(start + stride * np.arange(count), t - 1)
    frames = video[idx]
    if frames.shape[1] != size or frames.shape[2] != size:
        ys = (np.arange(size) * frames.shape[1] / size).astype(np.int64)
        xs = (np.arange(size) * frames.shape[2] / size).astype(np.int64)
        frames = frames[:, ys][:, :, xs]  # nearest-neighbour resize
    return ((frames.astype(np.float32) / 255.0) - VIDEO_MEAN) / VIDEO_STD


@dataclasses.dataclass(frozen=True)
class ExampleTransform:
    """Turns one stored example into model inputs; picklable for grain worker processes."""

    spec: ExampleSpec
    train: bool

    def __call__(self, example: Mapping, rng: np.random.Generator | None = None) -> dict:
        """Returns {'audio': f32[T, F], 'label': i32, 'labels': f32[C], 'has_video', 'video'?}."""
        spec = self.spec
        wave = np.asarray(example["audio"])
        if wave.dtype == np.int16:
            wave = wave.astype(np.float32) / 32768.0
        wave = wave.astype(np.float32, copy=False)
        need = spec.num_samples
        offset = None
        if self.train and rng is not None and wave.shape[0] > need:
            offset = int(rng.integers(0, wave.shape[0] - need + 1))
        wave = crop_or_pad(wave, need, offset)
        fbank = frontend.fbank_numpy(wave, spec.sample_rate, spec.num_mel_bins, window=spec.window)
        out = {
            "audio": frontend.normalize(fbank, spec.mean, spec.std).astype(np.float32),
            "label": np.int32(example.get("label", -1)),
        }
        if spec.num_classes:
            labels = np.asarray(example.get("labels", np.zeros(spec.num_classes)), np.float32)
            out["labels"] = labels
        if "av_label" in example:
            out["av_label"] = np.int32(example["av_label"])
        if spec.with_video:
            video = example.get("video")
            has = bool(example.get("has_video", video is not None)) and video is not None
            if has and np.asarray(video).shape[0] > 0:
                voff = None
                if self.train and rng is not None and offset is not None:
                    voff = int(rng.integers(0, 1 << 30))
                out["video"] = pick_frames(
                    np.asarray(video), spec.video_frames, spec.video_size, voff
                )
            else:
                has = False
                out["video"] = np.zeros(
                    (spec.video_frames, spec.video_size, spec.video_size, 3), np.float32
                )
            out["has_video"] = np.bool_(has)
        return out


def make_train_dataset(
    source,
    spec: ExampleSpec,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_workers: int = 0,
) -> grain.IterDataset:
    """Endless, shuffled, randomly cropped training batches for this process.

    Args:
      source: a random-access data source (`PreparedDataset.source(split)`).
      spec: what each example becomes.
      batch_size: examples per batch for THIS process (global batch / process count).
      seed: shuffle and crop seed; the same seed gives the same batches.
      process_index, process_count: this process's share is block `process_index` of each
        global batch (disjoint across processes, together the whole shuffled stream; the same
        global batches at any process count).
      num_workers: grain worker processes (0: decode in this process).
    Returns:
      an IterDataset of dicts of numpy arrays with leading axis `batch_size`.
    """
    ds = grain.MapDataset.source(source)
    if len(ds) == 0:
        raise ValueError("the training split has no examples")
    ds = ds.shuffle(seed=seed).repeat(None)
    ds = ds.random_map(ExampleTransform(spec, train=True), seed=seed + 1)
    # Global batch k = examples [k*B, (k+1)*B) of the shuffled stream (B = batch_size * count);
    # this process takes its contiguous block of it, so batches (and resume positions: local
    # batch k at every process count) do not depend on the number of processes.
    ds = ds.batch(batch_size, drop_remainder=True)
    if process_count > 1:
        ds = ds[process_index::process_count]
    it = ds.to_iter_dataset()
    if num_workers > 0:
        _absl_flags_parsed()  # grain reads absl flags in its worker processes
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it


def seek_train_iterator(iterator, num_batches: int) -> None:
    """Positions a fresh `make_train_dataset` iterator after its first `num_batches` batches.

    Local batch k is block `process_index` of global batch k at any process count, so a resume
    with another number of processes than the checkpoint's continues exactly at global batch
    `num_batches` (= the restored step). Handles the in-process iterator (`{'next_index': k}`)
    and the `mp_prefetch` one (round-robin over worker slices).

    Raises:
      ValueError for an iterator state of another form.
    """
    state = iterator.get_state()
    if set(state) == {"next_index"}:
        iterator.set_state({"next_index": int(num_batches)})
        return
    if "iterators_in_use_states" in state and "next_index_in_cycle" in state:
        workers = len(state["iterators_in_use_states"])
        state = dict(state)
        state["next_index_in_cycle"] = num_batches % workers
        state["iterators_in_use_states"] = [
            {**s, "next_index": (num_batches + workers - 1 - i) // workers}
            for i, s in enumerate(state["iterators_in_use_states"])
        ]
        state["future_states"] = {}
        iterator.set_state(state)
        return
    raise ValueError(f"cannot position a data iterator with state keys {sorted(state)}")


def make_eval_dataset(
    source,
    spec: ExampleSpec,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """One ordered pass over a split with centre crops; the last batch is padded.

    Every batch carries `valid` bool[batch] (False for padding) and `index` int64[batch] (the
    example's position in the split), so results can be put back in order.
    """
    ds = grain.MapDataset.source(source)
    n = len(ds)
    indices = list(range(process_index, n, process_count))
    transform = ExampleTransform(spec, train=False)

    def load(i: int) -> dict:
        out = transform(source[indices[i]])
        out["index"] = np.int64(indices[i])
        out["valid"] = np.bool_(True)
        return out

    ds = grain.MapDataset.range(len(indices)).map(load)
    return ds.to_iter_dataset().batch(batch_size, batch_fn=_pad_batch(batch_size))


def _absl_flags_parsed() -> None:
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _pad_batch(batch_size: int):
    def batch_fn(items: Sequence[dict]) -> dict:
        out = {k: np.stack([it[k] for it in items]) for k in items[0]}
        short = batch_size - len(items)
        if short:
            for k, v in out.items():
                pad = np.zeros((short,) + v.shape[1:], v.dtype)
                out[k] = np.concatenate([v, pad])
        return out

    return batch_fn


def global_batch(local: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    """Assembles each process's local batch into global arrays sharded by `sharding`.

    Args:
      local: dict of numpy arrays, leading axis = this process's batch.
      sharding: a NamedSharding over the batch axes (leading dim), e.g. P(("data", "fsdp")).
    Returns:
      dict of jax.Array with leading axis = global batch.
    """
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }
