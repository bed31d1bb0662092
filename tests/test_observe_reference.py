"""What a run reports, against an independent float64 numpy reference written from the docs.

`tests/test_model_reference.py` checks one time step; this file checks what is read off the states afterwards:
every reported variable of `jaxstress._simulate.observe` (`variable_names`: zero and par yields, the drivers,
flows and plumbing, the interest bill, the portfolio's value, the markets, the regime and the dysfunction) and
every per-path metric of `path_metrics` (`METRIC_NAMES`), and the statistics `summarize` derives from them (the
value of every one, by what its name says). The reference is written from docs/MODEL.md ("Curve", "Markets and the
federal debt", "Portfolio"), docs/CONFIG.md (the portfolio format: what each kind is worth) and the README (the
outputs and metrics); only the interface is shared (the fields of `State`, the variable and metric names). It
found the docs incomplete where they now say more (docs/MODEL.md: the par-yield formula and the bill convention, a
bond's payment dates, coupons held without interest, the future's CTD proxy that ages and whose coupons are not
counted; the README: every reported variable, `term_premium_impact` as the transient premium I alone, the equity
index at 100 at t = 0, the per-path metrics and the statistics), and the code wrong on par yields off the half-year
grid (`test_par_yields_off_the_half_year_grid`, an expected failure until it is fixed).

The states are arbitrary but stressed and different on every path and at every reporting time: basis funds with
losses, dysfunction positive on most paths (the mortgage stress spread) and zero on others, every regime, flow
impact and a persistent premium in the term premium, equity down and the dollar moved. Their derived fields
(`tau`, `y10`, `y2`, `dysfunction`) are computed by the package, as in a run, and never read by the reference,
which computes its own from the state's other fields. The portfolio (written to a
temporary file) has a bond that matures inside the horizon, bonds whose coupons fall between the reporting times
(and one exactly on one), a zero-coupon 30y, a bond ETF, a short future whose CTD proxy pays a coupon inside the
horizon, equity and cash; every position is also valued alone (the notionals are leaves of `Params`, so that
costs no compilation) so that a wrong rule for one kind cannot hide behind the others. The curve's maturities
include two bills (0.1 and 0.25y), whole half years, and maturities off the half-year grid (0.75, 1.25 and 7.3y)
whose par yields are checked on their own (see `test_par_yields_off_the_half_year_grid`).
"""

import dataclasses
import math
import re

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _reference import RefValues, dysfunction, finish, term_premium, zero_yield  # noqa: E402
from _reference import to_state as jax_state  # noqa: E402

from jaxstress import load_scenario  # noqa: E402
from jaxstress._metrics import summarize  # noqa: E402
from jaxstress._model import State, _yield, initial_state, prepare, tau_total  # noqa: E402
from jaxstress._model import dysfunction as model_dysfunction  # noqa: E402
from jaxstress._simulate import METRIC_NAMES, observe, path_metrics, variable_names  # noqa: E402

N_PATHS = 8
MATURITIES = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 2.0, 3.0, 5.0, 7.0, 7.3, 10.0, 20.0, 30.0)
OFF_GRID = (0.75, 1.25, 7.3)  # >= 6 months but not whole half years
HORIZON = 1.0
# Reporting times: 0; 1 month (before any coupon of the book); 80 days (0.317: after the 0.25 and 0.3 coupons and the
# 0.3y bond's maturity); 200 days (0.794: after the 0.75 coupons, before 0.8's); the horizon 1.0, which is exactly a
# coupon date of the 2y bond (its value is continuous there: the coupon is either still discounted by exp(0) or
# received).
TIMES = (0.0, 21 / 252, 80 / 252, 200 / 252, HORIZON)
# (kind, notional, coupon, maturity); None where the kind takes none
POSITIONS = (
    ("bond", 2.0, 0.05, 0.3),  # matures at 0.3, inside the horizon; one payment (coupon + principal)
    ("bond", 3.0, 0.03, 7.3),  # coupons at 0.3, 0.8, ... (counted back from maturity)
    ("bond", 1.5, 0.04, 2.0),  # coupons at 0.5, 1.0, ...
    ("bond", 1.0, 0.0, 30.0),  # a zero-coupon 30y
    ("bond", 0.7, 0.0425, 10.25),  # coupons at 0.25, 0.75, ...
    ("etf", 0.8, 0.035, 8.5),
    ("future", -2.5, None, 5.25),  # the 6% default coupon: its CTD proxy pays at 0.25 and 0.75
    ("future", 1.2, 0.045, 9.6),  # a long future with its own coupon
    ("equity", 0.6, None, None),
    ("cash", 0.4, None, None),
)
FUTURE_COUPON = 0.06  # docs/CONFIG.md: a future's coupon defaults to 0.06

