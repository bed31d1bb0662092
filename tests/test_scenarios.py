"""Shipped scenarios: each one loads and runs, and the mechanism it is about shows in its numbers against baseline.

Every run here uses the same horizon (0.1 years, 25 daily steps) and chunk size (256 paths, one block), so the
simulator compiles once per scenario structure (regime and holder names, reporting days) and the larger runs are
just more chunks of the same compiled function. Scenarios are compared with `baseline` under common random numbers
(same seed, same path indices), so paired differences have small standard errors.

Statistical tolerances are Z = 4 Monte Carlo standard errors (seeds are fixed, so the tests are deterministic; the
tolerance keeps them from hinging on one seed's luck).
"""

import functools

import numpy as np
import pytest

import jaxstress
from jaxstress._metrics import quantile_se

Z = 4.0  # tolerance in standard errors
HORIZON = 0.1  # years: 25 daily steps
CHUNK = 256  # paths per chunk for every run: one compiled shape per scenario structure
PATHS = 4096  # paths for the mechanism checks
SEED = 0
STEPS = round(HORIZON * 252)
SCENARIOS = sorted(jaxstress.shipped_scenarios())


@functools.cache
def run(name: str, overrides: tuple[str, ...] = (), paths: int = PATHS):
    s = jaxstress.load_scenario(name, overrides=overrides, horizon=HORIZON)
    return jaxstress.simulate(s, paths, seed=SEED, chunk_size=CHUNK)


def change(res, variable: str, day: int, mult: float = 100.0) -> np.ndarray:
    """Per-path change of a reported variable from day 0 to business day `day` (x100: percent -> bp)."""
    v = res.variables.index(variable)
    d = res.reports.index(day)
    return (res.snapshots[d, v] - res.snapshots[0, v]) * mult


def level(res, variable: str, day: int) -> np.ndarray:
    return res.snapshots[res.reports.index(day), res.variables.index(variable)]


def mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(x.size))


def median_se(x: np.ndarray) -> tuple[float, float]:
    return quantile_se(np.asarray(x, np.float64), 0.5)


def paired(name: str, metric: str, overrides: tuple[str, ...] = ()) -> tuple[float, float]:
    """Mean and standard error of (scenario - baseline) for a per-path metric, same seed and paths."""
    return mean_se(run(name, overrides).metrics[metric] - run("baseline").metrics[metric])


def test_all_design_scenarios_are_shipped():
    for name in ("baseline", "april_2025", "march_2020", "japan_liquidation", "china_reduction", "basis_unwind",
                 "fiscal_stress"):
        assert name in SCENARIOS
        assert jaxstress.shipped_scenarios()[name]  # a one-line description for `jaxstress scenarios`


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_loads_and_runs(name):
    s = jaxstress.load_scenario(name, horizon=HORIZON)
    assert s.name == name
    res = jaxstress.simulate(s, 256, seed=SEED, chunk_size=CHUNK)
    assert res.n_paths == 256
    for metric, x in res.metrics.items():
        assert x.shape == (256,), metric
        assert np.all(np.isfinite(x)), metric
    assert np.all(np.isfinite(res.snapshots))
    # no absurd moves over 25 business days: a 10y rise of thousands of bp means an unstable spiral
    assert np.quantile(res.metrics["y10_max_rise_bp"], 0.99) < 1000.0
    assert np.all(res.metrics["foreign_sales_bn"] >= -1e-3)


def test_april_2025_is_a_term_premium_shock():
    """April 2-11 2025: 10y and 30y up tens of bp, the 2y less, the term premium most of it, breakevens not rising."""
    res = run("april_2025")
    day = 10
    y2, y10, y30 = (change(res, f"yield_{m}y", day) for m in (2, 10, 30))
    tp, be = change(res, "term_premium_10y", day), change(res, "breakeven_10y", day)
    m10, se10 = median_se(y10)
    m30, se30 = median_se(y30)
    assert m10 + Z * se10 >= 10.0
    assert m30 + Z * se30 >= 10.0
    m2, se2 = median_se(y2)
    assert m2 < m10 + Z * np.hypot(se2, se10)
    assert np.median(y2 - y10) < 0.0  # paired: the curve steepens in most paths
    mtp, setp = median_se(tp)
    assert mtp > 0.5 * m10 - Z * np.hypot(setp, 0.5 * se10)
    mbe, sebe = median_se(be)
    assert mbe - Z * sebe <= 3.0  # breakevens do not rise with the 10y


