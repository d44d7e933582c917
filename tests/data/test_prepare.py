"""Tests for jaxav.data.prepare: data dir resolution, idempotence, report/stats files, messages."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from jaxav.data import prepare
from jaxav.data.builders.audio_folder import AudioFolder
from jaxav.errors import DatasetError

SMALL = dict(
    num_unlabeled=0,
    num_train=8,
    num_validation=0,
    num_test=8,
    clip_seconds=0.5,
    num_video_frames=2,
    video_size=8,
    seed=11,
)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert prepare.resolve_data_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
    assert prepare.resolve_data_dir() == str(tmp_path / "env")
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert prepare.resolve_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_env_data_dir_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    ds = prepare.prepare_dataset("synth_av", **SMALL)
    assert ds.data_dir.startswith(str(tmp_path) + os.sep)
    assert ds.data_dir.endswith(os.path.join("synth_av", "u0_t8_v0_e8_0.5s_2x8px_seed11", "1.0.0"))
    assert ds.splits == {"train": 8, "test": 8}
    assert ds.stats["split"] == "train"  # no unlabeled split: stats from train
    with open(os.path.join(ds.data_dir, prepare.STATS_FILE)) as f:
        stats = json.load(f)
    assert set(stats) >= {"mean", "std", "num_clips"} and stats["num_clips"] == 8
    assert np.isfinite(stats["mean"]) and stats["std"] > 0


def test_missing_report_is_rebuilt_from_the_data(tmp_path):
    ds = prepare.prepare_dataset("synth_av", data_dir=str(tmp_path), **SMALL)
    os.remove(os.path.join(ds.data_dir, prepare.REPORT_FILE))
    with pytest.raises(DatasetError, match="not prepared"):
        prepare.load_dataset("synth_av", data_dir=str(tmp_path), **SMALL)
    again = prepare.prepare_dataset("synth_av", data_dir=str(tmp_path), **SMALL)
    split = again.report["splits"]["train"]
    assert split["clips"] == 8 and split["skipped"] is None
    assert sum(split["class_counts"].values()) == 8
    assert split["hours"] == pytest.approx(8 * 0.5 / 3600)
    assert "?" in again.summary()  # skipped count unknown


def test_prepare_command_and_errors(tmp_path):
    assert prepare.prepare_command("synth_av") == "jaxav prepare --dataset synth_av"
    cmd = prepare.prepare_command("manifest", "/d/my list.csv", "/data")
    assert cmd == "jaxav prepare --dataset manifest --source '/d/my list.csv' --data_dir /data"
    with pytest.raises(DatasetError, match="unknown dataset 'foo'; known: synth_av"):
        prepare.prepare_dataset("foo")
    with pytest.raises(DatasetError, match="prepare_dataset"):
        prepare.load_dataset("synth_av", data_dir=str(tmp_path), num_train=3)
    assert set(prepare.DATASETS) == {"synth_av", "audio_folder", "manifest"}
    assert prepare.DATASETS["audio_folder"] is AudioFolder


def test_summary_lists_skipped_files_and_unknown_split(tmp_path):
    root = tmp_path / "src"
    for label in ("a", "b"):
        os.makedirs(root / "train" / label)
        t = np.arange(1600) / 16000
        sf.write(root / "train" / label / "ok.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    for i in range(3):
        (root / "train" / "a" / f"bad{i}.wav").write_bytes(b"")
    ds = prepare.prepare_dataset("audio_folder", source=str(root), data_dir=str(tmp_path / "d"))
    text = ds.summary()
    assert "skipped files (3):" in text
    for i in range(3):
        assert f"train/a/bad{i}.wav: empty file (0 bytes)" in text
    assert "train" in text and "clips per class" in text
    with pytest.raises(DatasetError, match="no split 'test'"):
        ds.source("test")
    assert len(ds.source("train")) == 2
