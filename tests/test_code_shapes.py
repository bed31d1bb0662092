"""The backend-dependent code shapes give the CPU's numbers.

On a GPU the step leaves intermediates to the compiler (`_model.MATERIALISE`) and the loops make each step's draws
where they are used instead of carrying them (`_simulate.CARRY_DRAWS`). Both choices change how XLA fuses the
step, not what it computes, so in float64 the per-path metrics and the full gradient must equal the CPU shapes'
to rounding. The GPU shapes are run here on the CPU (the GPU itself is compared with the CPU by
scripts/device_check.py). The CPU shapes (the defaults here) run the library's own jitted programs in the shapes of
other tests (test_devices' one-device run, test_sensitivities' gradient), so the session's compilation cache
compiles them once; the GPU shapes are traced by a `jax.jit` of their own, so no compiled function of the other
tests is traced under the non-default shapes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstress import _model, _simulate, load_scenario
from jaxstress._sensitivities import KINDS, _per_path, chunk_gradient, driver_leaves, surrogate, with_drivers
from jaxstress._simulate import BLOCK, METRIC_NAMES, PRNG_IMPL, report_steps, simulate_chunk

# the forward: april_2025 over a quarter, one chunk of 4 blocks (test_devices' one-device run); the gradient:
# april_2025 over 25 days, 2 blocks (test_sensitivities' chunks)
N_BLOCKS, GRAD_BLOCKS = 4, 2
# (_model.MATERIALISE, _simulate.CARRY_DRAWS)
SHAPES = {"cpu": (True, True), "gpu": (False, False)}


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


def _under(shape, fn):
    """fn() with the code shapes set, then the defaults (decided by backend) restored."""
    _model.MATERIALISE, _simulate.CARRY_DRAWS = SHAPES[shape]
    try:
        return fn()
    finally:
        _model.MATERIALISE, _simulate.CARRY_DRAWS = None, None


@pytest.fixture(scope="module")
def results(x64):
    sc = load_scenario("april_2025", horizon=0.25)
    params = sc.params(jnp.float64)
    key = jax.random.key(5, impl=PRNG_IMPL)
    reports = report_steps(sc.config, params.n_steps)
    ids = jnp.arange(N_BLOCKS, dtype=jnp.uint32)
    g_params = load_scenario("april_2025", horizon=0.1).params(jnp.float64)
    base = jnp.asarray(METRIC_NAMES.index("y10_change_bp"), jnp.int32)
    mean = jnp.asarray(KINDS.index("mean"), jnp.int32)
    first = jnp.asarray(0, jnp.uint32)
    q, level, var, bandwidth, width, density = (jnp.asarray(x, jnp.float64) for x in (0.0, 0.0, 0.0, 1.0, 0.05, 1.0))

    def metrics(shape):
        if shape == "cpu":  # simulate's program: all of the chunk's paths observed at the reporting dates
            return simulate_chunk(params, key, first, N_BLOCKS, reports, N_BLOCKS * BLOCK)[0]
        return jax.jit(lambda p, k: _simulate._run_blocks(p, k, ids, reports)[0])(params, key)

    def gradient(shape):
        if shape == "cpu":  # sensitivities' program: (estimate, gradient, per-path values)
            return chunk_gradient(g_params, key, first, GRAD_BLOCKS, mean, base, q, level, var, bandwidth, width,
                                  density)[:2]

        def f(d):
            vals, logp = _per_path(with_drivers(g_params, d), key, first, GRAD_BLOCKS, base)
            return surrogate("mean", vals, logp, q, level, var, bandwidth, width, density)

        return jax.jit(jax.value_and_grad(f))(driver_leaves(g_params))

    return {s: (np.asarray(_under(s, lambda: metrics(s))), _under(s, lambda: gradient(s))) for s in SHAPES}


def test_gpu_shapes_give_the_cpu_metrics(results):
    cpu, gpu = results["cpu"][0], results["gpu"][0]
    scale = np.max(np.abs(cpu), axis=1, keepdims=True) + 1e-300
    assert np.max(np.abs(gpu - cpu) / scale) < 1e-12
    assert np.all(np.isfinite(gpu))


def test_gpu_shapes_give_the_cpu_gradient(results):
    (v_cpu, g_cpu), (v_gpu, g_gpu) = results["cpu"][1], results["gpu"][1]
    assert float(v_gpu) == pytest.approx(float(v_cpu), rel=1e-12)
    top = max(float(jnp.max(jnp.abs(x))) for x in g_cpu.values())
    assert top > 0
    for k in g_cpu:
        assert np.allclose(np.asarray(g_gpu[k]), np.asarray(g_cpu[k]), rtol=1e-9, atol=1e-12 * top), k


def test_defaults_follow_the_backend():
    assert _model.MATERIALISE is None and _simulate.CARRY_DRAWS is None and _simulate.KERNEL is None
    assert _model.materialise() == (jax.default_backend() == "cpu")


class _FakeDevice:
    def __init__(self, limit):
        self.limit = limit

    def memory_stats(self):
        return None if self.limit is None else {"bytes_limit": self.limit}


@pytest.mark.parametrize("limit, forward, gradient", [
    (105 * 2**30, 1 << 22, 1 << 21),  # an H200 (75% of 141 GB preallocated): 5.6M and 2.1M fit
    (60 * 2**30, 1 << 21, 1 << 20),  # an H100: 1.2M gradient paths fit
    (4 * 2**30, 1 << 17, 1 << 16),  # a small GPU
    (None, 1 << 20, 1 << 20),  # no memory statistics
])
def test_default_chunk_size_on_an_accelerator(monkeypatch, limit, forward, gradient):
    from jaxstress._simulate import CPU_CHUNK, chunk_bytes_per_path, default_chunk_size

    params = load_scenario("april_2025").params()
    assert default_chunk_size(params) == CPU_CHUNK  # this session runs on CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "local_devices", lambda: [_FakeDevice(limit)])
    f, g = default_chunk_size(params, "forward"), default_chunk_size(params, "gradient")
    assert (f, g) == (forward, gradient)
    if limit is not None and f < 1 << 22:  # the largest power of two within 30% of the memory
        assert 2 * f * chunk_bytes_per_path(params, "forward") > 0.3 * limit >= f * chunk_bytes_per_path(params)
