"""One time step of the model against an independent float64 numpy reference written from docs/MODEL.md.

`ref_step` below is the step as docs/MODEL.md states it (regime draw, jumps, macro drivers, flows, basis funds,
dealers and price impact, curve, markets, debt), written in numpy from the doc's equations, not from the package's
arithmetic; only the interface is shared (the fields of `State`, which draw feeds which shock, config keys). It
found the doc incomplete where it now says more (the re-levering target capped at the initial position, the
equity floor and the smooth min of the forced sales, the 10y's averages, the jump and draw conventions, the
timing). It is compared with
`jaxstress._model.step` in both of its forms (the select chains of the forward loop and the looked-up tables of
`next_regime`, as `_simulate._step_forms` calls them under `vmap`) over several consecutive steps of a few paths
with fixed draws. The numpy state is carried forward on its own (never re-seeded from the JAX state), so an error
in any step shows in every later comparison.

The paths start from a stressed state of the shipped `april_2025` scenario (basis funds over their margin limit,
dysfunction around the Fed's threshold, dealers over capacity, foreign programs running, the dollar down, the
10y up) and the uniforms are chosen so that jumps fire on some path-steps and not on others and the regime
switches on most of them; every regime is the current one on some path. `test_every_mechanism_is_active` checks
on the reference trajectory that each mechanism really is active, so that the comparisons cover it.
"""

import dataclasses

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.linalg  # noqa: E402
from _reference import RefValues, dysfunction, finish, term_premium, to_state, zero_yield  # noqa: E402

from jaxstress import _simulate, load_scenario  # noqa: E402
from jaxstress._model import State, next_regime, prepare, step  # noqa: E402

N_STEPS = 5
N_PATHS = 9
# Liquidation programs (april_2025 has none): china's runs over the first steps only (0.1 month = 2.1 steps: steps
# 0 and 1 whole, a tenth of step 2), the uk's starts at t = 0.01 (inside step 2, then every step); the uk also sells
# at a regime rate, half replaced by FIMA repo.
OVERRIDES = (
    "holders.china.program_total=30.0", "holders.china.program_start=0.0", "holders.china.program_months=0.1",
    "holders.uk.program_total=120.0", "holders.uk.program_start=0.01", "holders.uk.program_months=1.0",
    "holders.uk.sell_rate=0.05", "holders.uk.fima_share=0.5",
)
# The regime after each step, per path (row): the current regimes cover all four, and most steps switch. The
# uniforms are the midpoints of these regimes' intervals of the reference's cumulative transition rows.
REGIMES_START = [0, 1, 2, 3, 0, 1, 2, 3, 1]
REGIME_PATHS = [
    [0, 1, 1, 2, 3],
    [1, 3, 0, 0, 2],
    [3, 3, 1, 0, 0],
    [2, 2, 0, 1, 1],
    [3, 0, 2, 1, 0],
    [2, 1, 3, 3, 1],
    [2, 0, 1, 2, 3],
    [3, 1, 0, 3, 2],
    [1, 2, 2, 3, 0],
]
# The jump uniform: below every regime's jump probability (tariff_shock and escalation: 1 - exp(-50 dt) = 0.18;
# calm and pause: 0) or well above it, alternating over paths and steps.
JUMP_U = (0.03, 0.6)

# Tolerance: float64 rounding. One step is O(100) operations on values of the state's magnitude (eps = 2.2e-16),
# with a few cancellations (forced sales B - softplus(B - excess) with B ~ 1000; the dysfunction's 400 (y10 - ewma)
# amplifies differences of the yields) and feedback over the steps (forced sales -> basis -> equity -> margin); numpy's
# and XLA's exp/log differ by a few ulps. Observed: at most ~2e-14 of a field's magnitude after 5 steps. rtol 1e-10
# with atol 1e-12 times the field's magnitude (at least 1) leaves a margin of 10^4 for other CPUs and XLA versions,
# while a model term of practical size (> 1e-9 of the field) fails. (The one documented term below that is the
# guard in a holder's sales, H + 1e-9 $bn: ~1e-12 of the sales; the reference has it, but dropping it would pass.)
RTOL = 1e-10
ATOL = 1e-12


# ----------------------------------------------------------------------------------------------------------------
# the reference, from docs/MODEL.md


