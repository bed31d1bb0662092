"""The model of one path: its state, its initial value and one time step.

The step is written for a single path (scalars, plus short vectors for the foreign holders and the debt
buckets) and batched with `vmap` by `_simulate`. Everything is smooth in the parameters: triggers use
softplus/sigmoid with configurable widths (a width of zero gives the hard rule), and no Python control flow
depends on traced values. The only discrete variable is the regime index, whose path log-probability is
accumulated (`logp`) so score-function gradients with respect to the generator are available.

Units: rates are decimals, amounts $bn, basis in bp, time in years.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._config import Params
from ._curve import loadings
from ._regimes import sample_next, transition_matrix
from ._schema import REGIME_FIELDS

N_NORMAL = 10  # 5 correlated (r, pi, tau, equity, dollar), r_star, p, basis, jump size pi, jump size tau
N_UNIFORM = 2  # regime transition, jump occurrence
FIVE_DAYS = 5.0 / 252.0


def smooth_relu(x, width):
    """width * softplus(x / width); the hard max(x, 0) when width == 0."""
    safe = jnp.where(width > 0, width, 1.0)
    return jnp.where(width > 0, safe * jax.nn.softplus(x / safe), jnp.maximum(x, 0.0))


def smooth_step(x, width):
    """sigmoid(x / width); the hard indicator x > 0 when width == 0."""
    safe = jnp.where(width > 0, width, 1.0)
    return jnp.where(width > 0, jax.nn.sigmoid(x / safe), (x > 0).astype(x.dtype))


class Prep(eqx.Module):
    """Constants derived once per run from the parameters (inside the jit, so gradients flow through them)."""

    v: dict  # scalar parameters by dotted key
    reg: dict  # per-regime parameters stacked to shape (R,)
    hold: dict  # per-holder parameters stacked to shape (H,)
    cum_p: Float[Array, "R R"]
    log_p: Float[Array, "R R"]
    chol: Float[Array, "R 5 5"]
    load_10: Float[Array, " 3"]  # (B, C, G/G10) at 10y
    load_2: Float[Array, " 3"]
    load_debt: Float[Array, "3 K"]
    debt_share: Float[Array, " K"]
    debt_mat: Float[Array, " K"]
    jump_p: Float[Array, " R"]
    y10_0: Float[Array, ""]
    dt: float = eqx.field(static=True)


def prepare(params: Params) -> Prep:
    v = params.values
    dt = params.dt
    k, kc, mu = v["curve.k"], v["curve.kc"], v["curve.mu"]
    names = params.regime_names
    reg = {f: jnp.stack([v[f"regimes.{n}.{f}"] for n in names]) for f in REGIME_FIELDS}
    hold = {
        f: (jnp.stack([v[f"holders.{h}.{f}"] for h in params.holder_names]) if params.holder_names
            else jnp.zeros((0,), v["curve.k"].dtype))
        for f in ("holdings", "sell_rate", "procyclical_rates", "procyclical_dollar", "fima_share",
                  "program_total", "program_start", "program_months")
    }
    # the diagonal follows from the off-diagonal intensities, so a derivative with respect to an off-diagonal
    # entry moves its row's diagonal too (rows keep summing to zero) and the diagonal itself is not a driver
    q = v["regimes.generator"]
    off = q * (1.0 - jnp.eye(q.shape[0], dtype=q.dtype))
    p = transition_matrix(off - jnp.diag(jnp.sum(off, axis=1)), dt)
    chol = jnp.linalg.cholesky(reg["correlation"])
    jump_p = -jnp.expm1(-reg["jump_intensity"] * dt)  # per-step jump probability by regime
    l10 = jnp.stack(loadings(10.0, k, kc, mu))
    l2 = jnp.stack(loadings(2.0, k, kc, mu))
    debt_mat = jnp.asarray(params.debt_maturities, l10.dtype)
    ld = jnp.stack(loadings(debt_mat, k, kc, mu))
    amounts = v["debt.amounts"]
    prep = Prep(v=dict(v), reg=reg, hold=hold, cum_p=jnp.cumsum(p, axis=1), log_p=jnp.log(jnp.maximum(p, 1e-30)),
                chol=chol, load_10=l10, load_2=l2, load_debt=ld, debt_share=amounts / jnp.sum(amounts),
                debt_mat=debt_mat, jump_p=jump_p,
                y10_0=jnp.zeros(()), dt=dt)
    y10_0 = _yield(prep.load_10, v["initial.r"], v["initial.pi"], v["initial.tau"], v["initial.r_star"],
                   v["initial.p"])
    return eqx.tree_at(lambda q: q.y10_0, prep, y10_0)


def _yield(load, r, pi, tau, r_star, p):
    b, c, g = load[0], load[1], load[2]
    return r * b + (r_star + pi) * (1.0 - b) + p * c + tau * g


class State(eqx.Module):
    """State of one path (scalars unless noted)."""

    regime: Int[Array, ""]
    logp: Float[Array, ""]  # log-probability of the discrete draws so far (regime path, jump occurrences)
    r: Float[Array, ""]  # short rate
    pi: Float[Array, ""]  # long-run inflation expectations
    tau_f: Float[Array, ""]  # fundamental term premium
    impact: Float[Array, ""]  # transient flow-impact premium I
    stock: Float[Array, ""]  # cumulative net private supply, $bn (persistent premium)
    r_star: Float[Array, ""]
    p: Float[Array, ""]
    basis: Float[Array, ""]  # cash-futures basis, bp
    fund_pos: Float[Array, ""]  # basis funds' long cash position, $bn
    fund_eq: Float[Array, ""]  # basis funds' equity, $bn
    var10: Float[Array, ""]  # EWMA of squared 10y changes, annualized
    ewma10: Float[Array, ""]  # ~5-day average of the 10y yield
    volfund: Float[Array, ""]  # vol-targeting funds' holdings, $bn
    dealer: Float[Array, ""]  # dealer inventory from absorbed net sales, $bn
    fed: Float[Array, ""]  # cumulative Fed backstop purchases, $bn
    holdings: Float[Array, " H"]  # foreign official holdings, $bn
    debt: Float[Array, " K"]  # marketable debt by bucket, $bn
    coupon: Float[Array, " K"]  # average coupon by bucket
    log_equity: Float[Array, ""]
    log_dollar: Float[Array, ""]
    cash: Float[Array, ""]  # integral of r dt
    foreign_sales: Float[Array, ""]  # cumulative, $bn
    forced_sales: Float[Array, ""]
    volfund_sales: Float[Array, ""]
    max_y10: Float[Array, ""]  # running maximum of the 10y yield
    dysfunction: Float[Array, ""]


def tau_total(prep: Prep, s: State):
    """The 10y term premium: fundamental + transient impact + persistent stock effect of net supply."""
    return s.tau_f + s.impact + prep.v["impact.stock_bp_per_tn"] * 1e-4 * s.stock / 1000.0


def initial_state(prep: Prep, initial_regime: int) -> State:
    v = prep.v
    z = jnp.zeros((), v["curve.k"].dtype)
    pos = v["basis_funds.position"]
    return State(
        regime=jnp.asarray(initial_regime, jnp.int32), logp=z, r=v["initial.r"] + z, pi=v["initial.pi"] + z,
        tau_f=v["initial.tau"] + z, impact=z, stock=z, r_star=v["initial.r_star"] + z, p=v["initial.p"] + z,
        basis=v["initial.basis_bp"] + z, fund_pos=pos + z, fund_eq=pos / v["basis_funds.leverage"],
        var10=v["initial.vol_10y"] ** 2 + z, ewma10=prep.y10_0 + z, volfund=v["vol_funds.holdings"] + z,
        dealer=z, fed=z, holdings=prep.hold["holdings"] + z, debt=v["debt.amounts"] + z,
        coupon=v["debt.coupons"] + z, log_equity=z, log_dollar=jnp.log(v["initial.dollar_index"]) + z, cash=z,
        foreign_sales=z, forced_sales=z, volfund_sales=z, max_y10=prep.y10_0 + z, dysfunction=z,
    )


def dysfunction(prep: Prep, s: State, y10):
    """Market dysfunction: basis widening, the recent 10y rise and the vol increase, in weighted units."""
    v = prep.v
    vol = jnp.sqrt(s.var10)
    return (v["fed.w_basis"] * jnp.maximum(s.basis - v["initial.basis_bp"], 0.0) / 10.0
            + v["fed.w_move"] * jnp.maximum(y10 - s.ewma10, 0.0) / 0.0025
            + v["fed.w_vol"] * jnp.maximum(vol / v["initial.vol_10y"] - 1.0, 0.0))


def step(prep: Prep, t, s: State, normal: Float[Array, " 10"], uniform: Float[Array, " 2"]) -> State:
    """Advance one path by one step of length dt; t is the time at the start of the step."""
    v, dt = prep.v, prep.dt
    sq = jnp.sqrt(dt)
    y10 = _yield(prep.load_10, s.r, s.pi, tau_total(prep, s), s.r_star, s.p)
    y2 = _yield(prep.load_2, s.r, s.pi, tau_total(prep, s), s.r_star, s.p)
    vol = jnp.sqrt(s.var10)
    dys = dysfunction(prep, s, y10)

    # regime: transition at the start of the step; w is the one-hot of the regime in force during the step
    # regime draw and per-regime parameters by gathers from small tables, and the correlated shocks by an
    # unrolled 5x5 product: under vmap these stay elementwise and fuse, where one-hot sums over the regime
    # axis or a batched matmul would each become a separate reduction kernel
    nxt = sample_next(prep.cum_p[s.regime], uniform[0])
    logp = s.logp + prep.log_p[s.regime, nxt]
    rg = {f: a[nxt] for f, a in prep.reg.items() if f != "correlation"}
    chol = prep.chol[nxt]
    n5 = normal[:5]
    z = [sum(chol[i, j] * n5[j] for j in range(i + 1)) for i in range(5)]

    # announcement jumps
    pj = prep.jump_p[nxt]
    hit = uniform[1] < pj
    jump = hit.astype(y10.dtype)
    # log-probability of the jump draw (for score-function gradients w.r.t. intensities); safe where unused
    logp = logp + jnp.where(hit, jnp.log(jnp.where(hit, pj, 1.0)), jnp.log1p(-jnp.where(hit, 0.0, pj)))
    j_pi = jump * (rg["jump_pi_mean"] + rg["jump_pi_sd"] * normal[8])
    j_tau = jump * (rg["jump_tau_mean"] + rg["jump_tau_sd"] * normal[9])

    # macro drivers
    r_target = s.r_star + s.pi + v["short_rate.phi_pi"] * (s.pi - v["short_rate.pi_star"]) \
        - v["short_rate.phi_stress"] * dys
    r = s.r + v["short_rate.k"] * (r_target - s.r) * dt + v["short_rate.sigma"] * sq * z[0]
    pi_target = v["inflation.mean"] + rg["pi_shift"] + v["inflation.pass_through"] * rg["tariff"]
    pi = s.pi + v["inflation.k"] * (pi_target - s.pi) * dt + v["inflation.sigma"] * rg["pi_vol_mult"] * sq * z[1] + j_pi
    tau_f = (s.tau_f + v["term_premium.k"] * (v["term_premium.mean"] + rg["tau_shift"] - s.tau_f) * dt
             + v["term_premium.sigma"] * rg["tau_vol_mult"] * sq * z[2] + j_tau)
    r_star = s.r_star + v["neutral_rate.k"] * (v["neutral_rate.mean"] - s.r_star) * dt \
        + v["neutral_rate.sigma"] * sq * normal[5]
    p_target = v["policy_path.mean"] + v["policy_path.phi_gap"] * (r_target - s.r) - v["policy_path.phi_stress"] * dys
    p = s.p + v["policy_path.k"] * (p_target - s.p) * dt + v["policy_path.sigma"] * sq * normal[6]

    # foreign official holders: regime and pro-cyclical selling (partly replaced by FIMA repo) + programs
    h = prep.hold
    rise = jnp.maximum(y10 - prep.y10_0, 0.0) / 0.01
    fall = jnp.maximum(jnp.log(v["initial.dollar_index"]) - s.log_dollar, 0.0) / 0.1
    intensity = h["sell_rate"] * rg["foreign_selling"] + h["procyclical_rates"] * rise + h["procyclical_dollar"] * fall
    years = h["program_months"] / 12.0
    in_program = ((t >= h["program_start"]) & (t < h["program_start"] + years)).astype(y10.dtype)
    desired = (1.0 - h["fima_share"]) * intensity * s.holdings * dt + in_program * h["program_total"] / years * dt
    sales = s.holdings * -jnp.expm1(-desired / (s.holdings + 1e-9))  # never more than the holdings
    foreign = jnp.sum(sales)

    # volatility-targeting funds: holdings scale with target_vol / realized vol (capped at 2x)
    vt = v["vol_funds.target_vol"]
    vol_target = v["vol_funds.holdings"] * vt / jnp.maximum(vol, 0.5 * vt)
    volfund_sales = v["vol_funds.speed"] * (s.volfund - vol_target) * dt

    # basis funds: repo haircut, margin constraint B <= E / h, smooth forced deleveraging, re-levering
    haircut = v["basis_funds.haircut0"] * rg["risk"] + v["basis_funds.haircut_vol"] * vol
    haircut = haircut - v["fed.srf"] * jnp.maximum(haircut - v["fed.srf_cap"], 0.0)
    haircut = jnp.maximum(haircut, 1e-4)
    width = v["basis_funds.width"]
    equity_pos = jnp.maximum(s.fund_eq, 0.0)
    excess = smooth_relu(s.fund_pos - equity_pos / haircut, width)
    # smooth min(excess, position), clipped to [0, position]: the smoothing never sells what is not held
    forced = jnp.clip(s.fund_pos - smooth_relu(s.fund_pos - excess, width), 0.0, jnp.maximum(s.fund_pos, 0.0))
    # funds rebuild toward their initial size at most (carry alone must not grow them without bound)
    target_pos = jnp.minimum(jnp.minimum(v["basis_funds.leverage"] * equity_pos, equity_pos / haircut),
                             v["basis_funds.position"])
    relever = v["basis_funds.relever"] * jnp.maximum(target_pos - s.fund_pos, 0.0) * dt
    fund_pos = s.fund_pos - forced + relever

    # issuance, Fed backstop, net flow, dealers and price impact
    net_issuance = (v["issuance.deficit"] * rg["deficit_mult"] - v["issuance.absorption"] * rg["absorption_mult"]) * dt
    fed_buy = v["fed.backstop"] * v["fed.max_purchases"] * smooth_step(dys - v["fed.threshold"], v["fed.width"]) * dt
    net_flow = foreign + forced + volfund_sales + net_issuance - fed_buy - relever
    dealer = s.dealer + net_flow - v["dealers.distribute_rate"] * s.dealer * dt
    cap = v["dealers.capacity"]
    lam = v["impact.lambda0"] * (1.0 + v["impact.convexity"] * jnp.maximum(s.dealer - cap, 0.0) / cap)
    impact = s.impact * jnp.exp(-v["impact.rho"] * dt) + lam * net_flow / v["impact.depth"]
    stock = s.stock + net_flow

    basis = (s.basis + v["basis_funds.k"] * (v["basis_funds.mean_bp"] - s.basis) * dt
             + v["basis_funds.sigma_bp"] * sq * normal[7] + v["basis_funds.impact_bp_per_100bn"] * forced / 100.0)
    fund_eq = s.fund_eq + s.fund_pos * (v["basis_funds.carry"] * dt - v["basis_funds.duration"] * (basis - s.basis)
                                        * 1e-4)

    new = eqx.tree_at(lambda q: (q.r, q.pi, q.tau_f, q.impact, q.stock, q.r_star, q.p), s,
                      (r, pi, tau_f, impact, stock, r_star, p))
    tau_new = tau_total(prep, new)
    y10_new = _yield(prep.load_10, r, pi, tau_new, r_star, p)
    y2_new = _yield(prep.load_2, r, pi, tau_new, r_star, p)
    a = 0.5 ** (1.0 / v["basis_funds.vol_halflife_days"])
    var10 = a * s.var10 + (1.0 - a) * (y10_new - y10) ** 2 / dt
    ewma10 = s.ewma10 + (-jnp.expm1(-dt / FIVE_DAYS)) * (y10_new - s.ewma10)

    # equity (discount-rate channel through the term premium) and the dollar (rate differential, regime drift)
    sig_e = v["equity.sigma"] * rg["equity_vol_mult"]
    log_equity = (s.log_equity + (v["equity.mu"] + rg["equity_drift"] - 0.5 * sig_e**2) * dt + sig_e * sq * z[3]
                  - v["equity.tp_beta"] * (tau_new - tau_total(prep, s)))
    log_dollar = (s.log_dollar + rg["dollar_drift"] * dt + v["dollar.sigma"] * sq * z[4]
                  + v["dollar.rate_beta"] * (y2_new - y2))

    # federal debt: each bucket rolls 1/maturity per year into the current yield; deficits add new debt
    y_debt = _yield(prep.load_debt, r, pi, tau_new, r_star, p)
    roll = s.debt * dt / prep.debt_mat
    new_debt = v["issuance.deficit"] * rg["deficit_mult"] * dt * prep.debt_share
    debt = s.debt + new_debt
    coupon = (s.coupon * (s.debt - roll) + y_debt * (roll + new_debt)) / jnp.maximum(debt, 1e-9)

    return State(
        regime=nxt, logp=logp, r=r, pi=pi, tau_f=tau_f, impact=impact, stock=stock, r_star=r_star, p=p, basis=basis,
        fund_pos=fund_pos, fund_eq=fund_eq, var10=var10, ewma10=ewma10,
        volfund=s.volfund - volfund_sales, dealer=dealer, fed=s.fed + fed_buy, holdings=s.holdings - sales,
        debt=debt, coupon=coupon, log_equity=log_equity, log_dollar=log_dollar, cash=s.cash + s.r * dt,
        foreign_sales=s.foreign_sales + foreign, forced_sales=s.forced_sales + forced,
        volfund_sales=s.volfund_sales + volfund_sales, max_y10=jnp.maximum(s.max_y10, y10_new), dysfunction=dys,
    )