# Tolerance: float64 rounding, as in tests/test_model_reference.py. A reported value is a few dozen operations on
# the state (a par yield or a bond's price: sums of up to 60 discount factors); numpy's and XLA's exp differ by a few
# ulps. Observed: at most ~3e-15 of a variable's magnitude, except the 0.1y bill's par yield, 2e-14 (the
# cancellation in 1/d - 1 with d = 0.996). rtol 1e-10 with atol 1e-12 times the variable's
# magnitude (at least 1) leaves a margin of 10^4 while a term of practical size (a basis point of a yield is 1e-4
# of it in %, a coupon of a $bn position ~1e-2) fails.
RTOL = 1e-10
ATOL = 1e-12


# ----------------------------------------------------------------------------------------------------------------
# the reference, from the docs


class Ref(RefValues):
    """The scenario's parameters as numpy float64 values."""

    def __init__(self, params):
        super().__init__(params)
        v = self.v
        self.initial = dict(r=v["initial.r"], pi=v["initial.pi"], tau=v["initial.tau"], r_star=v["initial.r_star"],
                            p=v["initial.p"])


class Curve:
    """The zero curve of a batch of states (or of the initial values): discount factors at any times (paths, n)."""

    def __init__(self, ref, r, pi, tau, r_star, p):
        self.ref = ref
        self.f = [np.asarray(x, np.float64)[..., None] for x in (r, pi, tau, r_star, p)]

    def zero(self, m):
        return zero_yield(self.ref, np.asarray(m, np.float64), *self.f)

    def discount(self, times):
        """exp(-y(m) m); 1 at m = 0 (a payment due now), whatever the yield there."""
        times = np.asarray(times, np.float64)
        safe = np.where(times > 0, times, 1.0)
        return np.where(times > 0, np.exp(-self.zero(safe) * safe), 1.0)


def payments(coupon, maturity):
    """A Treasury's payment dates and amounts per unit face: every half year counted back from maturity (all > 0),
    coupon / 2 each, the principal with the last (docs/CONFIG.md: coupons paid semiannually)."""
    n = math.ceil(maturity / 0.5 - 1e-9)  # dates maturity - 0.5 j > 0, j = 0 .. n - 1
    times = maturity - 0.5 * np.arange(n)[::-1]
    amounts = np.full(n, coupon / 2.0)
    amounts[-1] += 1.0
    return times, amounts


def par_yield(curve, m):
    """The par yield of maturity m (decimal): the coupon, paid semiannually, at which the bond's clean price is 1.

    Payments every half year counted back from m, so the first comes after a (possibly short) first period
    t1 = m - 0.5 (n - 1) in (0, 0.5]; clean price = the discounted payments - the accrued coupon c/2 (0.5 - t1)/0.5,
    so c = 2 (1 - d(m)) / (sum_i d(t_i) - (0.5 - t1)/0.5) (for whole half years: 2 (1 - d(m)) / sum d, t1 = 0.5).
    Below 6 months (no coupon before maturity) the bill convention, as `jaxstress._curve`'s docstring states: the
    bond-equivalent (simple) yield (1/d - 1)/m.
    """
    if m < 0.5:
        d = curve.discount([m])[..., 0]
        return (1.0 / d - 1.0) / m
    times, _ = payments(0.0, m)
    d = curve.discount(times)
    accrued = (0.5 - times[0]) / 0.5
    return 2.0 * (1.0 - d[..., -1]) / (d.sum(axis=-1) - accrued)


def price(curve, coupon, maturity):
    """Price per unit face of a Treasury of this coupon and remaining maturity (0 once matured)."""
    if maturity <= 0:
        return np.zeros(np.shape(curve.f[0])[:-1])
    times, amounts = payments(coupon, maturity)
    return curve.discount(times) @ amounts


def position_value(ref, kind, notional, coupon, maturity, curve, curve0, t, s):
    """docs/CONFIG.md "Portfolio files" and docs/MODEL.md "Portfolio": the value at t of one position, $bn."""
    if kind == "bond":
        # remaining payments discounted on the curve at t over their time left (roll-down), plus the payments
        # received by t, held as cash (not reinvested)
        times, amounts = payments(coupon, maturity)
        left = times > t
        held = curve.discount(times[left] - t) @ amounts[left]  # 0 on every path once matured
        return notional * (held + amounts[~left].sum())
    if kind == "etf":
        # a fund of constant maturity: price at t / price at 0, plus its coupon x t
        return notional * (price(curve, coupon, maturity) / price(curve0, coupon, maturity) + coupon * t)
    if kind == "future":
        # P&L only of the CTD proxy, a bond of this maturity at 0, `maturity - t` left at t (it ages; its coupons
        # are not part of the future's P&L), at clean prices: the price less the coupon accrued since the last
        # payment date (payments counted back from maturity)
        c = FUTURE_COUPON if coupon is None else coupon

        def clean(curve, m):
            if m <= 0:
                return price(curve, c, m)
            times, _ = payments(c, m)
            return price(curve, c, m) - c / 2 * (0.5 - times[0]) / 0.5

        c0 = clean(curve0, maturity)
        return notional * (clean(curve, maturity - t) - c0) / c0
    if kind == "equity":
        return notional * np.exp(s["log_equity"])  # the index, 1 at t = 0
    if kind == "cash":
        return notional * np.exp(s["cash"])  # exp(integral r dt)
    raise AssertionError(kind)


