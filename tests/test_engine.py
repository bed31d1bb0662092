"""The stress engine: closed forms (OU moments, curve limits, regime chain), mechanisms and invariants.

Everything here runs in float64. Compiling the simulator is the expensive part (seconds per shape), so all
simulations share one compiled function: they all run `april_2025` (initial regime tariff_shock) over the same
horizon (a quarter of daily steps) with the same chunk size, and differ only in numeric config values (leaves of
the parameter pytree) and in the number of chunks. Closed-form checks switch the scenario's shocks off with
`--set`-style overrides; the chunk-size test adds two chunk shapes.

Statistical tolerances are Z = 4 Monte Carlo standard errors (a false alarm has probability ~6e-5 per check, and
the seeds are fixed, so the tests are deterministic).
"""

import functools
import math

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.linalg  # noqa: E402
from _same import assert_same_results  # noqa: E402

from jaxstress import ConfigError, _simulate, load_scenario, simulate  # noqa: E402
from jaxstress._curve import loadings, par_yield_from_zero, zero_yields  # noqa: E402
from jaxstress._regimes import sample_next, stationary_distribution, transition_matrix  # noqa: E402
from jaxstress._simulate import BLOCK, METRIC_NAMES  # noqa: E402

Z = 4.0  # tolerance in standard errors
HORIZON = 0.25  # years: 63 daily steps; reporting steps 0, 5, 10, 21, 63
CHUNK = 1024  # paths per chunk for every run (4 blocks): keeps the compiled shapes fixed
PATHS = 4096

# Every shock and flow of `april_2025` switched off; the regime stays in tariff_shock (so its shifts and volatility
# multipliers enter the closed forms below). Drivers either do not revert (k = 0) or sit at their targets: the term
# premium starts at its tariff_shock target (mean + tau_shift), the short rate at r_star + pi, its target when the
# reaction function has phi_pi = phi_stress = 0. The basis-fund rule is made hard (width 0): with a smooth rule and
# no position the funds trade anyway (see test_no_basis_funds_means_no_forced_sales).
ZERO_GENERATOR = "regimes.generator=" + str(np.zeros((4, 4)).tolist())
QUIET = (
    ZERO_GENERATOR, "regimes.tariff_shock.jump_intensity=0.0", "regimes.tariff_shock.foreign_selling=0.0",
    "short_rate.sigma=0.0", "inflation.sigma=0.0", "term_premium.sigma=0.0", "neutral_rate.sigma=0.0",
    "policy_path.sigma=0.0", "basis_funds.sigma_bp=0.0", "equity.sigma=0.0", "dollar.sigma=0.0",
    "short_rate.phi_pi=0.0", "short_rate.phi_stress=0.0", "initial.r=0.0436",  # = r_star + pi at t=0
    "initial.tau=0.01123",  # = term_premium.mean + tariff_shock.tau_shift
    "inflation.k=0.0", "neutral_rate.k=0.0", "policy_path.k=0.0",
    "holders.japan.procyclical_dollar=0.0", "holders.cayman.procyclical_rates=0.0",
    "basis_funds.position=0.0", "basis_funds.width=0.0", "vol_funds.holdings=0.0", "fed.backstop=false",
    "issuance.deficit=0.0", "issuance.absorption=0.0",  # the regime's multipliers would unbalance equal amounts
)
SCENARIO = "april_2025_prior"  # hand-set shock sizes: QUIET below relies on their values


def run(overrides=(), paths=PATHS, seed=0, chunk=CHUNK):
    scenario = load_scenario(SCENARIO, overrides=list(overrides), horizon=HORIZON)
    return simulate(scenario, paths, seed=seed, chunk_size=chunk)


@functools.cache
def cached_run(overrides=(), paths=PATHS, seed=0):
    return run(overrides, paths, seed)


def values(res, name, report=-1):
    """Per-path values of a reported variable at one reporting date (index into res.reports)."""
    return res.snapshots[report, res.variables.index(name)]


def quantile_se(x, q):
    """Standard error of an empirical quantile: half the order-statistic interval at q -/+ sqrt(q(1-q)/n)."""
    d = math.sqrt(q * (1 - q) / x.size)
    lo, hi = np.quantile(x, [q - d, q + d])
    return (hi - lo) / 2


# ----------------------------------------------------------------------------------------------------------------
# closed forms: the curve

zero_yields_jit = jax.jit(zero_yields)
loadings_jit = jax.jit(loadings)
transition_matrix_jit = jax.jit(transition_matrix)
CURVE_PARAMS = [(0.2094, 0.4792, 2.228), (0.05, 2.0, 0.5), (3.0, 0.01, 40.0)]
STATE = dict(r=0.043, pi=0.0232, tau=0.0065, r_star=0.0204, p=-0.0217)


@pytest.mark.parametrize("k, kc, mu", CURVE_PARAMS)
def test_curve_short_end_is_the_short_rate(k, kc, mu):
    y0 = zero_yields_jit(jnp.asarray([1e-12, 1e-9]), **STATE, k=k, kc=kc, mu=mu)
    np.testing.assert_allclose(y0, STATE["r"], rtol=0, atol=1e-10)
    # the loadings switch to a series below |x| = 1e-6: no jump across the switch
    for x in (1e-6 * (1 - 1e-9), 1e-6 * (1 + 1e-9)):
        b, _, _ = loadings_jit(jnp.asarray(x / k), k, kc, mu)
        assert float(b) == pytest.approx(-math.expm1(-x) / x, rel=1e-13)
    # and the slope at m = 0 is the derivative of the formula: y(m) = r + m y'(0) + O(m^2)
    g10 = 1 - (1 - math.exp(-10 / mu)) / (10 / mu)
    slope = (k / 2 * (STATE["r_star"] + STATE["pi"] - STATE["r"]) + kc / 2 * STATE["p"]
             + STATE["tau"] / (2 * mu) / g10)
    m = 1e-4
    y = float(zero_yields_jit(jnp.asarray([m]), **STATE, k=k, kc=kc, mu=mu)[0])
    assert (y - STATE["r"]) / m == pytest.approx(slope, rel=1e-3)


@pytest.mark.parametrize("k, kc, mu", CURVE_PARAMS)
def test_curve_long_end_limit(k, kc, mu):
    g10 = 1 - (1 - math.exp(-10 / mu)) / (10 / mu)
    limit = STATE["r_star"] + STATE["pi"] + STATE["tau"] / g10
    m = np.array([1e3, 1e6, 1e9])
    y = np.asarray(zero_yields_jit(jnp.asarray(m), **STATE, k=k, kc=kc, mu=mu))
    # B = 1/(k m), C = 1/(kc m) - exp(-kc m) and G/G10 = (1 - mu/m)/G10 up to exp(-m/...): corrections O(1/m)
    bound = (abs(STATE["r"] - STATE["r_star"] - STATE["pi"]) / k + abs(STATE["p"]) / kc
             + abs(STATE["tau"]) * mu / g10) / m
    assert np.all(np.abs(y - limit) <= 1.01 * bound + 1e-15), (y - limit, bound)
    assert abs(y[-1] - limit) < 1e-8


