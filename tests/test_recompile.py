"""No recompilation when only numbers in the config or the seed change (compilations are counted)."""

import contextlib

import jax
import pytest

from jaxstress._config import load_scenario
from jaxstress._simulate import simulate

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def compilations():
    """The compilations while the test runs, with the session's compilation cache off (a program loaded from it
    is not compiled, so it would not be counted)."""
    events = []

    def listener(name, duration, **kwargs):
        if name == COMPILE_EVENT:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    with _cache_off():
        yield events
    jax.monitoring.clear_event_listeners()


@contextlib.contextmanager
def _cache_off():
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", before)


def test_numbers_and_seed_do_not_recompile(compilations):
    base = load_scenario("april_2025", horizon=0.05)
    simulate(base, 512, seed=0, chunk_size=512)
    assert len(compilations) > 0  # the listener sees compilations at all
    before = len(compilations)
    other = load_scenario("april_2025", horizon=0.05,
                          overrides=["holders.japan.sell_rate=0.3", "basis_funds.leverage=20",
                                     "regimes.generator[1][3]=40", "regimes.generator[1][1]=-48",
                                     "fed.backstop=false", "curve.k=0.3", "initial.r=0.05"])
    simulate(other, 512, seed=123, chunk_size=512)
    assert len(compilations) == before, "changing numbers or the seed recompiled the simulation"
    # a different shape (path count per chunk) is allowed to compile once more, and only once
    simulate(other, 1024, seed=1, chunk_size=1024)
    after_shape = len(compilations)
    simulate(base, 1024, seed=2, chunk_size=1024)
    assert len(compilations) == after_shape
