"""The HEAR API on a tiny checkpoint: shapes, timestamps, determinism, torch in / torch out."""

import importlib

import numpy as np
import pytest

from jaxav.errors import CheckpointError
from jaxav.evaluate import hear


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from jaxav.config_defaults import base_config
    from jaxav.train.trainer import train

    root = tmp_path_factory.mktemp("hear")
    c = base_config()
    c.data.data_dir = str(root / "tfds")
    c.data.num_frames, c.data.num_mel_bins = 64, 32
    c.data.synth.update(num_unlabeled=8, num_train=0, num_validation=0, num_test=0,
                        clip_seconds=0.5)  # fmt: skip
    c.model.width, c.model.depth, c.model.num_heads = 32, 2, 2
    c.train.num_steps, c.train.batch_size, c.train.progress_bar = 1, 8, False
    c.checkpoint.every_steps, c.checkpoint.async_save = 1, False
    train(c, root / "run")
    return hear.load_model(str(root / "run" / "checkpoints" / "1")), root / "run"


def test_attributes_and_scene_embeddings(model):
    m, _ = model
    assert m.sample_rate == 16000 and m.layer == "layer_2"
    assert m.scene_embedding_size == m.timestamp_embedding_size == 32
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (3, 16000)).astype(np.float32)
    emb = hear.get_scene_embeddings(audio, m)
    assert isinstance(emb, np.ndarray) and emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, hear.get_scene_embeddings(audio, m))  # deterministic
    assert not np.allclose(emb[0], emb[1])


def test_timestamp_embeddings(model):
    m, _ = model
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, (2, 3 * 64 * 160)).astype(np.float32)
    emb, ts = hear.get_timestamp_embeddings(audio, m)
    # 3 windows x 4 time patches (16-frame stride): centres at 80, 240, ... ms.
    assert emb.shape == (2, 12, 32) and ts.shape == (2, 12)
    np.testing.assert_allclose(ts[0], 80.0 + 160.0 * np.arange(12))
    np.testing.assert_allclose(emb.mean(1), hear.get_scene_embeddings(audio, m), atol=1e-5)


def test_torch_in_torch_out(model):
    torch = importlib.import_module("torch")
    m, workdir = model
    audio = torch.rand(2, 8000) * 0.4 - 0.2
    emb = hear.get_scene_embeddings(audio, m)
    assert isinstance(emb, torch.Tensor) and tuple(emb.shape) == (2, 32)
    t_emb, ts = hear.get_timestamp_embeddings(audio, m)
    assert isinstance(t_emb, torch.Tensor) and isinstance(ts, torch.Tensor)
    again = hear.get_scene_embeddings(audio.numpy(), hear.load_model(str(workdir)))
    np.testing.assert_allclose(emb.numpy(), again, atol=1e-6)


def test_bad_path(tmp_path):
    with pytest.raises(CheckpointError):
        hear.load_model(str(tmp_path))
