"""Reverse stress tests: the smallest driver changes that move a metric to a target, solved through the simulator.

    python scripts/reverse_stress.py --out-dir runs/reverse --paths 2048 --steps 60 --seed 0

Examples (each writes <out-dir>/<name>/reverse.json and prints the solution and its re-estimate on fresh paths):
- april_2025_prob40: in the April 2025 scenario, what Japanese official selling or basis-fund leverage makes the
  probability that the 10y is above 5% in a year 40%? (from ~29%)
- baseline_liquidation: from calm markets, what liquidation programs of Japan and China (in $100bn units) lift the
  mean 10y in a year to 5%?
- march_2020_y10: in the dash for cash of March 2020, what basis-fund position or haircut sensitivity gives a
  +100bp mean 10y move over the first 7 business days (observed +64bp)? Skipped if `march_2020` is not shipped.
Reproducible from the seed (optimisation paths `seed`, fresh paths `seed + 1`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXAMPLES = {
    "april_2025_prob40": dict(scenario="april_2025", metric="prob_y10_above_5pct", target=0.40,
                              drivers=["holders.japan.sell_rate", "basis_funds.leverage"], horizon=None),
    "baseline_liquidation": dict(scenario="baseline", metric="y10_level_pct_mean", target=5.0,
                                 drivers=["holders.japan.program_total", "holders.china.program_total"],
                                 horizon=None),
    "march_2020_y10": dict(scenario="march_2020", metric="y10_change_bp_mean", target=100.0,
                           drivers=["basis_funds.position", "basis_funds.haircut_vol"], horizon=7 / 252),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path("runs/reverse"))
    ap.add_argument("--examples", default=",".join(EXAMPLES), help=f"comma list of {', '.join(EXAMPLES)}")
    ap.add_argument("--paths", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxstress._calibrate_cli import _jsonable, format_reverse
    from jaxstress._config import configs_dir, load_scenario
    from jaxstress._errors import ConfigError
    from jaxstress._output import atomic_dir
    from jaxstress._reverse import reverse_stress

    status = 0
    for name in [e.strip() for e in args.examples.split(",") if e.strip()]:
        if name not in EXAMPLES:
            print(f"unknown example '{name}': choose from {', '.join(EXAMPLES)}", file=sys.stderr)
            return 2
        ex = EXAMPLES[name]
        if not (configs_dir() / f"{ex['scenario']}.toml").is_file():
            print(f"{name}: skipped, no shipped scenario '{ex['scenario']}'")
            continue
        t0 = time.perf_counter()
        try:
            sc = load_scenario(ex["scenario"], horizon=ex["horizon"])
            res = reverse_stress(sc, ex["metric"], ex["target"], ex["drivers"], n_paths=args.paths, seed=args.seed,
                                 steps=args.steps)
        except ConfigError as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            status = 2
            continue
        print(format_reverse(res))
        if not res["reached"]:
            print(f"{name}: target not reached within the bounds and {args.steps} evaluations; closest point shown")
        with atomic_dir(args.out_dir / name) as tmp:
            (tmp / "reverse.json").write_text(json.dumps(_jsonable(res), indent=1) + "\n")
        print(f"wrote {args.out_dir / name / 'reverse.json'} ({time.perf_counter() - t0:.1f} s)\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
