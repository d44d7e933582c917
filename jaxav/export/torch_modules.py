"""PyTorch mirrors of jaxav's audio encoders, for checkpoints exported by `jaxav export`.

This file needs only torch, numpy and safetensors (no JAX): copy it beside an exported folder and
`load_torch(folder)` gives the model. The model maps a normalised log-mel spectrogram
`audio: float32[B, T, F]` (T frames of 10 ms, F mel bins, normalised as `(x - mean) / (2 * std)`
with the dataset statistics in `config.json["frontend"]`) to the per-layer features of jaxav's
`model.apply(..., method="encode")`:

- `layer_i`: float32[B, N, D], patch tokens after block i (before the final norm, cls excluded);
- `cls_i`: float32[B, D], the mean of the cls tokens after block i (when there are cls tokens);
- `final`: float32[B, N, D] patch tokens after the final norm; `final_cls` [B, D] likewise.

Tokens are jaxav's: freq-major patches (index f * T_patches + t) of a strided conv over the (F, T)
plane; learned positions (a [F0, T0, D] table bilinearly resized to the input's grid,
`align_corners=False`, no antialiasing) or fixed 2-D sin-cos; cls tokens (no position) at the
start (ViT) or in the middle (Mamba, index N // 2).

Encoders: the pre-norm ViT (timm names: fused `qkv`, `proj`, LayerNorm eps 1e-6, exact GELU) and
the bidirectional Mamba (Vim "v2": per-direction conv / x_proj / dt_proj / A / D, shared in/out
projections, directions averaged) with a plain PyTorch chunked selective scan.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass
class EncoderConfig:
    """Architecture of an exported encoder (`config.json["model"]`).

    Attributes:
        encoder: "vit" or "mamba". width: D. depth: number of blocks.
        patch_size, patch_stride: (freq, time) in mel bins x frames.
        ref_grid: (F_patches, T_patches) the learned position table is stored for.
        num_cls_tokens: 0, 1 or 2. cls_position: "start" or "middle".
        pos_embed: "learned" or "sincos".
        num_heads, mlp_ratio, approximate_gelu, ln_eps: ViT settings.
        d_state, expand, d_conv, dt_rank, norm, norm_eps, bidirectional: Mamba settings
            (dt_rank already resolved, > 0).
    """

    encoder: str
    width: int
    depth: int
    patch_size: tuple[int, int]
    patch_stride: tuple[int, int]
    ref_grid: tuple[int, int]
    num_cls_tokens: int = 1
    cls_position: str = "start"
    pos_embed: str = "learned"
    num_heads: int = 1
    mlp_ratio: float = 4.0
    approximate_gelu: bool = False
    ln_eps: float = 1e-6
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 1
    norm: str = "rms"
    norm_eps: float = 1e-5
    bidirectional: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        """Builds from `config.json["model"]` (lists become tuples; unknown keys are an error)."""
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """jaxav's fixed 2-D sin-cos positions: float32[F_p * T_p, dim], freq-major, dim % 4 == 0."""

    def one(n: int, d: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.arange(n, dtype=np.float64)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    n_f, n_t = grid
    ef, et = one(n_f, dim // 2), one(n_t, dim // 2)
    emb = np.concatenate(
        [
            np.broadcast_to(ef[:, None], (n_f, n_t, dim // 2)),
            np.broadcast_to(et[None], (n_f, n_t, dim // 2)),
        ],
        axis=-1,
    )
    return torch.from_numpy(emb.reshape(n_f * n_t, dim).astype(np.float32))


class PatchEmbed(nn.Module):
    """Strided conv over the (F, T) plane. audio [B, T, F] -> tokens [B, F_p * T_p, D], grid."""

    def __init__(self, width: int, patch_size: tuple[int, int], patch_stride: tuple[int, int]):
        super().__init__()
        self.proj = nn.Conv2d(1, width, tuple(patch_size), tuple(patch_stride))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(audio.transpose(1, 2)[:, None])  # [B, D, F_p, T_p]
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection. x: [B, N, D] -> [B, N, D]."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, H, N, Dh]
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2. x: [B, N, D] -> [B, N, D]."""

    def __init__(self, width: int, hidden: int, approximate_gelu: bool):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate="tanh" if approximate_gelu else "none")
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm Transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.width, eps=c.ln_eps)
        self.attn = Attention(c.width, c.num_heads)
        self.norm2 = nn.LayerNorm(c.width, eps=c.ln_eps)
        self.mlp = Mlp(c.width, int(c.width * c.mlp_ratio), c.approximate_gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk: int = 16,
) -> torch.Tensor:
    """`h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`, `y_t = C_t . h_t` (h_0 = 0), float32.

    Chunked: inside a chunk of `chunk` steps the states come from cumulative sums of `dt A` (all
    decays `exp(S_t - S_s) <= 1`, no overflow); the state is carried between chunks.

    Args:
        x, dt: float[B, L, d]. A: float[d, n] (negative). B, C: float[B, L, n].

    Returns:
        y: float32[B, L, d].
    """
    b, length, d = x.shape
    dA = dt[..., None] * A  # [B, L, d, n]
    u = (dt * x)[..., None] * B[:, :, None, :]  # [B, L, d, n]
    h = x.new_zeros(b, d, A.shape[1])
    ys = []
    for s in range(0, length, chunk):
        cum = torch.cumsum(dA[:, s : s + chunk], dim=1)  # [B, T, d, n]
        t = cum.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()[:, :, None, None]
        diff = (cum[:, :, None] - cum[:, None]).masked_fill(~causal, -math.inf)  # [B, T, T, d, n]
        hs = torch.exp(cum) * h[:, None] + torch.einsum(
            "btsdn,bsdn->btdn", diff.exp(), u[:, s : s + t]
        )
        ys.append(torch.einsum("btdn,btn->btd", hs, C[:, s : s + t]))
        h = hs[:, -1]
    return torch.cat(ys, dim=1)


class MambaDirection(nn.Module):
    """One scan direction: depthwise causal conv, silu, x_proj, dt_proj, scan. [B, L, E] -> same.

    The backward direction runs on the time-reversed sequence (anti-causal conv, reverse scan).
    """

    def __init__(self, inner: int, c: EncoderConfig, reverse: bool):
        super().__init__()
        self.reverse, self.d_state, self.dt_rank = reverse, c.d_state, c.dt_rank
        self.conv1d = nn.Conv1d(inner, inner, c.d_conv, groups=inner, padding=c.d_conv - 1)
        self.x_proj = nn.Linear(inner, c.dt_rank + 2 * c.d_state, bias=False)
        self.dt_proj = nn.Linear(c.dt_rank, inner)
        self.A_log = nn.Parameter(torch.zeros(inner, c.d_state))
        self.D = nn.Parameter(torch.ones(inner))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reverse:
            x = x.flip(1)
        length = x.shape[1]
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt).float())
        y = selective_scan(x.float(), dt, -torch.exp(self.A_log.float()), B.float(), C.float())
        y = y + x.float() * self.D.float()
        return y.flip(1) if self.reverse else y


class MambaBlock(nn.Module):
    """Pre-norm residual block `u + mixer(norm(u))`, Vim v2 mixer (directions averaged)."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        inner = c.expand * c.width
        self.norm = _norm(c)
        self.in_proj = nn.Linear(c.width, 2 * inner, bias=False)
        self.forward_dir = MambaDirection(inner, c, reverse=False)
        self.backward_dir = MambaDirection(inner, c, reverse=True) if c.bidirectional else None
        self.out_proj = nn.Linear(inner, c.width, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(self.norm(u)).chunk(2, dim=-1)
        y = self.forward_dir(x)
        if self.backward_dir is not None:
            y = (y + self.backward_dir(x)) / 2
        return u + self.out_proj(y * F.silu(z))


def _norm(c: EncoderConfig) -> nn.Module:
    if c.norm == "rms":
        return nn.RMSNorm(c.width, eps=c.norm_eps)
    if c.norm == "layer":
        return nn.LayerNorm(c.width, eps=c.norm_eps)
    raise ValueError(f"unknown norm {c.norm!r}; 'rms' or 'layer'")


class AudioEncoder(nn.Module):
    """Patch embedding + positions + cls tokens + ViT or Mamba blocks + final norm.

    `forward(audio: float32[B, T, F]) -> dict` of per-layer features (module docstring); T may
    differ from the training length (learned positions are bilinearly resized).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        c = self.config = config
        self.patch_embed = PatchEmbed(c.width, c.patch_size, c.patch_stride)
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(*c.ref_grid, c.width))
        elif c.pos_embed != "sincos":
            raise ValueError(f"unknown pos_embed {c.pos_embed!r}")
        if c.num_cls_tokens:
            self.cls_token = nn.Parameter(torch.zeros(1, c.num_cls_tokens, c.width))
        if c.encoder == "vit":
            self.blocks = nn.ModuleList(ViTBlock(c) for _ in range(c.depth))
            self.norm = nn.LayerNorm(c.width, eps=c.ln_eps)
        elif c.encoder == "mamba":
            self.blocks = nn.ModuleList(MambaBlock(c) for _ in range(c.depth))
            self.norm = _norm(c)
        else:
            raise ValueError(f"unknown encoder {c.encoder!r}; 'vit' or 'mamba'")

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """float32[F_p * T_p, D] positions for a (F_p, T_p) grid (resized / computed)."""
        if self.config.pos_embed == "sincos":
            return sincos_2d(grid, self.config.width).to(self.patch_embed.proj.weight.device)
        table = self.pos_embed
        if tuple(table.shape[:2]) != tuple(grid):
            table = F.interpolate(
                table.permute(2, 0, 1)[None], size=grid, mode="bilinear", align_corners=False
            )[0].permute(1, 2, 0)
        return table.reshape(grid[0] * grid[1], -1)

    def _cls_start(self, num_patches: int) -> int:
        return num_patches // 2 if self.config.cls_position == "middle" else 0

    def split(self, seq: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, n + num_cls, D] -> (patch tokens [B, n, D], cls mean [B, D] or None)."""
        c = self.config.num_cls_tokens
        if not c:
            return seq, None
        s = self._cls_start(n)
        return torch.cat([seq[:, :s], seq[:, s + c :]], 1), seq[:, s : s + c].mean(1)

    def forward(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """audio: float32[B, T, F] -> {layer_i, cls_i, final, final_cls} (module docstring)."""
        x, grid = self.patch_embed(audio)
        x = x + self.positions(grid)
        n = x.shape[1]
        if self.config.num_cls_tokens:
            s = self._cls_start(n)
            cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat([x[:, :s], cls, x[:, s:]], dim=1)
        out = {}
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            out[f"layer_{i}"], cls_mean = self.split(x, n)
            if cls_mean is not None:
                out[f"cls_{i}"] = cls_mean
        out["final"], cls_mean = self.split(self.norm(x), n)
        if cls_mean is not None:
            out["final_cls"] = cls_mean
        return out


def build(config: dict[str, Any]) -> AudioEncoder:
    """An uninitialised `AudioEncoder` from a `config.json` dict (its "model" entry)."""
    return AudioEncoder(EncoderConfig.from_dict(config["model"]))


def load_torch(path: str | Path, device: str | torch.device = "cpu") -> AudioEncoder:
    """Loads a `jaxav export --format torch` folder: `config.json` + `model.safetensors`.

    Returns:
        The `AudioEncoder` in eval mode, float32, on `device`; its frontend settings (sample rate,
        mel bins, window, dataset mean/std) are in `model.export_config["frontend"]`.
    """
    from safetensors.torch import load_file

    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing: not a `jaxav export` folder")
    config = json.loads((path / CONFIG_FILE).read_text())
    model = build(config)
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE), device=str(device)), strict=True)
    model.export_config = config
    return model.to(device).eval()