@pytest.mark.parametrize("k, kc, mu", CURVE_PARAMS)
def test_term_premium_10y_loading_is_exactly_one(k, kc, mu):
    assert float(loadings_jit(10.0, k, kc, mu)[2]) == 1.0
    y = zero_yields_jit(jnp.asarray([10.0]), r=0.0, pi=0.0, tau=0.0123, r_star=0.0, p=0.0, k=k, kc=kc, mu=mu)
    assert float(y[0]) == 0.0123


def test_curve_derivatives_match_finite_differences():
    """Zero yields of a batch of states, differentiated in reverse and forward mode (their own rule: products
    with the loadings), against central differences of every argument."""
    m = jnp.asarray([0.25, 2.0, 7.3, 30.0])
    names = ("r", "pi", "tau", "r_star", "p", "k", "kc", "mu")
    x0 = np.array([STATE[n] for n in names[:5]] + [0.2094, 0.4792, 2.228])
    weights = jnp.asarray([[1.0, -2.0, 0.5, 3.0], [0.3, 1.0, -1.0, 2.0]])

    def f(x):  # two paths: the second state is the first shifted, and scaled by 1.5
        states = [jnp.stack([x[i], 1.5 * x[i] + 0.001]) for i in range(5)]
        return jnp.sum(weights * zero_yields(m, *states, x[5], x[6], x[7]))

    rev = np.asarray(jax.jit(jax.grad(f))(jnp.asarray(x0)))
    fwd = np.asarray(jax.jit(jax.jacfwd(f))(jnp.asarray(x0)))
    h = 1e-6
    fd = np.array([(f(jnp.asarray(x0 + h * e)) - f(jnp.asarray(x0 - h * e))) / (2 * h) for e in np.eye(8)])
    np.testing.assert_allclose(rev, fd, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fwd, rev, rtol=1e-12, atol=1e-15)


PAR_MATURITIES = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 30.0)


@jax.jit
def _flat_curve(c):
    """Zero yields and par yields on the grid when r = c and r_star + pi = c (p = tau = 0): flat at c whatever
    the loadings."""

    def zero_fn(t):
        return zero_yields(t, r=c, pi=0.6 * c, tau=0.0, r_star=0.4 * c, p=0.0, k=0.2094, kc=0.4792, mu=2.228)

    return zero_fn(jnp.asarray(PAR_MATURITIES)), jnp.stack([par_yield_from_zero(zero_fn, m) for m in PAR_MATURITIES])


