"""Selective scan (the Mamba S6 recurrence): one function, several implementations.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t,    y_t = C_t . h_t + D * x_t,    h_0 = 0

per batch element and channel, with a diagonal ``A`` per channel over ``state`` entries.
Implementations (``impl``):

* ``"sequential"``: `lax.scan` over time (the reference);
* ``"associative"``: `lax.associative_scan` over (decay, input) pairs; parallel, but holds
  ``[b, l, d, n]`` intermediates;
* ``"chunked"``: a loop over chunk carries whose body (a sequential scan over the chunk) is
  rematerialised, so the backward keeps only chunk-boundary states; its output is an in-place
  loop-carried buffer (constant memory in depth, see `_chunked`);
* ``"pallas"``: the Pallas kernel of `jaxav.ops.pallas_scan` (custom VJP, recomputing backward);
* ``"auto"``: ``"pallas"`` on GPU/TPU; on CPU ``"chunked"``: the fastest of the others for
  forward+backward (``benchmarks/scan.py``) and, in forward-only inference, as fast as
  ``"sequential"`` (``[1, 4096, 384]``, 16 states: ~10 ms per scan, ~6 ms with 512-bit vectors,
  see `jaxav.xla_flags`; near the cost of one fused exp over ``[4096, 16, 384]``) at a fraction
  of its memory (``benchmarks/scaling.py``).

The CPU implementations hold the state as ``[b, n, d]`` (channels minor, see `_step`), walk time
with ``lax.scan(reverse=...)`` instead of flipping, and slice time-major inputs (free for batch 1).

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


def _step(At: jax.Array):
    """One recurrence step, state-major: h [b, n, d]; x, dt [b, d]; B, C [b, n]; At [n, d].

    Channels on the minor axis make the exp / multiply-add contiguous over ``d`` and the output
    contraction over ``n`` a small dot; on CPU this is ~2.3x faster per step than a ``[b, d, n]``
    state (whose ``n``-reduction is a horizontal sum), and as fast as a fused exp over the whole
    ``[l, n, d]`` block (the exp is the floor).
    """

    def step(h, inputs):
        x, dt, b, c = inputs
        h = jnp.exp(dt[:, None, :] * At) * h + (dt * x)[:, None, :] * b[:, :, None]
        return h, jnp.einsum("bnd,bn->bd", h, c)

    return step


def _time_major(*vs):
    """[b, l, k] -> [l, b, k] (a free bitcast for batch 1)."""
    return tuple(v.swapaxes(0, 1) for v in vs)


def _sequential(x, dt, A, B, C, reverse=False):
    """lax.scan over time. All f32, x, dt [b, l, d], B, C [b, l, n], A [d, n] -> y [b, l, d]."""
    h0 = jnp.zeros((x.shape[0], A.shape[1], A.shape[0]), F32)
    _, y = lax.scan(_step(A.T), h0, _time_major(x, dt, B, C), reverse=reverse)
    return y.swapaxes(0, 1)


def _associative(x, dt, A, B, C, reverse=False):
    """lax.associative_scan over (decay, input) pairs, [b, l, d, n] intermediates."""
    decay = jnp.exp(dt[..., None] * A)
    inp = (dt * x)[..., None] * B[:, :, None, :]

    def combine(left, right):
        a_l, b_l = left
        a_r, b_r = right
        return a_l * a_r, a_r * b_l + b_r

    _, h = lax.associative_scan(combine, (decay, inp), axis=1, reverse=reverse)
    return jnp.einsum("bldn,bln->bld", h, C)


def _chunked(x, dt, A, B, C, D=None, reverse=False, chunk: int = CHUNK):
    """Loop over chunks carrying the state; inside a chunk a rematerialised sequential scan.

    All f32: x, dt [b, l, d]; B, C [b, l, n]; A [d, n]; D [d] or None (the skip ``D x``).
    Returns y [b, l, d].

    Inputs are viewed as ``[b, l / chunk, chunk, k]`` (a reshape of the producers' own layout,
    so no copies of whole sequences) and each chunk is sliced, made time-major (free for batch 1)
    and scanned; ``reverse`` walks both loops backwards (no flips). The output is a loop-carried
    buffer that starts as the skip term and is updated chunk by chunk in place: a scan's stacked
    output would start as a constant zero buffer, which XLA's scheduler hoists to the start of the
    program, so every layer's output buffer would be live at once. Memory of the backward:
    chunk-boundary states ``[l / chunk, b, n, d]`` plus one chunk's residuals, instead of
    ``[l, b, n, d]``. Lengths that are no multiple of ``chunk`` are padded at the end with
    ``dt = 0`` (a no-op step that keeps a zero state zero, so it is harmless in either direction)
    and sliced back.
    """
    b, L, d = x.shape
    T = min(chunk, L)
    pad = -L % T

    def split(v):  # [b, l, k] -> [b, nc, T, k]
        v = jnp.pad(v, ((0, 0), (0, pad), (0, 0))) if pad else v
        return v.reshape(b, -1, T, v.shape[-1])

    step = _step(A.T)

    @jax.checkpoint
    def chunk_fn(h, inputs):  # inputs [b, T, k] -> (h, y [b, T, d])
        h, y = lax.scan(step, h, _time_major(*inputs), reverse=reverse)
        return h, y.swapaxes(0, 1)

    xs = tuple(split(v) for v in (x, dt, B, C))
    nc = xs[0].shape[1]

    def body(i, carry):
        h, y = carry
        c = nc - 1 - i if reverse else i
        inputs = tuple(lax.dynamic_index_in_dim(v, c, axis=1, keepdims=False) for v in xs)
        h, yc = chunk_fn(h, inputs)
        yc = yc + lax.dynamic_index_in_dim(y, c, axis=1, keepdims=False)
        return h, lax.dynamic_update_index_in_dim(y, yc, c, axis=1)

    y0 = jnp.zeros_like(xs[0]) if D is None else D * xs[0]
    _, y = lax.fori_loop(0, nc, body, (jnp.zeros((b, A.shape[1], d), F32), y0))
    return y.reshape(b, -1, d)[:, :L]


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
        xf, dtf, af, bf, cf = (v.astype(F32) for v in (x, dt, A, B, C))
        if impl == "chunked":  # adds the skip term into its own output buffer (see _chunked)
            skip = None if D is None else D.astype(F32)
            return _chunked(xf, dtf, af, bf, cf, skip, reverse).astype(x.dtype)
        fn = {"sequential": _sequential, "associative": _associative}[impl]
        y = fn(xf, dtf, af, bf, cf, reverse=reverse)
    if D is not None:
        y = y + D.astype(F32) * x.astype(F32)
    return y.astype(x.dtype)
