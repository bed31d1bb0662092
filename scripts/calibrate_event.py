"""Fit shock sizes to the event windows of April 2025 and March 2020 and write the fitted scenario files.

    python scripts/calibrate_event.py --out-dir runs/calibration --paths 2048 --steps 150 --seed 0

For each window: observed vs simulated mean changes (bp) of the 2y, 10y, 30y yields, the 10y breakeven and the ACM
10y term premium before and after the fit, the fitted parameters, and `<base>_event.toml` (extends the base, each
fitted key with a comment naming the window and data files) plus `<base>_event.json` (the whole fit). Reproducible
from the seed: the same seed, paths and steps give the same numbers on the same machine and JAX version.

Windows: April 2025, 2025-04-02..2025-04-11 (the tariff shock, base `april_2025`); March 2020, 2020-03-09..2020-03-18
(the dash for cash, base `march_2020`, skipped with a message if that scenario is not shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

WINDOWS = {
    "april_2025": ("april_2025", "2025-04-02", "2025-04-11"),
    "march_2020": ("march_2020", "2020-03-09", "2020-03-18"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path("runs/calibration"))
    ap.add_argument("--windows", default=",".join(WINDOWS), help=f"comma list of {', '.join(WINDOWS)}")
    ap.add_argument("--paths", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--scale", default="10", help="bp per unit of misfit, or 'sd'")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxstress._calibrate_cli import _jsonable
    from jaxstress._config import configs_dir
    from jaxstress._errors import ConfigError
    from jaxstress._event import fit_event, write_fitted_config

    scale = args.scale if args.scale == "sd" else float(args.scale)
    status = 0
    for name in [w.strip() for w in args.windows.split(",") if w.strip()]:
        if name not in WINDOWS:
            print(f"unknown window '{name}': choose from {', '.join(WINDOWS)}", file=sys.stderr)
            return 2
        base, start, end = WINDOWS[name]
        if not (configs_dir() / f"{base}.toml").is_file():
            print(f"{name}: skipped, no shipped scenario '{base}' (jaxstress/configs/{base}.toml)")
            continue
        t0 = time.perf_counter()
        try:
            fit = fit_event(base, start, end, n_paths=args.paths, steps=args.steps, seed=args.seed, lr=args.lr,
                            scale=scale)
        except ConfigError as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            status = 2
            continue
        print(fit.table())
        out = args.out_dir / f"{base}_event.toml"
        write_fitted_config(base, fit, out)
        (args.out_dir / f"{base}_event.json").write_text(json.dumps(_jsonable(fit.to_dict()), indent=1) + "\n")
        print(f"wrote {out} and {out.with_suffix('.json')} ({time.perf_counter() - t0:.1f} s)\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
