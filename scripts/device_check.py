"""Check the engine on an accelerator against the CPU: same seed, same paths, per path and in aggregate.

    python scripts/device_check.py [--paths 16384] [--scenario april_2025] [--horizon 1.0]

Runs one chunk of the scenario on the default device (a GPU where one is present) and on the host CPU, in
float64 (where the two backends' different roundings stay near 1e-12 and per-path results must agree to 1e-6
relative) and in float32 (where they grow along the path: paths must agree to 1e-4 relative, 1e-5 seen, and the
means to well within their Monte Carlo standard error; a GPU runs the float32 forward as one kernel a reporting
interval, `_kernel`), then the full gradient of the mean 10y change over every driver in float64 (to 1e-6
relative). Exits with status 1 if a check fails. On a machine with only a CPU both sides are the CPU, which
checks the script itself.
"""

import argparse
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxstress import _kernel, load_scenario
from jaxstress._sensitivities import KINDS, chunk_gradient, chunk_values
from jaxstress._simulate import BLOCK, METRIC_NAMES, PRNG_IMPL, report_steps, simulate_chunk


def placed(device, scenario, dtype, seed):
    """(params, key, first block 0) of the scenario, committed to `device`: the jitted chunk runs there."""
    dynamic, static = eqx.partition(scenario.params(dtype), eqx.is_array)
    params = eqx.combine(jax.device_put(dynamic, device), static)
    key = jax.device_put(jax.random.key(seed, impl=PRNG_IMPL), device)
    return params, key, jax.device_put(jnp.asarray(0, jnp.uint32), device)


def metrics_on(device, scenario, dtype, n_blocks, seed):
    params, key, first = placed(device, scenario, dtype, seed)
    m, _ = simulate_chunk(params, key, first, n_blocks, report_steps(scenario.config, params.n_steps))
    return np.asarray(m, np.float64)


def gradient_on(device, scenario, n_blocks, seed):
    params, key, first = placed(device, scenario, jnp.float64, seed)
    put = lambda x, dt: jax.device_put(jnp.asarray(x, dt), device)  # noqa: E731
    args = (put(KINDS.index("mean"), jnp.int32), put(METRIC_NAMES.index("y10_change_bp"), jnp.int32),
            *(put(x, jnp.float64) for x in (0.0, 0.0, 0.0, 1.0, 0.05, 1.0)))
    value, grads, _ = chunk_gradient(params, key, first, n_blocks, *args)
    return float(value), {k: np.asarray(v, np.float64) for k, v in grads.items()}


def mean_on(device, scenario, n_blocks, seed):
    params, key, first = placed(device, scenario, jnp.float64, seed)
    return float(jnp.mean(chunk_values(params, key, first, n_blocks, METRIC_NAMES.index("y10_change_bp"))))


def compare(a, b, scale_floor=1e-9):
    """Per metric: the share of paths agreeing to 1e-6 of the metric's scale, the worst such difference, and the
    difference of the means in units of the mean's standard error."""
    rows = []
    for i, name in enumerate(METRIC_NAMES):
        scale = max(np.max(np.abs(b[i])), scale_floor)
        rel = np.abs(a[i] - b[i]) / scale
        se = np.std(b[i]) / np.sqrt(b.shape[1])
        dmean = abs(a[i].mean() - b[i].mean())
        rows.append((name, float(np.mean(rel <= 1e-6)), float(rel.max()), dmean / se if se > 0 else 0.0 * dmean))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=16384)
    ap.add_argument("--scenario", default="april_2025")
    ap.add_argument("--horizon", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--fast-math", action=argparse.BooleanOptionalAction, default=None,
                    help="the GPU kernel with (or without) approximate log and sqrt (default: _kernel.FAST_MATH)")
    args = ap.parse_args()
    if args.fast_math is not None:
        _kernel.FAST_MATH = args.fast_math
    jax.config.update("jax_enable_x64", True)
    acc, cpu = jax.devices()[0], jax.devices("cpu")[0]
    sc = load_scenario(args.scenario, horizon=args.horizon)
    nb = max(1, args.paths // BLOCK)
    print(f"{args.scenario}, {nb * BLOCK:,} paths, horizon {args.horizon} y: {acc} against {cpu}")
    ok = True
    for dtype in (jnp.float64, jnp.float32):
        a, b = metrics_on(acc, sc, dtype, nb, args.seed), metrics_on(cpu, sc, dtype, nb, args.seed)
        print(f"\n{np.dtype(dtype).name}: {'metric':28s} {'paths within 1e-6':>18s} {'worst rel':>10s} "
              f"{'|d mean|/se':>12s}")
        for name, share, worst, z in compare(a, b):
            # float32: rounding grows along a path (1e-5 seen between an H200 and the CPU); a wrong kernel is O(1)
            bad = (share < 0.999 if dtype == jnp.float64 else worst > 1e-4) or z > 0.1 or not np.isfinite(worst)
            ok &= not bad
            print(f"         {name:28s} {share:18.4f} {worst:10.2e} {z:12.4f}{'  FAIL' if bad else ''}")
    nbg = max(1, nb // 4)
    (va, ga), (vb, gb) = gradient_on(acc, sc, nbg, args.seed), gradient_on(cpu, sc, nbg, args.seed)
    # per leaf, relative to the leaf's size (floored at 1e-9 of the largest leaf, for leaves that are zero)
    top = max(float(np.max(np.abs(x))) for x in gb.values())
    diffs = sorted(((float(np.max(np.abs(ga[k] - gb[k]))) / max(float(np.max(np.abs(gb[k]))), 1e-9 * top), k)
                    for k in gb), reverse=True)
    grad_ok = abs(va - vb) <= 1e-6 * max(abs(vb), 1e-12) and diffs[0][0] <= 1e-6
    ok &= grad_ok
    print(f"\ngradient of mean y10_change_bp over {len(gb)} driver leaves, {nbg * BLOCK:,} paths, float64: "
          f"value {va:.9f} vs {vb:.9f}{'' if grad_ok else '  FAIL'}")
    print(f"  {'leaf':40s} {'rel diff':>10s} {'accelerator':>16s} {'cpu':>16s}")
    for d, k in diffs[:5]:
        print(f"  {k:40s} {d:10.2e} {float(ga[k].ravel()[0]):16.9g} {float(gb[k].ravel()[0]):16.9g}")
    d, k = diffs[0]
    if d > 1e-6 and gb[k].size == 1:  # central difference of the worst leaf under common random numbers
        x = float(sc.params(jnp.float64).values[k])
        h = 1e-3 * abs(x) if x else 1e-3
        for dev, g in ((acc, ga), (cpu, gb)):
            f = [mean_on(dev, load_scenario(args.scenario, overrides=[f"{k}={x + s * h!r}"], horizon=args.horizon),
                         nbg, args.seed) for s in (1, -1)]
            print(f"  {dev}: d/d {k} central difference {(f[0] - f[1]) / (2 * h):.9g}, gradient "
                  f"{float(g[k].ravel()[0]):.9g}")
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
