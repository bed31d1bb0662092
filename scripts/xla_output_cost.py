"""What one kernel output costs on XLA's backend here: K outputs a step written as K arrays (one fused kernel
each) against one stacked (K, P) array (one kernel), in a loop of T steps, with the same arithmetic.

    python scripts/xla_output_cost.py [--paths 16384] [--outputs 64] [--steps 100] [--rounds 3]

Prints ns an element-output (and us an output) for both forms, best of the rounds. On the 2-core CPU the two
forms cost the same (~0.3 ns an element-output at 16,384 paths, ~0.6 at 4,096), so the gradient's time is set by
how many values its step writes, not by how many kernels they are spread over: stacking the state into a few arrays
would not make the transposed step cheaper (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=16384)
    ap.add_argument("--outputs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp

    P, K, T = args.paths, args.outputs, args.steps

    def separate(xs):
        def body(i, xs):
            e = [jnp.exp(-x * x) for x in xs]  # an exp keeps XLA from duplicating e into both consumers
            return tuple(xs[k] * 0.999 + 0.001 * e[(k + 1) % K] for k in range(K))
        return jax.lax.fori_loop(0, T, body, xs)

    def stacked(x):
        def body(i, x):
            return x * 0.999 + 0.001 * jnp.roll(jnp.exp(-x * x), -1, axis=0)
        return jax.lax.fori_loop(0, T, body, x)

    xs = tuple(jnp.linspace(0.0, 1.0, P) + k for k in range(K))
    forms = {"separate": (jax.jit(separate), xs), "stacked": (jax.jit(stacked), jnp.stack(xs))}
    for fn, a in forms.values():
        jax.block_until_ready(fn(a))  # compile
    best = {name: float("inf") for name in forms}
    for _ in range(args.rounds):
        for name, (fn, a) in forms.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(a))
            best[name] = min(best[name], time.perf_counter() - t0)
    print(f"{K} outputs x {P:,} paths x {T} steps on {jax.devices()[0]}, best of {args.rounds}:")
    for name, s in best.items():
        print(f"  {name:9s} {s / (T * K * P) * 1e9:7.3f} ns an element-output  {s / (T * K) * 1e6:8.2f} us an output")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