def initial_curve(ref):
    return Curve(ref, **ref.initial)


def state_curve(ref, s):
    """The zero curve of a state, its 10y term premium from its parts (not read from the state's `tau`)."""
    tau = term_premium(ref, s["tau_f"], s["impact"], s["stock"])
    return Curve(ref, s["r"], s["pi"], tau, s["r_star"], s["p"])


def ref_observe(ref, s, t, positions=POSITIONS):
    """Every reported variable of a state at time t (name -> array over paths), in the README's units: yields,
    rates and premia in %, amounts in $bn, the basis in bp."""
    v = ref.v
    curve, curve0 = state_curve(ref, s), initial_curve(ref)
    out = {}
    for m in MATURITIES:
        out[f"yield_{m:g}y"] = curve.zero([m])[..., 0] * 100
    for m in MATURITIES:
        out[f"par_yield_{m:g}y"] = par_yield(curve, m) * 100
    y10 = curve.zero([10.0])[..., 0]
    D = dysfunction(ref, s["basis"], y10, s["ewma10"], s["var10"])  # of this state (docs/MODEL.md "Dysfunction")
    out["short_rate"] = s["r"] * 100
    out["breakeven_10y"] = s["pi"] * 100  # long-run inflation expectations, the 10y breakeven (CONFIG initial.pi)
    out["term_premium_10y"] = term_premium(ref, s["tau_f"], s["impact"], s["stock"]) * 100
    out["term_premium_impact"] = s["impact"] * 100  # the transient flow-impact premium I (README)
    out["neutral_rate"] = s["r_star"] * 100
    out["policy_path"] = s["p"] * 100
    out["mortgage_rate"] = (y10 + v["mortgage.spread"] + v["mortgage.stress_spread"] * D) * 100
    for i, h in enumerate(ref.holders):
        out[f"holdings_{h}"] = s["holdings"][i]
    out["foreign_holdings_total"] = s["holdings"].sum(axis=0)
    out["basis_fund_equity"] = s["fund_eq"]
    out["basis_fund_position"] = s["fund_pos"]
    out["basis_bp"] = s["basis"]
    out["vol_fund_holdings"] = s["volfund"]
    out["dealer_load"] = s["dealer"]
    out["fed_holdings"] = s["fed"]
    out["interest_bill"] = s["interest"].sum(axis=0)  # sum_k M_k, $bn a year
    out["portfolio_value"] = sum(position_value(ref, *pos, curve, curve0, t, s) for pos in positions)
    out["equity_index"] = 100 * np.exp(s["log_equity"])  # 100 at t = 0 (README)
    out["dollar_index"] = np.exp(s["log_dollar"])
    out["regime"] = s["regime"].astype(np.float64)
    out["dysfunction"] = D
    out["foreign_sales_cum"] = s["foreign_sales"]
    out["forced_sales_cum"] = s["forced_sales"]
    return out


def ref_metrics(obs0, obs1, s):
    """The per-path metrics at the horizon from the initial and final observations and the final state: changes of
    the reported yields and premia (bp), the 10y's level and running maximum, the portfolio loss value(0) -
    value(T) (docs/MODEL.md), the flows over the horizon ($bn), the change of the interest bill ($bn a year), the
    equity and dollar returns (%), the basis and the basis funds' equity, and the log-probability of the path's
    discrete draws."""
    def change(name, mult=1.0):
        return (obs1[name] - obs0[name]) * mult

    y10_0 = obs0["yield_10y"] / 100
    return {
        "y2_change_bp": change("yield_2y", 100),
        "y10_change_bp": change("yield_10y", 100),
        "y30_change_bp": change("yield_30y", 100),
        "y10_max_rise_bp": (s["max_y10"] - y10_0) * 1e4,
        "y10_level_pct": obs1["yield_10y"],
        "y10_max_level_pct": s["max_y10"] * 100,
        "breakeven_10y_change_bp": change("breakeven_10y", 100),
        "term_premium_10y_change_bp": change("term_premium_10y", 100),
        "mortgage_rate_change_bp": change("mortgage_rate", 100),
        "portfolio_loss": obs0["portfolio_value"] - obs1["portfolio_value"],
        "foreign_sales_bn": change("foreign_sales_cum"),
        "forced_sales_bn": change("forced_sales_cum"),
        "vol_fund_sales_bn": s["volfund_sales"],
        "fed_purchases_bn": change("fed_holdings"),
        "interest_cost_change_bn": change("interest_bill"),
        "equity_return_pct": (obs1["equity_index"] / obs0["equity_index"] - 1.0) * 100,
        "dollar_change_pct": (obs1["dollar_index"] / obs0["dollar_index"] - 1.0) * 100,
        "basis_change_bp": change("basis_bp"),
        "basis_fund_equity_change_bn": change("basis_fund_equity"),
        "regime_logp": s["logp"],
    }


