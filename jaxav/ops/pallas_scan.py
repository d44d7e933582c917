"""Pallas selective-scan kernel (forward and backward), lowering for TPU (Mosaic) and GPU (Triton).

Recurrence (per batch b, channel d, state n), with ``a_t = exp(dt_t A)``:

    h_t = a_t * h_{t-1} + dt_t * B_t * x_t,        y_t = C_t . h_t        (h_0 = 0)

The skip term ``D * x`` is added by the caller (`jaxav.ops.scan`), outside the kernel.

Layout: the state of one channel block is held as ``[state, block_d]`` (channels on the lane
axis), so ``A`` enters transposed as ``At: [state, d]``.

Two drivers share the same per-chunk code:

* ``sequence_in_grid=True`` (TPU, and the default in interpret mode): grid ``(batch, d_blocks,
  chunks)`` with the chunk axis innermost and "arbitrary"; the carry lives in a VMEM scratch ref,
  zeroed at chunk index 0; ``reverse`` is an ``index_map`` that walks the chunks backwards.
* ``sequence_in_grid=False`` (GPU/Triton, which has neither scratch memory nor ordered grid
  steps): grid ``(batch, d_blocks)``; the chunks are a ``fori_loop`` inside the kernel with the
  carry as a loop value.

Backward (``jax.custom_vjp``): the forward also writes the state at the start of every chunk
(``hs: [b, chunks, state, d]``, a ``chunk``-fold saving over storing all states). The backward
kernel walks the chunks in the opposite order; per chunk it recomputes the chunk's states from
``hs`` into a ``[chunk, state, block_d]`` buffer, then runs the adjoint recurrence
``g_t = C_t dy_t + a_{t+1} g_{t+1}`` backwards through it, emitting dx, ddt, dB, dC (partial over
channel blocks, summed outside) and accumulating dA. All arithmetic is float32.

Only operations that Pallas interpret mode runs on CPU are used (no masked loads): the caller pads
the length to a multiple of ``chunk`` with ``dt = 0`` (so padding is a no-op: ``exp(0) = 1`` and
zero input) and the channels to a multiple of ``block_d``, then slices back.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class ScanKernelConfig:
    """Block sizes and execution mode of the Pallas selective scan.

    Attributes:
        block_d: channels per program (lane axis; multiple of 128 on TPU, power of 2 on GPU).
        chunk: time steps per sequence block (multiple of 8 on TPU, power of 2 on GPU).
        interpret: run the kernel in Pallas interpret mode; None = True on the CPU backend.
        sequence_in_grid: chunks as the innermost grid axis with a scratch carry (True) or as a
            loop inside the kernel (False); None = False on GPU, True otherwise.
    """

    block_d: int = 128
    chunk: int = 64
    interpret: bool | None = None
    sequence_in_grid: bool | None = None

    def resolved(self) -> ScanKernelConfig:
        """Return a copy with the ``None`` fields fixed for the current default backend."""
        backend = jax.default_backend()
        interpret = backend == "cpu" if self.interpret is None else self.interpret
        in_grid = backend != "gpu" if self.sequence_in_grid is None else self.sequence_in_grid
        if not interpret and backend == "gpu" and in_grid:
            raise ValueError("sequence_in_grid=True needs scratch memory, which Triton lacks")
        return dataclasses.replace(self, interpret=interpret, sequence_in_grid=in_grid)


def _rows(ref, t, n_lead: int) -> jax.Array:
    """Row ``t`` of a ``[..., L, k]`` block ref (``n_lead`` leading unit dims) as f32 ``(1, k)``."""
    return ref[(0,) * n_lead + (pl.ds(t, 1), slice(None))].astype(F32)


def _fwd_chunk(x_ref, dt_ref, at, b_ref, c_ref, y_ref, h, base, chunk: int, reverse: bool):
    """Run ``chunk`` steps of the recurrence over rows ``base..base+chunk-1``; return the carry."""

    def body(s, h):
        t = base + (chunk - 1 - s if reverse else s)
        x, dt = _rows(x_ref, t, 1), _rows(dt_ref, t, 1)  # (1, bd)
        bcol, ccol = _rows(b_ref, t, 1).T, _rows(c_ref, t, 1).T  # (n, 1)
        h = jnp.exp(dt * at) * h + bcol * (dt * x)  # (n, bd)
        y_ref[0, pl.ds(t, 1), :] = jnp.sum(ccol * h, axis=0, keepdims=True).astype(y_ref.dtype)
        return h

    return lax.fori_loop(0, chunk, body, h)


def _bwd_chunk(refs, hbuf, h0, g, dA, base, ob, chunk: int, reverse: bool):
    """Backward through one chunk: recompute its states from ``h0`` into ``hbuf``, then adjoint.

    ``refs`` = (x, dt, At, B, C, dy, dx, ddt, dB, dC); ``base`` is the row offset in the
    [.., L, ..] refs, ``ob`` the one in the dB/dC refs. ``g`` is ``a_{t+1} g_{t+1}`` carried in
    from the later chunk. Returns the new ``(g, dA)``.
    """
    x_ref, dt_ref, at_ref, b_ref, c_ref, dy_ref, dx_ref, ddt_ref, db_ref, dc_ref = refs
    at = at_ref[...].astype(F32)

    def recompute(s, h):
        r = chunk - 1 - s if reverse else s
        t = base + r
        hbuf[r] = h
        x, dt = _rows(x_ref, t, 1), _rows(dt_ref, t, 1)
        return jnp.exp(dt * at) * h + _rows(b_ref, t, 1).T * (dt * x)

    lax.fori_loop(0, chunk, recompute, h0)

    def adjoint(s, carry):
        g, dA = carry
        r = s if reverse else chunk - 1 - s
        t = base + r
        x, dt, dy = _rows(x_ref, t, 1), _rows(dt_ref, t, 1), _rows(dy_ref, t, 1)
        bcol, ccol = _rows(b_ref, t, 1).T, _rows(c_ref, t, 1).T
        hp = hbuf[r]
        a = jnp.exp(dt * at)
        dtx = dt * x
        h = a * hp + bcol * dtx
        g = g + ccol * dy  # dL/dh_t
        gha = g * hp * a  # dL/d(dt_t A) elementwise
        gb = jnp.sum(g * bcol, axis=0, keepdims=True)  # (1, bd): dL/d(dt_t x_t)
        ddt_ref[0, pl.ds(t, 1), :] = jnp.sum(at * gha, axis=0, keepdims=True) + x * gb
        dx_ref[0, pl.ds(t, 1), :] = dt * gb
        db_ref[0, 0, pl.ds(ob + r, 1), :] = jnp.sum(g * dtx, axis=1)[None, :]
        dc_ref[0, 0, pl.ds(ob + r, 1), :] = jnp.sum(dy * h, axis=1)[None, :]
        return a * g, dA + dt * gha

    return lax.fori_loop(0, chunk, adjoint, (g, dA))


def _call(kernel, grid, in_specs, out_specs, out_shape, scratch, cfg: ScanKernelConfig, name):
    params = None
    if not cfg.interpret and jax.default_backend() == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        sem = ("parallel", "parallel", "arbitrary")[: len(grid)]
        params = pltpu.CompilerParams(dimension_semantics=sem)
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        scratch_shapes=scratch,
        interpret=cfg.interpret,
        compiler_params=params,
        name=name,
    )


def _vmem(shape):
    from jax.experimental.pallas import tpu as pltpu

    return pltpu.VMEM(shape, F32)


def _forward(x, dt, at, B, C, reverse: bool, cfg: ScanKernelConfig):
    """Kernel forward on padded inputs. Returns (y f32[b, L, d], hs f32[b, nc, n, d])."""
    b, L, d = x.shape
    n = at.shape[0]
    T, bd = cfg.chunk, cfg.block_d
    nc, nd = L // T, d // bd
    out_shape = (
        jax.ShapeDtypeStruct((b, L, d), F32),
        jax.ShapeDtypeStruct((b, nc, n, d), F32),
    )
    if cfg.sequence_in_grid:
        cc = (lambda c: nc - 1 - c) if reverse else (lambda c: c)
        seq = pl.BlockSpec((1, T, bd), lambda i, j, c: (i, cc(c), j))
        st = pl.BlockSpec((1, T, n), lambda i, j, c: (i, cc(c), 0))
        a_spec = pl.BlockSpec((n, bd), lambda i, j, c: (0, j))
        hs_spec = pl.BlockSpec((1, 1, n, bd), lambda i, j, c: (i, cc(c), 0, j))

        def kernel(x_ref, dt_ref, at_ref, b_ref, c_ref, y_ref, hs_ref, h_scr):
            @pl.when(pl.program_id(2) == 0)
            def _():
                h_scr[...] = jnp.zeros(h_scr.shape, F32)

            hs_ref[0, 0] = h_scr[...]
            at = at_ref[...].astype(F32)
            h = _fwd_chunk(x_ref, dt_ref, at, b_ref, c_ref, y_ref, h_scr[...], 0, T, reverse)
            h_scr[...] = h

        grid, scratch = (b, nd, nc), [_vmem((n, bd))]
    else:
        seq = pl.BlockSpec((1, L, bd), lambda i, j: (i, 0, j))
        st = pl.BlockSpec((1, L, n), lambda i, j: (i, 0, 0))
        a_spec = pl.BlockSpec((n, bd), lambda i, j: (0, j))
        hs_spec = pl.BlockSpec((1, nc, n, bd), lambda i, j: (i, 0, 0, j))

        def kernel(x_ref, dt_ref, at_ref, b_ref, c_ref, y_ref, hs_ref):
            at = at_ref[...].astype(F32)

            def chunk_body(k, h):
                c = nc - 1 - k if reverse else k
                hs_ref[0, c] = h
                return _fwd_chunk(x_ref, dt_ref, at, b_ref, c_ref, y_ref, h, c * T, T, reverse)

            lax.fori_loop(0, nc, chunk_body, jnp.zeros((n, bd), F32))

        grid, scratch = (b, nd), []
    in_specs = [seq, seq, a_spec, st, st]
    call = _call(kernel, grid, in_specs, [seq, hs_spec], out_shape, scratch, cfg, "scan_fwd")
    return call(x, dt, at, B, C)


def _backward(x, dt, at, B, C, hs, dy, reverse: bool, cfg: ScanKernelConfig):
    """Kernel backward on padded inputs. Returns f32 (dx, ddt, dAt, dB, dC)."""
    b, L, d = x.shape
    n = at.shape[0]
    T, bd = cfg.chunk, cfg.block_d
    nc, nd = L // T, d // bd
    shapes = [(b, L, d), (b, L, d), (b, nd, L, n), (b, nd, L, n), (b, n, d)]
    out_shape = [jax.ShapeDtypeStruct(s, F32) for s in shapes]
    if cfg.sequence_in_grid:
        # The backward walks the chunks opposite to the forward.
        cc = (lambda c: c) if reverse else (lambda c: nc - 1 - c)
        seq = pl.BlockSpec((1, T, bd), lambda i, j, c: (i, cc(c), j))
        st = pl.BlockSpec((1, T, n), lambda i, j, c: (i, cc(c), 0))
        part = pl.BlockSpec((1, 1, T, n), lambda i, j, c: (i, j, cc(c), 0))
        a_spec = pl.BlockSpec((n, bd), lambda i, j, c: (0, j))
        hs_spec = pl.BlockSpec((1, 1, n, bd), lambda i, j, c: (i, cc(c), 0, j))
        da_spec = pl.BlockSpec((1, n, bd), lambda i, j, c: (i, 0, j))

        def kernel(*refs):
            ins, hs_ref, outs = refs[:6], refs[6], refs[7:11]
            da_ref, hbuf, g_scr, da_scr = refs[11:]

            @pl.when(pl.program_id(2) == 0)
            def _():
                g_scr[...] = jnp.zeros(g_scr.shape, F32)
                da_scr[...] = jnp.zeros(da_scr.shape, F32)

            g, dA = _bwd_chunk(
                (*ins, *outs), hbuf, hs_ref[0, 0], g_scr[...], da_scr[...], 0, 0, T, reverse
            )
            g_scr[...] = g
            da_scr[...] = dA
            da_ref[0] = dA

        grid = (b, nd, nc)
        scratch = [_vmem((T, n, bd)), _vmem((n, bd)), _vmem((n, bd))]
        out_specs = [seq, seq, part, part, da_spec]
    else:
        seq = pl.BlockSpec((1, L, bd), lambda i, j: (i, 0, j))
        st = pl.BlockSpec((1, L, n), lambda i, j: (i, 0, 0))
        part = pl.BlockSpec((1, 1, L, n), lambda i, j: (i, j, 0, 0))
        a_spec = pl.BlockSpec((n, bd), lambda i, j: (0, j))
        hs_spec = pl.BlockSpec((1, nc, n, bd), lambda i, j: (i, 0, 0, j))
        da_spec = pl.BlockSpec((1, n, bd), lambda i, j: (i, 0, j))
        # Triton has no scratch: the recompute buffer is an extra (discarded) output.
        buf_spec = pl.BlockSpec((1, 1, T, n, bd), lambda i, j: (i, j, 0, 0, 0))
        out_shape.append(jax.ShapeDtypeStruct((b, nd, T, n, bd), F32))

        def kernel(*refs):
            ins, hs_ref, outs, da_ref, buf_ref = refs[:6], refs[6], refs[7:11], refs[11], refs[12]
            hbuf = buf_ref.at[0, 0]

            def chunk_body(k, carry):
                c = k if reverse else nc - 1 - k
                refs = (*ins, *outs)
                return _bwd_chunk(refs, hbuf, hs_ref[0, c], *carry, c * T, c * T, T, reverse)

            zero = jnp.zeros((n, bd), F32)
            _, dA = lax.fori_loop(0, nc, chunk_body, (zero, zero))
            da_ref[0] = dA

        grid, scratch = (b, nd), []
        out_specs = [seq, seq, part, part, da_spec, buf_spec]
    in_specs = [seq, seq, a_spec, st, st, seq, hs_spec]
    call = _call(kernel, grid, in_specs, out_specs, out_shape, scratch, cfg, "scan_bwd")
    dx, ddt, db, dc, da = call(x, dt, at, B, C, dy, hs)[:5]
    return dx, ddt, da.sum(0), db.sum(1), dc.sum(1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _scan_core(x, dt, at, B, C, reverse, cfg):
    return _forward(x, dt, at, B, C, reverse, cfg)[0]


def _scan_core_fwd(x, dt, at, B, C, reverse, cfg):
    y, hs = _forward(x, dt, at, B, C, reverse, cfg)
    return y, (x, dt, at, B, C, hs)


def _scan_core_bwd(reverse, cfg, res, dy):
    x, dt, at, B, C, hs = res
    grads = _backward(x, dt, at, B, C, hs, dy.astype(F32), reverse, cfg)
    return tuple(g.astype(p.dtype) for g, p in zip(grads, (x, dt, at, B, C), strict=True))


_scan_core.defvjp(_scan_core_fwd, _scan_core_bwd)


def pallas_selective_scan(
    x: jax.Array,
    dt: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    *,
    reverse: bool = False,
    config: ScanKernelConfig | None = None,
) -> jax.Array:
    """Selective scan without the D skip term, by the Pallas kernel; differentiable in all inputs.

    Args:
        x, dt: [b, l, d] input and (positive) step size, any float dtype.
        A: [d, n] (negative) state matrix, diagonal per channel.
        B, C: [b, l, n] input and output projections.
        reverse: run the recurrence from the last time step to the first.
        config: block sizes and interpret mode (default `ScanKernelConfig()`).

    Returns:
        y: float32[b, l, d] with ``y_t = C_t . h_t``.
    """
    cfg = (config or ScanKernelConfig()).resolved()
    b, L, d = x.shape
    T = min(cfg.chunk, max(8, pl.next_power_of_2(L)))
    bd = min(cfg.block_d, d)
    cfg = dataclasses.replace(cfg, chunk=T, block_d=bd)
    pl_, pd = -L % T, -d % bd
    if pl_ or pd:
        x = jnp.pad(x, ((0, 0), (0, pl_), (0, pd)))
        dt = jnp.pad(dt, ((0, 0), (0, pl_), (0, pd)))
        A = jnp.pad(A, ((0, pd), (0, 0)))
        B = jnp.pad(B, ((0, 0), (0, pl_), (0, 0)))
        C = jnp.pad(C, ((0, 0), (0, pl_), (0, 0)))
    y = _scan_core(x, dt, A.T.astype(F32), B, C, reverse, cfg)
    return y[:, :L, :d]
