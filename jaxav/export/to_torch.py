"""Flax params -> PyTorch state_dict (safetensors) and back, and `jaxav export`.

Conversion rules (exact, so Flax -> PyTorch -> Flax round-trips bit for bit):
- Dense kernels [in, out] -> Linear weights [out, in] (transpose);
- attention `query/key/value` kernels [D, H, D/H] -> one fused `qkv` weight [3D, D] (rows q, k, v),
  biases [H, D/H] -> [3D]; `out` kernel [H, D/H, D] -> `proj` weight [D, D];
- the patch conv kernel [p_f, p_t, 1, D] (HWIO over (F, T)) -> OIHW [D, 1, p_f, p_t];
- Mamba's depthwise conv kernel [K, E] -> Conv1d weight [E, 1, K]; A_log, D, biases as they are;
- LayerNorm/RMSNorm `scale` -> `weight`; params of any float dtype go through float32.

`export(workdir, out, fmt)` restores a checkpoint's params onto the CPU (any training mesh),
writes the folder, then runs the exported model and jaxav's encoder (float32) on the same random
spectrogram and writes `parity.json`; a layer differing by more than `TOLERANCE` raises
`ParityError` (after writing the report).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxav.errors import CheckpointError, JaxavError
from jaxav.export.torch_modules import CONFIG_FILE, WEIGHTS_FILE, EncoderConfig

TOLERANCE = 1e-4
PARITY_FILE = "parity.json"
FORMATS = ("torch", "hf")


class ExportError(JaxavError):
    """A checkpoint cannot be exported in the asked format (names the reason)."""


class ParityError(JaxavError):
    """The exported model's outputs differ from jaxav's by more than the tolerance."""


# (flax path, torch name, kind); kind: id, T (transpose), conv2d, conv1d, out ([H, Dh, D] ->
# [D, H*Dh]), in:<slot> / bias:<slot> (query|key|value rows of the fused qkv weight / bias).
Entry = tuple[str, str, str]


def _norm_entries(flax: str, torch_name: str, with_bias: bool) -> list[Entry]:
    return [(f"{flax}/scale", f"{torch_name}.weight", "id")] + (
        [(f"{flax}/bias", f"{torch_name}.bias", "id")] if with_bias else []
    )


def param_mapping(c: EncoderConfig) -> list[Entry]:
    """Every encoder param: (path in the Flax tree, name in the PyTorch state_dict, kind)."""
    m: list[Entry] = [
        ("patch_embed/proj/kernel", "patch_embed.proj.weight", "conv2d"),
        ("patch_embed/proj/bias", "patch_embed.proj.bias", "id"),
    ]
    if c.pos_embed == "learned":
        m.append(("pos_embed/table", "pos_embed", "id"))
    if c.num_cls_tokens:
        m.append(("cls_token", "cls_token", "id"))
    for i in range(c.depth):
        if c.encoder == "vit":
            f, t = f"encoder/block_{i}", f"blocks.{i}"
            m += _norm_entries(f"{f}/norm1", f"{t}.norm1", True)
            for slot in ("query", "key", "value"):
                m.append((f"{f}/attn/{slot}/kernel", f"{t}.attn.qkv.weight", f"in:{slot}"))
                m.append((f"{f}/attn/{slot}/bias", f"{t}.attn.qkv.bias", f"bias:{slot}"))
            m += [
                (f"{f}/attn/out/kernel", f"{t}.attn.proj.weight", "out"),
                (f"{f}/attn/out/bias", f"{t}.attn.proj.bias", "id"),
            ]
            m += _norm_entries(f"{f}/norm2", f"{t}.norm2", True)
            for fc in ("fc1", "fc2"):
                m.append((f"{f}/mlp/{fc}/kernel", f"{t}.mlp.{fc}.weight", "T"))
                m.append((f"{f}/mlp/{fc}/bias", f"{t}.mlp.{fc}.bias", "id"))
        else:
            f, t = f"encoder/layers_{i}", f"blocks.{i}"
            m += _norm_entries(f"{f}/norm", f"{t}.norm", c.norm == "layer")
            m += [
                (f"{f}/mixer/in_proj/kernel", f"{t}.in_proj.weight", "T"),
                (f"{f}/mixer/out_proj/kernel", f"{t}.out_proj.weight", "T"),
            ]
            dirs = [("forward", "forward_dir")] + [("backward", "backward_dir")] * c.bidirectional
            for fd, td in dirs:
                fd, td = f"{f}/mixer/{fd}", f"{t}.{td}"
                m += [
                    (f"{fd}/conv_kernel", f"{td}.conv1d.weight", "conv1d"),
                    (f"{fd}/conv_bias", f"{td}.conv1d.bias", "id"),
                    (f"{fd}/x_proj/kernel", f"{td}.x_proj.weight", "T"),
                    (f"{fd}/dt_proj/kernel", f"{td}.dt_proj.weight", "T"),
                    (f"{fd}/dt_proj/bias", f"{td}.dt_proj.bias", "id"),
                    (f"{fd}/A_log", f"{td}.A_log", "id"),
                    (f"{fd}/D", f"{td}.D", "id"),
                ]
    final = "encoder/norm" if c.encoder == "vit" else "encoder/norm_f"
    return m + _norm_entries(final, "norm", c.encoder == "vit" or c.norm == "layer")


_SLOTS = {"query": 0, "key": 1, "value": 2}


def _get(tree: Mapping, path: str) -> Any:
    for k in path.split("/"):
        if k not in tree:
            raise CheckpointError(f"checkpoint params have no {path!r} (missing {k!r})")
        tree = tree[k]
    return tree


def to_torch_state(params: Mapping, c: EncoderConfig) -> dict[str, np.ndarray]:
    """Flax params (the full model tree) -> float32 numpy state_dict of `AudioEncoder(c)`."""
    params = nn.meta.unbox(params)
    fused: dict[str, list] = {}
    out: dict[str, np.ndarray] = {}
    for path, name, kind in param_mapping(c):
        v = np.asarray(jax.device_get(_get(params, path)), dtype=np.float32)  # bf16 -> f32
        if kind == "T":
            v = v.T
        elif kind == "conv2d":
            v = v.transpose(3, 2, 0, 1)
        elif kind == "conv1d":
            v = v.T[:, None, :]
        elif kind == "out":
            v = v.reshape(-1, v.shape[-1]).T
        elif kind.startswith(("in:", "bias:")):
            v = v.reshape(v.shape[0], -1).T if kind.startswith("in:") else v.reshape(-1)
            fused.setdefault(name, [None] * 3)[_SLOTS[kind.split(":")[1]]] = v
            continue
        out[name] = np.array(v, dtype=np.float32, order="C")  # a writable copy
    for name, parts in fused.items():
        # C order matters: safetensors.numpy writes the raw buffer whatever the strides.
        out[name] = np.ascontiguousarray(np.concatenate(parts, axis=0))
    return out


def from_torch_state(state: Mapping[str, Any], c: EncoderConfig) -> dict[str, Any]:
    """Inverse of `to_torch_state`: numpy/torch state_dict -> nested Flax params (encoder part).

    Exact (only transposes, reshapes and slices), so a round trip gives identical arrays.
    """
    tree: dict[str, Any] = {}
    head_dim = c.width // max(c.num_heads, 1)
    for path, name, kind in param_mapping(c):
        v = state[name]
        v = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        if kind == "T":
            v = v.T
        elif kind == "conv2d":
            v = v.transpose(2, 3, 1, 0)
        elif kind == "conv1d":
            v = v[:, 0, :].T
        elif kind == "out":
            v = v.T.reshape(c.num_heads, head_dim, -1)
        elif kind.startswith(("in:", "bias:")):
            part = np.split(v, 3, axis=0)[_SLOTS[kind.split(":")[1]]]
            shape = (c.num_heads, head_dim)
            v = part.T.reshape(-1, *shape) if kind.startswith("in:") else part.reshape(shape)
        node = tree
        *parents, leaf = path.split("/")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = np.ascontiguousarray(v)
    return tree


def encoder_config(config: ml_collections.ConfigDict) -> EncoderConfig:
    """The exported architecture of a checkpoint's model (read from the built Flax module).

    Raises:
        CheckpointError: the model is unknown or not an exportable masked-audio model.
    """
    from jaxav.models import registry
    from jaxav.models.mae import MaskedAudioModel

    try:
        model = registry.build_model(config)
    except JaxavError as e:
        raise CheckpointError(f"cannot export this checkpoint's model: {e}") from None
    if not isinstance(model, MaskedAudioModel):
        raise ExportError(
            f"model {config.model.name!r} has no exportable audio encoder "
            f"(supported: ViT/Mamba masked-audio models such as ssast, audiomae)"
        )
    enc = model.encoder
    common = dict(
        width=int(model.width),
        depth=int(enc.depth),
        patch_size=tuple(model.patch_size),
        patch_stride=tuple(model.patch_stride),
        ref_grid=tuple(model.ref_grid),
        num_cls_tokens=int(model.num_cls_tokens),
        cls_position=str(model.cls_position),
        pos_embed=str(model.pos_embed_kind),
    )
    if config.model.encoder == "vit":
        return EncoderConfig(
            "vit",
            num_heads=int(enc.num_heads),
            mlp_ratio=float(enc.mlp_ratio),
            approximate_gelu=bool(enc.approximate_gelu),
            **common,
        )
    return EncoderConfig(
        "mamba",
        d_state=int(enc.d_state),
        expand=int(enc.expand),
        d_conv=int(enc.d_conv),
        dt_rank=int(enc.dt_rank) or math.ceil(int(enc.width) / 16),
        norm=str(enc.norm),
        bidirectional=bool(enc.bidirectional),
        **common,
    )


def reference_features(config: ml_collections.ConfigDict, params: Any, audio: np.ndarray) -> dict:
    """jaxav's per-layer features in float32 (compute dtype forced to float32).

    Returns: {layer_i: [B, N, D], cls_i: [B, D], final: [B, N, D], final_cls: [B, D]} numpy.
    """
    from jaxav.models import registry

    c = ml_collections.ConfigDict(config.to_dict())
    c.model.dtype = "float32"
    model = registry.build_model(c)

    def run(m, x):
        tokens, pos, _ = m.embed_patches(x)
        final, final_cls, hidden = m.run_encoder(tokens + pos, train=False)
        out = {"final": final}
        if final_cls is not None:
            out["final_cls"] = final_cls.mean(axis=1)
        for i, h in enumerate(hidden, start=1):
            out[f"layer_{i}"], cls = m.split_cls(h)
            if cls is not None:
                out[f"cls_{i}"] = cls.mean(axis=1)
        return out

    fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method=run))
    return {k: np.asarray(v, np.float32) for k, v in fn(params, audio).items()}


def compare(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Per-key max |got - want| and that divided by max |want| (keys of `want`)."""
    out = {}
    for k, w in want.items():
        if k not in got or tuple(got[k].shape) != tuple(w.shape):
            shape = None if k not in got else tuple(got[k].shape)
            raise ParityError(f"exported model gives {k!r} of shape {shape}, jaxav {w.shape}")
        diff = float(np.max(np.abs(np.asarray(got[k], np.float64) - w)))
        out[k] = dict(max_abs_diff=diff, max_rel_diff=diff / max(float(np.max(np.abs(w))), 1e-12))
    return out