# ----------------------------------------------------------------------------------------------------------------
# the states


def ref_initial_state(ref):
    """The state at t = 0 from the docs: the `initial.*` values, basis funds at `position` with equity
    position / leverage, var10 = vol0^2, ewma5 and the running maximum at the initial 10y, holdings and debt as
    configured (each bucket's bill its amount x coupon), the dollar at `initial.dollar_index`, nothing accumulated."""
    v = ref.v
    z = np.zeros(N_PATHS)
    s = dict(regime=np.full(N_PATHS, 0), logp=z, r=v["initial.r"] + z, pi=v["initial.pi"] + z,
             tau_f=v["initial.tau"] + z, impact=z, stock=z, r_star=v["initial.r_star"] + z, p=v["initial.p"] + z,
             basis=v["initial.basis_bp"] + z, fund_pos=v["basis_funds.position"] + z,
             fund_eq=v["basis_funds.position"] / v["basis_funds.leverage"] + z, var10=v["initial.vol_10y"] ** 2 + z,
             volfund=v["vol_funds.holdings"] + z, dealer=z, fed=z, holdings=ref.holder("holdings")[:, None] + z,
             debt=v["debt.amounts"][:, None] + z, interest=(v["debt.amounts"] * v["debt.coupons"])[:, None] + z,
             log_equity=z, log_dollar=np.log(v["initial.dollar_index"]) + z, cash=z, foreign_sales=z,
             forced_sales=z, volfund_sales=z)
    y10_0 = zero_yield(ref, 10.0, **ref.initial)
    s["ewma10"] = y10_0 + z
    s["max_y10"] = y10_0 + z
    return finish(ref, s)


def stressed_state(ref, k, s0):
    """A stressed state at reporting time k (numpy, field -> array over paths), different on each path and at each
    k; its accumulated flows are consistent with the initial state s0 (holdings sold = foreign sales, vol-fund
    holdings sold = their sales), so that the metrics do not depend on which of the two a definition reads."""
    v = ref.v
    rng = np.random.default_rng(100 + k)
    n = N_PATHS
    i = np.arange(n)
    u = rng.uniform(size=(20, n))
    s = {}
    s["regime"] = (i + k) % len(ref.regimes)
    s["logp"] = -0.3 * i - 0.1 * k - u[0]
    s["r"] = v["initial.r"] - 0.01 * u[1] + 0.004 * np.sin(i + k)
    s["pi"] = v["initial.pi"] + 0.006 * (u[2] - 0.4)
    s["tau_f"] = v["initial.tau"] + 0.012 * u[3]
    s["impact"] = 0.004 * (u[4] - 0.2)
    s["stock"] = (150.0 + 450.0 * u[5]) * np.where(i % 3 == 0, -1.0, 1.0)  # net supply absorbed, or bought back
    s["r_star"] = v["initial.r_star"] + 0.004 * (u[6] - 0.5)
    s["p"] = v["initial.p"] - 0.01 * u[7]
    # the basis above its initial level on most paths, below on paths 0 and 5 (as are their 10y move and vol:
    # dysfunction 0 there)
    s["basis"] = 60.0 * u[8] + 3.0
    s["basis"][[0, 5]] = -8.0
    s["var10"] = (v["initial.vol_10y"] * (0.7 + 2.0 * u[9])) ** 2
    s["var10"][[0, 5]] = (0.8 * v["initial.vol_10y"]) ** 2
    s["fund_pos"] = v["basis_funds.position"] * (0.4 + 0.7 * u[10])
    s["fund_eq"] = v["basis_funds.position"] / v["basis_funds.leverage"] * (1.2 * u[11] - 0.1)  # some negative
    s["volfund"] = v["vol_funds.holdings"] * (0.6 + 0.5 * u[12])
    s["dealer"] = 450.0 * u[13]
    s["fed"] = 800.0 * u[14] * (k > 0)
    s["holdings"] = s0["holdings"] * (1.0 - 0.3 * rng.uniform(size=s0["holdings"].shape))
    s["debt"] = s0["debt"] * (1.0 + 0.05 * rng.uniform(size=s0["debt"].shape))
    s["interest"] = s["debt"] * (v["debt.coupons"][:, None] + 0.01 * rng.uniform(size=s0["debt"].shape))
    s["log_equity"] = 0.3 * (u[15] - 0.7)
    s["log_dollar"] = np.log(v["initial.dollar_index"]) + 0.15 * (u[16] - 0.6)
    s["cash"] = s["r"] * k / 252 * 0.9 + 0.002 * u[17]
    s["foreign_sales"] = s0["holdings"].sum(axis=0) - s["holdings"].sum(axis=0)
    s["forced_sales"] = 900.0 * u[18]
    s["volfund_sales"] = s0["volfund"] - s["volfund"]
    tau = term_premium(ref, s["tau_f"], s["impact"], s["stock"])
    s["y10"] = zero_yield(ref, 10.0, s["r"], s["pi"], tau, s["r_star"], s["p"])
    s["ewma10"] = s["y10"] - 0.004 * (u[19] - 0.25)
    s["ewma10"][[0, 5]] = s["y10"][[0, 5]] + 0.001
    s["max_y10"] = np.maximum(np.maximum(s["y10"], s0["y10"]) + 0.003 * u[0], s0["max_y10"])
    return finish(ref, s)