class Ref(RefValues):
    """The scenario's parameters as numpy float64 values, and the constants the doc derives from them."""

    def __init__(self, params):
        super().__init__(params)
        self.dt = params.dt
        self.debt_mat = np.asarray(params.debt_maturities, np.float64)
        v = self.v
        # per-regime parameters, shape (R,)
        fields = ("tariff", "pi_shift", "pi_vol_mult", "tau_shift", "tau_vol_mult", "jump_intensity", "jump_pi_mean",
                  "jump_pi_sd", "jump_tau_mean", "jump_tau_sd", "foreign_selling", "risk", "equity_drift",
                  "equity_vol_mult", "dollar_drift", "deficit_mult", "absorption_mult")
        self.reg = {f: np.array([v[f"regimes.{n}.{f}"] for n in self.regimes]) for f in fields}
        self.corr = np.stack([v[f"regimes.{n}.correlation"] for n in self.regimes])
        # Regimes: Q with the diagonal minus the off-diagonal row sum, P = expm(Q dt)
        q = v["regimes.generator"].copy()
        np.fill_diagonal(q, 0.0)
        np.fill_diagonal(q, -q.sum(axis=1))
        self.P = scipy.linalg.expm(q * self.dt)
        self.cum = np.cumsum(self.P, axis=1)
        self.jump_p = 1.0 - np.exp(-self.reg["jump_intensity"] * self.dt)
        self.y10_0 = zero_yield(self, 10.0, v["initial.r"], v["initial.pi"], v["initial.tau"],
                                v["initial.r_star"], v["initial.p"])


