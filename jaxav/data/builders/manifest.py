"""`manifest`: clips listed in a CSV (header row) or JSONL manifest, AudioSet/VGGSound style.

Columns / keys (only `path` is required):
- `path`: audio file, relative to the manifest's folder or absolute;
- `labels`: one label, or several separated by `;` or `,` (CSV) / a JSON list (JSONL); more
  than one label on any row makes the dataset multi-label (`label` then holds the first one);
- `split`: unlabeled | train | validation | test (aliases: val, dev, unlabelled, ...); default:
  the `split` option, else `train` for rows with labels and `unlabeled` for rows without;
- `frames`: a folder of extracted frames (JPEG/PNG) -> `video` (resized to `video_size`,
  at most `max_video_frames`, evenly subsampled); any row with frames makes the dataset a video one.

Unlabelled rows need no dummy labels. A row whose audio file is missing or bad, or whose frames
folder is missing/unreadable, is skipped and recorded ("missing file", "cannot decode ..."); with
`strict=True` it raises instead. A labelled split whose rows all share one class is an error.
"""

import collections
import dataclasses
import os

import numpy as np
import tensorflow_datasets.public_api as tfds

from jaxav.data.builders import common, manifest_io
from jaxav.errors import DatasetError

_OPTIONS = {"split": None, "video_size": 64, "max_video_frames": 10}


@dataclasses.dataclass
class ManifestConfig(tfds.core.BuilderConfig):
    """`source`: the manifest file; `split`: default split; video frame size / count."""

    source: str = ""
    split: str | None = None
    video_size: int = 64
    max_video_frames: int = 10


class Manifest(common.JaxavBuilder, skip_registration=True):
    """Clips listed in a manifest; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    @classmethod
    def make_config(cls, source: str | None = None, **kwargs) -> ManifestConfig:
        """Config for manifest file `source` + options (split, video_size, max_video_frames)."""
        if not source:
            raise DatasetError("manifest needs --source pointing at a CSV or JSONL manifest file")
        unknown = sorted(set(kwargs) - set(_OPTIONS))
        if unknown:
            raise DatasetError(f"unknown manifest option(s) {unknown}; known: {list(_OPTIONS)}")
        resolved = os.path.realpath(os.path.expanduser(str(source)))
        options = {k: v for k, v in kwargs.items() if v != _OPTIONS[k]}
        return ManifestConfig(
            name=common.source_config_name(resolved, options),
            description=f"Manifest {resolved}",
            source=resolved,
            **kwargs,
        )

    def _rows(self) -> list[manifest_io.Row]:
        if not hasattr(self, "_parsed"):
            c = self.builder_config
            rows = manifest_io.read_manifest(c.source, c.split)
            classes: dict[str, set[str]] = collections.defaultdict(set)
            for row in rows:
                classes[row.split].update(row.labels)
            for split, names in classes.items():
                if split in common.LABELLED_SPLITS and len(names) == 1:
                    raise DatasetError(
                        f"manifest {c.source}: labelled split '{split}' has a single class "
                        f"({next(iter(names))}); a labelled split needs at least two classes"
                    )
            self._parsed = rows
        return self._parsed

    def _info(self) -> tfds.core.DatasetInfo:
        rows = self._rows()
        class_names = sorted({label for row in rows for label in row.labels})
        has_video = any(row.frames for row in rows)
        c = self.builder_config
        return self.dataset_info_from_configs(
            description=__doc__,
            features=common.features_dict(
                len(class_names), video_size=c.video_size if has_video else None
            ),
            metadata=tfds.core.MetadataDict(
                class_names=class_names,
                multi_label=any(len(row.labels) > 1 for row in rows),
                sample_rate=common.SAMPLE_RATE,
                has_video=has_video,
                source=c.source,
            ),
        )

    def _split_generators(self, dl_manager):
        splits = sorted({row.split for row in self._rows()}, key=common.SPLITS.index)
        return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split: str):
        c = self.builder_config
        metadata = self.info.metadata
        class_names = metadata["class_names"]
        index = {name: i for i, name in enumerate(class_names)}
        has_video = metadata["has_video"]
        kept = 0
        for i, row in enumerate(self._rows()):
            if row.split != split:
                continue
            video = None
            if row.frames:
                try:
                    video = manifest_io.load_frames(row.frames, c.video_size, c.max_video_frames)
                except ValueError as e:
                    if self.strict:
                        raise DatasetError(f"{row.shown} (line {row.line}): {e}") from e
                    self.prepare_log.skip(split, row.shown, str(e))
                    continue
            pcm = self._read_clip(split, row.path, row.shown)
            if pcm is None:
                continue
            kept += 1
            self.prepare_log.keep(split, pcm.shape[0], row.labels)
            ids = [index[label] for label in row.labels]
            example = {
                "audio": pcm,
                "label": ids[0] if ids else -1,
                "labels": common.multi_hot(ids, len(class_names)),
                "id": row.shown,
            }
            if has_video:
                empty = np.zeros((0, c.video_size, c.video_size, 3), np.uint8)
                example["video"] = video if video is not None else empty
                example["has_video"] = video is not None
            yield f"{i:09d}", example
        if not kept:
            raise DatasetError(f"manifest {c.source}: every clip of split '{split}' was bad")