def to_state(s, prep) -> State:
    """A batch of JAX states from the numpy state; the derived fields (`tau`, `y10`, `y2`, `dysfunction`) computed
    by the package, as a run's states have them, so that the reference's own (it never reads them) is compared."""
    st = jax_state(s)
    tau = tau_total(prep, st.tau_f, st.impact, st.stock)
    y10 = _yield(prep.load_10, st.r, st.pi, tau, st.r_star, st.p)
    y2 = _yield(prep.load_2, st.r, st.pi, tau, st.r_star, st.p)
    derived = (tau, y10, y2, model_dysfunction(prep, st.basis, y10, st.ewma10, st.var10))
    return eqx.tree_at(lambda q: (q.tau, q.y10, q.y2, q.dysfunction), st, derived)


def field(state: State, name: str) -> np.ndarray:
    x = getattr(state, name)
    return np.stack([np.asarray(a) for a in x]) if isinstance(x, tuple) else np.asarray(x)


def portfolio_toml(positions) -> str:
    lines = ['name = "observe_reference"', 'description = "every kind, coupons and a maturity inside the horizon"']
    for kind, notional, coupon, maturity in positions:
        lines += ["", "[[positions]]", f'kind = "{kind}"', f"notional = {notional!r}"]
        if coupon is not None:
            lines.append(f"coupon = {coupon!r}")
        if maturity is not None:
            lines.append(f"maturity = {maturity!r}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# the runs


def with_notionals(params, notionals):
    return eqx.tree_at(lambda p: p.portfolio.notional, params, jnp.asarray(notionals, jnp.float64))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    book = tmp_path_factory.mktemp("book") / "observe_reference.toml"
    book.write_text(portfolio_toml(POSITIONS))
    scenario = load_scenario("april_2025", overrides=[f"curve.maturities={list(MATURITIES)}"],
                             portfolio=str(book), horizon=HORIZON)
    params = scenario.params(jnp.float64)
    assert params.portfolio.kinds == tuple(p[0] for p in POSITIONS)
    ref = Ref(params)
    prep = prepare(params)

    # params is an argument (its notionals are leaves): one compilation serves every book below
    obs_fn = jax.jit(jax.vmap(lambda pa, s, t: observe(pa, prepare(pa), s, t), in_axes=(None, 0, None)))
    init_fn = jax.jit(lambda pa: initial_state(prepare(pa), pa.initial_regime))
    names = variable_names(params)
    metrics_fn = jax.jit(jax.vmap(lambda o0, o1, s: path_metrics(names, o0, o1, s), in_axes=(0, 0, 0)))

    s0_ref = ref_initial_state(ref)
    states = [s0_ref] + [stressed_state(ref, k, s0_ref) for k in range(1, len(TIMES))]
    jstates = [to_state(s, prep) for s in states]
    got, want = [], []
    for t, s, js in zip(TIMES, states, jstates, strict=True):
        got.append(np.asarray(obs_fn(params, js, jnp.asarray(t))).T)  # (variables, paths)
        want.append(ref_observe(ref, s, t))
    # each position alone at its notional: its value (portfolio_value), code and reference
    notionals = np.asarray(params.portfolio.notional)
    alone_got, alone_want = [], []
    for j in range(len(POSITIONS)):
        pa = with_notionals(params, np.where(np.arange(len(POSITIONS)) == j, notionals, 0.0))
        alone_got.append([np.asarray(obs_fn(pa, js, jnp.asarray(t)))[:, names.index("portfolio_value")]
                          for t, js in zip(TIMES, jstates, strict=True)])
        alone_want.append([ref_observe(ref, s, t, positions=[POSITIONS[j]])["portfolio_value"]
                           for t, s in zip(TIMES, states, strict=True)])
    # the code's own initial state (broadcast over paths) against the reference's
    s0_code = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (N_PATHS,) + jnp.shape(x)), init_fn(params))
    obs0_code = np.asarray(obs_fn(params, jstates[0], jnp.asarray(0.0)))
    metrics_got = np.asarray(metrics_fn(obs0_code, np.asarray(got[-1]).T, jstates[-1])).T
    metrics_want = ref_metrics(want[0], want[-1], states[-1])
    return dict(params=params, ref=ref, names=names, states=states, got=got, want=want, alone_got=alone_got,
                alone_want=alone_want, s0_code=s0_code, metrics_got=metrics_got, metrics_want=metrics_want)