def softplus_w(x, w):
    """w log(1 + exp(x / w)); max(x, 0) for w = 0."""
    return np.maximum(x, 0.0) if w == 0 else w * np.logaddexp(0.0, x / w)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_step(ref, t, s, normal, uniform):
    """One step of length dt from time t for a batch of paths (s: field -> array over paths; holdings, debt and
    interest (items, paths)); normal (10, paths), uniform (2, paths)."""
    v, dt = ref.v, ref.dt
    sq = np.sqrt(dt)

    def dec(rate):  # the share of a gap a relaxation at `rate` closes in the step (docs/MODEL.md): exact, not rate dt
        return 1.0 - np.exp(-rate * dt)

    def sd(rate):  # the exact step's noise a unit of sigma (docs/MODEL.md): sqrt((1 - e^{-2 rate dt}) / (2 rate))
        return sq if rate == 0 else np.sqrt((1.0 - np.exp(-2.0 * rate * dt)) / (2.0 * rate))
    D = s["dysfunction"]  # of the state at the start of the step
    y10, y2 = s["y10"], s["y2"]
    vol = np.sqrt(s["var10"])

    # Regimes: the next regime by the inverse CDF of row s of P at the first uniform; its parameters apply
    cur = s["regime"]
    nxt = np.sum(uniform[0][:, None] >= ref.cum[cur][:, :-1], axis=1)
    rg = {f: a[nxt] for f, a in ref.reg.items()}
    # correlated shocks (e_r, e_pi, e_tau, e_eq, e_x): the lower Cholesky factor of the regime's correlation
    chol = np.linalg.cholesky(ref.corr)[nxt]  # (paths, 5, 5)
    e_r, e_pi, e_tau, e_eq, e_x = np.einsum("pij,jp->ip", chol, normal[:5])
    # jumps: with probability 1 - exp(-jump_intensity dt), sizes N(mean, sd^2) of inflation and the term premium
    pj = ref.jump_p[nxt]
    hit = uniform[1] < pj
    j_pi = np.where(hit, rg["jump_pi_mean"] + rg["jump_pi_sd"] * normal[8], 0.0)
    j_tau = np.where(hit, rg["jump_tau_mean"] + rg["jump_tau_sd"] * normal[9], 0.0)
    with np.errstate(divide="ignore"):
        logp = s["logp"] + np.log(ref.P[cur, nxt]) + np.where(hit, np.log(pj), np.log(1.0 - pj))

    # Macro drivers
    r_target = (s["r_star"] + s["pi"] + v["short_rate.phi_pi"] * (s["pi"] - v["short_rate.pi_star"])
                - v["short_rate.phi_stress"] * D)
    r = s["r"] + dec(v["short_rate.k"]) * (r_target - s["r"]) + v["short_rate.sigma"] * sd(v["short_rate.k"]) * e_r
    pi_target = v["inflation.mean"] + rg["pi_shift"] + v["inflation.pass_through"] * rg["tariff"]
    pi = (s["pi"] + dec(v["inflation.k"]) * (pi_target - s["pi"])
          + v["inflation.sigma"] * rg["pi_vol_mult"] * sd(v["inflation.k"]) * e_pi + j_pi)
    tau_f = (s["tau_f"] + dec(v["term_premium.k"]) * (v["term_premium.mean"] + rg["tau_shift"] - s["tau_f"])
             + v["term_premium.sigma"] * rg["tau_vol_mult"] * sd(v["term_premium.k"]) * e_tau + j_tau)
    r_star = (s["r_star"] + dec(v["neutral_rate.k"]) * (v["neutral_rate.mean"] - s["r_star"])
              + v["neutral_rate.sigma"] * sd(v["neutral_rate.k"]) * normal[5])
    p = (s["p"] + dec(v["policy_path.k"]) * (v["policy_path.mean"] + v["policy_path.phi_gap"] * (r_target - s["r"])
                                        - v["policy_path.phi_stress"] * D - s["p"])
         + v["policy_path.sigma"] * sd(v["policy_path.k"]) * normal[6])

    # Foreign official holders
    H = s["holdings"]
    rise = np.maximum(y10 - ref.y10_0, 0.0) / 0.01
    fall = np.maximum(np.log(v["initial.dollar_index"]) - s["log_dollar"], 0.0) / 0.10
    lam = (ref.holder("sell_rate")[:, None] * rg["foreign_selling"][None, :]
           + ref.holder("procyclical_rates")[:, None] * rise + ref.holder("procyclical_dollar")[:, None] * fall)
    years = ref.holder("program_months") / 12.0
    start = ref.holder("program_start")
    # the length of the step's overlap with the program's window [start, start + years)
    inside = np.maximum(np.minimum(t + dt, start + years) - np.maximum(t, start), 0.0)
    running = inside > 0
    desired = ((1.0 - ref.holder("fima_share"))[:, None] * lam * H * dt
               + (ref.holder("program_total") / years * inside)[:, None])
    sales = H * (1.0 - np.exp(-desired / (H + 1e-9)))
    foreign = sales.sum(axis=0)

    # Volatility-targeting funds
    vt = v["vol_funds.target_vol"]
    target = v["vol_funds.holdings"] * vt / np.maximum(vol, vt / 2.0)
    vol_sales = dec(v["vol_funds.speed"]) * (s["volfund"] - target)

    # Basis funds
    B, E = s["fund_pos"], s["fund_eq"]
    h = rg["risk"] * v["basis_funds.haircut0"] + v["basis_funds.haircut_vol"] * vol
    if v["fed.srf"]:
        h = np.minimum(h, v["fed.srf_cap"])
    h = np.maximum(h, 1e-4)
    w = float(v["basis_funds.width"])
    E_pos = np.maximum(E, 0.0)  # a fund whose equity is gone has no margin capacity
    excess = softplus_w(B - E_pos / h, w)
    forced = np.clip(B - softplus_w(B - excess, w), 0.0, np.maximum(B, 0.0))  # smooth min(excess, B)
    rebuild_to = np.minimum(np.minimum(v["basis_funds.leverage"] * E_pos, E_pos / h), v["basis_funds.position"])
    relever = dec(v["basis_funds.relever"]) * np.maximum(rebuild_to - B, 0.0)
    basis = (s["basis"] + dec(v["basis_funds.k"]) * (v["basis_funds.mean_bp"] - s["basis"])
             + v["basis_funds.sigma_bp"] * sd(v["basis_funds.k"]) * normal[7]
             + v["basis_funds.impact_bp_per_100bn"] * forced / 100.0)
    fund_eq = E + B * (v["basis_funds.carry"] * dt - v["basis_funds.duration"] * (basis - s["basis"]) / 1e4)
    fund_pos = B - forced + relever

    # Issuance, the Fed, net flow, dealers, price impact
    deficit = v["issuance.deficit"] * rg["deficit_mult"] * dt
    net_issuance = deficit - v["issuance.absorption"] * rg["absorption_mult"] * dt
    fed_width = float(v["fed.width"])  # 0: the hard rule, buying in full once D exceeds the threshold
    fed_on = (D > v["fed.threshold"]).astype(float) if fed_width == 0 else sigmoid((D - v["fed.threshold"]) / fed_width)
    fed_buy = v["fed.backstop"] * v["fed.max_purchases"] * fed_on * dt
    F = foreign + forced + vol_sales + net_issuance - fed_buy - relever
    L = s["dealer"]
    cap = v["dealers.capacity"]
    dealer = L + F - dec(v["dealers.distribute_rate"]) * L
    lam_impact = v["impact.lambda0"] * (1.0 + v["impact.convexity"] * np.maximum(L - cap, 0.0) / cap)
    impact = s["impact"] * np.exp(-v["impact.rho"] * dt) + lam_impact * F / v["impact.depth"]
    stock = s["stock"] + F

    new = dict(regime=nxt, logp=logp, r=r, pi=pi, tau_f=tau_f, impact=impact, stock=stock, r_star=r_star, p=p,
               basis=basis, fund_pos=fund_pos, fund_eq=fund_eq)
    tau_new = term_premium(ref, tau_f, impact, stock)
    y10_new = zero_yield(ref, 10.0, r, pi, tau_new, r_star, p)
    y2_new = zero_yield(ref, 2.0, r, pi, tau_new, r_star, p)

    # the 10y's EWMAs: squared step changes (annualized) with a half-life in steps; the ~5-day average of the level
    a = 0.5 ** (1.0 / v["basis_funds.vol_halflife_days"])
    new["var10"] = a * s["var10"] + (1.0 - a) * (y10_new - y10) ** 2 / dt
    new["ewma10"] = s["ewma10"] + (1.0 - np.exp(-dt / (5.0 / 252.0))) * (y10_new - s["ewma10"])

    # Markets
    sig = v["equity.sigma"] * rg["equity_vol_mult"]
    new["log_equity"] = (s["log_equity"] + (v["equity.mu"] + rg["equity_drift"] - sig**2 / 2.0) * dt
                         + sig * sq * e_eq - v["equity.tp_beta"] * (tau_new - s["tau"]))
    new["log_dollar"] = (s["log_dollar"] + rg["dollar_drift"] * dt + v["dollar.sigma"] * sq * e_x
                         + v["dollar.rate_beta"] * (y2_new - y2))

    # Debt buckets: D_k (1 - exp(-dt / maturity_k)) rolls into the zero yield of its maturity; the deficit by t=0 shares
    amounts = v["debt.amounts"]
    share = amounts / amounts.sum()
    Dk, Mk = s["debt"], s["interest"]
    mat = ref.debt_mat[:, None]
    yk = zero_yield(ref, mat, r, pi, tau_new, r_star, p)
    new_debt = share[:, None] * deficit[None, :]
    new["debt"] = Dk + new_debt
    roll = dec(1.0 / mat)
    new["interest"] = Mk - Mk * roll + yk * (Dk * roll + new_debt)

    new.update(
        volfund=s["volfund"] - vol_sales, dealer=dealer, fed=s["fed"] + fed_buy, holdings=H - sales,
        cash=s["cash"] + s["r"] * dt, foreign_sales=s["foreign_sales"] + foreign,
        forced_sales=s["forced_sales"] + forced, volfund_sales=s["volfund_sales"] + vol_sales,
        max_y10=np.maximum(s["max_y10"], y10_new),
    )
    diag = dict(forced=forced, relever=relever, fed_buy=fed_buy, sales=sales, running=running, inside=inside, hit=hit,
                jump_p=pj, haircut=h, vol_sales=vol_sales, D=D, F=F)
    return finish(ref, new), diag


