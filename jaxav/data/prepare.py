"""Preparing datasets once (`jaxav prepare`) and opening prepared ones (train, probe).

`prepare_dataset` builds a dataset with its TFDS builder (ArrayRecord files), then writes two
files into the dataset's version directory (`DATA_DIR/<name>/<config>/<version>/`):
- `prepare_report.json`: per split the clips kept, hours of audio, clips per class and the
  skipped files with their reasons;
- `fbank_stats.json`: `{"mean", "std", "num_clips"}` of the log-mel fbank (`frontend.fbank_numpy`)
  over up to `MAX_STATS_CLIPS` clips of the pretraining split (`unlabeled`, else `train`).
A dataset counts as prepared when all three (TFDS files, report, stats) are there; preparing it
again reuses them. TFDS data dir: the argument, else `$TFDS_DATA_DIR`, else ~/tensorflow_datasets.
"""

import contextlib
import dataclasses
import io
import json
import logging
import os
import shlex
import time
from typing import Any

import numpy as np
import tensorflow_datasets.public_api as tfds

from jaxav.data.builders.audio_folder import AudioFolder
from jaxav.data.builders.common import SAMPLE_RATE, SPLITS
from jaxav.data.builders.manifest import Manifest
from jaxav.data.builders.synth_av import SynthAv
from jaxav.errors import DatasetError

DATASETS = {"synth_av": SynthAv, "audio_folder": AudioFolder, "manifest": Manifest}
REPORT_FILE = "prepare_report.json"
STATS_FILE = "fbank_stats.json"
MAX_STATS_CLIPS = 500
_MAX_STATS_SECONDS = 30.0  # longer clips contribute their first 30 s to the statistics
_MAX_LISTED_SKIPS = 100  # skipped files named in summary(); all of them are in the report


@dataclasses.dataclass
class PreparedDataset:
    """A prepared dataset: TFDS builder, version directory, splits, metadata, stats and report."""

    name: str
    builder: Any
    data_dir: str
    splits: dict[str, int]
    class_names: list[str]
    multi_label: bool
    has_video: bool
    stats: dict[str, float]
    report: dict
    av_class_names: list[str] | None = None
    _sources: dict = dataclasses.field(default_factory=dict, repr=False)

    def source(self, split: str):
        """Random-access data source of `split` (`len`, `[i]` -> dict of numpy arrays)."""
        if split not in self.splits:
            raise DatasetError(
                f"dataset {self.name} has no split '{split}' (splits: {', '.join(self.splits)})"
            )
        if split not in self._sources:
            self._sources[split] = self.builder.as_data_source(split=split)
        return self._sources[split]

    def summary(self) -> str:
        """A table of clips and hours per split, clips per class, stats and skipped files."""
        r = self.report
        lines = [f"{self.name} ({r.get('config', '?')}) prepared in {self.data_dir}"]
        if r.get("source"):
            lines.append(f"source: {r['source']}")
        lines.append(f"{'split':<12}{'clips':>8}{'hours':>9}{'skipped':>9}")
        for split, info in r["splits"].items():
            skipped = info.get("skipped")
            n_skip = "?" if skipped is None else str(len(skipped))
            lines.append(f"{split:<12}{info['clips']:>8}{info['hours']:>9.4f}{n_skip:>9}")
        labelled = [s for s, i in r["splits"].items() if i.get("class_counts")]
        if self.class_names and labelled:
            width = max(12, max(len(c) for c in self.class_names) + 2)
            lines.append(f"clips per class ({'multi-label' if self.multi_label else 'one label'}):")
            lines.append(f"  {'class':<{width}}" + "".join(f"{s:>12}" for s in labelled))
            for name in self.class_names:
                counts = [r["splits"][s]["class_counts"].get(name, 0) for s in labelled]
                lines.append(f"  {name:<{width}}" + "".join(f"{c:>12}" for c in counts))
        lines.append(f"video: {'yes' if self.has_video else 'no'}")
        lines.append(
            f"fbank stats: mean {self.stats['mean']:.4f}, std {self.stats['std']:.4f} "
            f"({self.stats.get('num_clips', '?')} clips of {self.stats.get('split', '?')})"
        )
        skipped = [
            (split, item)
            for split, info in r["splits"].items()
            for item in (info.get("skipped") or [])
        ]
        if skipped:
            lines.append(f"skipped files ({len(skipped)}):")
            for split, item in skipped[:_MAX_LISTED_SKIPS]:
                lines.append(f"  [{split}] {item['path']}: {item['reason']}")
            if len(skipped) > _MAX_LISTED_SKIPS:
                more = len(skipped) - _MAX_LISTED_SKIPS
                lines.append(f"  ... and {more} more (see {REPORT_FILE})")
        return "\n".join(lines)