@pytest.mark.parametrize("c", [-0.005, 0.001, 0.045, 0.12])
def test_par_yield_of_flat_curve(c):
    zeros, par = (np.asarray(a) for a in _flat_curve(c))
    np.testing.assert_allclose(zeros, c, rtol=1e-13, atol=1e-16)
    # semiannual coupons: the par yield of a flat continuously compounded curve is 2 (exp(c/2) - 1)
    np.testing.assert_allclose(par[1:], 2 * math.expm1(c / 2), rtol=1e-12, atol=1e-16)
    # below six months a bill has one payment: the simple rate over its life
    assert par[0] == pytest.approx(math.expm1(0.25 * c) / 0.25, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# closed forms: the regime chain

BASELINE_Q = np.array([[-0.5, 0.3, 0.1, 0.1], [4.0, -16.0, 4.0, 8.0], [2.0, 2.0, -10.0, 6.0], [3.0, 0.5, 0.5, -4.0]])
APRIL_Q = np.array([[-0.5, 0.3, 0.1, 0.1], [2.0, -33.0, 6.0, 25.0], [1.0, 2.0, -9.0, 6.0], [2.0, 0.5, 1.5, -4.0]])
# a fast-mixing chain (slowest decay rate 96/year): it forgets its start within a quarter
FAST_Q = np.array([[-60.0, 30.0, 20.0, 10.0], [40.0, -80.0, 20.0, 20.0], [30.0, 30.0, -90.0, 30.0],
                   [50.0, 10.0, 40.0, -100.0]])


def _random_generator(seed, n=5):
    rng = np.random.default_rng(seed)
    q = rng.exponential(3.0, (n, n)) * (rng.random((n, n)) < 0.7)
    np.fill_diagonal(q, 0.0)
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


@pytest.mark.parametrize("q", [BASELINE_Q, APRIL_Q, FAST_Q, _random_generator(1), _random_generator(2)])
@pytest.mark.parametrize("dt", [1 / 252, 1 / 52, 1.0])
def test_transition_matrix_is_expm(q, dt):
    p = np.asarray(transition_matrix_jit(jnp.asarray(q), dt))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert p.min() >= 0.0
    np.testing.assert_allclose(p, scipy.linalg.expm(q * dt), rtol=1e-10, atol=1e-14)


def test_stationary_distribution_solves_balance():
    for q in (BASELINE_Q, APRIL_Q, FAST_Q, _random_generator(3)):
        pi = stationary_distribution(q)
        assert pi.min() > 0 and pi.sum() == pytest.approx(1.0, abs=1e-14)
        np.testing.assert_allclose(pi @ q, 0.0, atol=1e-12 * np.abs(q).max())


@pytest.mark.slow
def test_regime_chain_occupancy_matches_stationary_distribution():
    """Ten years of weekly steps from the most likely regime: late occupancy is the stationary distribution."""
    dt, n_steps, n_paths = 1 / 52, 520, 4000
    pi = stationary_distribution(BASELINE_Q)
    cum = jnp.cumsum(transition_matrix(jnp.asarray(BASELINE_Q), dt), axis=1)
    start = int(np.argmax(pi))

    @jax.jit
    def chain(key):
        u = jax.random.uniform(key, (n_steps, n_paths), jnp.float64)

        def body(s, u_t):
            nxt = jax.vmap(sample_next)(cum[s], u_t)
            return nxt, nxt

        return jax.lax.scan(body, jnp.full(n_paths, start, jnp.int32), u)[1]

    path = np.asarray(chain(jax.random.key(2025)))  # (steps, paths)
    late = path[n_steps // 2:]
    # burn-in bias: the exact expected occupancy from the start state over the late window, vs pi
    p = scipy.linalg.expm(BASELINE_Q * dt)
    dist = np.eye(4)[start] @ np.linalg.matrix_power(p, n_steps // 2)
    expected = np.zeros(4)
    for _ in range(len(late)):
        dist = dist @ p
        expected += dist / len(late)
    assert np.abs(expected - pi).max() < 1e-6
    # time averages per path are i.i.d. across paths: their standard error comes from their spread
    occ = (late[..., None] == np.arange(4)).mean(axis=0)  # (paths, regimes)
    se = occ.std(axis=0, ddof=1) / math.sqrt(n_paths)
    assert np.all(np.abs(occ.mean(axis=0) - pi) < Z * se), (occ.mean(axis=0), pi, se)
    # occupancy at the last date across independent paths: binomial standard error
    final = (path[-1][:, None] == np.arange(4)).mean(axis=0)
    assert np.all(np.abs(final - pi) < Z * np.sqrt(pi * (1 - pi) / n_paths)), (final, pi)
    # the chain really moves: every regime is visited
    assert np.all(occ.mean(axis=0) > 0)


@pytest.mark.slow
def test_simulated_regimes_follow_the_chain():
    """The regime variable of full simulations: occupancy at each reporting date is the row of P^n of the
    initial regime, and the stationary distribution at the horizon (the fast chain has mixed by then)."""
    n_paths = 8192
    gen = "regimes.generator=" + str(FAST_Q.tolist())
    res = cached_run((gen,), paths=n_paths)
    pi = stationary_distribution(FAST_Q)
    p = scipy.linalg.expm(FAST_Q * res.params.dt)
    start = np.eye(4)[res.params.initial_regime]
    for j, n in enumerate(res.reports):
        exact = start @ np.linalg.matrix_power(p, n)
        occ = (values(res, "regime", j)[:, None] == np.arange(4)).mean(axis=0)
        se = np.sqrt(exact * (1 - exact) / n_paths)
        assert np.all(np.abs(occ - exact) <= Z * se), (n, occ, exact)
    assert np.abs(exact - pi).max() < 1e-9  # at the horizon
    # the regime log-probability is the sum of log P along the path: finite and negative once paths move
    logp = res.metrics["regime_logp"]
    assert np.all(np.isfinite(logp)) and np.all(logp < 0)


# ----------------------------------------------------------------------------------------------------------------
# closed forms: OU drivers (the scheme's moments are the continuous OU's exactly)

OU_PATHS = 8192
OU_CASES = {
    # driver section: (initial key, reported variable, x0, sigma)
    "inflation": ("pi", "breakeven_10y", 0.035, 0.004),
    "term_premium": ("tau", "term_premium_10y", 0.025, 0.006),
    "short_rate": ("r", "short_rate", 0.02, 0.006),
}


def _ou_target_and_vol(cfg, driver, sigma):
    """The OU target and volatility of a driver in the (frozen) initial regime, from the config."""
    reg = cfg["regimes"][cfg["regimes"]["initial"]]
    if driver == "inflation":
        return cfg["inflation"]["mean"] + reg["pi_shift"] + cfg["inflation"]["pass_through"] * reg["tariff"], \
            sigma * reg["pi_vol_mult"]
    if driver == "term_premium":
        return cfg["term_premium"]["mean"] + reg["tau_shift"], sigma * reg["tau_vol_mult"]
    # short rate: target r_star + pi + phi_pi (pi - pi_star) - phi_stress dysfunction, with r_star, pi frozen
    return cfg["initial"]["r_star"] + cfg["initial"]["pi"], sigma


@pytest.mark.slow
@pytest.mark.parametrize("driver,k", [(d, 4.0) for d in OU_CASES] + [("short_rate", 50.0)])
def test_ou_driver_moments(driver, k):
    """k = 4/year: e^{-kT} = 0.37 at the horizon, so both the decay and the stationary variance matter. k = 50
    (the bound): k dt = 0.2, where Euler's noise sigma sqrt(dt) would give 2 k dt / (1 - e^{-2 k dt}) = 1.21 times
    the variance (the tolerance is 4 x 1.6%)."""
    init, variable, x0, sigma = OU_CASES[driver]
    res = cached_run(QUIET + (f"{driver}.k={k}", f"{driver}.sigma={sigma}", f"initial.{init}={x0}"),
                     paths=OU_PATHS)
    m, s = _ou_target_and_vol(res.scenario.config, driver, sigma)
    assert abs(x0 - m) > 0.01  # the mean reversion is visible
    dt, n_paths = res.params.dt, OU_PATHS
    a = math.exp(-k * dt)  # the step closes 1 - exp(-k dt) of the gap (docs/MODEL.md), the exact decay
    for j, n in enumerate(res.reports[1:], start=1):
        x = values(res, variable, j) / 100.0
        mean_step = m + (x0 - m) * a**n
        var_step = s**2 * (1 - a**2) / (2 * k) * sum(a ** (2 * i) for i in range(n))  # noise s sqrt((1 - a^2) / 2k)
        mean_ou = m + (x0 - m) * math.exp(-k * n * dt)
        var_ou = s**2 / (2 * k) * -math.expm1(-2 * k * n * dt)
        # the scheme's mean and variance are the continuous process's
        assert mean_step == pytest.approx(mean_ou, rel=1e-12)
        assert var_step == pytest.approx(var_ou, rel=1e-12)
        # Gaussian sample: se(mean) = sd / sqrt(n), se(variance) = var sqrt(2 / (n - 1))
        assert abs(x.mean() - mean_step) < Z * math.sqrt(var_step / n_paths), (n, x.mean(), mean_step)
        assert abs(x.var(ddof=1) - var_step) < Z * var_step * math.sqrt(2 / (n_paths - 1)), (n, x.var(), var_step)
    # the regime multipliers were in force (sigma != effective vol) and nothing else was switched on: no flows, no
    # transient premium, the regime stayed where it started
    assert driver == "short_rate" or s != sigma
    for name in ("term_premium_impact", "foreign_sales_cum", "forced_sales_cum", "fed_holdings", "dealer_load"):
        assert np.abs(res.snapshots[:, res.variables.index(name)]).max() < 1e-12, name
    assert np.all(res.snapshots[:, res.variables.index("regime")] == res.params.initial_regime)


def test_no_shocks_no_moves():
    res = cached_run(QUIET)
    rates = [i for i, v in enumerate(res.variables)
             if v.startswith(("yield_", "par_yield_", "short_rate", "breakeven", "term_premium", "neutral_rate",
                              "policy_path", "mortgage_rate"))]
    assert len(rates) == 2 * len(res.params.maturities) + 7
    snap = res.snapshots[:, rates, :]
    np.testing.assert_allclose(snap, np.broadcast_to(snap[:1], snap.shape), rtol=0, atol=1e-12)  # percent
    for name in ("foreign_sales_cum", "forced_sales_cum", "fed_holdings", "dealer_load", "basis_bp",
                 "basis_fund_position", "dysfunction"):
        assert np.abs(res.snapshots[:, res.variables.index(name)]).max() < 1e-12, name
    for name in ("y2_change_bp", "y10_change_bp", "y30_change_bp", "y10_max_rise_bp", "foreign_sales_bn",
                 "forced_sales_bn", "vol_fund_sales_bn", "fed_purchases_bn"):
        assert np.abs(res.metrics[name]).max() < 1e-9, name


# ----------------------------------------------------------------------------------------------------------------
# mechanisms


@pytest.mark.parametrize("months, start", [(1.0, 0.0), (1.1, 0.0), (1.0, 0.5 / 252)])
def test_liquidation_program_sells_its_total(months, start):
    """$600bn over one month from a holder with $5.9tn, nothing else moving: the schedule sells its total over
    its window, also where the window does not begin or end on a step (1.1 months = 23.1 steps; a start half a
    step in), whose steps sell the part of a step inside it."""
    res = cached_run(QUIET + ("holders.other.program_total=600.0", f"holders.other.program_months={months!r}",
                              f"holders.other.program_start={start!r}"))
    sales = res.metrics["foreign_sales_bn"]
    # each step sells h (1 - exp(-d/h)) >= d (1 - d / 2h) for the scheduled d <= 600 / 21: at most 1.6bn short
    assert np.all(sales <= 600.0 + 1e-9) and np.all(sales >= 600.0 * (1 - 600.0 / 21 / (2 * 5300.0)))
    last = start * 252 + months * 21  # the step in which the window ends
    j = min(r for r in res.reports if r >= last)  # the first report after: the program has ended
    np.testing.assert_allclose(values(res, "foreign_sales_cum", res.reports.index(j)), sales, rtol=1e-12)
    assert np.all(values(res, "foreign_sales_cum", res.reports.index(10)) < 0.6 * sales)


def test_program_start_gradient_matches_a_central_difference():
    """A 2-year program starting in the middle of step 25 (t = 25.5 / 252) sells over the rest of the quarter:
    moving its start moves the part of the step inside the window, so the sales have a derivative with respect to
    program_start, about -600 / 2 a year (a holder with $5.3tn sells d (1 - d / 2h) of d), which autodiff and a
    central difference within the step agree on (nothing random moves: QUIET)."""
    from jaxstress import metric_function

    scenario = load_scenario(SCENARIO, overrides=list(QUIET) + [
        "holders.other.program_total=600.0", "holders.other.program_months=24.0",
        "holders.other.program_start=0.0"], horizon=HORIZON)
    params = scenario.params()

    def sold(start):
        values = dict(params.values, **{"holders.other.program_start": start})
        return metric_function(eqx.tree_at(lambda q: q.values, params, values), "foreign_sales_bn_mean", BLOCK)

    value_and_grad = jax.jit(jax.value_and_grad(sold))  # one program for the gradient and the differences' values
    start = jnp.asarray(25.5 / 252)
    value, grad = (float(x) for x in value_and_grad(start))
    h = 0.25 / 252  # a quarter of a step: the window's start stays inside step 25
    central = (float(value_and_grad(start + h)[0]) - float(value_and_grad(start - h)[0])) / (2 * h)
    assert grad == pytest.approx(central, rel=1e-6)
    assert grad == pytest.approx(-300.0, rel=0.01)
    assert value == pytest.approx(300.0 * (HORIZON - float(start)), rel=0.01)


def test_foreign_sales_never_exceed_holdings():
    holders = ("japan", "china", "uk", "cayman", "other")
    huge = tuple(f"holders.{h}.sell_rate=100.0" for h in holders) + tuple(
        f"holders.{h}.procyclical_rates=100.0" for h in holders) + (
        "holders.japan.program_total=100000.0", "holders.japan.program_months=1.0",
        "holders.uk.program_total=100000.0", "holders.uk.program_start=0.1", "holders.uk.program_months=0.5")
    res = cached_run(huge)
    cfg = res.scenario.config
    initial = np.array([cfg["holders"][h]["holdings"] for h in holders])
    held = np.stack([res.snapshots[:, res.variables.index(f"holdings_{h}")] for h in holders])  # (h, reports, paths)
    assert held.min() >= 0.0
    assert np.all(held <= initial[:, None, None] * (1 + 1e-12))
    assert np.all(np.diff(held, axis=1) <= 1e-9)  # holders only sell
    total0 = initial.sum()
    sold = res.metrics["foreign_sales_bn"]
    assert np.all(sold <= total0 * (1 + 1e-12))
    # conservation: what was sold left the holdings
    np.testing.assert_allclose(values(res, "foreign_holdings_total") + sold, total0, rtol=1e-10)
    # and the programs did sell (almost) everything: the test is not vacuous
    assert np.median(sold) > 0.99 * total0
    assert np.all(held[0, res.reports.index(21)] < 1e-6 * initial[0])


def test_leverage_raises_forced_sales_and_the_tail():
    base = cached_run()
    high = cached_run(("basis_funds.leverage=40.0",))
    assert base.scenario.config["basis_funds"]["leverage"] == 35.0
    # same seed: common random numbers, so the paired difference has a small standard error
    d = high.metrics["forced_sales_bn"] - base.metrics["forced_sales_bn"]
    assert d.mean() > Z * d.std(ddof=1) / math.sqrt(d.size)
    lo, hi = base.metrics["y10_max_rise_bp"], high.metrics["y10_max_rise_bp"]
    # se of a difference is at most the sum of the two standard errors, whatever their correlation
    assert np.quantile(hi, 0.99) - np.quantile(lo, 0.99) > Z * (quantile_se(hi, 0.99) + quantile_se(lo, 0.99))


def test_fed_backstop_lowers_the_tail():
    stress = ("fed.threshold=1.0",)
    on = cached_run(stress + ("fed.backstop=true",))
    off = cached_run(stress + ("fed.backstop=false",))
    assert np.all(off.metrics["fed_purchases_bn"] == 0.0) and on.metrics["fed_purchases_bn"].mean() > 0
    a, b = on.metrics["y10_max_rise_bp"], off.metrics["y10_max_rise_bp"]
    assert np.quantile(b, 0.99) - np.quantile(a, 0.99) > Z * (quantile_se(a, 0.99) + quantile_se(b, 0.99))


# ----------------------------------------------------------------------------------------------------------------
# invariants


def test_seed_reproducibility():
    scenario = load_scenario(SCENARIO, horizon=HORIZON)
    a = simulate(scenario, PATHS, seed=5, chunk_size=CHUNK)
    b = simulate(scenario, PATHS, seed=5, chunk_size=CHUNK)
    c = simulate(scenario, PATHS, seed=6, chunk_size=CHUNK)
    assert set(a.metrics) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    np.testing.assert_array_equal(a.snapshots, b.snapshots)
    for name in ("y10_change_bp", "equity_return_pct", "dollar_change_pct"):
        assert np.mean(a.metrics[name] != c.metrics[name]) > 0.99, name


@pytest.fixture(scope="module")
def chunk_reference():
    return run(paths=1000, seed=11, chunk=1024)




def test_block_draws_do_not_depend_on_the_batch():
    """The root cause of chunk dependence: block b's draws at step t, drawn alone or among other blocks."""
    key = jax.random.key(11, impl=getattr(_simulate, "PRNG_IMPL", "threefry2x32"))
    alone = _simulate._block_draws(key, jnp.asarray([1], jnp.uint32), jnp.float64)(jnp.asarray(3))
    batch = _simulate._block_draws(key, jnp.arange(4, dtype=jnp.uint32), jnp.float64)(jnp.asarray(3))
    for part_batch, part_alone in zip(batch, alone, strict=True):
        assert len(part_batch) == len(part_alone)
        for b, a in zip(part_batch, part_alone, strict=True):
            np.testing.assert_array_equal(b[BLOCK:2 * BLOCK], a)


def test_threefry_is_jax_threefry():
    """The unrolled elementwise threefry gives the bits of jax's own threefry_2x32, for random keys and counters."""
    from jax.extend.random import threefry_2x32

    rng = np.random.default_rng(0)
    k = rng.integers(0, 2**32, 2, dtype=np.uint32)
    x = rng.integers(0, 2**32, (2, 1000), dtype=np.uint32)
    ref = np.asarray(threefry_2x32(jnp.asarray(k), jnp.asarray(x.reshape(-1)))).reshape(2, -1)
    got = jax.jit(_simulate.threefry2x32)(*(jnp.asarray(a) for a in (k[0], k[1], x[0], x[1])))
    np.testing.assert_array_equal(np.stack([np.asarray(g) for g in got]), ref)


# Random123's known answers for Philox-2x32-10: (counter word 0, counter word 1, key) -> (word 0, word 1)
_PHILOX_KAT = [((0x00000000, 0x00000000, 0x00000000), (0xFF1DAE59, 0x6CD10DF2)),
               ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0x2C3F628B, 0xAB4FD7AD)),
               ((0x243F6A88, 0x85A308D3, 0x13198A2E), (0xDD7CE038, 0xF62A4C12))]


def _philox_reference(x0: int, x1: int, k: int) -> tuple[int, int]:
    """Philox-2x32-10 in Python integers (Salmon et al. 2011): x0, x1 = hi(M x0) ^ k ^ x1, lo(M x0); k += W."""
    for _ in range(10):
        prod = 0xD256D193 * x0
        x0, x1 = ((prod >> 32) ^ k ^ x1) & 0xFFFFFFFF, prod & 0xFFFFFFFF
        k = (k + 0x9E3779B9) & 0xFFFFFFFF
    return x0, x1


def test_philox_known_answers():
    """The elementwise uint32 Philox-2x32-10 gives Random123's known answers, and the plain-integer reference's
    bits for random keys and counters (jitted, in a float32 run: x64 off outside the generator)."""
    fn = jax.jit(_simulate.philox2x32)
    for (x0, x1, k), want in _PHILOX_KAT:
        assert _philox_reference(x0, x1, k) == want
        got = fn(jnp.asarray(k, jnp.uint32), jnp.asarray([x0], jnp.uint32), jnp.asarray([x1], jnp.uint32))
        assert tuple(int(np.asarray(g)[0]) for g in got) == want
    rng = np.random.default_rng(1)
    k = int(rng.integers(0, 2**32))
    x = rng.integers(0, 2**32, (2, 200), dtype=np.uint32)
    got = np.stack([np.asarray(g) for g in fn(jnp.asarray(k, jnp.uint32), jnp.asarray(x[0]), jnp.asarray(x[1]))])
    assert got.dtype == np.uint32
    ref = np.asarray([_philox_reference(int(a), int(b), k) for a, b in x.T], np.uint32).T
    np.testing.assert_array_equal(got, ref)


def test_counter_bits_follow_the_setting(monkeypatch):
    """`COUNTER_RNG` picks the generator: Philox keyed by the seed's low word (seeds below 2^32 have k0 = 0), or
    threefry with both words; an unknown name is refused."""
    key = jax.random.key(123456789, impl=_simulate.PRNG_IMPL)
    k0, k1 = (jnp.asarray(w) for w in jax.random.key_data(key).astype(jnp.uint32).reshape(-1)[:2])
    assert int(k0) == 0 and int(k1) == 123456789
    x0, x1 = jnp.arange(5, dtype=jnp.uint32), jnp.full((5,), 7, jnp.uint32)
    for name, want in (("philox2x32", _simulate.philox2x32(k1, x0, x1)),
                       ("threefry2x32", _simulate.threefry2x32(k0, k1, x0, x1))):
        monkeypatch.setattr(_simulate, "COUNTER_RNG", name)
        for g, w in zip(_simulate.counter_bits(k0, k1, x0, x1), want, strict=True):
            np.testing.assert_array_equal(g, w)
    monkeypatch.setattr(_simulate, "COUNTER_RNG", "mt19937")
    with pytest.raises(ValueError, match="COUNTER_RNG"):
        _simulate.counter_bits(k0, k1, x0, x1)


def test_seeds_are_checked():
    assert _simulate.check_seed(2**32 - 1) == 2**32 - 1
    for bad in (-1, 2**32, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^32\)"):
            _simulate.check_seed(bad)
    assert _simulate.check_seed(jnp.uint32(7)) == 7 and type(_simulate.check_seed(jnp.int32(7))) is int
    for bad in (jnp.int32(-1), jnp.float32(1.0), jnp.asarray([1, 2])):  # JAX numbers: by their value
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^32\)"):
            _simulate.check_seed(bad)


