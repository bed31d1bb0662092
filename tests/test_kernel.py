"""The forward loop as one GPU kernel (`_kernel`, Pallas/Triton) computes what XLA's loop computes.

On a CPU the kernel runs in Pallas' interpreter: the same traced kernel body (the step on blocks of paths, the
draws made in the kernel, the constants read as scalars from one vector), so in float64 the per-path metrics and
the reporting-date values must equal XLA's loop to rounding, and in float32 to float32 rounding. The kernel's
lowering to Triton for an NVIDIA GPU is checked without one (JAX lowers for a platform it does not have), and
so is the choice between the two loops by platform. The GPU itself runs it against the CPU in
scripts/device_check.py (tests/test_gpu.py). Each variant is traced by its own `jax.jit`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstress import _kernel, _simulate, load_scenario
from jaxstress._simulate import PRNG_IMPL, report_steps

N_BLOCKS = 2


def _run(dtype, kernel, platforms=None, snap_paths=None):
    """(metrics, snapshots) of N_BLOCKS blocks of april_2025 over a quarter, with `_simulate.KERNEL` set (the
    snapshots of the first `snap_paths` paths); with `platforms`, the lowered text for them instead."""
    sc = load_scenario("april_2025", horizon=0.25)
    params = sc.params(dtype)
    key = jax.random.key(11, impl=PRNG_IMPL)
    reports = report_steps(sc.config, params.n_steps)
    ids = jnp.arange(N_BLOCKS, dtype=jnp.uint32) + 3
    fn = jax.jit(lambda p, k: _simulate._run_blocks(p, k, ids, reports, snap_paths))
    _simulate.KERNEL = kernel
    try:
        if platforms:
            return fn.trace(params, key).lower(lowering_platforms=platforms).as_text()
        return tuple(np.asarray(x, np.float64) for x in fn(params, key))
    finally:
        _simulate.KERNEL = None


def _rel(a, b):
    """Largest difference per row (metric or variable), relative to the row's largest magnitude."""
    axes = tuple(i for i in range(a.ndim) if i != a.ndim - 2)
    scale = np.maximum(np.max(np.abs(b), axis=axes, keepdims=True), 1e-9)
    return float(np.max(np.abs(a - b) / scale))


@pytest.fixture(scope="module")
def float64_runs():
    with jax.enable_x64(True):
        yield _run(jnp.float64, True), _run(jnp.float64, False)


def test_kernel_equals_xla_loop_float64(float64_runs):
    (m_k, s_k), (m_x, s_x) = float64_runs
    assert m_k.shape == m_x.shape and s_k.shape == s_x.shape
    assert np.isfinite(m_k).all()
    assert _rel(m_k, m_x) < 1e-12
    assert _rel(s_k, s_x) < 1e-12
    # the paths differ from one another (the kernel's draws depend on the path counter)
    assert np.unique(m_k[1]).size == m_k.shape[1]


@pytest.mark.parametrize(("kernel", "snap_paths"), [(True, 300), (False, 0)])
def test_snapshots_of_the_first_paths(float64_runs, kernel, snap_paths):
    """Snapshots of only the first paths (the paths past them observed at the horizon alone, for the metrics):
    those paths' snapshots and every path's metrics are the run with all snapshots, to rounding."""
    with jax.enable_x64(True):
        m, s = _run(jnp.float64, kernel, snap_paths=snap_paths)
    m_all, s_all = float64_runs[0 if kernel else 1]
    assert s.shape == s_all.shape[:2] + (snap_paths,) and m.shape == m_all.shape
    assert _rel(m, m_all) < 1e-12
    if snap_paths:
        assert _rel(s, s_all[:, :, :snap_paths]) < 1e-12


def test_kernel_equals_xla_loop_float32():
    (m_k, s_k), (m_x, s_x) = _run(jnp.float32, True), _run(jnp.float32, False)
    assert _rel(m_k, m_x) < 1e-5
    assert _rel(s_k, s_x) < 1e-5


def test_kernel_lowers_to_triton_on_cuda(monkeypatch):
    """With a GPU as the default backend, float32 runs choose the kernel where lowered for CUDA (one Triton
    call, inside the scan over reporting intervals) and XLA's loop where lowered for the CPU."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    cuda = _run(jnp.float32, None, platforms=("cuda",))
    cpu = _run(jnp.float32, None, platforms=("cpu",))
    assert cuda.count("__gpu$xla.gpu.triton") == 1
    assert "triton" not in cpu


def test_kernel_refuses_paths_not_in_whole_programs(monkeypatch):
    monkeypatch.setattr(_kernel, "BLOCK_PATHS", 384)
    with pytest.raises(ValueError, match="multiple of 384 paths"):
        _run(jnp.float32, True)


def test_fast_math_lowers_to_approximate_instructions(monkeypatch):
    """`_kernel.FAST_MATH` (on by default) puts PTX's approximate log2 and sqrt into the kernel."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(_kernel, "FAST_MATH", True)
    cuda = _run(jnp.float32, True, platforms=("cuda",))
    assert "lg2.approx.f32" in cuda and "sqrt.approx.f32" in cuda
    monkeypatch.setattr(_kernel, "FAST_MATH", False)
    assert "lg2.approx.f32" not in _run(jnp.float32, True, platforms=("cuda",))


def test_kernel_sharded_over_devices_equals_one_device(monkeypatch):
    """`--devices N`: the kernel inside `shard_map` (its outputs vary over the mesh axis like its inputs) gives the
    single-device XLA loop's paths."""
    from jaxstress import simulate

    sc = load_scenario("april_2025", horizon=0.1)
    monkeypatch.setattr(_simulate, "KERNEL", True)
    sharded = simulate(sc, 1024, seed=1, chunk_size=1024, devices=2)
    monkeypatch.setattr(_simulate, "KERNEL", False)
    single = simulate(sc, 1024, seed=1, chunk_size=512)
    for name, x in single.metrics.items():
        scale = max(np.max(np.abs(x)), 1e-9)
        assert np.max(np.abs(sharded.metrics[name] - x)) <= 1e-5 * scale, name


@pytest.mark.parametrize("value, setting", [(None, None), ("0", False), ("off", False), ("1", None), ("", None)])
def test_environment_turns_the_kernel_off(value, setting):
    assert _simulate.kernel_setting(value) is setting
