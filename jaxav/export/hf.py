"""`jaxav export --format hf`: a ViT encoder as a `transformers.ASTModel` folder.

ASTModel's sequence is `[cls, distillation, patches]` plus a fixed position table of length
`2 + F_p * T_p` (no interpolation: inputs must have exactly `max_length` frames), patches from a
square conv over the (F, T) plane in freq-major order (jaxav's order), pre-norm blocks with q/k/v
projections, and a final LayerNorm.

Exactly exportable: ViT encoders with **two** cls tokens (SSAST's cls + distillation) and square
patches (`patch_size` p x p; strides may differ and overlap). Why two: every token in the sequence
is a key of every softmax, so AST's two leading tokens must be two real jaxav tokens. With one
jaxav cls token, a duplicate in the distillation slot adds `log 2` to that key's logit for every
query (no weight setting undoes that for all queries), and with none, both extra tokens change
every attention row; such checkpoints are refused with `ExportError` (export them with
`--format torch`, which mirrors any config exactly).

Mapping: jaxav's `cls_token[0, 0]` -> `cls_token`, `cls_token[0, 1]` -> `distillation_token`;
position rows 0 and 1 are zero (jaxav's cls tokens get no position), rows 2: the patch positions
at the training grid (learned table, or sin-cos); `max_length = data.num_frames`.
`preprocessor_config.json` holds an `ASTFeatureExtractor` with the dataset's fbank mean/std
(both normalise as `(x - mean) / (2 * std)`); note that it always uses a Hanning window, so it
reproduces jaxav's features exactly only for checkpoints trained with `data.window = "hanning"`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxav.errors import JaxavError
from jaxav.export.to_torch import ExportError, compare
from jaxav.export.torch_modules import AudioEncoder, EncoderConfig

INFO_FILE = "jaxav_export.json"


def frontend_info(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Frontend constants and the dataset's fbank mean/std (None when the dataset is unknown
    here), for `preprocessor_config.json` and a torch export's `config.json["frontend"]`.

    Stats come from `WORKDIR/fbank_stats.json` if present, else from the prepared dataset.
    """
    from jaxav.data import frontend

    d = config.data
    info: dict[str, Any] = dict(
        sample_rate=int(d.sample_rate),
        num_mel_bins=int(d.num_mel_bins),
        num_frames=int(d.num_frames),
        window=str(d.get("window", "povey")),
        frame_length_ms=25.0,
        frame_shift_ms=10.0,
        preemphasis=0.97,
        log_floor=frontend.LOG_FLOOR,
        normalization="(fbank - mean) / (2 * std)",
        dataset=str(d.dataset),
        mean=None,
        std=None,
    )
    stats_file = Path(workdir) / "fbank_stats.json"
    try:
        if stats_file.is_file():
            stats = json.loads(stats_file.read_text())
        else:
            from jaxav.data import prepare
            from jaxav.train.trainer import dataset_options

            stats = prepare.load_dataset(
                d.dataset, d.source or None, d.data_dir or None, **dataset_options(d)
            ).stats
        info.update(mean=float(stats["mean"]), std=float(stats["std"]))
    except (JaxavError, OSError, KeyError, ValueError) as e:
        info["stats_unavailable"] = str(e)
    return info


def check_exportable(c: EncoderConfig, frontend: dict[str, Any]) -> None:
    """Raises ExportError unless `c` maps exactly onto ASTModel (module docstring)."""
    why = []
    if c.encoder != "vit":
        why.append(f"the encoder is {c.encoder!r}, ASTModel is a ViT")
    if c.num_cls_tokens != 2:
        why.append(
            f"it has {c.num_cls_tokens} cls token(s); ASTModel always has 2 (cls + distillation) "
            "and extra tokens change every attention softmax, so only model.num_cls_tokens = 2 "
            "exports exactly"
        )
    if c.patch_size[0] != c.patch_size[1]:
        why.append(f"patch_size {tuple(c.patch_size)} is not square (ASTModel: p x p)")
    if c.cls_position != "start":
        why.append("its cls tokens are not at the start")
    if frontend.get("mean") is None:
        why.append(
            "the dataset's fbank mean/std are unknown here (prepare the dataset on this machine "
            "or put fbank_stats.json in the workdir): " + frontend.get("stats_unavailable", "")
        )
    if why:
        raise ExportError(
            "cannot export to Hugging Face ASTModel exactly: "
            + "; ".join(why)
            + " (--format torch exports any jaxav encoder)"
        )