# ----------------------------------------------------------------------------------------------------------------
# the stressed initial state and the draws


def stressed_state(ref):
    """A state of april_2025 under stress, different on each path (numpy, field -> array over paths)."""
    v = ref.v
    n = N_PATHS
    i = np.arange(n)
    s = {}
    s["regime"] = np.asarray(REGIMES_START)
    s["logp"] = -0.1 * i
    s["r"] = v["initial.r"] + 0.001 * np.sin(i)
    s["pi"] = v["initial.pi"] - 0.0005 * np.cos(i)
    s["tau_f"] = v["initial.tau"] + 0.002 + 0.0005 * i  # the 10y up: pro-cyclical selling
    s["impact"] = 0.0005 * (i + 1)
    s["stock"] = 40.0 * (i + 1)
    s["r_star"] = v["initial.r_star"] + 0.0003 * np.cos(2 * i)
    s["p"] = v["initial.p"] + 0.002 * np.sin(3 * i)
    s["basis"] = np.array([25.0, 18.0, 30.0, 12.0, -5.0, 22.0, 15.0, 35.0, 28.0])
    # realized 10y vol: on path 4 below half the vol funds' target (their holdings' 2x cap), on path 5 high enough
    # for the SRF to cap the haircut
    vol = np.array([0.012, 0.015, 0.02, 0.011, 0.004, 0.07, 0.013, 0.025, 0.014])
    s["var10"] = vol**2
    # basis funds: over their margin limit E/h by `excess` $bn (forced sales), except on path 4, which is under it
    # and below its initial size (re-levering, up to that size: min(leverage E, E/h) is above it); path 7's
    # equity is nearly gone (excess close to the position, where the smooth min(excess, B) differs from the hard
    # one), path 8's is negative (no margin capacity at all)
    s["fund_pos"] = np.array([1000.0, 1000.0, 980.0, 1000.0, 900.0, 1010.0, 1000.0, 60.0, 30.0])
    excess = np.array([20.0, 40.0, 10.0, 60.0, 0.0, 30.0, 15.0, 50.0, 0.0])
    risk = ref.reg["risk"][[r[0] for r in REGIME_PATHS]]  # the regime of the first step sets the haircut
    h = np.minimum(risk * v["basis_funds.haircut0"] + v["basis_funds.haircut_vol"] * vol, v["fed.srf_cap"])
    s["fund_eq"] = h * (s["fund_pos"] - excess)
    s["fund_eq"][4] = 40.0
    s["fund_eq"][8] = -2.0
    s["volfund"] = v["vol_funds.holdings"] + 10.0 * np.cos(i)
    s["dealer"] = np.array([230.0, 260.0, 150.0, 300.0, 100.0, 220.0, 280.0, 320.0, 250.0])  # over capacity 200
    s["fed"] = 5.0 * i
    s["holdings"] = ref.holder("holdings")[:, None] * (1.0 - 0.01 * i)[None, :]
    amounts = v["debt.amounts"]
    s["debt"] = amounts[:, None] * (1.0 + 0.001 * i)[None, :]
    s["interest"] = s["debt"] * (v["debt.coupons"][:, None] + 0.0002 * i[None, :])
    s["log_equity"] = -0.02 * i
    s["log_dollar"] = np.log(v["initial.dollar_index"]) + np.array([-0.05, -0.03, 0.01, -0.08, 0.0, -0.02,
                                                                      -0.04, 0.02, -0.01])
    s["cash"] = 0.001 * i
    s["foreign_sales"] = 3.0 * i
    s["forced_sales"] = 7.0 * i
    s["volfund_sales"] = 2.0 * i
    s["tau"] = term_premium(ref, s["tau_f"], s["impact"], s["stock"])
    s["y10"] = zero_yield(ref, 10.0, s["r"], s["pi"], s["tau"], s["r_star"], s["p"])
    s["y2"] = zero_yield(ref, 2.0, s["r"], s["pi"], s["tau"], s["r_star"], s["p"])
    # the 10y above its recent average on most paths (below on path 4)
    s["ewma10"] = s["y10"] - np.array([0.002, 0.001, 0.003, 0.0015, -0.002, 0.0025, 0.0005, 0.001, 0.0012])
    s["max_y10"] = s["y10"] + 0.0001
    s["dysfunction"] = dysfunction(ref, s["basis"], s["y10"], s["ewma10"], s["var10"])
    return s


