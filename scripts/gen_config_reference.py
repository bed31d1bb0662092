"""Write docs/CONFIG.md, the reference of every scenario key (meaning, unit, bounds), from jaxstress/_schema.py.

    python scripts/gen_config_reference.py            # rewrite docs/CONFIG.md
    python scripts/gen_config_reference.py --check    # exit 1 if docs/CONFIG.md is stale (used by the tests)
"""

import pathlib
import sys

from jaxstress._schema import CORRELATED_SHOCKS, DYNAMIC_TABLES, SECTIONS

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def _bounds(f) -> str:
    if f.lo is None and f.hi is None:
        return ""
    lo = "-inf" if f.lo is None else f"{f.lo:g}"
    hi = "inf" if f.hi is None else f"{f.hi:g}"
    return f"{'(' if f.lo_open else '['}{lo}, {hi}]"


def _table(rows, prefix) -> list[str]:
    out = ["| key | type | unit | bounds | scale | meaning |", "|---|---|---|---|---|---|"]
    for key, f in rows.items():
        scale = "" if f.kind in ("str", "strs", "bool", "ints") or f.static else f"{f.scale:g}"
        default = f" (default {f.default})" if f.default is not None else ""
        out.append(f"| `{prefix}{key}` | {f.kind} | {f.unit} | {_bounds(f)} | {scale} | {f.doc}{default} |")
    return out


def render() -> str:
    lines = [
        "# Scenario configuration reference",
        "",
        "Generated from `jaxstress/_schema.py` by `scripts/gen_config_reference.py`; do not edit by hand.",
        "A scenario is a TOML file; `extends = \"baseline\"` (or a path) inherits every key of another scenario.",
        "Each key can be overridden on the command line with `--set key=value`. `scale` is the natural unit of",
        "change used to rank sensitivities (1bp = 0.0001 for rates, $100bn for amounts).",
        "",
    ]
    for sec, rows in SECTIONS.items():
        lines += [f"## [{sec}]", ""] + _table(rows, f"{sec}.") + [""]
    lines += ["## [regimes.NAME] (one table per name in regimes.names)", "",
              "`correlation` is over the shocks to (" + ", ".join(CORRELATED_SHOCKS) + "), identity by default.", ""]
    lines += _table(DYNAMIC_TABLES["regimes"], "regimes.NAME.") + [""]
    lines += ["## [holders.NAME] (one table per foreign official holder)", ""]
    lines += _table(DYNAMIC_TABLES["holders"], "holders.NAME.") + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