def check_parity(report: dict, out: Path, tolerance: float = TOLERANCE) -> dict:
    """Adds worst-case figures to `report` (with `layers` and optional `other_lengths`), writes
    `out/parity.json`, raises ParityError when a layer's max_abs_diff > tolerance."""
    groups = [report["layers"], *(g["layers"] for g in report.get("other_lengths", {}).values())]
    rows = [(k, v) for g in groups for k, v in g.items()]
    report["worst_max_abs_diff"] = max(v["max_abs_diff"] for _, v in rows)
    report["worst_max_rel_diff"] = max(v["max_rel_diff"] for _, v in rows)
    report["tolerance"] = tolerance
    bad = sorted({k for k, v in rows if not v["max_abs_diff"] <= tolerance})
    report["passed"] = not bad
    (out / PARITY_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if bad:
        raise ParityError(
            f"exported model differs from jaxav by {report['worst_max_abs_diff']:.2e} > "
            f"{tolerance:g} on {', '.join(bad)} (see {out / PARITY_FILE})"
        )
    return report


def _torch_outputs(model, audio: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        return {k: v.numpy() for k, v in model(torch.from_numpy(audio)).items()}


def export(
    workdir: str | Path,
    out: str | Path,
    fmt: str = "torch",
    step: int | None = None,
    *,
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    """Exports a checkpoint's encoder and checks it against jaxav (`jaxav export`).

    Args:
        workdir: the training workdir (`WORKDIR/checkpoints/<step>`).
        out: output folder (created). fmt: "torch" (`model.safetensors` + `config.json`, load
            with `jaxav.export.load_torch`) or "hf" (`transformers.ASTModel.from_pretrained`).
        step: checkpoint step (default: latest).
        seed: seed of the random parity input float32[2, num_frames, num_mel_bins].

    Returns the parity report (also written to `out/parity.json`).

    Raises:
        CheckpointError (no checkpoint / step / unknown model), ExportError (not exportable in
        this format), ParityError (a layer differs by more than 1e-4).
    """
    import torch
    from safetensors.numpy import save_file

    from jaxav.export import hf, torch_modules
    from jaxav.train.checkpoint import restore_params

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    config, params, step = restore_params(workdir, step, sharding=cpu)
    cfg = encoder_config(config)
    frontend = hf.frontend_info(config, workdir)
    if fmt == "hf":
        hf.check_exportable(cfg, frontend)
    state = to_torch_state(params, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exported = {
        "format": "jaxav-torch",
        "version": 1,
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
        "frontend": frontend,
        "source": dict(
            workdir=str(Path(workdir).absolute()), step=int(step), model_name=config.model.name
        ),
    }
    model = torch_modules.build(exported)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    model.eval()

    rng = np.random.default_rng(seed)
    frames, bins = frontend["num_frames"], frontend["num_mel_bins"]
    audio = rng.standard_normal((2, frames, bins)).astype(np.float32)
    want = reference_features(config, params, audio)
    report: dict[str, Any] = {"format": fmt, "step": int(step), "input_shape": list(audio.shape)}
    if fmt == "torch":
        save_file(state, str(out / WEIGHTS_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(exported, indent=2) + "\n")
        reloaded = torch_modules.load_torch(out)
        report["layers"] = compare(_torch_outputs(reloaded, audio), want)
        if cfg.pos_embed == "learned":  # another length: interpolated positions
            longer = frames + 3 * cfg.patch_stride[1]
            x = rng.standard_normal((2, longer, bins)).astype(np.float32)
            got = _torch_outputs(reloaded, x)
            layers = compare(got, reference_features(config, params, x))
            report["other_lengths"] = {str(longer): {"num_frames": longer, "layers": layers}}
    else:
        report["layers"] = hf.export_hf(model, cfg, frontend, out, audio, want)
    report = check_parity(report, out)
    if verbose:
        print(
            f"exported step {step} of {workdir} ({cfg.encoder}, {fmt}) to {out}; parity worst "
            f"max abs diff {report['worst_max_abs_diff']:.1e} over {len(report['layers'])} outputs"
        )
    return report
