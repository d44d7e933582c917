"""Pieces shared by jaxav's TFDS builders: features, split names, config names, the prepare log."""

import collections
import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets.public_api as tfds

from jaxav.data.audio_io import load_audio, to_pcm16
from jaxav.errors import AudioError

SAMPLE_RATE = 16000
SPLITS = ("unlabeled", "train", "validation", "test")
LABELLED_SPLITS = ("train", "validation", "test")
# Other spellings accepted for split folders / manifest `split` values.
SPLIT_ALIASES = {
    "unlabelled": "unlabeled",
    "pretrain": "unlabeled",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "eval": "test",
}


def canonical_split(name: str) -> str | None:
    """'val' -> 'validation', 'Train' -> 'train'; None for a name that is not a split."""
    key = name.strip().lower()
    key = SPLIT_ALIASES.get(key, key)
    return key if key in SPLITS else None


def source_config_name(source: str | os.PathLike, options: dict[str, Any] | None = None) -> str:
    """BuilderConfig name for a user source: `<slug>-<hash8>` of its resolved path (+ options).

    The same `--source` (and options) always maps to the same name, so `probe`/`train` find what
    `prepare` built; two different folders never share a directory.
    """
    resolved = os.path.realpath(os.path.expanduser(str(source)))
    stem = os.path.basename(resolved.rstrip(os.sep)) or "root"
    stem = os.path.splitext(stem)[0] if os.path.isfile(resolved) else stem
    slug = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")[:40] or "source"
    key = resolved + "|" + repr(sorted((options or {}).items()))
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def features_dict(
    num_classes: int, video_size: int | None = None, av_label: bool = False
) -> tfds.features.FeaturesDict:
    """The contract's example features (video ones only when `video_size` is given)."""
    raw = tfds.features.Encoding.BYTES  # raw bytes on disk (else ints become int64 varints)
    feats = {
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding=raw),
        "label": tfds.features.Tensor(shape=(), dtype=np.int64),
        "labels": tfds.features.Tensor(shape=(num_classes,), dtype=np.uint8, encoding=raw),
        "id": tfds.features.Text(),
    }
    if av_label:
        feats["av_label"] = tfds.features.Tensor(shape=(), dtype=np.int64)
    if video_size is not None:
        feats["video"] = tfds.features.Tensor(
            shape=(None, video_size, video_size, 3), dtype=np.uint8, encoding=raw
        )
        feats["has_video"] = tfds.features.Tensor(shape=(), dtype=np.bool_)
    return tfds.features.FeaturesDict(feats)


def multi_hot(indices: Sequence[int], num_classes: int) -> np.ndarray:
    """Class indices -> uint8[num_classes] multi-hot."""
    out = np.zeros((num_classes,), np.uint8)
    out[list(indices)] = 1
    return out


@dataclasses.dataclass
class SplitLog:
    """What happened to one split while it was generated."""

    clips: int = 0
    seconds: float = 0.0
    class_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: list = dataclasses.field(default_factory=list)  # [{"path": ..., "reason": ...}]


class PrepareLog:
    """Counts kept clips (per class, seconds of audio) and skipped files, per split."""

    def __init__(self):
        self.splits: dict[str, SplitLog] = {}

    def _get(self, split: str) -> SplitLog:
        return self.splits.setdefault(split, SplitLog())

    def keep(self, split: str, num_samples: int, class_names: Iterable[str] = ()) -> None:
        """Records one kept clip of `num_samples` samples (at 16 kHz) with its classes."""
        log = self._get(split)
        log.clips += 1
        log.seconds += num_samples / SAMPLE_RATE
        log.class_counts.update(class_names)

    def skip(self, split: str, path: str, reason: str) -> None:
        """Records one skipped file and why."""
        self._get(split).skipped.append({"path": str(path), "reason": reason})


class JaxavBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: ArrayRecord output, a `strict` flag and a `PrepareLog` filled while generating.

    strict=False skips a bad audio file and records it; strict=True raises its `AudioError`.
    """

    def __init__(self, *, strict: bool = False, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        self.strict = strict
        self.prepare_log = PrepareLog()
        super().__init__(**kwargs)

    @classmethod
    def make_config(cls, source: str | None = None, **kwargs) -> tfds.core.BuilderConfig:
        """The BuilderConfig for a source / options (subclasses override)."""
        raise NotImplementedError

    def _read_clip(self, split: str, path: str, shown: str) -> np.ndarray | None:
        """Loads `path` as int16 PCM at 16 kHz; None (recorded as skipped) if it is bad."""
        try:
            return to_pcm16(load_audio(path, SAMPLE_RATE))
        except AudioError as e:
            if self.strict:
                raise
            self.prepare_log.skip(split, shown, e.reason)
            return None
