"""report.html: one self-contained page per run (charts embedded as data URIs, inline CSS, no scripts, no network).

It shows what the run was (scenario, description, the scenario file with its source comments), the key metrics
with Monte Carlo standard errors and units, the portfolio's PV and (key-rate) DV01s, the charts, and the
sensitivities (tornado chart and table) where a `sensitivities` run left them.
"""

from __future__ import annotations

import base64
import html
import math
import os
import pathlib
from collections.abc import Mapping, Sequence

from ._metrics import interval_text

# the metrics of the key table, in order, with what a desk calls them
METRIC_LABELS = {
    "y2_change_bp_mean": "2y zero yield change, mean",
    "y10_change_bp_mean": "10y zero yield change, mean",
    "y10_change_bp_q99": "10y zero yield change, 99th percentile",
    "y30_change_bp_mean": "30y zero yield change, mean",
    "y30_change_bp_q99": "30y zero yield change, 99th percentile",
    "y10_max_rise_bp_q99": "largest 10y zero yield rise over the horizon, 99th percentile",
    "breakeven_10y_change_bp_mean": "10y breakeven change, mean",
    "term_premium_10y_change_bp_mean": "10y term premium change, mean",
    "prob_y10_above_5pct": "probability the 10y zero yield ends above 5%",
    "prob_y10_max_above_5pct": "probability the 10y zero yield exceeds 5% at some point",
    "portfolio_loss_mean": "portfolio loss, mean",
    "portfolio_loss_var_99": "portfolio loss, VaR 99%",
    "portfolio_loss_es_99": "portfolio loss, expected shortfall 99%",
    "foreign_sales_bn_mean": "foreign official sales, mean",
    "forced_sales_bn_mean": "basis-fund forced sales, mean",
    "vol_fund_sales_bn_mean": "vol-targeting fund sales, mean",
    "fed_purchases_bn_mean": "Fed backstop purchases, mean",
    "interest_cost_change_bn_mean": "interest bill change, mean ($bn/year)",
    "mortgage_rate_change_bp_mean": "30y mortgage rate change, mean",
    "equity_return_pct_mean": "equity index return, mean",
    "dollar_change_pct_mean": "dollar index change, mean",
}