def test_a_traced_seed_gives_the_seeds_key():
    """Under a caller's jit or vmap the seed is traced: the same key as the number, one program for all seeds; a
    traced seed that is not an integer scalar is refused."""
    def data(s):
        return jax.random.key_data(_simulate.seed_key(s))

    for seed in (0, 7, 2**31 - 1):
        want = np.asarray(data(seed))
        np.testing.assert_array_equal(jax.jit(data)(seed), want)
        np.testing.assert_array_equal(data(jnp.uint32(seed)), want)
    np.testing.assert_array_equal(jax.vmap(data)(jnp.arange(3)), [np.asarray(data(s)) for s in range(3)])
    np.testing.assert_array_equal(jax.jit(data)(jnp.uint32(2**32 - 1)), np.asarray(data(2**32 - 1)))
    with pytest.raises(ValueError, match=r"seed must be an integer scalar, got a traced float32\[\]"):
        jax.jit(data)(jnp.float32(1.0))


def test_packed_draws_unpack_to_the_draws():
    """The complex-packed draws that the simulation loop carries are exactly the draws, in both dtypes; normals
    are finite and uniforms strictly inside (0, 1)."""
    key = jax.random.key(5, impl="threefry2x32")
    for dtype in (jnp.float32, jnp.float64):
        d = _simulate._block_draws(key, jnp.arange(2, dtype=jnp.uint32), dtype)
        normals, uniforms = d(jnp.asarray(7))
        n2, u2 = d.unpack(d.packed(jnp.asarray(7)))
        assert len(normals) == 10 and len(uniforms) == 2
        for a, b in zip(normals + uniforms, n2 + u2, strict=True):
            assert a.dtype == dtype and a.shape == (2 * BLOCK,)
            np.testing.assert_array_equal(a, b)
        assert all(np.isfinite(np.asarray(x)).all() for x in normals)
        assert all(((np.asarray(u) > 0) & (np.asarray(u) < 1)).all() for u in uniforms)


