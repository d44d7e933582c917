"""Bidirectional Mamba encoder (Vim "v2" / SSAMBA style), Flax linen.

Mixer (one direction): ``x, z = in_proj(u)``; ``x = silu(causal_depthwise_conv(x))``;
``dt, B, C = x_proj(x)``; ``dt = softplus(dt_proj(dt))``; ``y = selective_scan(x, dt, A, B, C, D)``
with ``A = -exp(A_log)``. Bidirectional ("v2"): the backward direction has its own conv1d_b,
x_proj_b, dt_proj_b, A_b_log, D_b and runs anti-causally (``reverse=True``); in_proj and out_proj
are shared. The two directions are **averaged** (Vim's ``bimamba_type="v2"`` with
``if_devide_out=True``, the setting of the vim_* and SSAMBA models), then gated by ``silu(z)`` and
projected: ``out = out_proj((y_f + y_b) / 2 * silu(z))``.

Block: pre-norm residual ``u + mixer(norm(u))`` with the residual stream in float32 (Vim's
``residual_in_fp32``). Parameters are float32; ``dtype`` sets the compute dtype (e.g. bfloat16);
the scan always accumulates in float32.

Logical axes: ``embed`` (width), ``mlp`` (expanded inner channels), ``state``, ``conv``; low-rank dt
and the x_proj output (dt_rank + 2 * d_state, mixed) are unnamed (replicated).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxav.ops.scan import selective_scan

Dtype = Any
LP = nn.with_logical_partitioning


def _dt_bias_init(dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4):
    """Mamba's dt bias: dt ~ log-uniform[dt_min, dt_max], bias = softplus^-1(dt)."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, jnp.float32)
        dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = jnp.maximum(dt, floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    return init


def _a_log_init(key, shape, dtype=jnp.float32):
    """S4D-real: A = -(1, ..., d_state) for every channel, stored as log(-A). shape [inner, n]."""
    del key
    return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[1] + 1, dtype=jnp.float32)), shape).astype(
        dtype
    )


def _uniform_shift(std: float):
    """Uniform on [-std, std) (Mamba's "random" dt_proj init; flax's uniform is [0, scale))."""
    base = nn.initializers.uniform(2 * std)
    return lambda key, shape, dtype=jnp.float32: base(key, shape, dtype) - std


class _Direction(nn.Module):
    """Conv, projections and scan of one direction. x: [B, L, inner] -> y: float32[B, L, inner]."""

    d_state: int
    d_conv: int
    dt_rank: int
    reverse: bool
    scan_impl: str
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        inner = x.shape[-1]
        w = self.param(
            "conv_kernel",
            LP(nn.initializers.lecun_normal(in_axis=0, out_axis=()), ("conv", "mlp")),
            (self.d_conv, inner),
        )
        bias = self.param("conv_bias", LP(nn.initializers.zeros, ("mlp",)), (inner,))
        # Depthwise conv, causal (left padding) or, for the reverse direction, anti-causal.
        pad = (self.d_conv - 1, 0) if not self.reverse else (0, self.d_conv - 1)
        xp = jnp.pad(x, ((0, 0), pad, (0, 0)))
        taps = w.astype(self.dtype)[::-1] if self.reverse else w.astype(self.dtype)
        L = x.shape[1]
        x = sum(xp[:, k : k + L] * taps[k] for k in range(self.d_conv)) + bias.astype(self.dtype)
        x = nn.silu(x)

        proj = nn.Dense(
            self.dt_rank + 2 * self.d_state,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=LP(nn.initializers.lecun_normal(), ("mlp", None)),
            name="x_proj",
        )(x)
        dt, B, C = jnp.split(proj, [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        std = self.dt_rank**-0.5
        dt = nn.Dense(
            inner,
            dtype=self.dtype,
            kernel_init=LP(_uniform_shift(std), (None, "mlp")),
            bias_init=LP(_dt_bias_init(), ("mlp",)),
            name="dt_proj",
        )(dt)
        dt = jax.nn.softplus(dt.astype(jnp.float32))
        a_log = self.param("A_log", LP(_a_log_init, ("mlp", "state")), (inner, self.d_state))
        D = self.param("D", LP(nn.initializers.ones, ("mlp",)), (inner,))
        A = -jnp.exp(a_log.astype(jnp.float32))
        y = selective_scan(x, dt, A, B, C, D, reverse=self.reverse, impl=self.scan_impl)
        return y.astype(jnp.float32)


class MambaMixer(nn.Module):
    """Mamba mixer, forward-only or bidirectional (Vim v2). u: [B, L, width] -> [B, L, width]."""

    width: int
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 0
    bidirectional: bool = True
    scan_impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, u: jax.Array) -> jax.Array:
        inner = self.expand * self.width
        dt_rank = self.dt_rank or math.ceil(self.width / 16)
        xz = nn.Dense(
            2 * inner,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=LP(nn.initializers.lecun_normal(), ("embed", "mlp")),
            name="in_proj",
        )(u)
        x, z = jnp.split(xz, 2, axis=-1)
        kw = dict(d_state=self.d_state, d_conv=self.d_conv, dt_rank=dt_rank)
        kw.update(scan_impl=self.scan_impl, dtype=self.dtype)
        y = _Direction(reverse=False, name="forward", **kw)(x)
        if self.bidirectional:
            y = (y + _Direction(reverse=True, name="backward", **kw)(x)) / 2
        y = y.astype(self.dtype) * nn.silu(z)
        return nn.Dense(
            self.width,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=LP(nn.initializers.lecun_normal(), ("mlp", "embed")),
            name="out_proj",
        )(y)


def _norm(kind: str, dtype: Dtype, name: str) -> nn.Module:
    if kind == "rms":
        return nn.RMSNorm(
            epsilon=1e-5, dtype=dtype, scale_init=LP(nn.initializers.ones, ("embed",)), name=name
        )
    if kind == "layer":
        return nn.LayerNorm(
            epsilon=1e-5,
            dtype=dtype,
            scale_init=LP(nn.initializers.ones, ("embed",)),
            bias_init=LP(nn.initializers.zeros, ("embed",)),
            name=name,
        )
    raise ValueError(f"unknown norm {kind!r}; choose 'rms' or 'layer'")


class MambaBlock(nn.Module):
    """Pre-norm residual block: ``u + mixer(norm(u))``. u: float32[B, L, width] -> float32."""

    width: int
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 0
    bidirectional: bool = True
    scan_impl: str = "auto"
    norm: str = "rms"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, u: jax.Array) -> jax.Array:
        h = _norm(self.norm, self.dtype, "norm")(u)
        h = MambaMixer(
            self.width,
            self.d_state,
            self.expand,
            self.d_conv,
            self.dt_rank,
            self.bidirectional,
            self.scan_impl,
            self.dtype,
            name="mixer",
        )(h)
        return u + h.astype(jnp.float32)