def check(got, want, what, bad):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    atol = ATOL * max(1.0, float(np.max(np.abs(want))))
    err = np.abs(got - want)
    if not np.all(err <= atol + RTOL * np.abs(want)):
        j = int(np.argmax(err - RTOL * np.abs(want)))
        bad.append(f"{what}[path {j}]: got {got[j]!r}, reference {want[j]!r} (diff {got[j] - want[j]:.3e})")


# ----------------------------------------------------------------------------------------------------------------
# the tests


def test_initial_state_is_the_documented_one(runs):
    """`initial_state` is the state at t = 0 the docs describe (the reference's, which the metrics start from)."""
    s0 = runs["states"][0]
    bad = []
    for f in dataclasses.fields(State):
        if f.name == "regime":
            assert np.all(field(runs["s0_code"], "regime") == runs["params"].initial_regime)
            continue
        check(field(runs["s0_code"], f.name).reshape(np.shape(s0[f.name])), s0[f.name], f.name, bad)
    assert not bad, "\n".join(bad)


def test_variable_names_are_the_documented_ones(runs):
    """The reported variables are those of the reference, in the README's list and units."""
    assert set(runs["names"]) == set(runs["want"][0])
    assert len(runs["names"]) == len(set(runs["names"]))


def test_every_reported_variable_matches_the_reference(runs):
    """Every variable of `observe` at every reporting time against the reference (par yields off the half-year grid
    aside: `test_par_yields_off_the_half_year_grid`)."""
    names = runs["names"]
    bad = []
    for t, got, want in zip(TIMES, runs["got"], runs["want"], strict=True):
        for i, name in enumerate(names):
            if name in {f"par_yield_{m:g}y" for m in OFF_GRID}:
                continue
            check(got[i], want[name], f"{name} at t={t:.4f}", bad)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("j", range(len(POSITIONS)), ids=[f"{p[0]}_{p[3]}" for p in POSITIONS])
def test_each_position_alone_matches_the_reference(runs, j):
    """Each position's value alone (the book with only its notional) at every reporting time."""
    bad = []
    for t, got, want in zip(TIMES, runs["alone_got"][j], runs["alone_want"][j], strict=True):
        check(got, want, f"{POSITIONS[j]} at t={t:.4f}", bad)
    assert not bad, "\n".join(bad)


def test_par_yields_off_the_half_year_grid(runs):
    """Par yields at maturities >= 6 months that are not whole half years (0.75, 1.25, 7.3y): a Treasury's
    coupons fall every half year counted back from maturity, with a short first period, and par is a clean price
    of 1 (`par_yield`)."""
    names = runs["names"]
    bad = []
    for t, got, want in zip(TIMES, runs["got"], runs["want"], strict=True):
        for m in OFF_GRID:
            name = f"par_yield_{m:g}y"
            check(got[names.index(name)], want[name], f"{name} at t={t:.4f}", bad)
    assert not bad, "\n".join(bad)


def test_par_yield_reference_is_the_standard_one(runs):
    """The reference's par yields: a bond paying them is at par (clean price 1) on the curve, and on a flat curve
    they are the flat rate compounded semiannually (bills: simply compounded over their term)."""
    ref = runs["ref"]
    s = runs["states"][2]
    curve = state_curve(ref, s)
    for m in MATURITIES:
        c = par_yield(curve, m)
        if m < 0.5:
            np.testing.assert_allclose(curve.discount([m])[..., 0] * (1 + c * m), 1.0, rtol=1e-14)
            continue
        times, _ = payments(0.0, m)
        dirty = np.stack([price(curve, ci, m)[i] for i, ci in enumerate(c)])
        np.testing.assert_allclose(dirty - c / 2 * (0.5 - times[0]) / 0.5, 1.0, rtol=1e-14)
    y = 0.04
    flat = Curve(ref, y, 0.0, 0.0, 0.0, 0.0)
    flat.zero = lambda m: np.full(np.shape(m), y)
    for m in MATURITIES:
        # whole half years: exactly the semiannually compounded rate; off the grid (a short first period) within
        # a basis point of it, as for a Treasury with an odd first coupon at par
        want = (np.exp(y * m) - 1) / m if m < 0.5 else 2 * (np.exp(y / 2) - 1)
        np.testing.assert_allclose(par_yield(flat, m), want, rtol=1e-12 if m not in OFF_GRID else 0, atol=0 if
                                   m not in OFF_GRID else 1e-4)