def regime_uniforms(ref):
    """The regime uniforms (steps, paths): the midpoint of each target regime's interval of the current row."""
    u = np.empty((N_STEPS, N_PATHS))
    for p in range(N_PATHS):
        cur = REGIMES_START[p]
        for k in range(N_STEPS):
            nxt = REGIME_PATHS[p][k]
            lo = ref.cum[cur, nxt - 1] if nxt > 0 else 0.0
            u[k, p] = 0.5 * (lo + ref.cum[cur, nxt])
            cur = nxt
    return u


def field(state: State, name: str) -> np.ndarray:
    x = getattr(state, name)
    return np.stack([np.asarray(a) for a in x]) if isinstance(x, tuple) else np.asarray(x)


# ----------------------------------------------------------------------------------------------------------------
# the runs


# both forms of the step and the observation, compiled once for every run below (they differ in numbers only)
_select = jax.jit(jax.vmap(step, in_axes=(None, None, 0, 0, 0)))
_looked_up = jax.jit(lambda pr, t, s, z, u: jax.vmap(step, in_axes=(None, None, 0, 0, 0, 0))(
    pr, t, s, z, u, next_regime(pr, s, u[0])))
_observe = jax.jit(_simulate.observe)
# the hard rules: forced sales as min(excess, B), the Fed buying in full above its threshold, no SRF cap
HARD = ("basis_funds.width=0", "fed.width=0", "fed.srf=false")


