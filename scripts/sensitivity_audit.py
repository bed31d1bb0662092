"""Every driver's sensitivity against a finite difference on the same paths (common random numbers), in float64.

    python scripts/sensitivity_audit.py [--scenario april_2025] [--horizon 0.1] [--metrics y10_max_rise_bp_mean,...]
                                        [--paths 4096] [--chunk 512] [--seed 7] [--drivers PREFIX,...] [--all]

For each mean metric, `jaxstress.sensitivities` gives the gradient with respect to every driver (or those named,
by prefix); each driver is then moved up and down by a small step (`set_drivers`, so a correlation entry moves
its mirror) and the metric's per-path values recomputed on the same paths.

- Pathwise drivers (every driver but the regime intensities): the difference quotient of the same estimator on
  the same paths differs from its derivative by O(h^2) and the few paths that cross a kink, far less than the
  Monte Carlo error, so the check is tight: |autodiff - difference| * scale <= 2% of the difference * scale
  + 1e-4 of the largest |scaled| gradient of the metric.
- Regime intensities (generator entries, jump intensities): the score function differentiates the probability
  of discrete draws, which a difference on the same uniforms moves by whole draws, so the two are compared in
  their standard errors (|z| <= 4; the difference's from its per-path spread) with a step of 20% of the value
  (at least 0.5 a year), one-sided at 0. Drivers with a `note` (draws too rare to see) are listed, not judged.

Prints the drivers that fail (all with --all) and a count per metric; exits 1 if any failed. Scenarios with a
Fed threshold that paths cross have kinks of their own: the default sets `fed.threshold=1.0` (no purchases).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxstress
from jaxstress._sensitivities import BLOCK, METRIC_NAMES, chunk_values, parse_metric
from jaxstress._simulate import seed_key

SCORE = ("regimes.generator", "jump_intensity")
DEFAULT_METRICS = ("y10_max_rise_bp_mean,portfolio_loss_mean,forced_sales_bn_mean,foreign_sales_bn_mean,"
                   "interest_cost_change_bn_mean,equity_return_pct_mean,dollar_change_pct_mean,basis_change_bp_mean,"
                   "vol_fund_sales_bn_mean,basis_fund_equity_change_bn_mean")


def per_path(params, base: str, paths: int, chunk: int, seed: int) -> np.ndarray:
    """The per-path values of metric `base` on the paths that `sensitivities` uses for these counts."""
    key, nb = seed_key(seed), chunk // BLOCK
    ix = jnp.asarray(METRIC_NAMES.index(base), jnp.int32)
    return np.concatenate([np.asarray(chunk_values(params, key, jnp.asarray(c * nb, jnp.uint32), nb, ix))
                           for c in range(paths // chunk)])


def moved(params, name: str, value: float, base: str, n: int, a) -> np.ndarray | None:
    """The per-path values with driver `name` set to `value`, or None where that is outside its range."""
    try:
        changed = jaxstress.set_drivers(params, {name: value})
    except jaxstress.ConfigError:
        return None
    return per_path(changed, base, n, a.chunk, a.seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="april_2025")
    ap.add_argument("--horizon", type=float, default=0.1)
    ap.add_argument("--set", dest="overrides", action="append", default=None,
                    help="--set overrides (default: fed.threshold=1.0)")
    ap.add_argument("--metrics", default=DEFAULT_METRICS, help="mean metrics, comma-separated")
    ap.add_argument("--paths", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--drivers", default=None, help="driver names or prefixes, comma-separated (default: all)")
    ap.add_argument("--all", action="store_true", help="print every driver's comparison, not only failures")
    a = ap.parse_args(argv)
    overrides = ["fed.threshold=1.0"] if a.overrides is None else a.overrides
    scenario = jaxstress.load_scenario(a.scenario, overrides, horizon=a.horizon)
    params = scenario.params(jnp.float64)
    values = jaxstress.drivers(params)
    chosen = None if a.drivers is None else [d.strip() for d in a.drivers.split(",") if d.strip()]
    failed = 0
    for metric in a.metrics.split(","):
        spec = parse_metric(metric)
        if spec.kind != "mean":
            raise SystemExit(f"{metric}: only mean metrics are audited here (tests/test_sensitivities.py checks "
                             "the others against differences in their standard errors)")
        res = jaxstress.sensitivities(scenario, metric, a.paths, seed=a.seed, chunk_size=a.chunk, drivers=chosen,
                                      dtype=jnp.float64)
        n = res.n_paths
        base = per_path(params, spec.base, n, a.chunk, a.seed)
        top = max(abs(g["scaled"]) for g in res.gradients.values())
        bad = noted = 0
        for name, g in res.gradients.items():
            at = float(values[name])
            if g["note"]:
                noted += 1
                if a.all:
                    print(f"noted {metric} {name}: {g['note']}")
                continue
            score = any(s in name for s in SCORE)
            h = max(0.2 * abs(at), 0.5) if score else g["scale"] * 1e-3
            up, dn = (moved(params, name, at + s * h, spec.base, n, a) for s in (1, -1))
            if up is None and dn is None:
                print(f"skipped {metric} {name}: neither {at:.6g} +- {h:.3g} is a valid value")
                continue
            # one-sided where a move leaves the driver's range (a rate of 0, an intensity of 0)
            d = (base - dn) / h if up is None else (up - base) / h if dn is None else (up - dn) / (2 * h)
            fd, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))
            if score:
                z = (g["value"] - fd) / max(np.hypot(g["stderr"], se), 1e-300)
                ok, how = abs(z) <= 4.0, f"z={z:.2f}"
            else:
                err = abs(g["value"] - fd) * g["scale"]
                ok, how = err <= 0.02 * abs(fd * g["scale"]) + 1e-4 * top, f"scaled error {err:.3g}"
            bad += not ok
            if a.all or not ok:
                print(f"{'ok ' if ok else 'BAD'} {metric} {name}: autodiff {g['value']:.6g} +- {g['stderr']:.2g}, "
                      f"difference {fd:.6g} +- {se:.2g} ({how})", flush=True)
        print(f"{metric}: {len(res.gradients) - noted - bad} agree, {bad} do not, {noted} noted (draws too rare), "
              f"{n} paths", flush=True)
        failed += bad
    return 1 if failed else 0


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)  # float64 (main's caller sets it where it imports main)
    sys.exit(main())
