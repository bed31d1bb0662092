"""Charts a desk reads after a run: yield fans, the curve at the horizon, regimes, flows, tail loss, interest bill.

Every function draws one PNG with `matplotlib.figure.Figure` directly (no pyplot, so no global figure state and
no GUI backend: safe headless and from threads). Time series are drawn over the scenario's reporting dates
(`simulation.report_days`); finer reporting dates give smoother fans. When the scenario has a `start_date` the time
axis is calendar dates, taken from the observed business-day calendar of the shipped CMT data where it covers
them, and the observed DGS10/DGS30 path is overlaid on the yield fan.

Units follow the design: yields in percent, changes in basis points, amounts in $bn.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.resources
import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.figure import Figure

from ._report import METRIC_LABELS

CMT_FILE = "ust_cmt_yields_daily_fred.csv"
DPI = 110
CHARTS = ("fan_10y_30y.png", "curve_horizon.png", "regimes.png", "flows.png", "loss_hist.png", "interest_bill.png")
# the bands of a fan, widest first: (lower quantile, upper quantile, alpha)
FAN_BANDS = ((0.01, 0.99, 0.15), (0.05, 0.95, 0.25), (0.25, 0.75, 0.4))
BLUE, ORANGE, RED, GREY = "#1f5fa8", "#d9771e", "#b2182b", "#555555"


# ------------------------------------------------------------------------------------------------------------
# data helpers


def _series(res, name: str) -> np.ndarray:
    """Values of a reported variable, shape (reporting dates, retained paths), float64."""
    return res.snapshots[:, res.variables.index(name), :].astype(np.float64)


def _quantiles(x: np.ndarray, qs: Sequence[float]) -> dict[float, np.ndarray]:
    vals = np.quantile(x, list(qs), axis=-1)
    return dict(zip(qs, vals))


def _start_date(res) -> np.datetime64 | None:
    text = res.scenario.config.get("scenario", {}).get("start_date")
    if not text:
        return None
    try:
        return np.datetime64(_dt.date.fromisoformat(str(text)), "D")
    except ValueError:
        return None


def _cmt_path() -> pathlib.Path:
    return pathlib.Path(str(importlib.resources.files("jaxstress") / "data" / CMT_FILE))


def observed_cmt(start: np.datetime64, n_days: int, columns: Sequence[str] = ("DGS10", "DGS30"),
                 path: str | pathlib.Path | None = None) -> dict | None:
    """The observed business days from `start` (day 0) on, at most n_days + 1 of them, and the columns' values.

    Returns {"dates": datetime64[D] array, column: float array with nan where missing} or None when the file is
    missing, unreadable or has no row on or after `start`. A day counts when any of the columns has a value (FRED
    leaves holidays empty).
    """
    path = pathlib.Path(path) if path is not None else _cmt_path()
    if not path.is_file():
        return None
    dates, rows = [], []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "date" not in reader.fieldnames or any(
                    c not in reader.fieldnames for c in columns):
                return None
            for row in reader:
                try:
                    day = np.datetime64(row["date"], "D")
                except ValueError:
                    continue
                if day < start:
                    continue
                vals = [_num(row.get(c)) for c in columns]
                if all(math.isnan(v) for v in vals):
                    continue
                dates.append(day)
                rows.append(vals)
                if len(dates) > n_days:
                    break
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    if not dates:
        return None
    arr = np.asarray(rows, dtype=np.float64)
    out: dict = {"dates": np.asarray(dates, dtype="datetime64[D]")}
    for j, c in enumerate(columns):
        out[c] = arr[:, j]
    return out


def _num(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _business_days(res) -> np.ndarray:
    return np.asarray(res.reports, dtype=np.float64) * 252.0 / res.params.steps_per_year


class _Timeline:
    """The x axis of the time-series charts: calendar dates when the scenario has a start date, else business days.

    Model business day k maps to the k-th observed business day after the start where the CMT data reach, and
    past them (or without data) to `numpy.busday_offset` (weekdays).
    """

    def __init__(self, res):
        self.days = _business_days(res)
        self.start = _start_date(res)
        horizon = int(math.ceil(self.days[-1])) if len(self.days) else 0
        self.observed = observed_cmt(self.start, horizon) if self.start is not None else None
        if self.start is None:
            self.x = self.days
            self.label = "business days from t = 0"
            return
        cal = self.observed["dates"] if self.observed is not None else np.asarray([], "datetime64[D]")
        first = np.busday_offset(self.start, 0, roll="forward")

        def date_of(k: int) -> np.datetime64:
            if k < len(cal):
                return cal[k]
            if len(cal):
                return np.busday_offset(cal[-1], k - (len(cal) - 1), roll="forward")
            return np.busday_offset(first, k, roll="forward")

        self.x = np.asarray([date_of(int(round(d))) for d in self.days], dtype="datetime64[D]")
        self.label = f"date (t = 0 is {self.start})"

    def format(self, ax) -> None:
        ax.set_xlabel(self.label)
        if self.start is not None:
            loc = mdates.AutoDateLocator(minticks=4, maxticks=8)
            ax.xaxis.set_major_locator(loc)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        ax.set_xlim(self.x[0], self.x[-1])


def _title(res, what: str) -> str:
    return f"{res.scenario.name}: {what}"


def _horizon_text(res) -> str:
    years = res.params.n_steps / res.params.steps_per_year
    if years < 0.995:
        return f"{years * 252:.3g} business days"
    return f"{years:.3g} year" + ("" if abs(years - 1) < 1e-9 else "s")


def _subtitle(res) -> str:
    return f"{res.n_paths:,} paths, horizon {_horizon_text(res)}, seed {res.seed}"


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _finish(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _fan(ax, x, samples: np.ndarray, color: str, label: str | None = None, bands=FAN_BANDS,
         markers: bool = True) -> None:
    """Median line and nested quantile bands of `samples` (dates, paths)."""
    qs = sorted({q for lo, hi, _ in bands for q in (lo, hi)} | {0.5})
    qv = _quantiles(samples, qs)
    for lo, hi, alpha in bands:
        ax.fill_between(x, qv[lo], qv[hi], color=color, alpha=alpha, linewidth=0,
                        label=f"{lo * 100:g}-{hi * 100:g}%")
    ax.plot(x, qv[0.5], color=color, linewidth=2, marker="o" if markers else None, markersize=3,
            label=label or "median")


def _bn(v: float) -> str:
    """An amount in $bn with precision that suits its size (a $1bn book and a $9tn holder both read well)."""
    if not math.isfinite(v):
        return "n/a"
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def _plain_formatter() -> ticker.ScalarFormatter:
    """Tick labels as plain numbers: no offset ("+9.05e3") and no scientific notation for $bn amounts."""
    fmt = ticker.ScalarFormatter(useOffset=False)
    fmt.set_powerlimits((-6, 9))
    return fmt


def _grid(ax) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


# ------------------------------------------------------------------------------------------------------------
# charts


def fan_10y_30y(res, summary: Mapping | None, path) -> pathlib.Path:
    """Fan charts of the 10y and 30y yields over the reporting dates, with the observed CMT path when available.

    The model's par yields (semiannual coupons) are drawn, since they are what the CMT series (DGS10, DGS30)
    measure; the zero-yield metrics in the summary differ from them by a few bp at the long end.
    """
    tl = _Timeline(res)
    fig = _new_figure(12, 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    obs = tl.observed
    for ax, (m, col, color) in zip(axes, ((10, "DGS10", BLUE), (30, "DGS30", ORANGE))):
        name = f"par_yield_{m}y" if f"par_yield_{m}y" in res.variables else f"yield_{m}y"
        if name not in res.variables:
            ax.text(0.5, 0.5, f"no {m}y maturity in this scenario", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        _fan(ax, tl.x, _series(res, name), color)
        if obs is not None:
            keep = ~np.isnan(obs[col]) & (obs["dates"] <= tl.x[-1])
            if keep.sum() >= 2:
                ax.plot(obs["dates"][keep], obs[col][keep], color="black", linewidth=1.3,
                        label=f"observed {col} (FRED CMT)")
        kind = "par yield" if name.startswith("par_") else "zero yield"
        ax.set_title(f"{m}-year {kind}")
        ax.set_ylabel("yield, %")
        tl.format(ax)
        _grid(ax)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.suptitle(f"{_title(res, '10y and 30y Treasury yields')}\n{_subtitle(res)}", fontsize=11)
    return _finish(fig, path)


def _maturity_label(m: float) -> str:
    return f"{m * 12:.3g}m" if m < 1 else f"{m:g}y"


def curve_horizon(res, summary: Mapping | None, path) -> pathlib.Path:
    """The zero curve at the horizon (median, 25-75 and 5-95% bands) against the initial curve."""
    mats = np.asarray(res.params.maturities, dtype=np.float64)
    names = [f"yield_{m:g}y" for m in res.params.maturities]
    last = np.stack([_series(res, n)[-1] for n in names])  # (maturities, paths)
    first = np.stack([_series(res, n)[0] for n in names]).mean(axis=1)
    qv = _quantiles(last, (0.05, 0.25, 0.5, 0.75, 0.95))
    fig = _new_figure(9, 5)
    ax = fig.subplots()
    ax.fill_between(mats, qv[0.05], qv[0.95], color=BLUE, alpha=0.2, linewidth=0, label="5-95% at horizon")
    ax.fill_between(mats, qv[0.25], qv[0.75], color=BLUE, alpha=0.35, linewidth=0, label="25-75% at horizon")
    ax.plot(mats, qv[0.5], color=BLUE, linewidth=2, marker="o", markersize=4, label="median at horizon")
    ax.plot(mats, first, color="black", linestyle="--", linewidth=1.5, marker="s", markersize=3,
            label="initial curve (t = 0)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(mats))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([_maturity_label(m) for m in mats]))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(mats[0] * 0.9, mats[-1] * 1.1)
    ax.set_xlabel("maturity, years (log scale)")
    ax.set_ylabel("zero yield (continuously compounded), %")
    _grid(ax)
    ax.legend(loc="best", fontsize=9, framealpha=0.9)
    # the change of the median at a few maturities, in bp, as a readout
    i10 = int(np.argmin(np.abs(mats - 10)))
    ax.text(0.99, 0.02, f"median change at {_maturity_label(mats[i10])}: {(qv[0.5][i10] - first[i10]) * 100:+.0f} bp; "
            f"at {_maturity_label(mats[-1])}: {(qv[0.5][-1] - first[-1]) * 100:+.0f} bp",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color=GREY)
    fig.suptitle(f"{_title(res, 'zero curve at the horizon against t = 0')}\n{_subtitle(res)}", fontsize=11)
    return _finish(fig, path)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


# colours that read right for common regime names (calm green, stress red); others from the palette
_REGIME_COLOURS = (("calm", "#4d9b5a"), ("normal", "#4d9b5a"), ("pause", "#8fb8de"), ("relief", "#8fb8de"),
                   ("escalat", "#8e0f1f"), ("crisis", "#8e0f1f"), ("panic", "#8e0f1f"), ("shock", "#e0752d"),
                   ("stress", "#e0752d"))


def _regime_colours(names: Sequence[str]) -> list:
    fallback = iter(_palette(10) * 2)
    out = []
    for n in names:
        hit = next((c for key, c in _REGIME_COLOURS if key in n.lower()), None)
        out.append(hit if hit is not None and hit not in out else next(fallback))
    return out


def regimes(res, summary: Mapping | None, path) -> pathlib.Path:
    """Share of paths in each regime at each reporting date, as stacked areas (percent)."""
    tl = _Timeline(res)
    reg = np.rint(_series(res, "regime")).astype(int)
    names = list(res.params.regime_names)
    share = np.stack([(reg == i).mean(axis=1) * 100 for i in range(len(names))])
    fig = _new_figure(10, 4.8)
    ax = fig.subplots()
    ax.stackplot(tl.x, share, labels=names, colors=_regime_colours(names), alpha=0.85)
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of paths, %")
    tl.format(ax)
    _grid(ax)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, title="regime")
    fig.suptitle(f"{_title(res, 'regime occupancy')}\n{_subtitle(res)}", fontsize=11)
    return _finish(fig, path)


_FLOW_PANELS = (
    ("foreign_holdings_total", "Foreign official holdings: change since t = 0", True),
    ("forced_sales_cum", "Basis-fund forced sales, cumulative", False),
    ("fed_holdings", "Fed backstop purchases, cumulative", False),
    ("dealer_load", "Dealer inventory load", False),
)


def flows(res, summary: Mapping | None, path) -> pathlib.Path:
    """Holder flows over time in $bn: medians (solid), means (dashed) and 5-95% bands."""
    tl = _Timeline(res)
    fig = _new_figure(12, 7.5)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (name, title, as_change) in zip(axes, _FLOW_PANELS):
        if name not in res.variables:
            ax.set_visible(False)
            continue
        x = _series(res, name)
        if as_change:
            x = x - x[:1]
        _fan(ax, tl.x, x, BLUE, bands=((0.05, 0.95, 0.25),))
        ax.plot(tl.x, x.mean(axis=1), color=RED, linestyle="--", linewidth=1.2, label="mean")
        ax.axhline(0, color=GREY, linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("$bn")
        ax.yaxis.set_major_formatter(_plain_formatter())
        tl.format(ax)
        _grid(ax)
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    for ax in axes[:2]:
        ax.set_xlabel("")
    fig.suptitle(f"{_title(res, 'flows ($bn)')}\n{_subtitle(res)}", fontsize=11)
    return _finish(fig, path)


def loss_hist(res, summary: Mapping | None, path) -> pathlib.Path:
    """Distribution of the portfolio loss at the horizon ($bn, positive = loss) with VaR 99% and ES 99%."""
    loss = np.asarray(res.metrics["portfolio_loss"], dtype=np.float64)
    loss = loss[np.isfinite(loss)]
    metrics = (summary or {}).get("metrics", {})

    def stat(key, fallback):
        v = metrics.get(key, {}).get("value")
        return float(v) if v is not None else float(fallback())

    var99 = stat("portfolio_loss_var_99", lambda: np.quantile(loss, 0.99))
    es99 = stat("portfolio_loss_es_99", lambda: loss[loss >= np.quantile(loss, 0.99)].mean())
    mean = stat("portfolio_loss_mean", lambda: loss.mean() if loss.size else np.nan)
    pv = (summary or {}).get("portfolio", {}).get("pv_bn")
    fig = _new_figure(10, 5)
    ax = fig.subplots()
    if loss.size:
        bins = int(np.clip(np.sqrt(loss.size), 20, 120))
        weights = np.full(loss.size, 100.0 / loss.size)
        ax.hist(loss, bins=bins, weights=weights, color=BLUE, alpha=0.75, edgecolor="white", linewidth=0.3)
        tail = loss >= var99
        if tail.any():
            ax.hist(loss[tail], bins=np.histogram_bin_edges(loss, bins=bins), weights=weights[tail], color=RED,
                    alpha=0.8, edgecolor="white", linewidth=0.3, label="tail beyond VaR 99%")

    def pct(v):
        return f" ({v / pv * 100:.1f}% of PV)" if pv else ""

    ax.axvline(mean, color=GREY, linewidth=1.2, label=f"mean {_bn(mean)} $bn")
    ax.axvline(var99, color=RED, linestyle="--", linewidth=1.6, label=f"VaR 99% {_bn(var99)} $bn{pct(var99)}")
    ax.axvline(es99, color="#67001f", linewidth=1.8, label=f"ES 99% {_bn(es99)} $bn{pct(es99)}")
    ax.set_xlabel("portfolio loss at the horizon, $bn (positive = loss)")
    ax.set_ylabel("share of paths, %")
    _grid(ax)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    pname = (summary or {}).get("portfolio", {}).get("name") or getattr(res.params.portfolio, "name", "")
    pv_txt = f", PV {_bn(pv)} $bn" if pv else ""
    fig.suptitle(f"{_title(res, f'loss of portfolio {pname}{pv_txt}')}\n{_subtitle(res)}", fontsize=11)
    return _finish(fig, path)


def interest_bill(res, summary: Mapping | None, path) -> pathlib.Path:
    """Fan chart of the federal interest bill ($bn per year at the current coupons of the debt)."""
    tl = _Timeline(res)
    x = _series(res, "interest_bill")
    fig = _new_figure(10, 5)
    ax = fig.subplots()
    _fan(ax, tl.x, x, BLUE)
    ax.axhline(x[0].mean(), color=GREY, linestyle="--", linewidth=1, label=f"t = 0: {x[0].mean():,.0f} $bn/y")
    ax.set_ylabel("interest bill, $bn per year")
    ax.yaxis.set_major_formatter(_plain_formatter())
    tl.format(ax)
    _grid(ax)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    fig.suptitle(f"{_title(res, 'federal interest bill')}\n{_subtitle(res)}", fontsize=11)
    return _finish(fig, path)


DRAWERS = {
    "fan_10y_30y.png": fan_10y_30y,
    "curve_horizon.png": curve_horizon,
    "regimes.png": regimes,
    "flows.png": flows,
    "loss_hist.png": loss_hist,
    "interest_bill.png": interest_bill,
}


def draw_all(res, summary: Mapping | None, out_dir) -> list[pathlib.Path]:
    """Draw every run chart into out_dir; returns their paths in the order of CHARTS."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [DRAWERS[name](res, summary, out_dir / name) for name in CHARTS]


