"""jaxav.xla_flags: the CPU flags are added once, never over a value the user set."""

import os
import subprocess
import sys

from jaxav.xla_flags import VECTOR_WIDTH_FLAG, apply_cpu_flags, cpu_has_avx512, with_cpu_flags


def test_adds_vector_width_on_avx512_only():
    assert with_cpu_flags("", avx512=True) == f"{VECTOR_WIDTH_FLAG}=512"
    assert with_cpu_flags("--a=1", avx512=True) == f"--a=1 {VECTOR_WIDTH_FLAG}=512"
    assert with_cpu_flags("--a=1", avx512=False) == "--a=1"


def test_user_value_wins_and_apply_is_idempotent():
    user = f"--xla_force_host_platform_device_count=8 {VECTOR_WIDTH_FLAG}=256"
    assert with_cpu_flags(user, avx512=True) == user
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    once = apply_cpu_flags(env)
    assert apply_cpu_flags(env) == once == env["XLA_FLAGS"]
    assert once.startswith("--xla_force_host_platform_device_count=2")


def test_cpuinfo_parsing(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512bw\n")
    assert cpu_has_avx512(str(info))
    info.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert not cpu_has_avx512(str(info))
    assert not cpu_has_avx512(str(tmp_path / "missing"))


def test_flags_are_accepted_by_xla():
    """A process started with the flags this host gets runs a computation (XLA knows the flag)."""
    env = dict(os.environ, XLA_FLAGS=with_cpu_flags("", avx512=True), JAX_PLATFORMS="cpu")
    code = "import jax.numpy as jnp; print(float(jnp.exp(jnp.zeros(3)).sum()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3.0"
