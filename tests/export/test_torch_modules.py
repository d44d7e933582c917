"""PyTorch mirrors of jaxav's encoders: per-layer parity with Flax, exact weight round trip."""

import importlib

import jax
import numpy as np
import pytest

torch = importlib.import_module("torch")

from jaxav.config_defaults import base_config  # noqa: E402
from jaxav.export import to_torch  # noqa: E402
from jaxav.export.torch_modules import AudioEncoder, selective_scan  # noqa: E402
from jaxav.models import registry  # noqa: E402

T, F = 64, 32

CASES = {
    "vit_cls1": dict(),
    "vit_cls2_overlap": dict(num_cls_tokens=2, patch_stride=(8, 12)),
    "vit_cls0_sincos_frames": dict(
        num_cls_tokens=0,
        pos_embed="sincos",
        patch_size=(32, 2),
        patch_stride=(32, 2),
        name="audiomae",
    ),
    "mamba_cls1_middle": dict(encoder="mamba", depth=2),
}


def tiny_config(**model):
    """A 2-layer, 32-wide model config on 64 x 32 spectrograms (model keys overridden)."""
    c = base_config()
    c.data.num_frames, c.data.num_mel_bins = T, F
    c.model.width, c.model.depth, c.model.num_heads = 32, 2, 2
    c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 32, 1, 2
    c.model.mamba.d_state = 8
    c.model.pos_embed = "learned"
    for k, v in model.items():
        c.model[k] = v
    return c


def random_params(config, seed=0):
    """Initialised params with every leaf perturbed (so zero biases and unit scales are tested)."""
    model = registry.build_model(config)
    audio = np.zeros((1, T, F), np.float32)
    params = model.init(jax.random.key(seed), audio, method="encode")["params"]
    params = jax.tree.map(np.asarray, __import__("flax").linen.meta.unbox(params))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: (p + 0.05 * rng.standard_normal(p.shape)).astype(np.float32), params
    )


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    config = tiny_config(**CASES[request.param])
    params = random_params(config)
    cfg = to_torch.encoder_config(config)
    model = AudioEncoder(cfg)
    state = to_torch.to_torch_state(params, cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return request.param, config, params, cfg, model.eval()


def test_per_layer_parity(case):
    name, config, params, cfg, model = case
    # ViTs also at other lengths (interpolated positions); one length for the slow-to-compile Mamba
    lengths = [T] if name.startswith("mamba") else [T, T + 40, T - 16]
    for frames in lengths:
        audio = np.random.default_rng(1).standard_normal((2, frames, F)).astype(np.float32)
        want = to_torch.reference_features(config, params, audio)
        with torch.no_grad():
            got = {k: v.numpy() for k, v in model(torch.from_numpy(audio)).items()}
        assert set(got) == set(want)
        assert {f"layer_{i}" for i in range(1, cfg.depth + 1)} <= set(want)
        assert ("cls_1" in want) == (cfg.num_cls_tokens > 0)
        for k, diff in to_torch.compare(got, want).items():
            assert diff["max_abs_diff"] < 1e-4, (frames, k, diff)


def test_round_trip_is_exact(case, tmp_path):
    """Flax -> safetensors file -> PyTorch module -> Flax gives identical arrays."""
    from safetensors.torch import load_file, save_file

    _, _, params, cfg, _ = case
    save_file(
        {k: torch.from_numpy(v) for k, v in to_torch.to_torch_state(params, cfg).items()},
        str(tmp_path / "m.safetensors"),
    )
    model = AudioEncoder(cfg)
    model.load_state_dict(load_file(str(tmp_path / "m.safetensors")), strict=True)
    back = to_torch.from_torch_state(model.state_dict(), cfg)
    flat_back = dict(jax.tree_util.tree_flatten_with_path(back)[0])
    flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    assert flat_back, "nothing converted"
    for path, v in flat_back.items():
        np.testing.assert_array_equal(v, flat[path])
    # Every encoder param is exported (heads and mask embeddings are not part of the encoder).
    exported = {jax.tree_util.keystr(p) for p in flat_back}
    for path in flat:
        key = jax.tree_util.keystr(path)
        if not any(s in key for s in ("head", "mask_", "decoder")):
            assert key in exported, key


def test_bf16_params_go_through_float32(case):
    _, _, params, cfg, _ = case
    import jax.numpy as jnp

    bf16 = jax.tree.map(lambda p: jnp.asarray(p, jnp.bfloat16), params)
    state = to_torch.to_torch_state(bf16, cfg)
    assert all(v.dtype == np.float32 for v in state.values())
    ref = to_torch.to_torch_state(
        jax.tree.map(
            lambda p: np.asarray(jnp.asarray(p, jnp.bfloat16).astype(jnp.float32)), params
        ),
        cfg,
    )
    for k in ref:
        np.testing.assert_array_equal(state[k], ref[k])


def test_chunked_scan_matches_sequential():
    g = torch.Generator().manual_seed(0)
    b, length, d, n = 2, 37, 5, 3
    x, B, C = (torch.randn(b, length, k, generator=g) for k in (d, n, n))
    dt = torch.rand(b, length, d, generator=g)
    A = -torch.rand(d, n, generator=g) * 3
    h = torch.zeros(b, d, n)
    want = []
    for t in range(length):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None]
        want.append((h * C[:, t, None]).sum(-1))
    want = torch.stack(want, 1)
    for chunk in (1, 8, 16, 64):
        torch.testing.assert_close(
            selective_scan(x, dt, A, B, C, chunk), want, atol=1e-5, rtol=1e-5
        )
