"""selective_scan (sequential, associative, chunked, auto) vs an independent float64 reference.

Values: an explicit numpy float64 loop. Gradients: `jax.grad` of a float64 `lax.scan` written here
under `jax.enable_x64`. Errors are relative to the reference's max abs. The Pallas implementation
is tested in `test_pallas_scan.py`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxav.ops.scan import resolve_impl, selective_scan

FP32_TOL = 1e-5
BF16_TOL = 1e-2  # bf16 rounding of output and grads (2^-8); measured worst 5e-3 (dt grad)


def make_inputs(seed: int, b: int, L: int, d: int, n: int) -> list[np.ndarray]:
    """float64 (x, dt, A, B, C, D, w) with realistic ranges (dt = softplus(N(-2, 1)))."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((b, L, d))
    dt = np.log1p(np.exp(r.standard_normal((b, L, d)) - 2.0))
    A = -np.exp(0.5 * r.standard_normal((d, n)))
    B, C = r.standard_normal((b, L, n)), r.standard_normal((b, L, n))
    return [x, dt, A, B, C, r.standard_normal(d), r.standard_normal((b, L, d))]


def numpy_reference(x, dt, A, B, C, D, reverse):
    """Explicit float64 loop over batch and time."""
    b, L, d = x.shape
    y = np.zeros((b, L, d))
    order = range(L - 1, -1, -1) if reverse else range(L)
    for i in range(b):
        h = np.zeros(A.shape)
        for t in order:
            h = np.exp(dt[i, t][:, None] * A) * h + (dt[i, t] * x[i, t])[:, None] * B[i, t][None]
            y[i, t] = h @ C[i, t] + (0.0 if D is None else D * x[i, t])
    return y


def reference_grads(args, w, reverse):
    """Gradients of sum(y * w) w.r.t. (x, dt, A, B, C, D), by jax.grad of a float64 lax.scan."""
    with jax.enable_x64(True):

        def ref(x, dt, A, B, C, D):
            def step(h, inp):
                xt, dtt, bt, ct = inp
                h = jnp.exp(dtt[..., None] * A) * h + (dtt * xt)[..., None] * bt[:, None, :]
                return h, jnp.einsum("bdn,bn->bd", h, ct)

            seq = [jnp.swapaxes(v, 0, 1) for v in (x, dt, B, C)]
            _, y = jax.lax.scan(step, jnp.zeros((x.shape[0], *A.shape)), seq, reverse=reverse)
            return jnp.sum((jnp.swapaxes(y, 0, 1) + D * x) * w)

        a64 = [jnp.asarray(np.asarray(v, np.float64)) for v in args]
        grads = jax.jit(jax.grad(ref, argnums=range(6)))(*a64)
        return [np.asarray(g) for g in grads]


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref| in float64."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def check_impl(impl, L, reverse, dtype=jnp.float32, tol=FP32_TOL, **kwargs):
    """Compare values and all six gradients of `impl` with the float64 references."""
    *args, w = make_inputs(L + 7 * reverse, 2, L, 6, 4)
    cast = [jnp.asarray(v, dtype) for v in args]
    args = [np.asarray(v, np.float64) for v in cast]  # reference on the rounded inputs
    f = lambda *a: selective_scan(*a, reverse=reverse, impl=impl, **kwargs)
    y = jax.jit(f)(*cast)
    assert y.dtype == dtype and y.shape == args[0].shape
    assert rel_err(y, numpy_reference(*args, reverse)) <= tol
    loss = lambda *a: jnp.sum(f(*a).astype(jnp.float32) * w)
    grads = jax.jit(jax.grad(loss, argnums=range(6)))(*cast)
    names = "x dt A B C D".split()
    for name, g, gr in zip(names, grads, reference_grads(args, w, reverse), strict=True):
        assert g.dtype == dtype, name
        assert rel_err(g, gr) <= tol, (name, rel_err(g, gr))


@pytest.mark.parametrize("impl", ["sequential", "associative", "chunked"])
@pytest.mark.parametrize("L", [203, 17, 1])
@pytest.mark.parametrize("reverse", [False, True])
def test_fp32_matches_reference(impl, L, reverse):
    check_impl(impl, L, reverse)


@pytest.mark.parametrize("impl", ["sequential", "associative", "chunked"])
def test_bf16_within_bound(impl):
    check_impl(impl, 67, True, dtype=jnp.bfloat16, tol=BF16_TOL)


def test_reference_matches_flip_definition():
    """reverse=True equals flipping the inputs along length, scanning and flipping back."""
    *args, _ = make_inputs(3, 2, 9, 3, 2)
    x, dt, A, B, C, D = args
    flip = lambda v: v[:, ::-1]
    want = flip(numpy_reference(flip(x), flip(dt), A, flip(B), flip(C), D, False))
    np.testing.assert_allclose(numpy_reference(x, dt, A, B, C, D, True), want, rtol=1e-12)


def test_no_skip_and_auto():
    *args, _ = make_inputs(4, 1, 12, 3, 2)
    x, dt, A, B, C, _ = (jnp.asarray(v, jnp.float32) for v in args)
    ref = numpy_reference(*(np.asarray(v, np.float64) for v in (x, dt, A, B, C)), None, False)
    assert rel_err(selective_scan(x, dt, A, B, C, impl="auto"), ref) <= FP32_TOL
    assert resolve_impl("auto") in ("sequential", "associative", "chunked", "pallas")
    with pytest.raises(ValueError, match="unknown selective-scan impl"):
        selective_scan(x, dt, A, B, C, impl="fft")


def test_chunked_memory_flat_in_depth():
    """A stack of chunked scans keeps one output buffer live, not one per layer (XLA hoists a
    scan's zero-initialised stacked output to the program start: +0.5 MiB per layer before)."""
    L, d, n = 2048, 64, 4
    args = (jnp.ones((1, L, d)), -jnp.ones((d, n)), jnp.ones((1, L, n)), jnp.ones((1, L, n)))

    def temp_mib(depth):
        def f(x, A, B, C):
            for i in range(depth):
                dt = jax.nn.softplus(x)
                y = selective_scan(x, dt, A, B, C, jnp.ones(d), reverse=bool(i % 2), impl="chunked")
                x = jnp.tanh(y)
            return x

        compiled = jax.jit(f).lower(*args).compile()
        return compiled.memory_analysis().temp_size_in_bytes / 2**20

    one_output = L * d * 4 / 2**20  # what each extra layer added before (0.5 MiB)
    assert temp_mib(8) < temp_mib(2) + one_output / 2
