"""Selective scan (the Mamba S6 recurrence): one function, several implementations.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t,    y_t = C_t . h_t + D * x_t,    h_0 = 0

per batch element and channel, with a diagonal ``A`` per channel over ``state`` entries.
Implementations (``impl``):

* ``"sequential"``: `lax.scan` over time (the reference);
* ``"associative"``: `lax.associative_scan` over (decay, input) pairs; parallel, but holds
  ``[b, l, d, n]`` intermediates;
* ``"chunked"``: a scan over chunk carries whose body (a sequential scan over the chunk) is
  rematerialised, so the backward keeps only chunk-boundary states;
* ``"pallas"``: the Pallas kernel of `jaxav.ops.pallas_scan` (custom VJP, recomputing backward);
* ``"auto"``: ``"pallas"`` on GPU/TPU; on CPU the fastest of the others for forward+backward as
  measured by ``benchmarks/scan.py`` (``"chunked"``).

All accumulate in float32 and return ``x``'s dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxav.ops.pallas_scan import ScanKernelConfig, pallas_selective_scan

F32 = jnp.float32
IMPLS = ("sequential", "associative", "chunked", "pallas")
CHUNK = 64  # time steps per chunk of the "chunked" implementation
CPU_AUTO = "chunked"  # fastest fwd+bwd on CPU in benchmarks/scan.py


def resolve_impl(impl: str) -> str:
    """Map ``"auto"`` to a concrete implementation for the default backend; validate names."""
    if impl == "auto":
        return "pallas" if jax.default_backend() in ("gpu", "tpu") else CPU_AUTO
    if impl not in IMPLS:
        raise ValueError(f"unknown selective-scan impl {impl!r}; choose from auto, {IMPLS}")
    return impl


def _step(A: jax.Array):
    """One recurrence step over time-major slices: h [b, d, n]; x, dt [b, d]; B, C [b, n]."""

    def step(h, inputs):
        x, dt, b, c = inputs
        h = jnp.exp(dt[..., None] * A) * h + (dt * x)[..., None] * b[:, None, :]
        return h, jnp.einsum("bdn,bn->bd", h, c)

    return step


def _sequential(x, dt, A, B, C):
    """lax.scan over time. All f32 [b, l, ...]; returns y [b, l, d] (no D term)."""
    h0 = jnp.zeros((x.shape[0], *A.shape), F32)
    xs = tuple(v.swapaxes(0, 1) for v in (x, dt, B, C))
    _, y = lax.scan(_step(A), h0, xs)
    return y.swapaxes(0, 1)


def _associative(x, dt, A, B, C):
    """lax.associative_scan over (decay, input) pairs, [b, l, d, n] intermediates."""
    decay = jnp.exp(dt[..., None] * A)
    inp = (dt * x)[..., None] * B[:, :, None, :]

    def combine(left, right):
        a_l, b_l = left
        a_r, b_r = right
        return a_l * a_r, a_r * b_l + b_r

    _, h = lax.associative_scan(combine, (decay, inp), axis=1)
    return jnp.einsum("bldn,bln->bld", h, C)


def _chunked(x, dt, A, B, C, chunk: int = CHUNK):
    """Scan over chunk carries; inside a chunk a rematerialised sequential scan.

    Memory of the backward: chunk-boundary states ``[l / chunk, b, d, n]`` plus one chunk's
    residuals, instead of ``[l, b, d, n]``. Lengths that are no multiple of ``chunk`` are padded
    with ``dt = 0`` (a no-op step) and sliced back.
    """
    b, L, d = x.shape
    T = min(chunk, L)
    pad = -L % T

    def split(v):  # [b, L, k] -> [nc, T, b, k]
        v = jnp.pad(v, ((0, 0), (0, pad), (0, 0)))
        return v.reshape(b, -1, T, v.shape[-1]).transpose(1, 2, 0, 3)

    step = _step(A)

    @jax.checkpoint
    def chunk_fn(h, inputs):
        return lax.scan(step, h, inputs)

    h0 = jnp.zeros((b, *A.shape), F32)
    _, y = lax.scan(chunk_fn, h0, tuple(split(v) for v in (x, dt, B, C)))
    return y.transpose(2, 0, 1, 3).reshape(b, -1, d)[:, :L]


def selective_scan(
    x: jax.Array,
    dt: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    *,
    reverse: bool = False,
    impl: str = "auto",
    config: ScanKernelConfig | None = None,
) -> jax.Array:
    """Selective scan ``y_t = C_t . h_t + D x_t`` with ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``.

    Args:
        x: [batch, length, channels] input.
        dt: [batch, length, channels] positive step sizes (already softplus-ed).
        A: [channels, state] state matrix (negative for a stable recurrence).
        B, C: [batch, length, state] input and output projections.
        D: [channels] skip weight, or None for no skip.
        reverse: run the recurrence from the last time step to the first (same as flipping the
            inputs along length, scanning and flipping the output back).
        impl: "auto" | "sequential" | "associative" | "chunked" | "pallas".
        config: Pallas block sizes / interpret mode (``impl="pallas"`` only).

    Returns:
        y: [batch, length, channels] in x's dtype; accumulation is float32. Differentiable in
        every input.
    """
    impl = resolve_impl(impl)
    if impl == "pallas":
        y = pallas_selective_scan(x, dt, A, B, C, reverse=reverse, config=config)
    else:
        args = [v.astype(F32) for v in (x, dt, B, C)]
        if reverse:
            args = [jnp.flip(v, 1) for v in args]
        fn = {"sequential": _sequential, "associative": _associative, "chunked": _chunked}[impl]
        xf, dtf, bf, cf = args
        y = fn(xf, dtf, A.astype(F32), bf, cf)
        if reverse:
            y = jnp.flip(y, 1)
    if D is not None:
        y = y + D.astype(F32) * x.astype(F32)
    return y.astype(x.dtype)