def test_path_metrics_match_the_reference(runs):
    """Every per-path metric of `path_metrics` from the initial and final observations and the final state."""
    assert set(METRIC_NAMES) == set(runs["metrics_want"])
    bad = []
    for i, name in enumerate(METRIC_NAMES):
        check(runs["metrics_got"][i], runs["metrics_want"][name], name, bad)
    assert not bad, "\n".join(bad)


def np_quantile(x, q):
    """The empirical q-quantile, linear between order statistics (numpy's default, written out)."""
    xs = np.sort(x)
    h = (xs.size - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, xs.size - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


@pytest.mark.parametrize("level", [5.0, 4.5])
def test_summary_statistics_are_what_their_names_say(level):
    """Every statistic `summarize` reports, by its name, from the per-path metrics: `<m>_mean`, `<m>_sd`, `<m>_qNN`
    (the NN% quantile), `portfolio_loss_var_NN` (the NN% quantile of the loss), `portfolio_loss_es_NN` (VaR + E[(L -
    VaR)+]/(1 - q), the mean loss beyond VaR taken as a whole tail of 1 - q), `prob_y10_above_<level>pct` and
    `prob_y10_max_above_<level>pct` (the shares of paths whose 10y ends, or peaks, above the level), and their
    standard errors where they are closed forms (means, probabilities). tests/test_metrics.py checks the
    estimator functions; this checks that every name is wired to the right one and the right metric."""
    rng = np.random.default_rng(11)
    n = 3000  # (n - 1) q is not a whole number: VaR interpolates between order statistics
    per_path = {name: rng.standard_normal(n) * (i + 1) + i for i, name in enumerate(METRIC_NAMES)}
    per_path["y10_level_pct"] = 4.5 + 0.6 * rng.standard_normal(n)
    per_path["y10_max_level_pct"] = per_path["y10_level_pct"] + rng.exponential(0.3, n)
    # paths exactly at the level: "above" is strictly above
    per_path["y10_level_pct"][:40] = level
    per_path["y10_max_level_pct"][:20] = level
    out = summarize(per_path, level=level)
    tag = f"{level:g}".replace(".", "p")
    expected = {f"portfolio_loss_var_{q}" for q in (95, 99)} | {f"portfolio_loss_es_{q}" for q in (95, 99)}
    expected |= {f"prob_y10_above_{tag}pct", f"prob_y10_max_above_{tag}pct"}
    assert expected <= set(out)
    assert "prob_y10_above_5pct" in out or level != 5.0  # the README's name
    seen = set()
    for key, stat in out.items():
        value = stat["value"]
        if m := re.fullmatch(r"portfolio_loss_var_(\d\d)", key):
            want = np_quantile(per_path["portfolio_loss"], int(m[1]) / 100)
        elif m := re.fullmatch(r"portfolio_loss_es_(\d\d)", key):
            q = int(m[1]) / 100
            loss = per_path["portfolio_loss"]
            var = np_quantile(loss, q)
            want = var + np.sum(np.maximum(loss - var, 0.0)) / n / (1 - q)
            # ES is the mean of the worst 1 - q of the paths up to the interpolation of VaR
            worst = np.sort(loss)[-round((1 - q) * n):]
            assert abs(want - worst.mean()) < 0.05 * worst.std()
        elif m := re.fullmatch(r"prob_y10(_max)?_above_(\w+)pct", key):
            assert m[2] == tag
            x = per_path["y10_max_level_pct" if m[1] else "y10_level_pct"]
            want = np.count_nonzero(x > level) / n
            np.testing.assert_allclose(stat["stderr"], np.sqrt(want * (1 - want) / n), rtol=1e-12)
        elif m := re.fullmatch(r"(.+)_mean", key):
            x = per_path[m[1]]
            want = np.sum(x) / n
            np.testing.assert_allclose(stat["stderr"], np.sqrt(np.sum((x - want) ** 2) / (n - 1) / n), rtol=1e-10)
        elif m := re.fullmatch(r"(.+)_sd", key):
            x = per_path[m[1]]
            want = np.sqrt(np.sum((x - x.mean()) ** 2) / (n - 1))
        elif m := re.fullmatch(r"(.+)_q(\d\d)", key):
            want = np_quantile(per_path[m[1]], int(m[2]) / 100)
        else:
            raise AssertionError(f"a statistic whose name says nothing known: {key}")
        seen.add(m[1] if key.endswith(("_mean", "_sd")) or re.search(r"_q\d\d$", key) else key)
        np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12, err_msg=key)
    # every per-path metric is summarized, except the levels (summarized as probabilities) and the log-probability
    summarized = set(METRIC_NAMES) - {"y10_level_pct", "y10_max_level_pct", "regime_logp"}
    assert summarized <= seen
    assert not {"y10_level_pct", "y10_max_level_pct", "regime_logp"} & seen
    # the README: the quantiles 1, 5, 50, 95, 99% of the changes of the yields, breakeven, term premium and
    # mortgage rate, the 10y's largest rise, the interest bill, forced sales, equity and dollar
    with_q = {"y2_change_bp", "y10_change_bp", "y30_change_bp", "breakeven_10y_change_bp", "term_premium_10y_change_bp",
              "mortgage_rate_change_bp", "y10_max_rise_bp", "interest_cost_change_bn", "forced_sales_bn",
              "equity_return_pct", "dollar_change_pct"}
    quantile_keys = {key for key in out if re.search(r"_q\d\d$", key)}
    assert quantile_keys == {f"{m}_q{q}" for m in with_q for q in ("01", "05", "50", "95", "99")}


