"""What the counter generator and the retained reporting dates each buy: one chunk of `april_2025` over a year.

    python scripts/ab_draws_dates.py [PATHS]   (default 4194304; on a CPU use ~16384)

Variants, each compiled once, then timed three times in turn (best kept; compare within one run): the generator
(`_simulate.COUNTER_RNG`: Philox-2x32, threefry-2x32) x the reporting dates of the first 200,000 paths (what a
run keeps) or of every path, and for Philox with the dates of 200,000 paths, `_kernel.FAST_MATH` on (GPU only).
"""

import sys
import time

import jax
import jax.numpy as jnp

from jaxstress import _kernel, _simulate, load_scenario
from jaxstress._simulate import BLOCK, PRNG_IMPL, report_steps


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4194304
    sc = load_scenario("april_2025")
    params = sc.params(jnp.float32)
    reports = report_steps(sc.config, params.n_steps)
    key = jax.random.key(0, impl=PRNG_IMPL)
    ids = jnp.arange(n // BLOCK, dtype=jnp.uint32)
    fns = {}
    for rng in _simulate.COUNTER_RNGS:
        for snap in (min(200_000, n), None):
            for fast in (False, True) if rng == "philox2x32" and snap else (False,):
                _simulate.COUNTER_RNG, _kernel.FAST_MATH = rng, fast  # read when traced, below
                fn = jax.jit(lambda p, k, s=snap: _simulate._run_blocks(p, k, ids, reports, s))
                t0 = time.perf_counter()
                jax.block_until_ready(fn(params, key))
                print(f"compiled {rng} {snap} {fast}: {time.perf_counter() - t0:.1f} s", flush=True)
                fns[rng, snap, fast] = fn
    _simulate.COUNTER_RNG, _kernel.FAST_MATH = _simulate.COUNTER_RNGS[0], False
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(3):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, key))
            best[k] = min(best[k], time.perf_counter() - t0)
    for (rng, snap, fast), b in best.items():
        rate = ids.size * BLOCK * params.n_steps / b
        print(f"{rng:13s} dates of {snap or 'all':>7} paths, fast math {fast:d}: {rate / 1e9:6.2f} x 10^9 "
              f"path-steps/s ({b * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