def test_float32_normals_are_the_normal_quantiles():
    """Float32 normals (Giles' erfinv with w = -log((1 - v)(1 + v))) against scipy's ndtri on every 97th of the
    2^24 inputs and the extremes: within 4e-7 relative (float32 rounding of the polynomial), tails included."""
    from scipy.special import ndtri

    k = np.concatenate([np.arange(0, 2**24, 97), [0, 1, 2**23 - 1, 2**23, 2**24 - 2, 2**24 - 1]]).astype(np.int64)
    v = ((2 * k + 1 - 2**24) / 2**24).astype(np.float32)  # as `_BlockDraws` makes them: exact in float32
    got = np.asarray(jax.jit(_simulate._normal_icdf32)(jnp.asarray(v)))
    assert got.dtype == np.float32
    ref = ndtri((v.astype(np.float64) + 1.0) / 2.0)
    np.testing.assert_allclose(got, ref, rtol=4e-7, atol=1e-12)


def test_one_minus_exp_neg_in_float32_and_its_derivative():
    """The holders' sales fraction 1 - exp(-x): float32 (a Taylor polynomial below |x| = 0.1, 1 - exp(-x) beyond)
    within 6e-7 relative of expm1 in float64 on both sides of the switch; its derivative exp(-x) = 1 - value; in
    float64 it is expm1 (XLA's, within an ulp of numpy's)."""
    from jaxstress._model import one_minus_exp_neg

    x = np.concatenate([np.logspace(-12, 2, 4000), -np.logspace(-12, 1.5, 4000), [0.0, 0.1, -0.1]])
    x32 = x.astype(np.float32)
    ref = -np.expm1(-x32.astype(np.float64))
    got = np.asarray(jax.jit(one_minus_exp_neg)(jnp.asarray(x32)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=6e-7, atol=0)
    slope = np.asarray(jax.jit(jax.vmap(jax.grad(one_minus_exp_neg)))(jnp.asarray(x32)))
    np.testing.assert_allclose(slope, np.exp(-x32.astype(np.float64)), rtol=1e-6, atol=6e-8)
    np.testing.assert_allclose(np.asarray(one_minus_exp_neg(jnp.asarray(x))), -np.expm1(-x), rtol=2e-15, atol=0)


def test_ou_noise_scale_and_its_derivative():
    """The exact OU step's noise a unit of sigma, sqrt((1 - e^{-2 k dt}) / 2k), against the float64 closed form on
    both sides of the series switch of `_curve.one_minus_exp_over` (2 k dt = 1e-6) and around 2 k dt = 1e-2, in
    float32 and float64; sqrt(dt) at k = 0 with the derivative -dt^{3/2} / 2 there (finite, no NaN through the
    unused branch)."""
    from jaxstress._model import ou_sd

    dt = 1.0 / 252.0
    # 2 k dt = 1e-6 at k = 1.26e-4, 1e-2 at 1.26
    k = np.concatenate([[0.0, 1e-6, 1.2599e-4, 1.2601e-4, 1.25, 1.2599, 1.2601, 1.27], np.logspace(-3, 4, 200)])
    exact = np.where(k > 0, np.sqrt(-np.expm1(-2 * k * dt) / np.where(k > 0, 2 * k, 1.0)), np.sqrt(dt))
    for dtype, rtol in ((np.float32, 1e-6), (np.float64, 1e-10)):
        got = np.asarray(jax.jit(jax.vmap(lambda r: ou_sd(r, dtype(dt))))(jnp.asarray(k, dtype)))
        assert got.dtype == dtype
        np.testing.assert_allclose(got, exact, rtol=rtol, atol=0)
    # d/dk at k: by central differences in float64 away from 0; the series' slope at 0
    slope = np.asarray(jax.jit(jax.vmap(jax.grad(lambda r: ou_sd(r, dt))))(jnp.asarray(k)))
    assert slope[0] == pytest.approx(-0.5 * dt**1.5, rel=1e-12)
    h = 1e-6 * np.maximum(k, 1.0)
    up, down = (np.asarray(jax.vmap(lambda r: ou_sd(r, dt))(jnp.asarray(k + sgn * h))) for sgn in (1, -1))
    np.testing.assert_allclose(slope[1:], ((up - down) / (2 * h))[1:], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("chunk", [256, 512])
def test_chunk_size_does_not_change_results(chunk_reference, chunk):
    ref = chunk_reference
    res = run(paths=1000, seed=11, chunk=chunk)
    assert (res.chunk_size, ref.chunk_size) == (chunk, 4 * BLOCK)
    assert_same_results(res, ref)


@pytest.mark.parametrize("first", [False, True])
def test_pipelined_dispatches_the_next_item_before_collecting(first):
    """`pipelined` (run's and sensitivities' chunk loops): every item is collected once, in order, each after the
    next item's dispatch (one in flight while the host copies the one before), except the first where `first` asks
    for it at once (the compile is timed); the results are the dispatched ones."""
    events = []

    def dispatch(i):
        events.append(("dispatch", i))
        return {"x": jnp.full((3,), float(i)), "none": None}

    def collect(i, out):
        events.append(("collect", i))
        np.testing.assert_array_equal(np.asarray(out["x"]), np.full(3, float(i)))

    _simulate.pipelined(range(4), dispatch, collect, first=(lambda: events.append(("first",))) if first else None)
    if first:
        head = [("dispatch", 0), ("collect", 0), ("first",), ("dispatch", 1)]
    else:
        head = [("dispatch", 0), ("dispatch", 1), ("collect", 0)]
    assert events == head + [("dispatch", 2), ("collect", 1), ("dispatch", 3), ("collect", 2), ("collect", 3)]
    events.clear()
    _simulate.pipelined([], dispatch, collect)
    assert events == []


def test_path_streams_do_not_depend_on_path_count(chunk_reference):
    """A path's draws depend only on the seed and its index: the first 1000 of 4096 paths are the 1000-path run."""
    res = run(paths=PATHS, seed=11)
    for name in METRIC_NAMES:
        np.testing.assert_allclose(res.metrics[name][:1000], chunk_reference.metrics[name], rtol=1e-6, atol=1e-9,
                                   err_msg=name)


def test_retained_reporting_dates(chunk_reference, monkeypatch):
    """A run keeps the reporting dates of its first `retain` paths (chunks of 256: one whole, one with 44 of them,
    two with none): the same values as the run that keeps all 1000, and the same metrics for every path. The
    chunks past them observe the horizon only; the chunk keeping 44 is run by the first chunk's program (all of
    its paths observed), not by a program of its own."""
    observed = []

    def spy(*args):
        observed.append(args[5])
        return simulate_chunk(*args)

    simulate_chunk = _simulate.simulate_chunk
    monkeypatch.setattr(_simulate, "simulate_chunk", spy)
    scenario = load_scenario(SCENARIO, horizon=HORIZON)
    res = simulate(scenario, 1000, seed=11, chunk_size=256, retain=300)
    assert observed == [256, 256, 0, 0]
    assert [_simulate.observed_paths(c, 2**22, 10**8, 200_000) for c in range(3)] == [200_000, 0, 0]
    # a run within one chunk that keeps all its paths observes the whole chunk, padding included: its path count
    # is not a program of its own; one that keeps only some of them observes those only
    assert [_simulate.observed_paths(0, 1024, n, 200_000) for n in (1, 2, 1000, 1024)] == [1024] * 4
    assert _simulate.observed_paths(0, 1024, 1000, 999) == 999
    ref = chunk_reference
    assert res.snapshots.shape == ref.snapshots.shape[:2] + (300,)
    np.testing.assert_allclose(res.snapshots, ref.snapshots[:, :, :300], rtol=1e-6, atol=1e-9)
    for name in METRIC_NAMES:
        np.testing.assert_allclose(res.metrics[name], ref.metrics[name], rtol=1e-6, atol=1e-9, err_msg=name)


# ----------------------------------------------------------------------------------------------------------------
# regressions: each of these was a bug once


def test_no_basis_funds_means_no_forced_sales():
    res = cached_run(("basis_funds.position=0.0",))
    assert np.abs(res.metrics["forced_sales_bn"]).max() < 1e-6
    assert np.abs(res.snapshots[:, res.variables.index("basis_fund_position")]).max() < 1e-6


def test_sample_next_never_picks_an_impossible_regime():
    p = np.array([0.0, 0.5, 0.5, 0.0])
    cum = jnp.cumsum(jnp.asarray(p))
    for u in (0.0, 1e-12, 0.25, 0.5, 0.75, 1 - 1e-12):
        assert p[int(sample_next(cum, jnp.asarray(u)))] > 0, u


def test_zero_debt_is_rejected_or_finite():
    overrides = ("debt.amounts=[0.0, 0.0, 0.0, 0.0, 0.0]",)
    try:
        load_scenario(SCENARIO, overrides=list(overrides))
    except ConfigError as e:
        assert "debt.amounts" in str(e)
        return
    res = cached_run(overrides, paths=1024)
    assert np.all(np.isfinite(res.metrics["interest_cost_change_bn"]))


def test_interest_bill_is_debt_times_rolled_average_coupon():
    """The state keeps each bucket's interest bill; it must equal the bucket's debt times its average coupon, the
    coupon recursion written out here: over a step the share 1 - exp(-dt / maturity) of the bucket is refinanced,
    and the new debt issued, at the bucket's current yield, the rest keeps its coupon (20 steps of april_2025 with
    random shocks, float64)."""
    from jaxstress._model import _yield, initial_state, prepare, step

    params = load_scenario("april_2025").params(jnp.float64)
    prep = prepare(params)
    s = _simulate.broadcast_paths(initial_state(prep, params.initial_regime), 32)
    rng = np.random.default_rng(5)
    stepped = jax.jit(jax.vmap(step, in_axes=(None, None, 0, 0, 0)))
    mat = np.asarray(params.debt_maturities)
    debt = np.asarray(s.debt)  # (buckets, paths)
    coupon = np.broadcast_to(np.asarray(params.values["debt.coupons"])[:, None], debt.shape)
    np.testing.assert_allclose(np.asarray(s.interest), debt * coupon, rtol=1e-15)
    for k in range(20):
        normal = tuple(jnp.asarray(rng.normal(size=32)) for _ in range(10))
        uniform = tuple(jnp.asarray(rng.uniform(size=32)) for _ in range(2))
        s = stepped(prep, k * params.dt, s, normal, uniform)
        y = np.stack([np.asarray(_yield([row[i] for row in prep.load_debt], s.r, s.pi, s.tau, s.r_star, s.p))
                      for i in range(len(mat))])
        new = np.asarray(s.debt) - debt
        roll = -np.expm1(-params.dt / mat[:, None]) * debt  # 1 - exp(-dt / maturity): ~dt / maturity
        coupon = (coupon * (debt - roll) + y * (roll + new)) / (debt + new)
        debt = debt + new
        np.testing.assert_allclose(np.asarray(s.interest), debt * coupon, rtol=1e-12)
    assert np.ptp(coupon[0]) > 1e-5  # the paths' yields, so their coupons, differ


def test_lookup_and_select_steps_agree():
    """The forward loop reads regime tables by select chains, reverse mode by `next_regime` (indexing, with the
    one-product transpose of `lookup`): the same step either way, from every regime to every regime, jump or not
    (states after a few steps of april_2025, float64)."""
    from jaxstress._model import initial_state, next_regime, prepare, step

    params = load_scenario("april_2025").params(jnp.float64)
    prep = prepare(params)
    n_reg = prep.cum_p.shape[0]
    s0 = initial_state(prep, params.initial_regime)
    n = 64
    rng = np.random.default_rng(3)
    state = _simulate.broadcast_paths(s0, n)
    state = eqx.tree_at(lambda s: s.regime, state, jnp.asarray(np.arange(n) % n_reg, jnp.int32))
    normal = tuple(jnp.asarray(rng.normal(size=n)) for _ in range(10))
    uniform = tuple(jnp.asarray(rng.uniform(size=n)) for _ in range(2))
    select = jax.jit(jax.vmap(step, in_axes=(None, None, 0, 0, 0)))
    looked_up = jax.jit(lambda p, t, s, z, u: jax.vmap(step, in_axes=(None, None, 0, 0, 0, 0))(
        p, t, s, z, u, next_regime(p, s, u[0])))
    for _ in range(3):
        a = select(prep, 0.1, state, normal, uniform)
        b = looked_up(prep, 0.1, state, normal, uniform)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
        assert len(set(np.asarray(a.regime).tolist())) > 1
        state = a
        normal = tuple(jnp.asarray(rng.normal(size=n)) for _ in range(10))
        uniform = (jnp.asarray(rng.uniform(size=n)), jnp.asarray(rng.uniform(size=n) * 0.2))  # some jumps


def test_lookup_gradient_equals_indexing():
    """The custom reverse mode of `lookup` (one product with the one-hot regimes) gives the cotangents that
    indexing each table gives (a scatter-add per table), float64."""
    from jaxstress._model import lookup

    rng = np.random.default_rng(5)
    tables = {k: jnp.asarray(rng.normal(size=4)) for k in ("a", "b", "c")}
    index = jnp.asarray(rng.integers(0, 4, size=200), jnp.int32)
    w = {k: jnp.asarray(rng.normal(size=200)) for k in tables}

    def loss(fn, tb):
        got = fn(tb)
        return sum(jnp.sum(jnp.sin(got[k]) * w[k]) for k in tb)

    g1 = jax.grad(lambda tb: loss(lambda x: lookup(x, index, 4), tb))(tables)
    g2 = jax.grad(lambda tb: loss(lambda x: {k: t[index] for k, t in x.items()}, tb))(tables)
    for k in tables:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-13, atol=1e-13)
        assert np.all(np.abs(np.asarray(g1[k])) > 0)


def test_regime_logp_gradient_equals_indexing_without_scatter():
    """`next_regime`'s log-probability, read from the tables' lookup and picked by the current regime, has the
    gradient w.r.t. the log-transition matrix that indexing it by (regime, next regime) has, and its reverse mode
    has no scatter-add (onto the R x R entries from every path: atomics on a GPU), float64."""
    from jaxstress._model import initial_state, next_regime, prepare

    params = load_scenario("april_2025").params(jnp.float64)
    prep = prepare(params)
    n_reg = prep.cum_p.shape[0]
    n = 400
    rng = np.random.default_rng(8)
    state = _simulate.broadcast_paths(initial_state(prep, params.initial_regime), n)
    state = eqx.tree_at(lambda s: s.regime, state, jnp.asarray(rng.integers(0, n_reg, size=n), jnp.int32))
    u, w = jnp.asarray(rng.uniform(size=n)), jnp.asarray(rng.normal(size=n))

    def loss(log_p, indexed):
        p = eqx.tree_at(lambda q: q.log_p, prep, log_p)
        nxt, logp, _ = next_regime(p, state, u)
        if indexed:
            logp = state.logp + log_p[state.regime, nxt]
        return jnp.sum(w * logp)

    looked_up, indexed = (jax.grad(functools.partial(loss, indexed=i)) for i in (False, True))
    got, want = looked_up(prep.log_p), indexed(prep.log_p)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    assert np.count_nonzero(np.asarray(want)) > n_reg  # transitions out of several regimes are drawn
    assert "scatter-add" not in str(jax.make_jaxpr(looked_up)(prep.log_p))
    assert "scatter-add" in str(jax.make_jaxpr(indexed)(prep.log_p))  # the check can fail


def test_step_forms_gradient_equals_direct():
    """`_step_forms` (forward by select chains, reverse mode by recomputing the looked-up step) gives the
    cotangents that differentiating the looked-up step directly gives, w.r.t. the parameters and the state, and the
    forward values of the select-chain step (float64, a masked step past the horizon included)."""
    from jaxstress._model import initial_state, next_regime, prepare, step
    from jaxstress._simulate import _step_forms

    params = load_scenario("april_2025").params(jnp.float64)
    prep = prepare(params)
    s0 = initial_state(prep, params.initial_regime)
    n = 32
    rng = np.random.default_rng(6)
    state = _simulate.broadcast_paths(s0, n)
    state = eqx.tree_at(lambda s: s.regime, state, jnp.asarray(np.arange(n) % prep.cum_p.shape[0], jnp.int32))
    draws = (tuple(jnp.asarray(rng.normal(size=n)) for _ in range(10)),
             (jnp.asarray(rng.uniform(size=n)), jnp.asarray(rng.uniform(size=n) * 0.2)))
    w = jnp.asarray(rng.normal(size=n))
    forward, step_vjp = _step_forms(params.dt, 5, True, lambda d: d)
    looked_up = jax.vmap(step, in_axes=(None, None, 0, 0, 0, 0))

    def direct(prep, state, t):
        z, u = draws
        new = looked_up(prep, t * params.dt, state, z, u, next_regime(prep, state, u[0]))
        return jax.tree_util.tree_map(lambda a, b: jnp.where(t < 5, a, b), new, state)

    def loss(fn):
        return lambda prep, state: jnp.sum(w * (fn(prep, state).y10 + fn(prep, state).fund_eq * 1e-3))

    for t in (jnp.asarray(2), jnp.asarray(7)):
        ct = jax.grad(lambda o: jnp.sum(w * (o.y10 + o.fund_eq * 1e-3)), allow_int=True)(direct(prep, state, t))
        got = step_vjp(prep, state, draws, t, ct)
        want = jax.grad(loss(lambda p, s: direct(p, s, t)), argnums=(0, 1), allow_int=True)(prep, state)
        for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
            if x.dtype != jax.dtypes.float0:  # the regime index (an integer) has no gradient
                np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-14)
        moved = any(np.any(np.asarray(x) != 0) for x in jax.tree_util.tree_leaves(got[0]))
        assert moved == bool(t < 5)  # a step past the horizon does not depend on the parameters
        fwd = forward(prep, state, draws, t)
        for x, y in zip(jax.tree_util.tree_leaves(fwd), jax.tree_util.tree_leaves(direct(prep, state, t)), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_final_state_gradient_equals_plain_scan():
    """`_final_state`'s reverse mode (segments run again from their stored starts, one buffer) gives the gradient
    of plain reverse mode through a scan of the looked-up step: float64, 12 steps in 3 segments of 4 (the buffer
    reused; segments that divide the steps, as `segment_length` picks) and of 5 (the last segment's last 3 steps
    masked), 256 paths."""
    from jaxstress._model import initial_state, next_regime, prepare, step
    from jaxstress._simulate import _block_draws, _final_state

    params = load_scenario("april_2025").params(jnp.float64)
    n = 12
    draw = _block_draws(jax.random.key(3), jnp.arange(1, dtype=jnp.uint32), jnp.float64, clip=6.0)
    looked_up = jax.vmap(step, in_axes=(None, None, 0, 0, 0, 0))
    w = jnp.asarray(np.random.default_rng(2).normal(size=BLOCK))

    def loss(values, how):
        prep = prepare(eqx.tree_at(lambda p: p.values, params, {**params.values, **values}))
        state = _simulate.broadcast_paths(initial_state(prep, params.initial_regime), BLOCK)
        if how == "plain":
            def one(s, t):
                z, u = draw(t)
                return looked_up(prep, t * params.dt, s, z, u, next_regime(prep, s, u[0])), None
            state, _ = jax.lax.scan(one, state, jnp.arange(n))
        else:
            state = _final_state((params.dt, n, how), prep, state, draw)
        return jnp.sum(w * (state.y10 + 1e-3 * state.fund_eq + state.logp + state.log_equity))

    values = {k: params.values[k] for k in ("curve.k", "basis_funds.haircut_vol", "initial.tau", "equity.sigma")}
    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    value, want = value_and_grad(values, "plain")
    assert all(float(want[k]) != 0 for k in values), want
    for seg in (4, 5):
        got_value, got = value_and_grad(values, seg)
        np.testing.assert_allclose(got_value, value, rtol=1e-13)
        for k in values:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-10, err_msg=f"{k}, segments of {seg}")