def resolve_data_dir(data_dir: str | None = None) -> str:
    """The TFDS data dir: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    path = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(path))


def _resolve(name: str, source: str | None, builder_kwargs: dict):
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    cls = DATASETS[name]
    config = cls.make_config(source or None, **builder_kwargs)
    return cls, config


def _version_dir(cls, config, data_dir: str) -> str:
    return os.path.join(data_dir, cls.name, config.name, str(cls.VERSION))


def _is_prepared(version_dir: str) -> bool:
    return all(
        os.path.isfile(os.path.join(version_dir, f))
        for f in ("dataset_info.json", REPORT_FILE, STATS_FILE)
    )


def prepare_command(name: str, source: str | None = None, data_dir: str | None = None) -> str:
    """The `jaxav prepare ...` command line that prepares this dataset."""
    cmd = ["jaxav", "prepare", "--dataset", name]
    if source:
        cmd += ["--source", str(source)]
    if data_dir:
        cmd += ["--data_dir", str(data_dir)]
    return shlex.join(cmd)


@contextlib.contextmanager
def _quiet():
    """Silences TFDS's progress bars, prints and info logs (prepare prints nothing itself)."""
    from tensorflow_datasets.core.utils import tqdm_utils

    was_active = tqdm_utils._active
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    tqdm_utils._active = False
    absl_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tqdm_utils._active = was_active
        absl_logger.setLevel(level)


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _report_from_log(builder) -> dict:
    out = {}
    for split in SPLITS:
        log = builder.prepare_log.splits.get(split)
        if log is None:
            continue
        out[split] = {
            "clips": log.clips,
            "hours": log.seconds / 3600.0,
            "class_counts": dict(sorted(log.class_counts.items())),
            "skipped": log.skipped,
        }
    return out


def _report_from_data(builder) -> dict:
    """Counts read back from the prepared files (when the generation log is not available)."""
    class_names = builder.info.metadata["class_names"]
    out = {}
    sources = builder.as_data_source()
    for split in (s for s in SPLITS if s in sources):
        ds, seconds, counts = sources[split], 0.0, np.zeros(len(class_names), np.int64)
        for i in range(len(ds)):
            example = ds[i]
            seconds += example["audio"].shape[0] / SAMPLE_RATE
            counts += example["labels"].astype(np.int64)
        out[split] = {
            "clips": len(ds),
            "hours": seconds / 3600.0,
            "class_counts": {n: int(c) for n, c in zip(class_names, counts, strict=True) if c},
            "skipped": None,  # not recorded: the data was generated by an earlier run
        }
    return out


def compute_fbank_stats(source, max_clips: int = MAX_STATS_CLIPS) -> dict:
    """Mean and std of log-mel fbank values over up to `max_clips` evenly spaced clips.

    Args:
      source: random-access data source whose examples have `audio` int16[n] at 16 kHz.

    Returns:
      {"mean": float, "std": float, "num_clips": int} (over all frames and mel bins).
    """
    from jaxav.data.frontend import fbank_numpy

    n = len(source)
    if n == 0:
        raise DatasetError("cannot compute fbank statistics of an empty split")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_clips)).round().astype(int))
    total, total_sq, count = 0.0, 0.0, 0
    limit = int(_MAX_STATS_SECONDS * SAMPLE_RATE)
    for i in idx:
        wave = source[int(i)]["audio"][:limit].astype(np.float32) / 32768.0
        fb = fbank_numpy(wave, SAMPLE_RATE).astype(np.float64)
        total += fb.sum()
        total_sq += np.square(fb).sum()
        count += fb.size
    if count == 0:
        raise DatasetError("every clip used for the fbank statistics is shorter than one frame")
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 1e-12)))
    return {"mean": float(mean), "std": std, "num_clips": int(idx.size)}


