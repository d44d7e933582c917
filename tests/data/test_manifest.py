"""Tests for the manifest builder (CSV / JSONL, multi-label, unlabelled rows, frames -> video)."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from jaxav.data import prepare
from jaxav.data.builders import manifest_io
from jaxav.errors import AudioError, DatasetError


def _tone(path, freq=440.0, seconds=0.25):
    t = np.arange(int(seconds * 16000)) / 16000
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


def _frames(folder, count, colour):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (48, 40), colour).save(os.path.join(folder, f"{i:04d}.jpg"))


@pytest.fixture(scope="module")
def csv_dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("csv")
    for name in ("a", "b", "c", "d", "e", "u1", "u2"):
        _tone(str(base / "clips" / f"{name}.wav"))
    _tone(str(base / "elsewhere" / "abs.wav"))
    (base / "clips" / "broken.wav").write_bytes(b"not audio at all" * 8)
    _frames(str(base / "frames" / "a"), 5, (255, 0, 0))
    _frames(str(base / "frames" / "u1"), 3, (0, 0, 255))
    lines = [
        "path,labels,split,frames",
        "clips/a.wav,dog,train,frames/a",
        'clips/b.wav,"dog,cat",train,',
        "clips/c.wav,cat;bird,train,",
        f"{base}/elsewhere/abs.wav,bird,train,",
        "clips/d.wav,dog,test,",
        "clips/e.wav,cat,test,",
        "clips/u1.wav,,,frames/u1",
        "clips/u2.wav,,,",
        "clips/missing.wav,dog,train,",
        "clips/broken.wav,cat,train,",
        "clips/e.wav,dog,train,frames/nowhere",
    ]
    manifest = base / "list.csv"
    manifest.write_text("\n".join(lines) + "\n")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return (
        base,
        data_dir,
        prepare.prepare_dataset("manifest", source=str(manifest), data_dir=data_dir),
    )


def test_csv_splits_labels_multilabel(csv_dataset):
    _, _, ds = csv_dataset
    assert ds.class_names == ["bird", "cat", "dog"]
    assert ds.multi_label and ds.has_video
    assert ds.splits == {"unlabeled": 2, "train": 4, "test": 2}
    train = {ex["id"].decode(): ex for ex in (ds.source("train")[i] for i in range(4))}
    np.testing.assert_array_equal(train["clips/b.wav"]["labels"], [0, 1, 1])
    np.testing.assert_array_equal(train["clips/c.wav"]["labels"], [1, 1, 0])
    assert train["clips/c.wav"]["label"] == 1  # the first listed label
    assert any(k.endswith("elsewhere/abs.wav") for k in train)
    unl = [ds.source("unlabeled")[i] for i in range(2)]
    assert all(ex["label"] == -1 and not ex["labels"].any() for ex in unl)


def test_frames_become_video(csv_dataset):
    _, _, ds = csv_dataset
    train = {ex["id"].decode(): ex for ex in (ds.source("train")[i] for i in range(4))}
    video = train["clips/a.wav"]["video"]
    assert video.dtype == np.uint8 and video.shape == (5, 64, 64, 3)
    assert video[..., 0].mean() > 200 and video[..., 2].mean() < 50  # red frames
    assert train["clips/a.wav"]["has_video"]
    assert train["clips/b.wav"]["video"].shape == (0, 64, 64, 3)
    assert not train["clips/b.wav"]["has_video"]
    unl = {ex["id"].decode(): ex for ex in (ds.source("unlabeled")[i] for i in range(2))}
    assert unl["clips/u1.wav"]["video"].shape[0] == 3 and unl["clips/u1.wav"]["has_video"]


def test_bad_rows_skipped_and_named(csv_dataset):
    _, _, ds = csv_dataset
    skipped = {s["path"]: s["reason"] for s in ds.report["splits"]["train"]["skipped"]}
    assert skipped["clips/missing.wav"] == "missing file"
    assert skipped["clips/broken.wav"].startswith("cannot decode")
    assert "missing frames folder" in skipped["clips/e.wav"]
    summary = ds.summary()
    assert "clips/missing.wav: missing file" in summary
    assert "clips/broken.wav: cannot decode" in summary


def test_jsonl_unlabelled_rows_need_no_labels(tmp_path):
    for name in ("x", "y", "z"):
        _tone(str(tmp_path / f"{name}.flac"))
    rows = [{"path": "x.flac"}, {"path": "y.flac"}, {"path": "z.flac", "split": "unlabelled"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = prepare.prepare_dataset("manifest", source=str(manifest), data_dir=str(tmp_path / "d"))
    assert ds.splits == {"unlabeled": 3} and ds.class_names == [] and not ds.has_video
    assert "video" not in ds.source("unlabeled")[0]


def test_jsonl_label_lists_and_default_split(tmp_path):
    for name in ("x", "y", "z"):
        _tone(str(tmp_path / f"{name}.wav"))
    rows = [
        {"path": "x.wav", "labels": ["music", "speech"]},
        {"path": "y.wav", "labels": "speech"},
        {"path": "z.wav", "labels": ["noise"]},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    ds = prepare.prepare_dataset(
        "manifest", source=str(manifest), data_dir=str(tmp_path / "d"), split="test"
    )
    assert ds.splits == {"test": 3} and ds.multi_label
    assert ds.class_names == ["music", "noise", "speech"]
    # The option is part of the config name: without it the same file is another dataset.
    with pytest.raises(DatasetError, match="not prepared"):
        prepare.load_dataset("manifest", source=str(manifest), data_dir=str(tmp_path / "d"))


def test_strict_missing_file_raises(tmp_path):
    _tone(str(tmp_path / "ok.wav"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nok.wav\ngone.wav\n")
    with pytest.raises(AudioError, match="gone.wav: missing file"):
        prepare.prepare_dataset(
            "manifest", source=str(manifest), data_dir=str(tmp_path / "d"), strict=True
        )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.csv", "file_name,label\na.wav,x\n", "no 'path' column"),
        ("m.jsonl", '{"path": "a.wav"}\n{not json\n', "invalid JSON"),
        ("m.jsonl", '{"labels": "x"}\n', "no 'path'"),
        ("m.csv", "path,split\na.wav,holdout\n", "unknown split"),
        ("m.csv", "path,labels\na.wav,dog\nb.wav,dog\n", "single class"),
        ("m.csv", "path\n", "no rows"),
        ("m.csv", b"\xff\xfe\x00\x00binary", "cannot read manifest"),
    ],
)
def test_structural_errors(tmp_path, name, content, message):
    for clip in ("a.wav", "b.wav"):
        _tone(str(tmp_path / clip))
    manifest = tmp_path / name
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        manifest.write_text(content)
    with pytest.raises(DatasetError, match=message):
        prepare.prepare_dataset("manifest", source=str(manifest), data_dir=str(tmp_path / "d"))


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match="cannot read manifest"):
        prepare.prepare_dataset(
            "manifest", source=str(tmp_path / "none.csv"), data_dir=str(tmp_path / "d")
        )


def test_load_frames_subsamples(tmp_path):
    _frames(str(tmp_path / "f"), 12, (0, 255, 0))
    video = manifest_io.load_frames(str(tmp_path / "f"), 16, 4)
    assert video.shape == (4, 16, 16, 3) and video[..., 1].min() > 200


def test_unquoted_commas_are_reported(tmp_path):
    _tone(str(tmp_path / "a.wav"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,labels\na.wav,dog,cat\n")
    with pytest.raises(DatasetError, match="line 2: more fields than the header"):
        prepare.prepare_dataset("manifest", source=str(manifest), data_dir=str(tmp_path / "d"))