def test_every_mechanism_is_active(runs):
    """The comparisons cover what they claim: coupons are received between reporting times, a bond matures, the
    CTD proxy pays a coupon, a reporting time falls on a coupon date, dysfunction (so the mortgage stress spread)
    is positive on some paths and zero on others, every regime is reported, the term premium has a flow part, the
    markets, cash and flows moved, and the curve has bills, whole half years and maturities off the grid."""
    ref, states, want = runs["ref"], runs["states"], runs["want"]
    v = ref.v
    # coupons: for each bond, the payments received by each reporting time; some arrive between reporting times
    received = {}
    for kind, _, coupon, maturity in POSITIONS:
        if kind == "bond":
            times, _ = payments(coupon, maturity)
            received[maturity] = [int(np.sum(times <= t)) for t in TIMES]
    assert received[0.3] == [0, 0, 1, 1, 1]  # matured between 1 month and 80 days
    assert received[7.3] == [0, 0, 1, 1, 2] and received[10.25] == [0, 0, 1, 2, 2]
    assert received[2.0] == [0, 0, 0, 1, 2]  # its 0.5 and 1.0 payments, the latter exactly at the horizon
    assert any(abs(t - tc) < 1e-15 for t in TIMES for tc in payments(0.04, 2.0)[0])
    # the short future's CTD proxy (maturity 5.25) has paid coupons at 0.25 and 0.75 by the later times
    assert [int(np.sum(payments(FUTURE_COUPON, 5.25)[0] <= t)) for t in TIMES] == [0, 0, 1, 2, 2]
    # the positions move: every one's value differs from its value at 0 by more than the tolerance
    for j in range(len(POSITIONS)):
        vals = np.asarray(runs["alone_want"][j])
        assert np.all(np.abs(vals[1:] - vals[0]) > 1e-6), POSITIONS[j]
    # dysfunction: positive (the mortgage stress spread above a basis point) on some paths, zero on others
    for s, w in zip(states[1:], want[1:], strict=True):
        D = w["dysfunction"]
        assert np.all(D[[0, 5]] == 0) and np.all(v["mortgage.stress_spread"] * np.delete(D, [0, 5]) > 1e-4)
        assert np.any(np.maximum(s["y10"] - s["ewma10"], 0) > 0) and np.any(s["basis"] > v["initial.basis_bp"])
        assert np.any(np.sqrt(s["var10"]) > v["initial.vol_10y"])
        # every regime is reported somewhere; the transient and the persistent flow premia are both visible
        # (above a tenth of a basis point), so the reported impact part is one of them, not their sum
        assert set(w["regime"].tolist()) == set(range(len(ref.regimes)))
        persistent = s["tau"] - s["tau_f"] - s["impact"]
        assert np.all(np.abs(s["impact"]) > 1e-5) and np.all(np.abs(persistent) > 1e-5)
        assert np.all(s["log_equity"] != 0) and np.all(s["cash"] != 0) and np.all(s["foreign_sales"] > 0)
    # the metrics: the initial state is not the final one in any of the fields they read
    s0, s1 = states[0], states[-1]
    for f in ("r", "pi", "tau", "basis", "fund_eq", "log_equity", "log_dollar", "fed", "volfund_sales", "logp"):
        assert np.all(s1[f] != s0[f]), f
    # the running maximum is above both the final and the initial 10y: the largest rise is not the final change
    assert np.all(s1["max_y10"] > np.maximum(s1["y10"], s0["y10"]))
    # the maturities cover bills, the half-year grid and points off it
    assert any(m < 0.5 for m in MATURITIES) and set(OFF_GRID) < set(MATURITIES)
