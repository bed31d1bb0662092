"""Risk metrics with Monte Carlo standard errors, from per-path values.

Standard errors: a mean's is sd/sqrt(n); a standard deviation's uses the fourth moment,
sqrt((m4 - s^4) / (4 s^2 n)); a quantile's is the distance between the empirical quantiles at
q -/+ 1.96 sqrt(q(1-q)/n) over 2 x 1.96 (the 95% order-statistic interval, which needs no density estimate;
its spacing spans 1.96 times as many order statistics as the one at q -/+ sqrt(q(1-q)/n), so the error is less
noisy itself, and over 1,000 model runs +-1.96 errors covered q01 / q99 94-95% of the time rather than
86-93%); a probability's is sqrt(p(1-p)/n), and a probability also gets a 95% Wilson score interval (`wilson`),
which stays informative where few or no paths cross and sqrt(p(1-p)/n) is 0 or too small; expected shortfall
ES_q = VaR_q + E[(L - VaR_q)+] / (1 - q) has the standard error of that mean, std((L - VaR_q)+) / ((1 - q) sqrt(n)).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TAIL_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def _scaled(x: np.ndarray) -> tuple[np.ndarray, float]:
    """(x / a, a) with a = max |x|: moments of finite values as large as the float maximum (an unstable but finite
    run) are computed without overflow in squares and fourth powers, then scaled back."""
    a = float(np.max(np.abs(x))) if x.size else 0.0
    return (x / a, a) if 0.0 < a < np.inf else (x, 1.0)


def mean_se(x: np.ndarray) -> tuple[float, float]:
    n = x.size
    z, a = _scaled(x)
    return float(z.mean()) * a, float(z.std(ddof=1)) * a / np.sqrt(n) if n > 1 else float("nan")


def sd_se(x: np.ndarray) -> tuple[float, float]:
    n = x.size
    z, a = _scaled(x)
    if n < 2:
        return float("nan"), float("nan")
    c2 = z - z.mean()
    c2 *= c2  # in place, and no float power (x ** 4 is a slow pow call per element in NumPy)
    sz = float(np.sqrt(c2.sum() / (n - 1)))
    if n < 3 or sz == 0:
        return sz * a, 0.0 if sz == 0 else float("nan")
    m4 = float(np.mean(c2 * c2))
    return sz * a, float(np.sqrt(max(m4 - sz**4, 0.0) / (4 * sz * sz * n))) * a


def quantiles_se(x: np.ndarray, qs) -> list[tuple[float, float]]:
    """(quantile, stderr) for each level in qs, from one selection pass over x (np.quantile partitions at every
    requested order statistic together: 10^8 paths take seconds, not minutes as one call per level would)."""
    n = x.size
    qs = np.asarray(qs, np.float64)
    d = Z95 * np.sqrt(qs * (1 - qs) / n)
    v = np.quantile(x, np.concatenate([qs, np.maximum(qs - d, 0.0), np.minimum(qs + d, 1.0)]))
    k = qs.size
    return [(float(v[i]), float((v[2 * k + i] - v[k + i]) / (2 * Z95))) for i in range(k)]


def quantile_se(x: np.ndarray, q: float) -> tuple[float, float]:
    """The q-quantile and its standard error: the distance between the empirical quantiles at
    q -/+ 1.96 sqrt(q (1 - q) / n) over 2 x 1.96."""
    return quantiles_se(x, [q])[0]


def prob_se(ind: np.ndarray) -> tuple[float, float]:
    p = float(ind.mean())
    return p, float(np.sqrt(p * (1 - p) / ind.size))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (lower, upper) of a probability from k successes in n trials, at the normal
    quantile z (95% two-sided by default): the p with |k/n - p| <= z sqrt(p(1-p)/n). Unlike k/n -/+ z times the
    plug-in standard error it is not empty at k = 0 (upper bound z^2/(n + z^2), about 3.84/n) or k = n, and its
    coverage is near the nominal level down to a few successes."""
    if n <= 0:
        return float("nan"), float("nan")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at k = 0 (k = n) the bound is exactly 0 (1); the formula gives it up to a rounding
    return (0.0 if k == 0 else float(centre - half)), (1.0 if k == n else float(centre + half))


def prob_interval(ind: np.ndarray) -> dict[str, float | list[float]]:
    """{"value", "stderr", "interval"} of a probability from per-path indicators: the share of paths, its
    plug-in standard error and its 95% Wilson interval."""
    p, se = prob_se(ind)
    return {"value": p, "stderr": se, "interval": list(wilson(int(np.count_nonzero(ind)), ind.size))}


def interval_text(entry: dict) -> str:
    """", 95% [lower, upper]" for a statistic with an interval (a probability's Wilson interval), else ""."""
    lo, hi = entry.get("interval") or (None, None)
    return f", 95% [{lo:.3g}, {hi:.3g}]" if isinstance(lo, int | float) and isinstance(hi, int | float) else ""


