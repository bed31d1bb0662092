"""Compare simulation variants in one run: dtype, chunk size, random-number generator, and a simple baseline.

    python scripts/benchmark.py [--paths 65536] [--steps 63] [--repeats 3]

Each variant is compiled once (compile time reported), then timed `--repeats` times with block_until_ready; the
best time is reported as path-steps per second. The machine's other load shows up as spread between repeats, so
compare variants within one run only. Variants:
- full model, float32, the default counter-based draws (`_simulate.COUNTER_RNG`), chunk sizes 4096 to 262144
  (`--chunks`), and at the largest chunk each counter-based generator (`--rngs`: Philox-2x32, threefry-2x32);
- on a GPU: the forward loop as one Pallas kernel a reporting interval (`_simulate.KERNEL`, the GPU default)
  against XLA's loop, and the kernel's paths a program and warps (`--kernel-configs`), at the largest chunk;
  and the kernel's parts over the whole horizon in one interval (no reporting dates): the full step, the draws
  alone, the generator's bits alone (each of `--rngs`), and the step on fixed draws (`--kernel-parts`, on by
  default on a GPU);
- full model, float32, with the backend-dependent code shapes each way (`_model.MATERIALISE`: intermediates
  stored once, the CPU's choice; `_simulate.CARRY_DRAWS`: the loops carry the next step's draws, the CPU's choice)
  at the largest chunk;
- full model, float64 (chunk: a quarter of the paths, at least 16384);
- full model with the draws of `jax.random.normal`/`uniform` on a key per (block, step) (fold_in), the textbook
  way (what the counter-based draws replaced);
- the random numbers alone (the same 12 draws per path-step, summed), to see their share;
- a lean baseline: three independent OU factors and the 10y yield, one fused elementwise step, same draws.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxstress import _kernel, _model
from jaxstress import _simulate as simulate_mod
from jaxstress._config import load_scenario
from jaxstress._model import N_NORMAL, N_UNIFORM
from jaxstress._simulate import BLOCK, _block_draws, _simulate, columns, report_steps


def _time(fn, args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best


def _fold_in_draws(key, block_ids, dtype):
    def draw(t):
        def one(b):
            kb = jax.random.fold_in(jax.random.fold_in(key, b), t)
            kn, ku = jax.random.split(kb)
            return (jax.random.normal(kn, (BLOCK, N_NORMAL), dtype), jax.random.uniform(ku, (BLOCK, N_UNIFORM), dtype))

        n, u = jax.vmap(one)(block_ids)
        return columns(n.reshape(-1, N_NORMAL)), columns(u.reshape(-1, N_UNIFORM))

    return draw


def full_model(params, reports, n_blocks, draws):
    @jax.jit
    def run(values, key):
        p = jax.tree_util.tree_map(lambda x: x, params)
        import equinox as eqx

        p = eqx.tree_at(lambda q: q.values, p, values)
        draw = draws(key, jnp.arange(n_blocks, dtype=jnp.uint32), values["curve.k"].dtype)
        metrics, _, _ = _simulate(p, n_blocks * BLOCK, draw, reports)
        return metrics

    return run


def rng_only(n_blocks, n_steps, dtype):
    @jax.jit
    def run(key):
        draw = _block_draws(key, jnp.arange(n_blocks, dtype=jnp.uint32), dtype)

        def body(c, t):
            n, u = draw(t)
            return c + sum(n) + sum(u), None

        return jax.lax.scan(body, jnp.zeros(n_blocks * BLOCK, dtype), jnp.arange(n_steps))[0]

    return run


def lean_baseline(n_blocks, n_steps, dtype):
    """Three OU factors (short rate, inflation, term premium) and the 10y yield: the simplest model of this kind."""

    @jax.jit
    def run(key):
        draw = _block_draws(key, jnp.arange(n_blocks, dtype=jnp.uint32), dtype)
        n = n_blocks * BLOCK
        dt = 1 / 252

        def body(x, t):
            z, _ = draw(t)
            r, pi, tau, ymax = x
            r = r + 2.0 * (0.04 - r) * dt + 0.006 * np.sqrt(dt) * z[0]
            pi = pi + 1.0 * (0.023 - pi) * dt + 0.004 * np.sqrt(dt) * z[1]
            tau = tau + 1.0 * (0.005 - tau) * dt + 0.006 * np.sqrt(dt) * z[2]
            y10 = 0.42 * r + 0.58 * (0.02 + pi) + tau
            return (r, pi, tau, jnp.maximum(ymax, y10)), None

        x0 = tuple(jnp.full(n, v, dtype) for v in (0.043, 0.023, 0.003, 0.0))
        return jax.lax.scan(body, x0, jnp.arange(n_steps))[0][3]

    return run


def kernel_parts(params, n_paths, n_steps):
    """{name: jitted run(values, key_words)}: `_kernel.advance` over steps 0 .. n_steps in one interval, with the
    full step and with parts of it (see the module's docstring)."""
    import equinox as eqx

    from jaxstress._model import initial_state, prepare, step
    from jaxstress._simulate import broadcast_paths, counter_bits, draws_at

    def sum_step(prep, t, s, normal, uniform, tables=None):
        return eqx.tree_at(lambda q: q.r, s, s.r + sum(normal) + sum(uniform))

    def bits_at(k0, k1, ids, t, dtype):
        c = jnp.asarray(t).astype(jnp.uint32) * np.uint32(6)
        words = []
        for j in range(6):
            words += [w.astype(dtype) for w in counter_bits(k0, k1, ids, c + np.uint32(j))]
        return tuple(words[:N_NORMAL]), tuple(words[N_NORMAL:])

    def fixed_at(k0, k1, ids, t, dtype):
        x = ids.astype(dtype) * 1e-9
        return tuple(x + (0.1 * j - 0.4) for j in range(N_NORMAL)), (x + 0.3, x + 0.6)

    variants = {"full step": (draws_at, step), "draws only": (draws_at, sum_step),
                "generator bits only": (bits_at, sum_step), "step on fixed draws": (fixed_at, step)}
    interpret = jax.default_backend() == "cpu"

    def make(draws, step_fn):
        @jax.jit
        def run(values, kd):
            p = eqx.tree_at(lambda q: q.values, params, values)
            prep = prepare(p)
            s0 = initial_state(prep, p.initial_regime)
            state = broadcast_paths(s0, n_paths)
            ids = jnp.arange(n_paths, dtype=jnp.uint32)
            out = _kernel.advance(prep, state, kd, ids, 0, n_steps, draws, interpret=interpret, step_fn=step_fn)
            return out.r

        return run

    return {name: make(*v) for name, v in variants.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=63)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--float32-only", action="store_true",
                    help="stop after float32's code-shape rows: skip the jax.random fold_in draws, the 'random "
                         "numbers only' and 'lean baseline' rows, and all of float64")
    ap.add_argument("--chunks", default="4096,16384,65536,262144",
                    help="float32 chunk sizes, comma-separated (on a GPU use millions: 1048576,4194304)")
    ap.add_argument("--kernel-parts", action=argparse.BooleanOptionalAction, default=None,
                    help="time the GPU kernel's parts (default: on a GPU)")
    ap.add_argument("--rngs", default=",".join(simulate_mod.COUNTER_RNGS),
                    help="counter-based generators compared, comma-separated (the first is timed everywhere else)")
    ap.add_argument("--kernel-configs", default="128x4,256x8,64x2,256x4",
                    help="GPU kernel variants, PATHSxWARPS per program, comma-separated ('' to skip)")
    args = ap.parse_args()
    rngs = args.rngs.split(",")
    simulate_mod.COUNTER_RNG = rngs[0]
    print(f"{jax.devices()[0]}, {args.paths:,} paths x {args.steps} steps, best of {args.repeats}")
    print(f"{'variant':70s} {'M path-steps/s':>15s} {'compile s':>10s}")

    def report(name, n_paths, compile_s, best):
        print(f"{name:70s} {n_paths * args.steps / best / 1e6:15.2f} {compile_s:10.1f}", flush=True)

    for x64 in (False, True):
        jax.config.update("jax_enable_x64", x64)
        sc = load_scenario("april_2025", horizon=args.steps / 252)
        params = sc.params()
        reports = report_steps(sc.config, params.n_steps)
        dt = "float64" if x64 else "float32"
        key = jax.random.key(0)

        def chunked(label, chunk):
            """The full model on counter-based draws, in chunks of `chunk` paths covering about --paths."""
            nb = max(1, chunk // BLOCK)
            run = full_model(params, reports, nb, _block_draws)
            reps = max(1, args.paths // (nb * BLOCK))
            c, best = _time(lambda v, k: [run(v, k) for _ in range(reps)], (params.values, key), args.repeats)
            report(f"{label}, chunk {nb * BLOCK:,}", reps * nb * BLOCK, c, best)

        chunks = tuple(int(c) for c in args.chunks.split(",")) if not x64 else (max(16384, args.paths // 4),)
        for chunk in chunks:
            chunked(f"full model, {dt}, counter {rngs[0]}", chunk)
        for rng in rngs[1:] if not x64 else ():
            simulate_mod.COUNTER_RNG = rng
            chunked(f"  counter {rng}", chunks[-1])
            simulate_mod.COUNTER_RNG = rngs[0]
        nb = max(1, args.paths // BLOCK)
        if not x64 and jax.default_backend() == "gpu":
            simulate_mod.KERNEL = False
            chunked("  XLA loop (no kernel)", chunks[-1])
            simulate_mod.KERNEL = True
            for cfg in filter(None, args.kernel_configs.split(",")):
                _kernel.BLOCK_PATHS, _kernel.NUM_WARPS = (int(x) for x in cfg.split("x"))
                chunked(f"  kernel: {_kernel.BLOCK_PATHS} paths a program, {_kernel.NUM_WARPS} warps", chunks[-1])
            _kernel.BLOCK_PATHS, _kernel.NUM_WARPS = 128, 4
            fast = _kernel.FAST_MATH
            _kernel.FAST_MATH = not fast
            chunked(f"  kernel: fast math {not fast:d} (the default: {fast:d})", chunks[-1])
            _kernel.FAST_MATH = fast
            simulate_mod.KERNEL = None
        parts = args.kernel_parts if args.kernel_parts is not None else jax.default_backend() == "gpu"
        if not x64 and parts:
            n = chunks[-1] // BLOCK * BLOCK
            kd = jax.random.key_data(jax.random.key(0)).astype(jnp.uint32).reshape(-1)[:2]
            for rng in rngs:
                simulate_mod.COUNTER_RNG = rng
                for name, run in kernel_parts(params, n, params.n_steps).items():
                    if rng == rngs[0] or name in ("draws only", "generator bits only"):
                        c, best = _time(run, (params.values, kd), args.repeats)
                        report(f"  kernel part ({rng}): {name}, one interval, chunk {n:,}", n, c, best)
            simulate_mod.COUNTER_RNG = rngs[0]
        if not x64:  # the backend-dependent code shapes of XLA's loop, each way (the default picks by backend)
            simulate_mod.KERNEL = False
            for mat, carry in ((True, True), (True, False), (False, True), (False, False)):
                _model.MATERIALISE, simulate_mod.CARRY_DRAWS = mat, carry
                chunked(f"  XLA loop shape: keep {mat:d}, carry draws {carry:d}", chunks[-1])
            _model.MATERIALISE, simulate_mod.CARRY_DRAWS = None, None
            simulate_mod.KERNEL = None
            if args.float32_only:
                break
            run = full_model(params, reports, nb, _fold_in_draws)
            c, best = _time(run, (params.values, key), args.repeats)
            report(f"full model, {dt}, jax.random per (block, step) fold_in", nb * BLOCK, c, best)
        c, best = _time(rng_only(nb, args.steps, params.values["curve.k"].dtype), (key,), args.repeats)
        report(f"random numbers only (12 per path-step), {dt}", nb * BLOCK, c, best)
        c, best = _time(lean_baseline(nb, args.steps, params.values["curve.k"].dtype), (key,), args.repeats)
        report(f"lean baseline: 3 OU factors + 10y, {dt}", nb * BLOCK, c, best)
    jax.config.update("jax_enable_x64", False)


if __name__ == "__main__":
    main()
