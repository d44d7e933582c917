"""HiCMAE: gradients reach exactly the layers the hierarchical loss names, skip connections,
hierarchical feature fusion, config checks, and a checkpoint round trip through `train()`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.errors import ConfigError
from jaxav.models.hicmae import hierarchical_fusion
from jaxav.models.registry import build_model


def tiny_config(**av):
    from test_av import tiny_config as base  # (same directory on sys.path under pytest)

    c = base("hicmae")
    for k, v in av.items():
        c.model.av[k] = v
    return c


def batch(b=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "audio": jnp.asarray(rng.standard_normal((b, 64, 32)), jnp.float32),
        "video": jnp.asarray(rng.standard_normal((b, 4, 16, 16, 3)), jnp.float32),
        "has_video": jnp.ones((b,), bool),
    }


def grads_of(config):
    model = build_model(config)
    rngs = {"params": jax.random.key(0), "mask": jax.random.key(1)}
    params = nn.unbox(model.init(rngs, batch(), train=False)["params"])

    def loss_fn(p):
        return model.apply({"params": p}, batch(), train=True, rngs={"mask": jax.random.key(2)})

    return jax.jit(jax.grad(loss_fn, has_aux=True))(params)[0]


def _zero(tree) -> bool:
    return all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(tree))


def test_contrastive_only_gradients_stop_at_the_deepest_level():
    """recon weight 0, InfoNCE at layer 1 only: layer 2, fusion and decoders get zero grad."""
    config = tiny_config(contrastive_layers=(1,), contrastive_layer_weights=(1.0,))
    config.model.recon_weight = 0.0
    g = grads_of(config)
    for enc in ("audio_encoder", "video_encoder"):
        assert not _zero(g[enc]["block_0"]), enc
        assert _zero(g[enc]["block_1"]), enc
    for part in ("fusion_0", "decoder_a", "decoder_v", "norm_a", "norm_v"):
        assert _zero(g[part]), part
    for part in ("audio_patch", "video_patch", "modality_a", "modality_v", "log_temperature"):
        assert not _zero(g[part]), part


def test_reconstruction_reaches_every_layer_and_skip():
    g = grads_of(tiny_config())
    for part in ("fusion_0", "decoder_a", "decoder_v"):
        assert not _zero(g[part]), part
    for dec in ("decoder_a", "decoder_v"):
        for k in (0, 1):  # skip_layers (1, 2) feed decoder blocks 0 and 1
            assert not _zero(g[dec][f"skip_{k}"]), (dec, k)
    assert _zero(g["layer_logits_a"])  # for probing only: no pretraining gradient


def test_hierarchical_fusion_weights():
    h = (jnp.ones((1, 2, 3)), 3 * jnp.ones((1, 2, 3)))
    np.testing.assert_allclose(hierarchical_fusion(h, jnp.zeros(2)), 2 * np.ones((1, 2, 3)))
    w = np.exp([0.0, np.log(3.0)]) / 4.0  # softmax([0, log 3]) = (1/4, 3/4)
    fused = hierarchical_fusion(h, jnp.array([0.0, np.log(3.0)]))
    np.testing.assert_allclose(fused, (w[0] + 3 * w[1]) * np.ones((1, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize(
    "av, match",
    [
        (dict(contrastive_layers=(3,), contrastive_layer_weights=(1.0,)), "contrastive_layers"),
        (dict(contrastive_layers=(1, 2), contrastive_layer_weights=(1.0,)), "same length"),
        (dict(skip_layers=(1, 2, 2)), "decoder_depth"),
        (dict(skip_layers=(0,)), "skip_layers"),
    ],
)
def test_config_errors(av, match):
    with pytest.raises(ConfigError, match=match):
        build_model(tiny_config(**av))


def test_needs_video():
    config = tiny_config()
    config.data.with_video = False
    with pytest.raises(ConfigError, match="with_video"):
        build_model(config)


def test_checkpoint_round_trip(tmp_path_factory):
    """`train()` a few steps, then `restore_params`: same tree as init, trained values, and a
    model rebuilt from the checkpoint's (JSON) config encodes with them."""
    from jaxav.train.checkpoint import restore_params
    from jaxav.train.trainer import train

    config = tiny_config()
    config.data.data_dir = str(tmp_path_factory.getbasetemp() / "av_synth")
    s = config.data.synth
    s.num_unlabeled, s.num_train, s.num_validation, s.num_test = 64, 32, 16, 16
    config.train.num_steps, config.train.batch_size, config.train.progress_bar = 3, 8, False
    config.train.log_every, config.optim.warmup_steps = 1, 1
    config.checkpoint.every_steps = 3
    workdir = tmp_path_factory.mktemp("hicmae_run")
    result = train(config, workdir)
    assert result["step"] == 3 and np.isfinite(result["metrics"]["loss"])

    restored_config, params, step = restore_params(workdir)
    assert step == 3
    model = build_model(restored_config)  # lists in the JSON config are accepted
    init = nn.unbox(
        model.init(
            {"params": jax.random.key(config.seed), "mask": jax.random.key(1)}, batch(), train=False
        )
    )["params"]
    assert jax.tree.structure(params) == jax.tree.structure(init)
    jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), params, init)
    assert not np.allclose(params["audio_patch"]["proj"]["kernel"], 0)
    b = batch(2)
    out = model.apply({"params": params}, b["audio"], b["video"], method="encode")
    assert np.all(np.isfinite(out["audio_layer_2"]))