def prepare_dataset(
    name: str,
    source: str | None = None,
    data_dir: str | None = None,
    strict: bool = False,
    **builder_kwargs,
) -> PreparedDataset:
    """Builds dataset `name` (idempotent) and writes its report and fbank statistics.

    Args:
      name: a key of `DATASETS` (synth_av, audio_folder, manifest).
      source: folder (audio_folder) or manifest file (manifest); None for synth_av.
      data_dir: TFDS data dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
      strict: raise `AudioError` on the first bad audio file instead of skipping it.
      **builder_kwargs: builder options (synth_av sizes/seed, manifest split/video_size, ...).

    Returns:
      The `PreparedDataset` (as `load_dataset` would return it).

    Raises:
      DatasetError for structural problems, AudioError for a bad file when `strict`.
    """
    start = time.time()
    cls, config = _resolve(name, source, builder_kwargs)
    root = resolve_data_dir(data_dir)
    version_dir = _version_dir(cls, config, root)
    if _is_prepared(version_dir):
        return load_dataset(name, source, data_dir, **builder_kwargs)
    with _quiet():
        builder = cls(config=config, data_dir=root, strict=strict)
        builder.download_and_prepare()
    splits = _report_from_log(builder) if builder.prepare_log.splits else _report_from_data(builder)
    stats_split = next(s for s in ("unlabeled", "train", *SPLITS) if s in builder.info.splits)
    stats = compute_fbank_stats(builder.as_data_source(split=stats_split))
    stats["split"] = stats_split
    report = {
        "dataset": name,
        "config": config.name,
        "version": str(cls.VERSION),
        "source": getattr(config, "source", None) or None,
        "options": {k: v for k, v in builder_kwargs.items()},
        "class_names": list(builder.info.metadata["class_names"]),
        "multi_label": bool(builder.info.metadata["multi_label"]),
        "has_video": bool(builder.info.metadata["has_video"]),
        "splits": splits,
        "num_skipped": sum(len(s["skipped"] or []) for s in splits.values()),
        "prepare_seconds": round(time.time() - start, 2),
    }
    _write_json(os.path.join(version_dir, REPORT_FILE), report)
    _write_json(os.path.join(version_dir, STATS_FILE), stats)
    return load_dataset(name, source, data_dir, **builder_kwargs)


def load_dataset(
    name: str, source: str | None = None, data_dir: str | None = None, **builder_kwargs
) -> PreparedDataset:
    """Opens an already prepared dataset (same arguments as `prepare_dataset`).

    Raises:
      DatasetError naming the `jaxav prepare ...` command when it is not prepared.
    """
    cls, config = _resolve(name, source, builder_kwargs)
    version_dir = _version_dir(cls, config, resolve_data_dir(data_dir))
    if not _is_prepared(version_dir):
        hint = prepare_command(name, source, data_dir)
        if builder_kwargs:
            options = ", ".join(f"{k}={v!r}" for k, v in builder_kwargs.items())
            hint += f"  (or from Python: prepare_dataset({name!r}, ..., {options}))"
        raise DatasetError(
            f"dataset {name} ({config.name}) is not prepared in {os.path.dirname(version_dir)}; "
            f"run: {hint}"
        )
    builder = tfds.builder_from_directory(version_dir)
    with open(os.path.join(version_dir, REPORT_FILE)) as f:
        report = json.load(f)
    with open(os.path.join(version_dir, STATS_FILE)) as f:
        stats = json.load(f)
    metadata = builder.info.metadata
    return PreparedDataset(
        name=name,
        builder=builder,
        data_dir=version_dir,
        splits={s: builder.info.splits[s].num_examples for s in SPLITS if s in builder.info.splits},
        class_names=list(metadata["class_names"]),
        multi_label=bool(metadata["multi_label"]),
        has_video=bool(metadata["has_video"]),
        stats=stats,
        report=report,
        av_class_names=list(metadata["av_class_names"]) if "av_class_names" in metadata else None,
    )
