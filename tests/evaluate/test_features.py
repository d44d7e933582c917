"""Restoring an encoder from a checkpoint written on 8 devices, windowed embedding, failures."""

import jax
import numpy as np
import pytest

from jaxav.data import pipeline
from jaxav.errors import CheckpointError
from jaxav.evaluate import features as F


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from jaxav.config_defaults import base_config
    from jaxav.train.trainer import train

    root = tmp_path_factory.mktemp("feat")
    c = base_config()
    c.data.data_dir = str(root / "tfds")
    c.data.num_frames, c.data.num_mel_bins = 64, 32
    c.data.synth.update(num_unlabeled=16, num_train=8, num_validation=0, num_test=8,
                        clip_seconds=0.5)  # fmt: skip
    c.model.width, c.model.depth, c.model.num_heads = 32, 2, 2
    c.train.num_steps, c.train.batch_size, c.train.progress_bar = 2, 8, False
    c.checkpoint.every_steps, c.checkpoint.async_save = 2, False
    c.mesh.data = 8  # written sharded over 8 devices
    train(c, root / "run")
    return root / "run", c


def test_restore_onto_one_device_matches_eight(trained):
    workdir, _ = trained
    one = F.load_encoder(workdir, mesh=F.probe_mesh(jax.devices()[:1]))
    eight = F.load_encoder(workdir)
    assert one.step == 2 and one.batch_devices == 1 and eight.batch_devices == 8
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(one.params))
    x = np.random.default_rng(0).normal(size=(3, 64, 32)).astype(np.float32)
    a, b = one.encode(x), eight.encode(x)
    layers = {"layer_1", "layer_2", "cls_1", "cls_2"}
    assert set(a) == layers | {"stats_layer_1", "stats_layer_2"}
    assert a["layer_1"].shape == (3, 32) and a["stats_layer_1"].shape == (3, 64)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)
    tokens = one.encode(x, pool=False)
    assert set(tokens) == layers and tokens["layer_2"].shape == (3, 8, 32)  # 2 x 4 patches
    np.testing.assert_allclose(tokens["layer_2"].mean(1), a["layer_2"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["stats_layer_2"][:, :32], a["layer_2"], rtol=1e-6)
    np.testing.assert_allclose(tokens["layer_2"].std(1), a["stats_layer_2"][:, 32:], atol=1e-5)


def test_checkpoint_errors(trained, tmp_path):
    workdir, config = trained
    with pytest.raises(CheckpointError, match="no checkpoint"):
        F.load_encoder(tmp_path)
    with pytest.raises(CheckpointError, match=r"available steps: \[2\]"):
        F.load_encoder(workdir, step=7)
    other = config.copy_and_resolve_references()
    other.model.depth = 3
    with pytest.raises(CheckpointError, match="model.depth"):
        F.load_encoder(workdir, config=other)


def test_window_starts_and_fbank_windows():
    assert F.window_starts(64, 64, 64) == [0] and F.window_starts(10, 64, 64) == [0]
    assert F.window_starts(192, 64, 64) == [0, 64, 128]
    assert F.window_starts(192, 64, 32) == [0, 32, 64, 96, 128]
    spec = pipeline.ExampleSpec(num_frames=64, num_mel_bins=32, mean=-3.0, std=2.0)
    wave = np.random.default_rng(1).uniform(-0.5, 0.5, (3 * 64 - 1) * 160 + 400).astype(np.float32)
    windows = F.clip_windows(wave, spec)
    assert windows.shape == (3, 64, 32)
    assert F.clip_windows(wave, spec, overlap=True).shape == (5, 64, 32)
    for k in range(3):  # window k = the fbank of its own samples
        seg = wave[k * 64 * 160 : k * 64 * 160 + spec.num_samples]
        np.testing.assert_allclose(windows[k], F.clip_windows(seg, spec)[0], atol=1e-4)
    short = F.clip_windows(wave[:8000], spec)  # padded like pipeline.ExampleTransform
    ref = pipeline.ExampleTransform(spec, train=False)({"audio": wave[:8000]})["audio"]
    np.testing.assert_allclose(short[0], ref, atol=1e-5)


def test_embed_split_means_windows_and_counts_failures(trained):
    workdir, _ = trained
    enc = F.load_encoder(workdir)
    spec = pipeline.ExampleSpec(num_frames=64, num_mel_bins=32, mean=-3.0, std=2.0, num_classes=2)
    rng = np.random.default_rng(2)
    long = (rng.uniform(-0.4, 0.4, (3 * 64 - 1) * 160 + 400) * 32767).astype(np.int16)
    short = (rng.uniform(-0.4, 0.4, 6000) * 32767).astype(np.int16)
    source = [
        {"audio": long, "label": 1, "labels": np.array([0, 1], np.uint8)},
        {"audio": None, "label": 0},  # fails to decode
        {"audio": short, "label": 0, "labels": np.array([1, 0], np.uint8)},
    ]
    out = F.embed_split(enc, source, spec, batch_size=2, progress=False)
    assert out.num_failed == 1 and out.failures[0][0] == 1 and out.num_windows == 4
    assert out.index.tolist() == [0, 2] and out.labels["label"].tolist() == [1, 0]
    assert out.labels["labels"].shape == (2, 2)
    windows = F.clip_windows(long.astype(np.float32) / 32768, spec)
    per_window = enc.encode(windows)
    single = enc.encode(F.clip_windows(short.astype(np.float32) / 32768, spec))
    for k, v in out.features.items():
        assert v.dtype == np.float32 and v.shape == (2, 64 if k.startswith("stats_") else 32)
        np.testing.assert_allclose(v[0], per_window[k].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(v[1], single[k][0], rtol=1e-4, atol=1e-5)


def test_reconstruct_masks_and_predicts(trained):
    workdir, config = trained
    enc = F.load_encoder(workdir, mesh=F.probe_mesh(jax.devices()[:1]))
    x = np.random.default_rng(3).normal(size=(2, 64, 32)).astype(np.float32)
    masked, recon = F.reconstruct(enc.params, config, x, jax.random.key(0))
    assert masked.shape == recon.shape == (2, 64, 32)
    assert np.isnan(masked).mean() == pytest.approx(config.mask.ratio)
    assert np.isfinite(recon).all()
    visible = ~np.isnan(masked)
    np.testing.assert_allclose(recon[visible], x[visible], atol=1e-6)
    again, _ = F.reconstruct(enc.params, config, x, jax.random.key(0))
    np.testing.assert_array_equal(np.isnan(again), np.isnan(masked))
