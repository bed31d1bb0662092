"""The XLA defaults set on import (copy insertion by region analysis; 512-bit vectors on CPUs with AVX-512):
added once, never over a user's setting, and the results are the same with them as without them."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxstress import _xla_flags
from jaxstress._config import load_scenario
from jaxstress._simulate import simulate

FLAG = _xla_flags.REGION_ANALYSIS
WIDTH = _xla_flags.VECTOR_WIDTH


@pytest.fixture(scope="module", autouse=True)
def default_precision():
    """Run as the subprocess does, in JAX's default 32-bit mode (modules collected earlier may have turned 64-bit
    mode on at import)."""
    with jax.enable_x64(False):
        yield


def test_flag_added_once_and_user_setting_kept(monkeypatch):
    monkeypatch.setattr(_xla_flags, "_jaxlib_release", lambda: (0, 10))
    monkeypatch.setattr(_xla_flags, "_has_avx512", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    _xla_flags.set_defaults()
    _xla_flags.set_defaults()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}=true"
    monkeypatch.setattr(_xla_flags, "_has_avx512", lambda: True)
    _xla_flags.set_defaults()
    _xla_flags.set_defaults()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}=true {WIDTH}=512"
    monkeypatch.setenv("XLA_FLAGS", f"{FLAG}=false {WIDTH}=256")
    _xla_flags.set_defaults()
    assert os.environ["XLA_FLAGS"] == f"{FLAG}=false {WIDTH}=256"
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(_xla_flags, "_jaxlib_release", lambda: (0, 4))  # a release not known to have the flags
    _xla_flags.set_defaults()
    assert "XLA_FLAGS" not in os.environ


def test_avx512_read_from_cpuinfo(tmp_path):
    """AVX-512 is read from the CPU flags line: its foundation `avx512f` as a whole word, nowhere else."""
    def has(text):
        (tmp_path / "cpuinfo").write_text(text)
        return _xla_flags._has_avx512(str(tmp_path / "cpuinfo"))

    assert has("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512dq\n")
    assert not has("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert not has("model name\t: avx512f lookalike\nflags\t\t: fpu avx512fx\n")
    assert not _xla_flags._has_avx512(str(tmp_path / "missing"))


def test_results_same_without_the_flag(tmp_path):
    """A short run in a process with the flags off (256-bit vectors) gives the per-path metrics of this process
    bit for bit."""
    assert FLAG in os.environ.get("XLA_FLAGS", "")
    code = ("import numpy as np, jaxstress\n"
            "from jaxstress._config import load_scenario\n"
            "r = jaxstress.simulate(load_scenario('april_2025', horizon=0.05), 512, seed=4, chunk_size=512)\n"
            f"np.savez({str(tmp_path / 'm.npz')!r}, snapshots=r.snapshots, **r.metrics)\n")
    env = dict(os.environ, XLA_FLAGS=f"{FLAG}=false {WIDTH}=256", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    here = simulate(load_scenario("april_2025", horizon=0.05), 512, seed=4, chunk_size=512)
    there = np.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(there["snapshots"], here.snapshots)
    for name, values in here.metrics.items():
        np.testing.assert_array_equal(there[name], values, err_msg=name)