@pytest.fixture(scope="module")
def runs():
    return _runs(OVERRIDES)


@pytest.fixture(scope="module")
def hard_runs():
    return _runs(OVERRIDES + HARD)


def _runs(overrides):
    scenario = load_scenario("april_2025", overrides=list(overrides), horizon=0.1)
    params = scenario.params(jnp.float64)
    prep = prepare(params)
    ref = Ref(params)
    rng = np.random.default_rng(2025)
    normals = rng.standard_normal((N_STEPS, 10, N_PATHS))
    u_regime = regime_uniforms(ref)
    u_jump = np.array([[JUMP_U[(p + k) % 2] for p in range(N_PATHS)] for k in range(N_STEPS)])
    select, looked_up = _select, _looked_up

    def observe(pr, s, t):
        return _observe(params, pr, s, t)

    s_ref = stressed_state(ref)
    s_sel = s_look = to_state(s_ref)
    refs, diags, sels, looks, obs = [s_ref], [], [s_sel], [s_look], [observe(prep, s_sel, 0.0)]
    for k in range(N_STEPS):
        t = k * params.dt
        normal = tuple(jnp.asarray(x) for x in normals[k])
        uniform = (jnp.asarray(u_regime[k]), jnp.asarray(u_jump[k]))
        s_ref, diag = ref_step(ref, t, s_ref, normals[k], np.stack([u_regime[k], u_jump[k]]))
        s_sel = select(prep, jnp.asarray(t), s_sel, normal, uniform)
        s_look = looked_up(prep, jnp.asarray(t), s_look, normal, uniform)
        refs.append(s_ref)
        diags.append(diag)
        sels.append(s_sel)
        looks.append(s_look)
        obs.append(observe(prep, s_sel, (k + 1) * params.dt))
    return dict(params=params, prep=prep, ref=ref, refs=refs, diags=diags, sels=sels, looks=looks, obs=obs)


def assert_state_close(got: State, want: dict, k: int, form: str):
    bad = []
    for f in dataclasses.fields(State):
        g, w = field(got, f.name), np.asarray(want[f.name])
        assert g.shape == w.shape, (f.name, g.shape, w.shape)
        if f.name == "regime":
            if not np.array_equal(g, w):
                bad.append(f"regime: {g} != {w}")
            continue
        atol = ATOL * max(1.0, float(np.max(np.abs(w))))
        err = np.abs(g - w)
        if not np.all(err <= atol + RTOL * np.abs(w)):
            j = np.unravel_index(np.argmax(err - RTOL * np.abs(w)), w.shape)
            bad.append(f"{f.name}{list(j)}: got {g[j]!r}, reference {w[j]!r} (diff {g[j] - w[j]:.3e})")
    assert not bad, f"{form} step, after step {k + 1}:\n" + "\n".join(bad)


@pytest.mark.parametrize("form", ["select", "looked_up"])
def test_step_matches_the_reference(runs, form):
    """Every State field after each step, both forms of the step, against the numpy reference."""
    states = runs["sels" if form == "select" else "looks"]
    # the initial states are the same
    assert_state_close(states[0], runs["refs"][0], -1, form)
    for k in range(N_STEPS):
        assert_state_close(states[k + 1], runs["refs"][k + 1], k, form)


@pytest.mark.parametrize("form", ["select", "looked_up"])
def test_hard_rules_match_the_reference(hard_runs, form):
    """The same with the hard rules (`basis_funds.width = 0`, `fed.width = 0`: indicators and min/max in place of
    their smooth forms) and the SRF off, each acting on the reference trajectory."""
    states = hard_runs["sels" if form == "select" else "looks"]
    for k in range(N_STEPS):
        assert_state_close(states[k + 1], hard_runs["refs"][k + 1], k, form)
    v, dt = hard_runs["ref"].v, hard_runs["ref"].dt
    diags = hard_runs["diags"]
    fed_buy = np.stack([d["fed_buy"] for d in diags])
    full = v["fed.max_purchases"] * dt
    assert np.any(fed_buy == full) and np.any(fed_buy == 0) and np.all((fed_buy == 0) | (fed_buy == full))
    assert np.any(np.stack([d["haircut"] for d in diags]) > v["fed.srf_cap"])  # no cap without the SRF
    assert np.any(np.stack([d["forced"] for d in diags]) > 1.0)


