"""Audio-visual models (CAV-MAE, and HiCMAE where the property is shared): encode keys, global-batch
negatives on an 8-device mesh, clips without frames, training steps on a tiny synth_av."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxav.config_defaults import base_config
from jaxav.models.registry import build_model

MODELS = ("cavmae", "hicmae")


def tiny_config(name: str):
    """width 32, 2 + 1 layers, 64 frames x 32 mel bins, video 4 x 16 x 16 (2 x 8 x 8 tubelets)."""
    c = base_config()
    c.data.num_frames, c.data.num_mel_bins, c.data.with_video = 64, 32, True
    c.data.video_frames, c.data.video_size = 4, 16
    c.model.name = name
    c.model.width, c.model.num_heads, c.model.mlp_ratio = 32, 2, 2.0
    c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 32, 2, 2
    c.model.recon_weight, c.model.contrastive_weight = 1.0, 1.0
    av = c.model.av
    av.modality_depth, av.joint_depth, av.video_patch_size, av.tubelet = 2, 1, (8, 8), 2
    av.contrastive_layers, av.contrastive_layer_weights, av.skip_layers = (1, 2), (0.5, 1.0), (1, 2)
    av.temperature, av.learn_temperature = 0.1, True
    c.mask.ratio = 0.5
    return c


def random_batch(b=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "audio": jnp.asarray(rng.standard_normal((b, 64, 32)), jnp.float32),
        "video": jnp.asarray(rng.standard_normal((b, 4, 16, 16, 3)), jnp.float32),
        "has_video": jnp.ones((b,), bool),
    }


class Setup:
    """Model, params and a jitted value-and-grad (compiled once per model and shapes)."""

    def __init__(self, name: str):
        self.config = tiny_config(name)
        self.model = build_model(self.config)
        rngs = {"params": jax.random.key(0), "mask": jax.random.key(1)}
        self.params = nn.unbox(self.model.init(rngs, random_batch(), train=False)["params"])

        def loss_fn(params, batch, key):
            return self.model.apply({"params": params}, batch, train=True, rngs={"mask": key})

        self.grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        self.video_grad = jax.jit(
            jax.grad(
                lambda video, batch, key: loss_fn(self.params, {**batch, "video": video}, key)[0]
            )
        )


@pytest.fixture(scope="module", params=MODELS)
def setup(request):
    return Setup(request.param)


def test_encode_keys_and_shapes(setup):
    b = random_batch(2)
    out = setup.model.apply({"params": setup.params}, b["audio"], b["video"], method="encode")
    # 4 x 2 audio patches of 16 x 16; 2 x 2 x 2 tubelets.
    for i in (1, 2):
        assert out[f"audio_layer_{i}"].shape == (2, 8, 32)
        assert out[f"video_layer_{i}"].shape == (2, 8, 32)
    assert out["fused_layer_3"].shape == (2, 16, 32)
    if setup.config.model.name == "cavmae":  # the joint layer's audio-alone / video-alone passes
        assert out["audio_layer_3"].shape == out["video_layer_3"].shape == (2, 8, 32)
    else:
        assert out["audio_hier"].shape == out["video_hier"].shape == (2, 8, 32)
    assert all(v.dtype == jnp.float32 and np.all(np.isfinite(v)) for v in out.values())


def test_global_batch_negatives_on_8_devices(setup):
    """The loss and gradients with the batch sharded over 8 devices equal the 1-device ones."""
    assert jax.device_count() == 8
    batch, key = random_batch(8), jax.random.key(3)
    (loss1, m1), g1 = setup.grad_fn(setup.params, batch, key)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    params = jax.device_put(setup.params, NamedSharding(mesh, P()))
    (loss8, m8), g8 = setup.grad_fn(params, sharded, key)
    assert len(sharded["audio"].sharding.device_set) == 8
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for k in m1:
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
    # A per-device (local-batch) InfoNCE would see 1 clip per device: loss 0, not this.
    nce = m1["nce"]
    assert float(nce) > 0.5


VISUAL_PARAMS = {
    "cavmae": ("video_patch", "video_layers", "modality_v", "pred_v", "dec_modality_v"),
    "hicmae": ("video_patch", "video_encoder", "modality_v", "decoder_v", "norm_v"),
}


def test_clip_without_frames_is_ignored(setup):
    batch, key = random_batch(4), jax.random.key(4)
    has = jnp.array([True, False, True, True])
    rng = np.random.default_rng(9)
    garbage = [100 * rng.standard_normal((4, 16, 16, 3)), np.full((4, 16, 16, 3), np.nan)]
    results = []
    for g in garbage:
        b = {**batch, "has_video": has, "video": batch["video"].at[1].set(g)}
        results.append(setup.grad_fn(setup.params, b, key))
        dvideo = setup.video_grad(b["video"], b, key)
        assert np.all(np.asarray(dvideo[1]) == 0)
        assert np.any(np.asarray(dvideo[0]) != 0)
    (l0, m0), g0 = results[0]
    (l1, m1), g1 = results[1]
    assert np.isfinite(float(l0))
    assert float(l0) == float(l1)
    assert {k: float(v) for k, v in m0.items()} == {k: float(v) for k, v in m1.items()}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), g0, g1)


def test_batch_without_any_frames_gives_no_visual_gradient(setup):
    batch = {**random_batch(4), "has_video": jnp.zeros((4,), bool)}
    (loss, metrics), grads = setup.grad_fn(setup.params, batch, jax.random.key(5))
    assert np.isfinite(float(loss))
    assert float(metrics["mse_video"]) == 0.0 and float(metrics["nce"]) == 0.0
    name = setup.config.model.name
    for part in VISUAL_PARAMS[name]:
        leaves = jax.tree.leaves(grads[part])
        assert leaves and all(np.all(np.asarray(x) == 0) for x in leaves), part
    audio = "audio_layers" if name == "cavmae" else "audio_encoder"
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(grads[audio]))


@pytest.fixture(scope="module")
def synth_batch(tmp_path_factory):
    """One batch of 8 clips of a tiny synth_av through the real pipeline (video, has_video)."""
    from jaxav.data import pipeline
    from jaxav.data.prepare import prepare_dataset

    data_dir = tmp_path_factory.getbasetemp() / "av_synth"
    ds = prepare_dataset(
        "synth_av",
        data_dir=str(data_dir),
        num_unlabeled=64,
        num_train=32,
        num_validation=16,
        num_test=16,
    )
    spec = pipeline.spec_from_config(tiny_config("cavmae"), ds)
    it = iter(pipeline.make_train_dataset(ds.source("unlabeled"), spec, batch_size=8, seed=0))
    batch = {k: jnp.asarray(v) for k, v in next(it).items()}
    assert batch["video"].shape == (8, 4, 16, 16, 3) and bool(batch["has_video"].all())
    return batch


def test_train_steps_lower_every_loss_term(setup, synth_batch):
    tx = optax.adam(2e-3)
    params, opt_state, key = setup.params, tx.init(setup.params), jax.random.key(6)
    first = last = None
    for _ in range(12):
        (_, metrics), grads = setup.grad_fn(params, synth_batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        last = {k: float(v) for k, v in metrics.items()}
        first = first or last
    terms = [k for k in last if k.startswith(("mse_", "nce"))]
    assert {"mse_audio", "mse_video", "nce"} <= set(terms)
    for k in terms:
        assert last[k] < first[k], (k, first[k], last[k])