def estimate(x: np.ndarray, kind: str, q: float = 0.0, level: float = 0.0) -> tuple[float, float]:
    """(value, standard error) of a metric of kind "mean", "quantile" (at q), "es" (at q) or "prob" (x > level)
    from per-path values x: the plain estimators a run reports, for every verb that reports a metric."""
    if kind == "mean":
        return mean_se(x)
    if kind == "prob":
        return prob_se(x > level)
    if kind == "quantile":
        return quantile_se(x, q)
    if kind == "es":
        return es_se(x, q)
    raise ValueError(f"unknown kind of metric {kind!r}")


def es_se(loss: np.ndarray, q: float) -> tuple[float, float]:
    z, a = _scaled(loss)
    var = float(np.quantile(z, q))
    excess = np.maximum(z - var, 0.0)
    es = (var + float(excess.mean()) / (1 - q)) * a
    if loss.size < 2:
        return es, float("nan")
    return es, float(excess.std(ddof=1) / ((1 - q) * np.sqrt(loss.size))) * a


# the first tag a metric's name holds gives its unit (the interest bill's change is a change of an annual rate)
UNITS = {"interest_cost_change_bn": "$bn/year", "_bp": "bp", "_bn": "$bn", "_pct": "%", "portfolio_loss": "$bn",
         "prob_": "probability"}

# per-path metric -> which statistics are reported
_WITH_QUANTILES = ("y2_change_bp", "y10_change_bp", "y30_change_bp", "y10_max_rise_bp", "breakeven_10y_change_bp",
                   "term_premium_10y_change_bp", "mortgage_rate_change_bp", "interest_cost_change_bn",
                   "forced_sales_bn", "equity_return_pct", "dollar_change_pct")
_SKIP = ("y10_level_pct", "y10_max_level_pct", "regime_logp")


def _metric_stats(name: str, x: np.ndarray) -> list[tuple[str, tuple[float, float]]]:
    """(statistic name, (value, stderr)) of one per-path metric, computed in float64."""
    x = np.asarray(x, np.float64)
    out = [(f"{name}_mean", mean_se(x)), (f"{name}_sd", sd_se(x))]
    if name in _WITH_QUANTILES:
        pairs = quantiles_se(x, TAIL_QUANTILES)
        out += [(f"{name}_q{round(q * 100):02d}", pair) for q, pair in zip(TAIL_QUANTILES, pairs)]
    return out


def summary_workers(n_paths: int) -> int:
    """Threads for `summarize` (NumPy releases the GIL in its sorts and reductions): up to 8 CPU cores, as many as
    the transient float64 copies of a metric (about 4 x 8 bytes a path each) fit in a quarter of the available
    memory."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: assume enough for two
        avail = 2 * 4 * 32 * n_paths
    return max(1, min(os.cpu_count() or 1, 8, int(avail / 4 / (32 * max(n_paths, 1)))))


def summarize(per_path: dict[str, np.ndarray], level: float = 5.0,
              workers: int | None = None) -> dict[str, dict[str, float]]:
    """Metric name -> {"value", "stderr"} for every statistic of the per-path metrics (`SimulationResult.metrics`):
    means, standard deviations, tail quantiles, ES, and the probabilities that the 10y ends (or peaks) above
    `level` percent (named `prob_y10_above_<level>pct`, a decimal point written as 'p'), which also get
    "interval", their 95% Wilson interval [lower, upper]. A run's summary.json
    adds the foreign holders' sales by holder (`_output.holder_sales`). Per-path values in float32 are
    summarized in float64 (one copy per metric in flight). The metrics are summarized in `workers` threads
    (None: `summary_workers`), with the same results as one."""
    out: dict[str, dict[str, float]] = {}

    def put(name, pair):
        out[name] = {"value": pair[0], "stderr": pair[1]}

    items = [(name, x) for name, x in per_path.items() if name not in _SKIP]
    n = max((np.size(x) for _, x in items), default=0)
    workers = summary_workers(n) if workers is None else workers
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            stats = list(pool.map(lambda item: _metric_stats(*item), items))
    else:
        stats = [_metric_stats(*item) for item in items]
    for rows in stats:
        for name, pair in rows:
            put(name, pair)
    # the statistics of particular metrics, where the metrics are given (a dict of some metrics is summarized too)
    if "portfolio_loss" in per_path:
        loss = np.asarray(per_path["portfolio_loss"], np.float64)
        for q, pair in zip((0.95, 0.99), quantiles_se(loss, (0.95, 0.99))):
            put(f"portfolio_loss_var_{round(q * 100)}", pair)
            put(f"portfolio_loss_es_{round(q * 100)}", es_se(loss, q))
    level = float(level)
    tag = f"{level:g}".replace(".", "p")
    for name, prob in (("y10_level_pct", "prob_y10_above"), ("y10_max_level_pct", "prob_y10_max_above")):
        if name in per_path:
            out[f"{prob}_{tag}pct"] = prob_interval(np.asarray(per_path[name], np.float64) > level)
    return out


def unit_of(metric: str) -> str:
    if metric.startswith("prob_"):
        return "probability"
    for tag, unit in UNITS.items():
        if tag in metric:
            return unit
    return ""