def test_observed_zero_yields_match_the_reference_curve(runs):
    """The reported zero yields (and the term premium, the short rate and the mortgage rate) at each step against
    the curve formula on the reference state."""
    params, ref = runs["params"], runs["ref"]
    names = _simulate.variable_names(params)
    v = ref.v
    for k, (obs, s) in enumerate(zip(runs["obs"], runs["refs"], strict=True)):
        obs = np.asarray(obs)
        for m in (0.25, 2.0, 5.0, 10.0, 30.0):
            want = zero_yield(ref, m, s["r"], s["pi"], s["tau"], s["r_star"], s["p"]) * 100
            np.testing.assert_allclose(obs[names.index(f"yield_{m:g}y")], want, rtol=RTOL, atol=ATOL * 100,
                                       err_msg=f"yield_{m:g}y after step {k}")
        mortgage = (zero_yield(ref, 10.0, s["r"], s["pi"], s["tau"], s["r_star"], s["p"]) + v["mortgage.spread"]
                    + v["mortgage.stress_spread"] * s["dysfunction"]) * 100
        for name, want in (("term_premium_10y", s["tau"] * 100), ("short_rate", s["r"] * 100),
                           ("mortgage_rate", mortgage), ("dysfunction", s["dysfunction"])):
            np.testing.assert_allclose(obs[names.index(name)], want, rtol=RTOL, atol=ATOL * 100,
                                       err_msg=f"{name} after step {k}")


def test_every_mechanism_is_active(runs):
    """The comparisons cover every mechanism: on the reference trajectory each one acts on some path-step (and
    the switches that have an off state are off on others)."""
    diags, refs, ref = runs["diags"], runs["refs"], runs["ref"]
    v = ref.v

    def stacked(key):
        return np.stack([d[key] for d in diags])

    forced, relever, fed_buy, hit = stacked("forced"), stacked("relever"), stacked("fed_buy"), stacked("hit")
    assert np.all(forced[0][[0, 1, 2, 3, 5, 6, 7]] > 1.0) and forced[0][4] < 1e-6  # margin-constrained or not
    assert np.any(relever > 0.1)
    D = stacked("D")
    assert np.any(D > v["fed.threshold"]) and np.any((D > 0) & (D < v["fed.threshold"])) and np.any(D == 0)
    assert np.any(fed_buy > 0.1 * v["fed.max_purchases"] * ref.dt)  # the backstop buys in earnest somewhere
    assert np.any(stacked("haircut") == v["fed.srf_cap"])  # the SRF caps the haircut on path 5
    assert np.any(np.stack([s["dealer"] for s in refs]) > v["dealers.capacity"])
    vol_sales = stacked("vol_sales")
    assert np.all(vol_sales[0] != 0) and vol_sales[0][4] < 0  # path 4: buying up to the 2x cap
    # jumps fire on some path-steps and not on others where their probability is positive
    possible = stacked("jump_p") > 0
    assert np.any(hit & possible) and np.any(~hit & possible)
    # programs: china's 0.1 month (2.1 steps) in steps 0, 1 and a tenth of step 2, whole: the uk's from t = 0.01,
    # 0.48 of step 2 (its window starts inside the step), then whole steps
    inside = stacked("inside") / ref.dt  # (steps, holders), the share of each step inside the window
    holders = list(ref.holders)
    np.testing.assert_allclose(inside[:, holders.index("china")], [1, 1, 0.1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(inside[:, holders.index("uk")], [0, 0, 3 - 0.01 * 252, 1, 1], atol=1e-12)
    # regimes: the targets were reached, every regime was the current one on some path, and most steps switch
    regimes = np.stack([s["regime"] for s in refs])  # (steps + 1, paths)
    assert regimes[1:].T.tolist() == REGIME_PATHS
    assert set(regimes[:-1].ravel().tolist()) == set(range(len(ref.regimes)))
    assert np.mean(regimes[1:] != regimes[:-1]) > 0.5
    # pro-cyclical selling: the 10y is above its initial level and the dollar below on some paths
    s0 = refs[0]
    assert np.any(s0["y10"] > ref.y10_0) and np.any(s0["log_dollar"] < np.log(v["initial.dollar_index"]))
