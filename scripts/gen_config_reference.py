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
    return "\n".join(lines + _portfolio_reference())


KIND_MEANING = {  # how `_portfolio.position_values` values each kind at time t ($bn)
    "bond": "a Treasury held to its maturity: notional x (the present value at t of its remaining cash flows on the "
            "simulated curve, its maturity rolling down + the coupons and principal received by t, held as cash)",
    "etf": "a fund of constant maturity: notional x (price at t / price at 0 + coupon x t)",
    "future": "a Treasury future, its cheapest-to-deliver as a bond of this maturity that ages: P&L only, notional x "
              "(clean price at t - clean price at 0) / clean price at 0, the clean price being the price less the "
              "accrued coupon (a negative notional is a short hedge)",
    "equity": "equities: notional x the simulated equity index over its value at t = 0 (`S_t`; the reported "
              "`equity_index` is 100 `S_t`)",
    "cash": "cash: notional x the accrued short-rate factor",
}


def _portfolio_reference() -> list[str]:
    from jaxstress._portfolio import _OPTIONAL, _REQUIRED, FUTURE_COUPON, KINDS, MAX_COUPON, MAX_MATURITY

    assert set(KIND_MEANING) == set(KINDS), "describe every kind of position in KIND_MEANING"
    lines = ["## Portfolio files (`--portfolio NAME_OR_PATH`, `scenario.portfolio`)", "",
             "A portfolio is a TOML file with `name` (a string), an optional `description` and one `[[positions]]`",
             "table per position: `kind`, an optional `name`, and the numbers its kind needs. Notionals are $bn:",
             "face for `bond` and `future`, the value at t = 0 for `etf`, `equity` and `cash`; `coupon` is a",
             f"decimal annual rate in [0, {MAX_COUPON:g}] (0.04 for 4%, paid semiannually); `maturity` is in years, in",
             f"(0, {MAX_MATURITY:g}]. Shipped portfolios are in `jaxstress/configs/portfolios/`.", "",
             "| kind | needs | may give | valued as |", "|---|---|---|---|"]
    for kind in KINDS:
        opt = ", ".join(f"`{k}`" + (f" (default {FUTURE_COUPON:g})" if kind == "future" and k == "coupon" else "")
                        for k in _OPTIONAL[kind])
        lines.append(f"| `{kind}` | {', '.join(f'`{k}`' for k in _REQUIRED[kind])} | {opt} | {KIND_MEANING[kind]} |")
    lines += ["", "```toml", 'name = "my_book"', 'description = "two bonds and a short future"', "",
              "[[positions]]", 'kind = "bond"', "notional = 5.0", "coupon = 0.04", "maturity = 10.0", "",
              "[[positions]]", 'kind = "future"', "notional = -2.0", "maturity = 9.0", "```", ""]
    return lines


def write_or_check(out: pathlib.Path, text: str) -> None:
    """Write a generated doc, or with --check exit 1 where the file differs from it (the tests run that)."""
    if "--check" in sys.argv:
        sys.exit(0 if out.exists() and out.read_text() == text else 1)
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    write_or_check(OUT, render())