# ------------------------------------------------------------------------------------------------------------
# charts of other verbs


def tornado_chart(gradients: Mapping[str, float], path, title: str, *, xlabel: str | None = None,
                  top: int = 20) -> pathlib.Path:
    """Horizontal bars of the largest |value| drivers, largest at the top; red raises the metric, blue lowers it.

    `gradients` maps a driver name to its scaled sensitivity (d metric / d driver x the driver's natural scale).
    Non-finite values are dropped; at most `top` drivers are shown, the number left out is noted.
    """
    items = [(str(k), float(v)) for k, v in gradients.items() if v is not None and math.isfinite(float(v))]
    items.sort(key=lambda kv: abs(kv[1]), reverse=True)
    shown, left = items[:top], len(items) - min(len(items), top)
    shown = shown[::-1]  # barh draws bottom-up
    fig = _new_figure(10, max(3.0, 1.2 + 0.32 * max(len(shown), 1)))
    ax = fig.subplots()
    if shown:
        names = [k for k, _ in shown]
        vals = np.asarray([v for _, v in shown])
        ypos = np.arange(len(shown))
        ax.barh(ypos, vals, color=[RED if v > 0 else BLUE for v in vals], height=0.7)
        ax.set_yticks(ypos, names, fontsize=9)
        span = float(np.max(np.abs(vals))) or 1.0
        ax.set_xlim(-(1.25 if (vals < 0).any() else 0.05) * span, (1.25 if (vals > 0).any() else 0.05) * span)
        for y, v in zip(ypos, vals):
            ax.text(v + (0.01 * span if v >= 0 else -0.01 * span), y, f"{v:.3g}", va="center",
                    ha="left" if v >= 0 else "right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finite sensitivities", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(xlabel or "change of the metric for a one-scale move of the driver")
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    note = f" ({left} smaller not shown)" if left else ""
    fig.suptitle(f"{title}{note}", fontsize=11)
    return _finish(fig, path)


COMPARE_METRICS = (
    "y10_change_bp_mean", "y30_change_bp_q99", "prob_y10_above_5pct", "portfolio_loss_es_99",
    "forced_sales_bn_mean", "interest_cost_change_bn_mean",
)


def compare_chart(summaries: Sequence[Mapping], labels: Sequence[str], path,
                  metrics: Sequence[str] = COMPARE_METRICS) -> pathlib.Path:
    """One small bar chart per metric, a bar per run with a 95% Monte Carlo interval (1.96 standard errors, or a
    probability's Wilson interval, which is not empty where no path crosses)."""
    metrics = [m for m in metrics if any(m in s.get("metrics", {}) for s in summaries)] or list(metrics)[:1]
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = _new_figure(4 * ncols + 1.5, 3.2 * nrows + 0.8)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = _palette(len(summaries))
    xs = np.arange(len(summaries))
    for ax, m in zip(axes, metrics):
        vals, lows, highs = [], [], []
        for s in summaries:
            e = s.get("metrics", {}).get(m)
            v = float(e["value"]) if e and e.get("value") is not None else np.nan
            vals.append(v)
            lo, hi = (e.get("interval") or (None, None)) if e else (None, None)
            if lo is not None and hi is not None:
                below, above = max(v - lo, 0.0), max(hi - v, 0.0)
            else:
                below = above = 1.96 * float(e["stderr"]) if e and e.get("stderr") is not None else 0.0
            lows.append(below)
            highs.append(above)
        vals = np.asarray(vals)
        lows, highs = np.nan_to_num(np.asarray(lows)), np.nan_to_num(np.asarray(highs))
        ax.bar(xs, np.nan_to_num(vals), yerr=np.stack([lows, highs]), color=colors, capsize=4, width=0.7)
        for xi, v, e in zip(xs, vals, np.where(vals >= 0, highs, lows)):
            if np.isnan(v):
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8)
            else:
                ax.annotate(f"{v:.3g}", (xi, v + e if v >= 0 else v - e), xytext=(0, 3 if v >= 0 else -3),
                            textcoords="offset points", ha="center", va="bottom" if v >= 0 else "top", fontsize=8)
        ax.margins(y=0.12)
        unit = next((s.get("units", {}).get(m) for s in summaries if s.get("units", {}).get(m)), "")
        ax.set_title(f"{METRIC_LABELS.get(m, m)}\n({m})", fontsize=9)
        ax.set_ylabel(unit)
        ax.set_xticks([])
        ax.axhline(0, color="black", linewidth=0.6)
        _grid(ax)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=lab) for c, lab in zip(colors, labels)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(labels), 4), fontsize=9)
    fig.suptitle("jaxstress compare: key metrics (bars: value; whiskers: 95% Monte Carlo interval)", fontsize=11)
    return _finish(fig, path)
