"""`audio_folder`: a user's folder of clips, labelled by sub-folder, plus an unlabelled pool.

Layout (any subset of the split folders; at least one clip somewhere)::

    root/train/<label>/**/*.wav        labelled splits: train, validation (or val), test
    root/validation/<label>/**/*.flac
    root/test/<label>/**/*.ogg
    root/unlabeled/**/*.wav            unlabelled pool at any depth (label -1), for pretraining

Class names are the sorted union of the label folder names. Rules checked at prepare time:
- a labelled split with a single class, an empty label folder (no audio files at all) and a root
  with no audio or no split folder are `DatasetError`s (the message says what to change);
- audio files directly in a labelled split folder (outside a label folder) are skipped and
  recorded with the reason "outside a label folder" (an error if the split has no label folder);
- bad audio files are skipped and recorded (`strict=True`: the first one raises `AudioError`);
- other files (text, images, ...) are ignored.

The folder goes in as `source`; the BuilderConfig name is derived from its resolved path, so the
same `--source` finds the same prepared data later.
"""

import dataclasses
import os

import tensorflow_datasets.public_api as tfds

from jaxav.data.audio_io import AUDIO_EXTENSIONS, is_audio_file
from jaxav.data.builders import common
from jaxav.errors import DatasetError


@dataclasses.dataclass
class AudioFolderConfig(tfds.core.BuilderConfig):
    """`source`: the root folder (absolute, resolved)."""

    source: str = ""


def _audio_files(folder: str) -> list[str]:
    """Audio files under `folder` at any depth, sorted, as absolute paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_audio_file(f))
    return found


def scan_folder(root: str) -> tuple[dict[str, list[tuple[str, str | None]]], list[str], dict]:
    """Finds the clips of a folder dataset.

    Returns:
      files: split -> [(absolute path, label or None)], class_names (sorted), and
      outside: split -> [absolute paths of audio files directly in a labelled split folder].

    Raises:
      DatasetError: missing root, no split folder, an empty label folder, a labelled split with
        a single class, or no audio at all.
    """
    if not os.path.isdir(root):
        raise DatasetError(f"audio_folder: source folder {root} does not exist")
    files: dict[str, list[tuple[str, str | None]]] = {}
    outside: dict[str, list[str]] = {}
    entries = sorted(os.listdir(root))
    split_dirs = {}
    for entry in entries:
        split = common.canonical_split(entry)
        if split and os.path.isdir(os.path.join(root, entry)):
            if split in split_dirs:
                raise DatasetError(
                    f"audio_folder: {root} has two folders for split '{split}': "
                    f"{split_dirs[split]} and {entry}; merge them"
                )
            split_dirs[split] = entry
    if not split_dirs:
        raise DatasetError(
            f"audio_folder: {root} has no split folder. Expected root/<split>/<label>/*.wav "
            "with <split> in train, validation, test, and/or root/unlabeled/**/*.wav"
        )
    labels: set[str] = set()
    for split, entry in sorted(split_dirs.items()):
        folder = os.path.join(root, entry)
        if split == "unlabeled":
            files[split] = [(p, None) for p in _audio_files(folder)]
            continue
        split_files: list[tuple[str, str | None]] = []
        split_labels = []
        for label in sorted(os.listdir(folder)):
            path = os.path.join(folder, label)
            if not os.path.isdir(path):
                if is_audio_file(label):
                    outside.setdefault(split, []).append(path)
                continue
            clips = _audio_files(path)
            if not clips:
                raise DatasetError(
                    f"audio_folder: label folder {path} has no audio files "
                    f"({', '.join(AUDIO_EXTENSIONS)}); add clips or remove the folder"
                )
            split_labels.append(label)
            split_files.extend((p, label) for p in clips)
        if not split_labels and outside.get(split):
            raise DatasetError(
                f"audio_folder: audio files lie directly in {folder} but a labelled split needs "
                f"label folders ({folder}/<label>/*.wav); unlabelled clips go under "
                f"{os.path.join(root, 'unlabeled')}/"
            )
        if len(split_labels) == 1:
            raise DatasetError(
                f"audio_folder: labelled split folder {folder} has a single class "
                f"({split_labels[0]}); a labelled split needs at least two label folders "
                "(put unlabelled clips under root/unlabeled/ instead)"
            )
        labels.update(split_labels)
        files[split] = split_files
    if not any(files.values()):
        raise DatasetError(
            f"audio_folder: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}"
        )
    return {k: v for k, v in files.items() if v}, sorted(labels), outside


class AudioFolder(common.JaxavBuilder, skip_registration=True):
    """A user's folder of clips; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    @classmethod
    def make_config(cls, source: str | None = None, **kwargs) -> AudioFolderConfig:
        """Config for folder `source`; its name is `<folder slug>-<hash of the resolved path>`."""
        if not source:
            raise DatasetError("audio_folder needs --source pointing at the dataset folder")
        if kwargs:
            raise DatasetError(f"audio_folder takes no options, got {sorted(kwargs)}")
        resolved = os.path.realpath(os.path.expanduser(str(source)))
        return AudioFolderConfig(
            name=common.source_config_name(resolved),
            description=f"Audio folder {resolved}",
            source=resolved,
        )

    def _scan(self):
        if not hasattr(self, "_scanned"):
            self._scanned = scan_folder(self.builder_config.source)
        return self._scanned

    def _info(self) -> tfds.core.DatasetInfo:
        _, class_names, _ = self._scan()
        return self.dataset_info_from_configs(
            description=__doc__,
            features=common.features_dict(len(class_names)),
            metadata=tfds.core.MetadataDict(
                class_names=class_names,
                multi_label=False,
                sample_rate=common.SAMPLE_RATE,
                has_video=False,
                source=self.builder_config.source,
            ),
        )

    def _split_generators(self, dl_manager):
        files, _, _ = self._scan()
        return {split: self._generate_examples(split) for split in files}

    def _generate_examples(self, split: str):
        files, class_names, outside = self._scan()
        root = self.builder_config.source
        index = {name: i for i, name in enumerate(class_names)}
        for path in outside.get(split, []):
            self.prepare_log.skip(split, os.path.relpath(path, root), "outside a label folder")
        kept = 0
        for path, label in files[split]:
            rel = os.path.relpath(path, root)
            pcm = self._read_clip(split, path, rel)
            if pcm is None:
                continue
            kept += 1
            self.prepare_log.keep(split, pcm.shape[0], [label] if label is not None else [])
            yield (
                rel,
                {
                    "audio": pcm,
                    "label": index[label] if label is not None else -1,
                    "labels": common.multi_hot(
                        [index[label]] if label is not None else [], len(class_names)
                    ),
                    "id": rel,
                },
            )
        if not kept:
            raise DatasetError(f"audio_folder: every clip of split '{split}' in {root} was bad")
