"""Tests for synth_av: the builder (tiny config) and the properties of the generated classes."""

import os

import numpy as np
import pytest

from jaxav.data import prepare
from jaxav.data.builders import synth_gen
from jaxav.data.builders.synth_av import SynthAv
from jaxav.errors import DatasetError

TINY = dict(
    num_unlabeled=16,
    num_train=32,
    num_validation=8,
    num_test=16,
    clip_seconds=1.0,
    num_video_frames=4,
    video_size=16,
    seed=3,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, prepare.prepare_dataset("synth_av", data_dir=data_dir, **TINY)


def _all(ds, split):
    source = ds.source(split)
    return {ex["id"].decode(): ex for ex in (source[i] for i in range(len(source)))}


def test_features_and_metadata(tiny):
    _, ds = tiny
    assert ds.splits == {"unlabeled": 16, "train": 32, "validation": 8, "test": 16}
    assert ds.class_names == list(synth_gen.AUDIO_CLASSES) and len(ds.class_names) == 8
    assert ds.av_class_names == list(synth_gen.AV_CLASSES)
    assert ds.has_video and not ds.multi_label
    meta = ds.builder.info.metadata
    assert meta["sample_rate"] == 16000 and meta["has_video"]
    for ex in _all(ds, "train").values():
        assert ex["audio"].dtype == np.int16 and ex["audio"].shape == (16000,)
        assert ex["video"].dtype == np.uint8 and ex["video"].shape == (4, 16, 16, 3)
        assert ex["has_video"]
        assert 0 <= ex["label"] < 8 and ex["labels"].dtype == np.uint8
        assert ex["labels"].sum() == 1 and ex["labels"][ex["label"]] == 1
        assert ex["av_label"] // 2 == ex["label"] // 2  # family of the audio class
    counts = ds.report["splits"]["train"]["class_counts"]
    assert sorted(counts.values()) == [4] * 8  # balanced
    for ex in _all(ds, "unlabeled").values():
        assert ex["label"] == -1 and ex["av_label"] == -1 and not ex["labels"].any()


def test_prepare_is_idempotent_and_writes_files(tiny):
    data_dir, ds = tiny
    report = os.path.join(ds.data_dir, prepare.REPORT_FILE)
    stats = os.path.join(ds.data_dir, prepare.STATS_FILE)
    mtimes = (os.path.getmtime(report), os.path.getmtime(stats))
    again = prepare.prepare_dataset("synth_av", data_dir=data_dir, **TINY)
    assert (os.path.getmtime(report), os.path.getmtime(stats)) == mtimes
    assert again.splits == ds.splits and again.stats == ds.stats
    assert ds.stats["num_clips"] == 16 and ds.stats["split"] == "unlabeled"
    assert -20 < ds.stats["mean"] < 5 and 0.5 < ds.stats["std"] < 10
    assert ds.report["splits"]["test"]["hours"] == pytest.approx(16 / 3600)
    assert "rising_glide" in ds.summary() and "unlabeled" in ds.summary()
    loaded = prepare.load_dataset("synth_av", data_dir=data_dir, **TINY)
    assert loaded.data_dir == ds.data_dir


def test_deterministic_and_seed_dependent(tiny, tmp_path):
    _, ds = tiny
    small = dict(TINY, num_unlabeled=0, num_validation=0, num_test=0)
    other = prepare.prepare_dataset("synth_av", data_dir=str(tmp_path / "a"), **small)
    assert other.splits == {"train": 32}
    a, b = _all(ds, "train"), _all(other, "train")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key]["audio"], b[key]["audio"])
        np.testing.assert_array_equal(a[key]["video"], b[key]["video"])
    reseeded = prepare.prepare_dataset(
        "synth_av", data_dir=str(tmp_path / "b"), **dict(small, seed=4)
    )
    c = _all(reseeded, "train")
    assert not np.array_equal(a["train_000000"]["audio"], c["train_000000"]["audio"])
    assert reseeded.data_dir != other.data_dir


def test_config_names():
    assert SynthAv.make_config().name == "default"
    assert SynthAv.make_config(num_train=768).name == "default"
    assert SynthAv.make_config(**TINY).name == "u16_t32_v8_e16_1s_4x16px_seed3"
    with pytest.raises(DatasetError, match="unknown synth_av option"):
        SynthAv.make_config(num_trian=3)
    with pytest.raises(DatasetError, match="no --source"):
        SynthAv.make_config(source="/some/folder")


