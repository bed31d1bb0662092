"""Risk metrics with Monte Carlo standard errors, from per-path values.

Standard errors: a mean's is sd/sqrt(n); a standard deviation's uses the fourth moment,
sqrt((m4 - s^4) / (4 s^2 n)); a quantile's is half the distance between the empirical quantiles at
q -/+ sqrt(q(1-q)/n) (the order-statistic interval, which needs no density estimate); a probability's is
sqrt(p(1-p)/n); expected shortfall ES_q = VaR_q + E[(L - VaR_q)+] / (1 - q) has the standard error of that mean,
std((L - VaR_q)+) / ((1 - q) sqrt(n)).
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TAIL_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)


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
    sz = float(z.std(ddof=1)) if n > 1 else float("nan")
    if n < 3 or sz == 0:
        return sz * a, 0.0 if sz == 0 else float("nan")
    m4 = float(np.mean((z - z.mean()) ** 4))
    return sz * a, float(np.sqrt(max(m4 - sz**4, 0.0) / (4 * sz * sz * n))) * a


def quantile_se(x: np.ndarray, q: float) -> tuple[float, float]:
    n = x.size
    v = float(np.quantile(x, q))
    d = np.sqrt(q * (1 - q) / n)
    lo, hi = np.quantile(x, [max(q - d, 0.0), min(q + d, 1.0)])
    return v, float((hi - lo) / 2)


def prob_se(ind: np.ndarray) -> tuple[float, float]:
    p = float(ind.mean())
    return p, float(np.sqrt(p * (1 - p) / ind.size))


def es_se(loss: np.ndarray, q: float) -> tuple[float, float]:
    z, a = _scaled(loss)
    var = float(np.quantile(z, q))
    excess = np.maximum(z - var, 0.0)
    es = (var + float(excess.mean()) / (1 - q)) * a
    if loss.size < 2:
        return es, float("nan")
    return es, float(excess.std(ddof=1) / ((1 - q) * np.sqrt(loss.size))) * a


UNITS = {"_bp": "bp", "_bn": "$bn", "_pct": "%", "portfolio_loss": "$bn", "prob_": "probability"}

# per-path metric -> which statistics are reported
_WITH_QUANTILES = ("y2_change_bp", "y10_change_bp", "y30_change_bp", "y10_max_rise_bp", "breakeven_10y_change_bp",
                   "term_premium_10y_change_bp", "mortgage_rate_change_bp", "interest_cost_change_bn",
                   "forced_sales_bn", "equity_return_pct", "dollar_change_pct")
_SKIP = ("y10_level_pct", "y10_max_level_pct", "regime_logp")


def summarize(per_path: dict[str, np.ndarray], level: float = 5.0) -> dict[str, dict[str, float]]:
    """Metric name -> {"value", "stderr"} for every reported statistic."""
    out: dict[str, dict[str, float]] = {}

    def put(name, pair):
        out[name] = {"value": pair[0], "stderr": pair[1]}

    for name, x in per_path.items():
        if name in _SKIP:
            continue
        base = name
        put(f"{base}_mean", mean_se(x))
        put(f"{base}_sd", sd_se(x))
        if name in _WITH_QUANTILES:
            for q in TAIL_QUANTILES:
                put(f"{base}_q{round(q * 100):02d}", quantile_se(x, q))
    loss = per_path["portfolio_loss"]
    for q in (0.95, 0.99):
        put(f"portfolio_loss_var_{round(q * 100)}", quantile_se(loss, q))
        put(f"portfolio_loss_es_{round(q * 100)}", es_se(loss, q))
    tag = f"{level:g}".replace(".", "p")
    put(f"prob_y10_above_{tag}pct", prob_se(per_path["y10_level_pct"] > level))
    put(f"prob_y10_max_above_{tag}pct", prob_se(per_path["y10_max_level_pct"] > level))
    return out


def unit_of(metric: str) -> str:
    if metric.startswith("prob_"):
        return "probability"
    for tag, unit in UNITS.items():
        if tag in metric:
            return unit
    return ""