@pytest.mark.parametrize("n, seg", [(252, 14), (63, 7), (25, 5), (12, 3), (13, 4), (1, 1), (2, 1), (504, 21)])
def test_segment_length_divides_the_steps_where_it_can(n, seg):
    """The gradient's segments: a divisor of the step count near sqrt(T) (no masked steps), else sqrt(T)
    rounded (13 steps: 4 segments of 4, the last 3 steps masked)."""
    from jaxstress._simulate import segment_length

    assert segment_length(n) == seg


def test_par_yields_share_one_grid_and_match_one_by_one():
    """par_yields (one semiannual grid of discount factors for whole half years) equals par_yield_from_zero per
    maturity, on and off the grid, for a batch of curves."""
    from jaxstress._curve import par_yields

    rng = np.random.default_rng(4)
    r, pi, tau, rs, p = (jnp.asarray(rng.normal(c, 0.01, size=7)) for c in (0.04, 0.023, 0.005, 0.01, -0.01))

    def zero_fn(m):
        return zero_yields(m, r, pi, tau, rs, p, 0.3, 0.6, 2.5)

    mats = (0.25, 0.5, 0.75, 1.0, 2.0, 7.3, 10.0, 30.0)
    got = par_yields(zero_fn, mats)
    assert got.shape == (7, len(mats))
    for j, m in enumerate(mats):
        np.testing.assert_allclose(got[:, j], par_yield_from_zero(zero_fn, m), rtol=1e-13, atol=0)
