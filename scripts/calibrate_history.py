"""Calibrate the real-world dynamics to daily history and write the numbers (with sources) as JSON.

    python scripts/calibrate_history.py --start 2019-01-01 --end 2025-12-31 --seed 0 --out runs/history.json

Prints: curve RMSE by maturity (bp), OU fits next to simple moment estimates, Hamilton regimes (and the
statsmodels MarkovRegression fit of the same series, if statsmodels is installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        if np.issubdtype(x.dtype, np.datetime64):
            return [str(v) for v in x.astype("datetime64[D]")]
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None  # JSON has no NaN/inf
    if isinstance(x, np.integer):
        return int(x)
    return x


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _statsmodels_check(res, start, end, data_dir):
    try:
        import statsmodels.api as sm
    except ImportError:
        print("  (statsmodels not installed: no reference fit)")
        return None
    from jaxstress._data import CMT_FILE, load_series

    _, y10 = load_series(CMT_FILE, "DGS10", start, end, data_dir)
    dy = np.diff(y10[~np.isnan(y10)]) * 100.0
    fit = sm.tsa.MarkovRegression(dy, k_regimes=2, switching_variance=True).fit(disp=False)
    means = np.asarray(fit.params[2:4])
    variances = np.asarray(fit.params[4:6])
    trans = np.asarray(fit.regime_transition)[..., 0].T  # statsmodels: [i, j] = Pr(j -> i)
    order = np.argsort(variances)
    ref = dict(means_bp=means[order].tolist(), variances_bp2=variances[order].tolist(),
               transition=trans[np.ix_(order, order)].tolist(), loglik=float(fit.llf))
    print(f"  statsmodels: means {np.round(ref['means_bp'], 4)} bp, variances {np.round(ref['variances_bp2'], 3)} "
          f"bp^2, P diag {np.round(np.diag(ref['transition']), 5)}, loglik {ref['loglik']:.4f}")
    return ref


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", default="2019-01-01")
    ap.add_argument("--end", default="2025-12-31")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="folder of the CSVs (default: the package's data/)")
    ap.add_argument("--hamilton-steps", type=int, default=300, help="Adam steps before L-BFGS")
    ap.add_argument("--series", action="store_true", help="also write the daily r_star, p and regime paths")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxstress._calibrate import calibrate_history
    from jaxstress._errors import DataError

    t0 = time.perf_counter()
    try:
        res = calibrate_history(args.start, args.end, args.data_dir, seed=args.seed,
                                hamilton_steps=args.hamilton_steps)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    w = res["window"]
    print(f"window {w['first']} .. {w['last']}: {w['n_days']} common days ({elapsed:.1f} s)")

    c = res["curve"]
    print(f"\ncurve: k={c['k']:.4f}  kc={c['kc']:.4f}  mu={c['mu']:.4f}")
    print("  RMSE bp  " + "  ".join(f"{m:>5}" for m in c["rmse_bp"]))
    print("           " + "  ".join(f"{e:5.1f}" for e in c["rmse_bp"].values()))

    print("\nOU fits (exact MLE) vs moments (sigma = sd(dx) sqrt(252); half-life from lag-1 autocorrelation)")
    print(f"  {'series':7} {'k':>8} {'+-se':>7} {'mean %':>8} {'sigma bp':>9} {'mom.':>7} {'half-life y':>12} "
          f"{'mom.':>7}")
    for name, o in res["ou"].items():
        m = o["moments"]
        print(f"  {name:7} {o['k']:8.3f} {o['se_k']:7.3f} {100 * o['mean']:8.3f} {1e4 * o['sigma']:9.1f} "
              f"{1e4 * m['sigma']:7.1f} {o['half_life']:12.2f} {m['half_life']:7.2f}")

    h = res["hamilton"]
    print(f"\nHamilton: {h['series']}, {h['n']} changes {h['window']}")
    print(f"  jaxstress:   means {np.round(h['means_bp'], 4)} bp, variances {np.round(h['variances_bp2'], 3)} bp^2, "
          f"P diag {np.round(np.diag(h['transition']), 5)}, loglik {h['loglik']:.4f}")
    ref = _statsmodels_check(h, args.start, args.end, args.data_dir)
    print(f"  annual vol {np.round(np.asarray(h['vol_annual']) * 1e4, 1)} bp, expected durations "
          f"{np.round(h['expected_durations_days'], 1)} days")
    print(f"  generator Q (1/year): {np.round(np.asarray(h['generator']), 3).tolist()}")

    print("\nconfig:")
    for key, v in res["config"].items():
        val = v["value"]
        shown = f"{val:.6g}" if isinstance(val, float) else str(val)
        print(f"  {key:20} = {shown}")

    if args.out is not None:
        out = {k: v for k, v in res.items() if k != "series" or args.series}
        if ref is not None:
            out["hamilton_statsmodels"] = ref
        out["argv"] = dict(start=args.start, end=args.end, seed=args.seed, hamilton_steps=args.hamilton_steps)
        _write_atomic(args.out, json.dumps(_jsonable(out), indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
