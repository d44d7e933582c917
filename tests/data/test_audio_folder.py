"""Tests for the audio_folder builder (via prepare_dataset) on small folders in tmp_path."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from jaxav.data import prepare
from jaxav.data.builders import common
from jaxav.errors import AudioError, DatasetError


def _tone(path, freq=440.0, seconds=0.3, rate=16000, channels=1, amp=0.3):
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, x, rate)
    return path


def _bad(path, kind):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "corrupt":
        with open(path, "wb") as f:
            f.write(b"RIFF....WAVEjunk" * 10)
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "silent":
        sf.write(path, np.zeros(4000, np.float32), 16000)
    elif kind == "nan":
        sf.write(path, np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT")
    elif kind == "zero_length":
        sf.write(path, np.zeros(0, np.float32), 16000)


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("folder") / "my_sounds")
    for split, n in (("train", 3), ("test", 2)):
        for label, freq in (("dog", 300.0), ("cat", 900.0)):
            for i in range(n):
                _tone(f"{root}/{split}/{label}/{i}.wav", freq)
    _tone(f"{root}/train/bird/a.wav", 2000.0, seconds=0.1)  # short clip: kept
    _tone(f"{root}/train/bird/deep/b.flac", 2000.0, rate=44100, channels=2)  # resampled
    _tone(f"{root}/validation/dog/v.wav", 300.0, seconds=3.0)
    _tone(f"{root}/validation/cat/v.wav", 900.0)
    for kind in ("corrupt", "empty", "silent", "nan", "zero_length"):
        _bad(f"{root}/train/dog/bad_{kind}.wav", kind)
    _tone(f"{root}/train/stray.wav")  # outside a label folder
    with open(f"{root}/train/dog/README.txt", "w") as f:
        f.write("ignored")
    for i in range(4):
        _tone(f"{root}/unlabeled/batch{i % 2}/sub/u{i}.wav", 500.0 + 100 * i)
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    ds = prepare.prepare_dataset("audio_folder", source=root, data_dir=data_dir)
    return root, data_dir, ds


def test_splits_classes_and_features(folder_dataset):
    root, _, ds = folder_dataset
    assert ds.class_names == ["bird", "cat", "dog"]
    assert not ds.multi_label and not ds.has_video
    assert ds.splits == {"unlabeled": 4, "train": 8, "validation": 2, "test": 4}
    examples = {ex["id"].decode(): ex for ex in (ds.source("train")[i] for i in range(8))}
    assert set(examples) == {f"train/{lab}/{i}.wav" for lab in ("dog", "cat") for i in range(3)} | {
        "train/bird/a.wav",
        "train/bird/deep/b.flac",
    }
    ex = examples["train/dog/0.wav"]
    assert ex["audio"].dtype == np.int16 and ex["audio"].shape == (4800,)
    assert ex["label"] == 2 and ex["labels"].dtype == np.uint8
    np.testing.assert_array_equal(ex["labels"], [0, 0, 1])
    assert examples["train/bird/a.wav"]["audio"].shape == (1600,)
    assert abs(examples["train/bird/deep/b.flac"]["audio"].shape[0] - 4800) <= 1
    un = ds.source("unlabeled")[0]
    assert un["label"] == -1 and not un["labels"].any()
    lengths = sorted(ds.source("validation")[i]["audio"].shape[0] for i in range(2))
    assert lengths == [4800, 48000]  # a long clip is kept whole
    assert ds.builder.info.metadata["sample_rate"] == 16000


def test_bad_files_skipped_and_reported(folder_dataset):
    _, _, ds = folder_dataset
    skipped = {s["path"]: s["reason"] for s in ds.report["splits"]["train"]["skipped"]}
    assert skipped["train/dog/bad_corrupt.wav"].startswith("cannot decode")
    assert skipped["train/dog/bad_empty.wav"].startswith("empty file")
    assert skipped["train/dog/bad_silent.wav"].startswith("all-silent")
    assert "NaN" in skipped["train/dog/bad_nan.wav"]
    assert skipped["train/dog/bad_zero_length.wav"].startswith("zero-length")
    assert skipped["train/stray.wav"] == "outside a label folder"
    assert ds.report["num_skipped"] == 6
    assert ds.report["splits"]["train"]["class_counts"] == {"bird": 2, "cat": 3, "dog": 3}
    text = ds.summary()
    for name in skipped:
        assert name in text
    assert "bad_corrupt.wav: cannot decode" in text
    with open(os.path.join(ds.data_dir, prepare.REPORT_FILE)) as f:
        assert json.load(f)["num_skipped"] == 6


def test_same_source_same_config_and_load(folder_dataset):
    root, data_dir, ds = folder_dataset
    again = prepare.load_dataset("audio_folder", source=root + "/", data_dir=data_dir)
    assert again.data_dir == ds.data_dir and again.splits == ds.splits
    assert os.path.basename(os.path.dirname(ds.data_dir)).startswith("my_sounds-")
    other = common.source_config_name(root + "_other")
    assert other != common.source_config_name(root)


def test_strict_raises_naming_the_file(tmp_path):
    root = tmp_path / "strict"
    for label in ("a", "b"):
        _tone(f"{root}/train/{label}/ok.wav")
    _bad(f"{root}/train/a/zz_corrupt.wav", "corrupt")
    with pytest.raises(AudioError, match="zz_corrupt.wav"):
        prepare.prepare_dataset(
            "audio_folder", source=str(root), data_dir=str(tmp_path / "d"), strict=True
        )


def _layout(tmp_path, files):
    root = tmp_path / "ds"
    root.mkdir()
    for rel in files:
        if rel.endswith("/"):
            (root / rel).mkdir(parents=True, exist_ok=True)
        elif rel.endswith(".txt"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("x")
        else:
            _tone(str(root / rel))
    return str(root)


@pytest.mark.parametrize(
    "files, message",
    [
        (["dog/a.wav", "cat/b.wav"], "no split folder"),
        (["train/dog/a.wav", "train/dog/b.wav"], "single class"),
        (["train/dog/a.wav", "train/cat/"], "has no audio files"),
        (["unlabeled/notes.txt"], "no audio files"),
        (["val/a/x.wav", "validation/a/y.wav"], "two folders"),
        (["train/x.wav", "train/y.wav"], "lie directly in"),
    ],
)
def test_structural_errors(tmp_path, files, message):
    root = _layout(tmp_path, files)
    with pytest.raises(DatasetError, match=message):
        prepare.prepare_dataset("audio_folder", source=root, data_dir=str(tmp_path / "d"))


def test_missing_source_and_unprepared(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        prepare.prepare_dataset(
            "audio_folder", source=str(tmp_path / "nope"), data_dir=str(tmp_path / "d")
        )
    with pytest.raises(DatasetError, match="--source"):
        prepare.prepare_dataset("audio_folder")
    root = _layout(tmp_path, ["unlabeled/a.wav"])
    with pytest.raises(DatasetError) as info:
        prepare.load_dataset("audio_folder", source=root, data_dir=str(tmp_path / "d"))
    expected = f"jaxav prepare --dataset audio_folder --source {root} --data_dir {tmp_path}/d"
    assert expected in str(info.value)


def test_unlabeled_only_folder(tmp_path):
    root = _layout(tmp_path, ["unlabeled/a.wav", "unlabeled/x/y/b.wav"])
    ds = prepare.prepare_dataset("audio_folder", source=root, data_dir=str(tmp_path / "d"))
    assert ds.splits == {"unlabeled": 2} and ds.class_names == []
    assert ds.source("unlabeled")[0]["labels"].shape == (0,)
    assert ds.stats["split"] == "unlabeled" and ds.stats["num_clips"] == 2
