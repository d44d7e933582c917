"""Pre-norm Transformer encoder (ViT/AST/SSAST blocks) returning every layer's hidden states.

Matches timm's `Block` so weights export to PyTorch: LayerNorm eps 1e-6, exact (erf) GELU by
default, q/k/v as separate projections (`query`, `key`, `value`: kernels [D, H, D/H]) and an
output projection `out` (kernel [H, D/H, D]). Params are float32, compute in `dtype`; attention
softmax runs in float32.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LN_EPS = 1e-6


def _dense_init(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.xavier_uniform(), axes)


def _zeros(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def layer_norm(dtype: Any, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm with eps 1e-6 and logically partitioned scale/bias over `embed`."""
    return nn.LayerNorm(
        epsilon=LN_EPS,
        dtype=dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


class Attention(nn.Module):
    """Multi-head self-attention. x: [B, N, D] -> [B, N, D]."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads

        def proj(name: str) -> jax.Array:
            return nn.DenseGeneral(
                (self.num_heads, head_dim),
                dtype=self.dtype,
                kernel_init=_dense_init(("embed", "heads", "kv")),
                bias_init=_zeros(("heads", "kv")),
                name=name,
            )(x)  # [B, N, H, Dh]

        q, k, v = proj("query"), proj("key"), proj("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return nn.DenseGeneral(
            width,
            axis=(-2, -1),
            dtype=self.dtype,
            kernel_init=_dense_init(("heads", "kv", "embed")),
            bias_init=_zeros(("embed",)),
            name="out",
        )(y)


class Mlp(nn.Module):
    """Two-layer GELU MLP. x: [B, N, D] -> [B, N, D], hidden width mlp_ratio * D."""

    mlp_ratio: float = 4.0
    dropout: float = 0.0
    approximate_gelu: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        width = x.shape[-1]
        hidden = int(width * self.mlp_ratio)
        y = nn.Dense(
            hidden,
            dtype=self.dtype,
            kernel_init=_dense_init(("embed", "mlp")),
            bias_init=_zeros(("mlp",)),
            name="fc1",
        )(x)
        y = nn.gelu(y, approximate=self.approximate_gelu)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        return nn.Dense(
            width,
            dtype=self.dtype,
            kernel_init=_dense_init(("mlp", "embed")),
            bias_init=_zeros(("embed",)),
            name="fc2",
        )(y)


class Block(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)); dropout after each branch."""

    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    approximate_gelu: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = Attention(self.num_heads, dtype=self.dtype, name="attn")(
            layer_norm(self.dtype, "norm1")(x)
        )
        x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
        y = Mlp(self.mlp_ratio, self.dropout, self.approximate_gelu, dtype=self.dtype, name="mlp")(
            layer_norm(self.dtype, "norm2")(x), train
        )
        return x + nn.Dropout(self.dropout)(y, deterministic=not train)


class ViTEncoder(nn.Module):
    """Stack of `depth` pre-norm Transformer blocks and a final LayerNorm.

    Attributes:
        width: D (the input tokens' last dim must equal it).
        depth: number of blocks (params `block_0 ... block_{depth-1}`, then `norm`).
        num_heads: attention heads (D must be divisible by it).
        mlp_ratio: MLP hidden width / D.
        dropout: dropout rate after attention and MLP (active only when train=True, needs the
            "dropout" rng).
        dtype: compute dtype (jnp.float32 or jnp.bfloat16); params stay float32.
        approximate_gelu: False = exact erf GELU (PyTorch/AST parity).
        remat: rematerialise each block in the backward pass (saves activation memory).
    """

    width: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Any = jnp.float32
    approximate_gelu: bool = False
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Runs the blocks.

        Args:
            x: float[B, N, D] tokens.
            train: enables dropout.

        Returns:
            (final, hidden): final = LayerNorm(output of the last block), dtype[B, N, D];
            hidden = tuple of `depth` dtype[B, N, D], hidden[i] = output of block i + 1.
        """
        block_cls = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
        x = x.astype(self.dtype)
        hidden = []
        for i in range(self.depth):
            x = block_cls(
                self.num_heads,
                self.mlp_ratio,
                self.dropout,
                self.approximate_gelu,
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, train)
            hidden.append(x)
        return layer_norm(self.dtype, "norm")(x), tuple(hidden)