def ast_config(c: EncoderConfig, frontend: dict[str, Any]):
    """The `transformers.ASTConfig` of an exportable ViT encoder."""
    from transformers import ASTConfig

    return ASTConfig(
        hidden_size=c.width,
        num_hidden_layers=c.depth,
        num_attention_heads=c.num_heads,
        intermediate_size=int(c.width * c.mlp_ratio),
        hidden_act="gelu_pytorch_tanh" if c.approximate_gelu else "gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=c.ln_eps,
        patch_size=int(c.patch_size[0]),
        qkv_bias=True,
        frequency_stride=int(c.patch_stride[0]),
        time_stride=int(c.patch_stride[1]),
        max_length=int(frontend["num_frames"]),
        num_mel_bins=int(frontend["num_mel_bins"]),
    )


def ast_state_dict(model: AudioEncoder) -> dict:
    """`AudioEncoder` (ViT, 2 cls tokens) weights under ASTModel's names (float32 tensors)."""
    import torch

    c = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        pos = model.positions(tuple(c.ref_grid)).detach()
    out = {
        "embeddings.cls_token": sd["cls_token"][:, 0:1].contiguous(),
        "embeddings.distillation_token": sd["cls_token"][:, 1:2].contiguous(),
        "embeddings.position_embeddings": torch.cat([pos.new_zeros(2, c.width), pos])[None],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    names = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.o_proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for i in range(c.depth):
        t, a = f"blocks.{i}", f"layers.{i}"
        for suffix in ("weight", "bias"):
            for ours, theirs in names.items():
                out[f"{a}.{theirs}.{suffix}"] = sd[f"{t}.{ours}.{suffix}"]
            q, k, v = sd[f"{t}.attn.qkv.{suffix}"].chunk(3, dim=0)
            for name, part in (("q", q), ("k", k), ("v", v)):
                out[f"{a}.attention.{name}_proj.{suffix}"] = part.contiguous()
    return out


def export_hf(
    model: AudioEncoder,
    c: EncoderConfig,
    frontend: dict[str, Any],
    out: Path,
    audio: np.ndarray,
    want: dict[str, np.ndarray],
) -> dict[str, dict]:
    """Writes the ASTModel folder (+ preprocessor_config.json, jaxav_export.json) to `out`,
    reloads it with `ASTModel.from_pretrained` and compares it with jaxav's features `want` on
    `audio: float32[B, num_frames, num_mel_bins]`.

    Returns:
        Per-output diffs (`to_torch.compare`): hidden_states[i] patch tokens vs `layer_i`, the
        mean of its 2 leading tokens vs `cls_i`, last_hidden_state vs `final` / `final_cls`.
    """
    import torch
    from transformers import ASTFeatureExtractor, ASTModel

    ast = ASTModel(ast_config(c, frontend))
    ast.load_state_dict(ast_state_dict(model), strict=True)
    ast.save_pretrained(str(out))
    ASTFeatureExtractor(
        sampling_rate=frontend["sample_rate"],
        num_mel_bins=frontend["num_mel_bins"],
        max_length=frontend["num_frames"],
        do_normalize=True,
        mean=frontend["mean"],
        std=frontend["std"],
    ).save_pretrained(str(out))
    info = {"model": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(c).items()}}
    if frontend["window"] != "hanning":
        info["note"] = (
            f"trained on fbank with a {frontend['window']} window; ASTFeatureExtractor uses "
            "Hanning, so compute features with jaxav.data.frontend for exact inputs"
        )
    (out / INFO_FILE).write_text(json.dumps({**info, "frontend": frontend}, indent=2) + "\n")

    loaded = ASTModel.from_pretrained(str(out)).eval()
    with torch.no_grad():
        o = loaded(torch.from_numpy(audio), output_hidden_states=True)
    hidden = o.hidden_states  # (embeddings, block 1, ..., block L)
    if len(hidden) != c.depth + 1:
        raise ExportError(f"ASTModel gave {len(hidden)} hidden states, expected {c.depth + 1}")
    got = {}
    for i, h in enumerate(hidden[1:], start=1):
        got[f"layer_{i}"], got[f"cls_{i}"] = h[:, 2:].numpy(), h[:, :2].mean(1).numpy()
    got["final"] = o.last_hidden_state[:, 2:].numpy()
    got["final_cls"] = o.pooler_output.numpy()
    return compare(got, want)