CAPTIONS = {
    "fan_10y_30y.png": "10y and 30y par yields over the reporting dates: median and 25-75, 5-95, 1-99% bands; the "
                       "black line is the observed constant-maturity yield after the scenario's start date.",
    "curve_horizon.png": "Zero curve at the horizon (median, 25-75 and 5-95% bands) against the initial curve.",
    "regimes.png": "Share of paths in each regime at each reporting date.",
    "flows.png": "Foreign official holdings (change), basis-fund forced sales, Fed backstop purchases and dealer "
                 "load, $bn: median, mean and 5-95% band.",
    "loss_hist.png": "Distribution of the portfolio loss at the horizon with VaR 99% and expected shortfall 99%.",
    "interest_bill.png": "Federal interest bill, $bn per year: median and 25-75, 5-95, 1-99% bands.",
    "sensitivities.png": "Sensitivities: change of the metric for a one-scale move of each driver (autodiff).",
}

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:1.2em 2em;
color:#1d1d1f;line-height:1.4}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.desc{font-size:1.1em;margin-top:0}.meta{color:#555;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:.5em .8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{padding:.25em .7em;border-bottom:1px solid #e3e3e3;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr:hover td{background:#f5f8fc}code{font-size:.95em}
details{margin:.6em 0}summary{cursor:pointer;color:#1f5fa8}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em;border:1px solid #e3e3e3}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #e3e3e3}
figcaption{color:#555;font-size:.9em}footer{color:#777;font-size:.8em;margin-top:2em}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v, digits: int = 4) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-3 <= a < 1e6:
        return f"{v:,.{max(digits - 1 - int(math.floor(math.log10(a))), 0)}f}"
    return f"{v:.{digits - 1}e}"


def _data_uri(path: pathlib.Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _metric_rows(summary: Mapping, keys: Sequence[str], labels: bool = True) -> list[str]:
    metrics, units = summary.get("metrics", {}), summary.get("units", {})
    rows = []
    for k in keys:
        if k not in metrics:
            continue
        m = metrics[k]
        label = f"{_e(METRIC_LABELS.get(k, ''))}<br><code>{_e(k)}</code>" if labels else f"<code>{_e(k)}</code>"
        rows.append(f"<tr><td>{label}</td><td class=num>{_fmt(m.get('value'))}</td>"
                    f"<td class=num>{_fmt(m.get('stderr'), 2)}</td><td>{_e(units.get(k, '') + interval_text(m))}</td>"
                    "</tr>")
    return rows


def _metrics_table(summary: Mapping, keys: Sequence[str], table_id: str, labels: bool = True) -> str:
    head = "<tr><th>metric</th><th class=num>value</th><th class=num>std. error</th><th>unit</th></tr>"
    return f'<table id="{table_id}">{head}{"".join(_metric_rows(summary, keys, labels))}</table>'


def _portfolio_section(pf: Mapping) -> str:
    if not pf:
        return ""
    pv, dv01 = pf.get("pv_bn"), pf.get("dv01_bn")
    dv01_mm = dv01 * 1e3 if isinstance(dv01, int | float) else None
    out = [f"<h2>Portfolio: {_e(pf.get('name', ''))}</h2>",
           '<table id="portfolio"><tr><th>quantity</th><th class=num>value</th><th>unit</th></tr>',
           f"<tr><td>present value at t = 0</td><td class=num>{_fmt(pv)}</td><td>$bn</td></tr>",
           f"<tr><td>DV01 (parallel, gain for a 1bp fall)</td><td class=num>{_fmt(dv01_mm)}</td>"
           f"<td>$mm per bp</td></tr></table>"]
    krd = pf.get("key_rate_dv01_bn") or {}
    if krd:
        keys = sorted(krd, key=lambda k: float(k))
        out.append('<table id="key-rate-dv01"><tr><th>key rate</th>'
                   + "".join(f"<th class=num>{_e(k)}y</th>" for k in keys) + "<th class=num>sum</th></tr>")
        vals = [float(krd[k]) * 1e3 for k in keys]
        out.append("<tr><td>DV01, $mm per bp</td>" + "".join(f"<td class=num>{_fmt(v, 3)}</td>" for v in vals)
                   + f"<td class=num>{_fmt(sum(vals), 4)}</td></tr></table>")
    return "\n".join(out)


def _sensitivity_table(sens: Mapping, top: int = 25) -> str:
    rows = []
    for name, v in sens.items():
        if isinstance(v, Mapping):
            val, se = v.get("value"), v.get("stderr")
        else:
            val, se = v, None
        try:
            key = abs(float(val))
        except (TypeError, ValueError):
            continue
        rows.append((key if math.isfinite(key) else -1.0, name, val, se))
    rows.sort(key=lambda r: r[0], reverse=True)
    body = "".join(f"<tr><td><code>{_e(n)}</code></td><td class=num>{_fmt(v)}</td>"
                   f"<td class=num>{_fmt(se, 2) if se is not None else ''}</td></tr>" for _, n, v, se in rows[:top])
    more = f"<p class=meta>{len(rows) - top} smaller drivers not shown.</p>" if len(rows) > top else ""
    return ('<table id="sensitivities"><tr><th>driver</th><th class=num>sensitivity</th>'
            f"<th class=num>std. error</th></tr>{body}</table>{more}")


def _figure(path: pathlib.Path) -> str:
    cap = CAPTIONS.get(path.name, path.stem.replace("_", " "))
    return (f'<figure><img src="{_data_uri(path)}" alt="{_e(path.stem)}" data-chart="{_e(path.name)}">'
            f"<figcaption>{_e(cap)}</figcaption></figure>")


def render_report(summary: Mapping, pngs: Sequence[str | os.PathLike], scenario_text: str,
                  sensitivities: Mapping | None = None, tornado: str | os.PathLike | None = None,
                  key_metrics: Sequence[str] | None = None) -> str:
    """The report page as a string (see `write_report`)."""
    keys = list(key_metrics or METRIC_LABELS)
    name = summary.get("scenario", "")
    horizon = summary.get("horizon_years")
    meta = [f"{summary.get('paths', 0):,} paths", f"{summary.get('steps', '?')} steps"]
    if isinstance(horizon, int | float):
        meta.append(f"horizon {horizon:.3g} year{'' if horizon == 1 else 's'}")
    meta += [f"seed {summary.get('seed', '?')}", f"{summary.get('dtype', '')} on {summary.get('backend', '')}",
             f"wall time {_fmt(summary.get('wall_time_s'), 3)} s", f"config hash {summary.get('config_hash', '')}",
             f"jaxstress {summary.get('version', '')}"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>jaxstress report: {_e(name)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>Scenario {_e(name)}</h1>",
        f'<p class=desc>{_e(summary.get("description", ""))}</p>',
        f'<p class=meta>{_e(", ".join(meta))}</p>',
    ]
    if summary.get("config_file"):
        parts.append(f'<p class=meta>config file: <code>{_e(summary["config_file"])}</code></p>')
    if summary.get("note"):  # the 10y left the range the model is built for (`_simulate.range_note`)
        parts.append(f'<p class=warn><strong>Warning:</strong> {_e(summary["note"])}</p>')
    parts += [
        "</header>",
        "<details><summary>Scenario file (its comments give the source of every number)</summary>",
        f"<pre>{_e(scenario_text)}</pre></details>",
        "<h2>Key metrics</h2>",
        "<p class=meta>Values at the horizon over all paths; standard errors are Monte Carlo errors.</p>",
        _metrics_table(summary, keys, "metrics"),
    ]
    all_keys = sorted(summary.get("metrics", {}))
    if all_keys:
        parts += [f"<details><summary>All {len(all_keys)} metrics</summary>",
                  _metrics_table(summary, all_keys, "all-metrics", labels=False), "</details>"]
    parts.append(_portfolio_section(summary.get("portfolio") or {}))
    pngs = [pathlib.Path(p) for p in pngs]
    if pngs:
        parts.append("<h2>Charts</h2>")
        parts += [_figure(p) for p in pngs]
    tornado = pathlib.Path(tornado) if tornado is not None else None
    if sensitivities or (tornado is not None and tornado.is_file()):
        parts.append("<h2>Sensitivities</h2>")
        if tornado is not None and tornado.is_file():
            parts.append(_figure(tornado))
        if sensitivities:
            parts.append(_sensitivity_table(sensitivities))
    parts.append("<footer>Generated by jaxstress. Amounts in $bn unless stated; yields in %, changes in bp."
                 "</footer></body></html>")
    return "\n".join(parts) + "\n"


def write_report(out_dir: str | os.PathLike, summary: Mapping, pngs: Sequence[str | os.PathLike], scenario_text: str,
                 sensitivities: Mapping | None = None) -> pathlib.Path:
    """Write out_dir/report.html and return its path.

    `pngs` are embedded in order; `out_dir/sensitivities.png` (the tornado chart) is embedded too when it exists,
    with a table of `sensitivities` (driver -> value, or driver -> {"value", "stderr"}) when given.
    """
    out_dir = pathlib.Path(out_dir)
    tornado = out_dir / "sensitivities.png"
    pngs = [p for p in pngs if pathlib.Path(p).name != "sensitivities.png"]
    text = render_report(summary, pngs, scenario_text, sensitivities, tornado)
    path = out_dir / "report.html"
    tmp = out_dir / ".report.html.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def scenario_source_text(file: str | os.PathLike | None, overrides: Sequence[str] = (), max_depth: int = 8) -> str:
    """The scenario file's text followed by the files it extends (their comments carry the sources), and the
    command-line overrides. Unreadable files are noted, not raised: the run itself already read them."""
    import tomllib

    from ._config import resolve_path

    parts: list[str] = []
    if overrides:
        parts.append("# command-line overrides: " + " ".join(f"--set {o}" for o in overrides) + "\n")
    seen: set[str] = set()
    current = str(file) if file else None
    depth = 0
    while current and depth < max_depth:
        try:
            path = resolve_path(current)
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as e:  # ConfigError is a ValueError
            parts.append(f"# ({current}: not readable: {e})\n")
            break
        key = str(path.resolve())
        if key in seen:
            break
        seen.add(key)
        header = f"# ===== {path.name}" + (" (extended by the file above)" if depth else "") + " =====\n"
        parts.append(header + text.rstrip("\n") + "\n")
        try:
            parent = tomllib.loads(text).get("extends")
        except tomllib.TOMLDecodeError:
            parent = None
        if isinstance(parent, str) and parent.endswith(".toml") and not pathlib.Path(parent).is_absolute():
            parent = str(path.parent / parent)
        current = parent if isinstance(parent, str) else None
        depth += 1
    return "\n".join(parts) if parts else "(scenario file not available)"