class MambaEncoder(nn.Module):
    """Stack of bidirectional Mamba blocks with a final norm (the encoder of contracts.md).

    Attributes:
        width: token dimension D. depth: number of blocks.
        d_state, expand, d_conv: SSM state size, inner expansion, depthwise conv width.
        dt_rank: low rank of the dt projection; 0 means ceil(width / 16).
        scan_impl: selective-scan implementation ("auto", "sequential", "associative", "chunked",
            "pallas").
        norm: "rms" (Vim / SSAMBA) or "layer", used in the blocks and as the final norm.
        bidirectional: False gives a causal forward-only encoder.
        dtype: compute dtype (params stay float32; outputs are float32).
    """

    width: int
    depth: int
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 0
    scan_impl: str = "auto"
    norm: str = "rms"
    bidirectional: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """x: float32[B, N, D] -> (final-normed float32[B, N, D], depth x float32[B, N, D])."""
        del train  # no dropout / drop-path
        h = x.astype(jnp.float32)
        hidden = []
        for i in range(self.depth):
            h = MambaBlock(
                self.width,
                self.d_state,
                self.expand,
                self.d_conv,
                self.dt_rank,
                self.bidirectional,
                self.scan_impl,
                self.norm,
                self.dtype,
                name=f"layers_{i}",
            )(h)
            hidden.append(h)
        final = _norm(self.norm, jnp.float32, "norm_f")(h).astype(jnp.float32)
        return final, tuple(hidden)


def insert_cls(
    tokens: jax.Array, cls: jax.Array, position: str = "middle"
) -> tuple[jax.Array, int]:
    """Insert a cls token. tokens: [B, N, D]; cls: [D] or [1, 1, D]; position: start|middle|end.

    Returns (tokens with cls [B, N + 1, D], cls index) with the middle index ``N // 2`` (Vim).
    """
    b, n, d = tokens.shape
    index = {"start": 0, "middle": n // 2, "end": n}.get(position)
    if index is None:
        raise ValueError(f"unknown cls position {position!r}; choose start, middle or end")
    cls = jnp.broadcast_to(jnp.reshape(cls, (1, 1, d)).astype(tokens.dtype), (b, 1, d))
    return jnp.concatenate([tokens[:, :index], cls, tokens[:, index:]], axis=1), index


def take_cls(tokens: jax.Array, index: int) -> tuple[jax.Array, jax.Array]:
    """Split at the cls index. tokens: [B, N + 1, D] -> (cls [B, D], patch tokens [B, N, D])."""
    return tokens[:, index], jnp.concatenate([tokens[:, :index], tokens[:, index + 1 :]], axis=1)