def test_unprepared_message_names_the_command(tmp_path):
    with pytest.raises(DatasetError) as info:
        prepare.load_dataset("synth_av", data_dir=str(tmp_path))
    assert f"jaxav prepare --dataset synth_av --data_dir {tmp_path}" in str(info.value)
    with pytest.raises(DatasetError, match="unknown dataset"):
        prepare.load_dataset("nope")


# ---- properties of the generated clips (numpy only, no TFDS) ----


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(512) % 8)
    audio, video, shape = synth_gen.generate_clips(rng, labels, clip_seconds=1.0, num_frames=8)
    return labels, audio, video, shape


def _accuracies(x, labels):
    """Held-out accuracy (last quarter) of nearest-centroid and least-squares classifiers."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    split = len(labels) * 3 // 4
    xtr, ytr, xte, yte = x[:split], labels[:split], x[split:], labels[split:]
    centres = np.stack([xtr[ytr == c].mean(0) for c in range(8)])
    nc = np.mean(np.argmin(((xte[:, None] - centres[None]) ** 2).sum(-1), 1) == yte)
    a = np.c_[xtr, np.ones(len(xtr))]
    w = np.linalg.lstsq(a, np.eye(8)[ytr], rcond=None)[0]
    ls = np.mean(np.argmax(np.c_[xte, np.ones(len(xte))] @ w, 1) == yte)
    return nc, ls


def test_level_and_length_do_not_give_the_class(clips):
    labels, audio, _, _ = clips
    rms = np.sqrt(np.mean(audio**2, axis=1))
    peak = np.abs(audio).max(axis=1)
    frame_rms = np.sqrt(np.mean(audio.reshape(len(audio), -1, 160) ** 2, axis=2))
    duration = np.mean(frame_rms > 0.1 * frame_rms.max(1, keepdims=True), axis=1)  # active
    nuisance = np.c_[rms, duration, peak, np.log(rms), np.log(peak)]
    nc, ls = _accuracies(nuisance, labels)
    assert nc < 0.28 and ls < 0.28, (nc, ls)  # chance = 0.125

    frames = audio.reshape(len(audio), -1, 400) * np.hanning(400)
    log_spec = np.log(np.mean(np.abs(np.fft.rfft(frames, axis=2)) ** 2, axis=1) + 1e-10)
    nc_s, ls_s = _accuracies(log_spec[:, 1:200:2], labels)
    assert max(nc_s, ls_s) > 0.4 and ls_s > ls + 0.15, (nc_s, ls_s)


def _object_area(video):
    return np.mean(video.max(axis=-1) > 150, axis=(2, 3))  # [B, F] fraction of pixels


def test_video_follows_the_audio(clips):
    labels, audio, video, shape = clips
    num_frames, n = video.shape[1], audio.shape[1]
    centres = ((np.arange(num_frames) + 0.5) * n / num_frames).astype(int)
    windows = np.stack([audio[:, c - 320 : c + 320] for c in centres], axis=1)
    loudness = np.sqrt(np.mean(windows**2, axis=2))  # [B, F]
    area = _object_area(video)

    def zscore(x):
        x = x - x.mean(1, keepdims=True)
        return x / (np.sqrt((x**2).sum(1, keepdims=True)) + 1e-9)

    sim = zscore(loudness) @ zscore(area).T  # [B, B] correlation of clip i's sound, j's video
    assert np.mean(np.diag(sim)) > 0.8
    # Audio -> video retrieval among 32 candidates (the clip's own video + 31 others).
    group = sim[:32, :32] + 1e-6 * np.eye(32)  # ties (constant envelopes) go to the match
    recall_at_1 = np.mean(np.argmax(group, axis=1) == np.arange(32))
    beats_random = np.mean(np.diag(sim) > np.diag(np.roll(sim, 1, axis=1)))
    assert recall_at_1 > 0.5 and beats_random > 0.9, (recall_at_1, beats_random)

    # Height follows pitch: rising glides move up (smaller row index), falling ones down.
    rows = np.arange(video.shape[2])[None, None, :, None]
    inside = video.max(axis=-1) > 150
    height = (inside * rows).sum((2, 3)) / np.maximum(inside.sum((2, 3)), 1)  # [B, F]
    drift = height[:, -2:].mean(1) - height[:, :2].mean(1)
    assert drift[labels == 0].mean() < -1 and drift[labels == 1].mean() > 1
    # Shape is independent of the audio class, so av_label needs the video.
    assert 0.3 < shape.mean() < 0.7
    for c in range(8):
        assert 0.15 < shape[labels == c].mean() < 0.85
