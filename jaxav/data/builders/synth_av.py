"""`synth_av`: the embedded default dataset, generated from a seed (no download).

Clips of audio with synchronised video frames, eight audio classes that need listening and an
`av_label` that needs both modalities; see `synth_gen` for the design. Splits: `unlabeled`
(pretraining pool, label -1), `train`, `validation`, `test`.

Sizes and the seed are BuilderConfig fields (`prepare_dataset("synth_av", num_train=64, ...)`);
the defaults form the config "default", anything else a config named after its values, so
different sizes or seeds never share a directory.
"""

import dataclasses

import numpy as np
import tensorflow_datasets.public_api as tfds

from jaxav.data.audio_io import to_pcm16
from jaxav.data.builders import common, synth_gen
from jaxav.errors import DatasetError

_CHUNK = 128  # clips generated per numpy batch


@dataclasses.dataclass
class SynthAvConfig(tfds.core.BuilderConfig):
    """Sizes (clips per split), clip length (s), video frames per clip, frame side (px), seed."""

    num_unlabeled: int = 1536
    num_train: int = 768
    num_validation: int = 256
    num_test: int = 512
    clip_seconds: float = 2.0
    num_video_frames: int = 8
    video_size: int = 32
    seed: int = 0


_DEFAULT = SynthAvConfig(name="default", description="Default sizes, seed 0.")
_FIELDS = tuple(f.name for f in dataclasses.fields(SynthAvConfig) if f.name.startswith("num_"))
_OPTIONS = _FIELDS + ("clip_seconds", "video_size", "seed")


def _config_name(c: SynthAvConfig) -> str:
    return (
        f"u{c.num_unlabeled}_t{c.num_train}_v{c.num_validation}_e{c.num_test}"
        f"_{c.clip_seconds:g}s_{c.num_video_frames}x{c.video_size}px_seed{c.seed}"
    )


class SynthAv(common.JaxavBuilder, skip_registration=True):
    """Procedural audio-visual clips; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [_DEFAULT]

    @classmethod
    def make_config(cls, source: str | None = None, **kwargs) -> SynthAvConfig:
        """`SynthAvConfig` from keyword options; "default" when they equal the defaults."""
        if source:
            raise DatasetError(f"synth_av is generated, it takes no --source (got {source!r})")
        unknown = sorted(set(kwargs) - set(_OPTIONS))
        if unknown:
            raise DatasetError(
                f"unknown synth_av option(s) {unknown}; known: {', '.join(_OPTIONS)}"
            )
        values = {k: type(getattr(_DEFAULT, k))(v) for k, v in kwargs.items()}
        if any(values[k] < 0 for k in _FIELDS if k in values):
            raise DatasetError(f"synth_av sizes must be >= 0, got {values}")
        config = dataclasses.replace(_DEFAULT, **values)
        if config.clip_seconds < 0.1 or config.video_size < 4 or config.num_video_frames < 1:
            raise DatasetError(
                "synth_av needs clip_seconds >= 0.1, video_size >= 4 and num_video_frames >= 1"
            )
        if config == _DEFAULT:
            return _DEFAULT
        name = _config_name(config)
        return dataclasses.replace(config, name=name, description=f"Custom: {name}")

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return self.dataset_info_from_configs(
            description=__doc__,
            features=common.features_dict(
                len(synth_gen.AUDIO_CLASSES), video_size=c.video_size, av_label=True
            ),
            metadata=tfds.core.MetadataDict(
                class_names=list(synth_gen.AUDIO_CLASSES),
                av_class_names=list(synth_gen.AV_CLASSES),
                multi_label=False,
                sample_rate=common.SAMPLE_RATE,
                has_video=True,
            ),
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        sizes = {
            "unlabeled": c.num_unlabeled,
            "train": c.num_train,
            "validation": c.num_validation,
            "test": c.num_test,
        }
        if not any(sizes.values()):
            raise DatasetError("synth_av: every split size is 0")
        return {
            split: self._generate_examples(split, index, size)
            for index, (split, size) in enumerate(sizes.items())
            if size > 0
        }

    def _generate_examples(self, split: str, split_index: int, size: int):
        c = self.builder_config
        rng = np.random.default_rng([c.seed, split_index])
        num_classes = len(synth_gen.AUDIO_CLASSES)
        classes = rng.permutation(np.arange(size) % num_classes)  # balanced
        labelled = split != "unlabeled"
        for start in range(0, size, _CHUNK):
            labels = classes[start : start + _CHUNK]
            audio, video, shape = synth_gen.generate_clips(
                rng,
                labels,
                clip_seconds=c.clip_seconds,
                sample_rate=common.SAMPLE_RATE,
                num_frames=c.num_video_frames,
                size=c.video_size,
            )
            pcm = to_pcm16(audio)
            for i, label in enumerate(labels):
                key = f"{split}_{start + i:06d}"
                family = int(label) // 2
                av_label = 2 * family + int(shape[i])
                self.prepare_log.keep(
                    split,
                    pcm.shape[1],
                    [synth_gen.AUDIO_CLASSES[label]] if labelled else [],
                )
                yield (
                    key,
                    {
                        "audio": pcm[i],
                        "label": np.int64(label if labelled else -1),
                        "labels": common.multi_hot([label] if labelled else [], num_classes),
                        "av_label": np.int64(av_label if labelled else -1),
                        "id": key,
                        "video": video[i],
                        "has_video": True,
                    },
                )