def test_japan_liquidation_sells_the_program_pro_rata_and_lifts_yields():
    res, base = run("japan_liquidation"), run("baseline")
    years = STEPS / 252
    pro_rata = 1200.0 * years / 1.0  # $1,200bn over 12 months
    sold = level(res, "holdings_japan", 0) - level(res, "holdings_japan", STEPS)
    base_sold = level(base, "holdings_japan", 0) - level(base, "holdings_japan", STEPS)
    # the program is deterministic; what is left is baseline's small pro-cyclical selling (and rounding)
    assert np.mean(sold - base_sold) == pytest.approx(pro_rata, rel=0.02)
    d, se = paired("japan_liquidation", "foreign_sales_bn")
    assert d == pytest.approx(pro_rata, rel=0.05)
    d, se = paired("japan_liquidation", "y10_change_bp")
    assert d > Z * se and d > 5.0  # $119bn of extra supply in five weeks: the 10y is higher
    d, se = paired("japan_liquidation", "term_premium_10y_change_bp")
    assert d > Z * se


def test_china_reduction_sells_steadily_and_more_when_yields_rise():
    res, base = run("china_reduction"), run("baseline")
    years = STEPS / 252
    pro_rata = 382.7 * years / 2.0  # half of $765.4bn over 24 months
    sold = level(res, "holdings_china", 0) - level(res, "holdings_china", STEPS)
    base_sold = level(base, "holdings_china", 0) - level(base, "holdings_china", STEPS)
    extra = sold - base_sold
    assert np.all(extra >= pro_rata * 0.97)
    # pro-cyclical: beyond the program China sells more in the paths where the 10y rose most
    rise = res.metrics["y10_max_rise_bp"]
    hi, lo = rise >= np.quantile(rise, 0.75), rise <= np.quantile(rise, 0.25)
    gap = np.mean(extra[hi]) - np.mean(extra[lo])
    se = np.hypot(np.std(extra[hi]) / np.sqrt(hi.sum()), np.std(extra[lo]) / np.sqrt(lo.sum()))
    assert gap > Z * se
    d, se = paired("china_reduction", "foreign_sales_bn")
    assert d >= pro_rata * 0.97
    d, se = paired("china_reduction", "y10_change_bp")
    assert d > Z * se


def test_basis_unwind_forces_deleveraging_and_widens_the_basis():
    d, se = paired("basis_unwind", "forced_sales_bn")
    assert d > Z * se and d > 100.0  # a margin spiral, not a trickle: hundreds of $bn
    res, base = run("basis_unwind"), run("baseline")
    assert np.median(level(res, "basis_fund_position", 5)) < 0.9 * np.median(level(base, "basis_fund_position", 5))
    widening = change(res, "basis_bp", 5, 1.0) - change(base, "basis_bp", 5, 1.0)
    m, se = mean_se(widening)
    assert m > Z * se and m > 5.0
    d, se = paired("basis_unwind", "y10_max_rise_bp")
    assert d > Z * se
    d, se = paired("basis_unwind", "fed_purchases_bn")
    assert d > Z * se  # the backstop is what stops the spiral


def test_fiscal_stress_raises_the_term_premium_and_the_interest_bill():
    d, se = paired("fiscal_stress", "interest_cost_change_bn")
    assert d > Z * se
    d, se = paired("fiscal_stress", "term_premium_10y_change_bp")
    assert d > Z * se and d > 5.0
    d, se = paired("fiscal_stress", "y30_change_bp")
    assert d > Z * se


def test_march_2020_fed_backstop_lowers_the_10y_tail():
    on = run("march_2020").metrics
    off = run("march_2020", ("fed.backstop=false",)).metrics
    assert np.mean(on["fed_purchases_bn"]) > 0.0 and np.all(off["fed_purchases_bn"] == 0.0)
    q_on, se_on = quantile_se(on["y10_max_rise_bp"], 0.99)
    q_off, se_off = quantile_se(off["y10_max_rise_bp"], 0.99)
    assert q_on < q_off - Z * np.hypot(se_on, se_off)


def test_march_2020_matches_the_dash_for_cash_window():
    """9 -> 18 March 2020 (7 business days): 10y +64bp, 10y breakeven -36bp, 3m bill -31bp; foreign sales large."""
    res = run("march_2020")
    day = 7
    y10 = change(res, "yield_10y", day)
    # the observed move lies in the bulk of the simulated distribution, whose median is a sizeable rise
    assert np.quantile(y10, 0.05) < 64.0 < np.quantile(y10, 0.95)
    m, se = median_se(y10)
    assert m - Z * se > 30.0
    m, se = median_se(change(res, "breakeven_10y", day))
    assert m + Z * se < -10.0  # breakevens fell while nominal yields rose
    m, se = median_se(change(res, "yield_0.25y", day))
    assert m + Z * se < -10.0  # bills rallied
    m, se = median_se(change(res, "equity_index", day, 1.0))
    assert m + Z * se < 0.0  # stocks fell with bonds: the hedge failed
    # TIC: all foreign holders -$277bn in March 2020; foreign official -$147bn of it
    sales = level(res, "foreign_sales_cum", 21)
    assert 147.0 < np.mean(sales) < 400.0
    assert np.mean(level(res, "forced_sales_cum", day)) > 50.0  # the basis trade unwound
