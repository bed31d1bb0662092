"""The model of one path: its state, its initial value and one time step.

The step is written for a single path (scalars, plus tuples of scalars for the foreign holders and the debt
buckets) and batched with `vmap` by `_simulate`; under `vmap` every operation is elementwise over paths (see
`step` for how it is kept cheap on CPU). Everything is smooth in the parameters: triggers use
softplus/sigmoid with configurable widths (a width of zero gives the hard rule), and no Python control flow
depends on traced values. The only discrete variable is the regime index, whose path log-probability is
accumulated (`logp`) so score-function gradients with respect to the generator are available.

Units: rates are decimals, amounts $bn, basis in bp, time in years.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._config import Params
from ._curve import loadings, one_minus_exp_over
from ._regimes import transition_matrix, with_diagonal
from ._schema import REGIME_FIELDS

N_NORMAL = 10  # 5 correlated (r, pi, tau, equity, dollar), r_star, p, basis, jump size pi, jump size tau
N_UNIFORM = 2  # regime transition, jump occurrence
FIVE_DAYS = 5.0 / 252.0


def decay(rate, dt):
    """The share of a gap that a relaxation at `rate` (1/year) closes in a step of dt: 1 - exp(-rate dt), the exact
    step of dx = rate (target - x) dt with the target held over the step. It is rate dt for a small rate dt and
    never more than the whole gap, where the explicit Euler step rate dt overshoots from 1 and diverges from 2
    (`--steps-per-year 4`, or a rate of 500/year at daily steps)."""
    return -jnp.expm1(-rate * dt)


def ou_sd(rate, dt):
    """sqrt((1 - exp(-2 rate dt)) / (2 rate)): the standard deviation, per unit of sigma, of the exact step of
    dx = rate (target - x) dt + sigma dW over dt with the target held, whose mean is `decay`'s. sqrt(dt) at rate 0
    and sqrt(dt) (1 - rate dt / 2) for a small rate dt. With the Euler noise sigma sqrt(dt) instead, the stationary
    variance would be sigma^2 dt / (1 - exp(-2 rate dt)), above the process's sigma^2 / (2 rate) by a factor of
    about 1 + rate dt (21% at rate 50, daily steps), and `calibrate history`'s sigma (estimated by this map from
    the daily AR(1)'s residual variance) would not give back the data's variance."""
    return jnp.sqrt(dt * one_minus_exp_over(2.0 * rate * dt))


def smooth_relu(x, width):
    """width * softplus(x / width); the hard max(x, 0) when width == 0."""
    safe = jnp.where(width > 0, width, 1.0)
    return jnp.where(width > 0, safe * softplus(x * (1.0 / safe)), jnp.maximum(x, 0.0))


@jax.custom_jvp
def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), as jax.nn.softplus (which goes through logaddexp and its
    NaN and infinity guards) at fewer operations; its derivative, the logistic function, is 1 - exp(-value)
    (the JVP rule), so the reverse mode reuses the value instead of exponentiating x again."""
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = softplus(x)
    return y, one_minus_exp_neg(y) * dx


def smooth_step(x, width):
    """sigmoid(x / width); the hard indicator x > 0 when width == 0."""
    safe = jnp.where(width > 0, width, 1.0)
    return jnp.where(width > 0, jax.nn.sigmoid(x * (1.0 / safe)), (x > 0).astype(x.dtype))


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
    one: Float[Array, ""]  # exactly 1.0, but a run-time value (see `keep`)
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
    p = transition_matrix(with_diagonal(v["regimes.generator"]), dt)
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
                y10_0=jnp.zeros(()), one=jax.lax.stop_gradient(k / k), dt=dt)
    y10_0 = _yield(prep.load_10, v["initial.r"], v["initial.pi"], v["initial.tau"], v["initial.r_star"],
                   v["initial.p"])
    return eqx.tree_at(lambda q: q.y10_0, prep, y10_0)


def _yield(load, r, pi, tau, r_star, p):
    b, c, g = load[0], load[1], load[2]
    return r * b + (r_star + pi) * (1.0 - b) + p * c + tau * g


class State(eqx.Module):
    """State of one path (scalars unless noted). `tau`, `y10`, `y2` and `dysfunction` are functions of the
    others, kept so that each step computes them once (at its end, for the next step)."""

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
    holdings: tuple[Float[Array, ""], ...]  # foreign official holdings by holder, $bn
    debt: tuple[Float[Array, ""], ...]  # marketable debt by maturity bucket, $bn
    interest: tuple[Float[Array, ""], ...]  # interest bill by bucket, $bn a year (its debt x its average coupon)
    log_equity: Float[Array, ""]
    log_dollar: Float[Array, ""]
    cash: Float[Array, ""]  # integral of r dt
    foreign_sales: Float[Array, ""]  # cumulative, $bn
    forced_sales: Float[Array, ""]
    volfund_sales: Float[Array, ""]
    max_y10: Float[Array, ""]  # running maximum of the 10y yield
    tau: Float[Array, ""]  # the 10y term premium, `tau_total`
    y10: Float[Array, ""]  # the 10y and 2y zero yields
    y2: Float[Array, ""]
    dysfunction: Float[Array, ""]  # market dysfunction of this state, `dysfunction`


def tau_total(prep: Prep, tau_f, impact, stock):
    """The 10y term premium: fundamental + transient impact + persistent stock effect of net supply ($bn)."""
    return tau_f + impact + (prep.v["impact.stock_bp_per_tn"] * 1e-7) * stock


def dysfunction(prep: Prep, basis, y10, ewma10, var10):
    """Market dysfunction: basis widening, the recent 10y rise and the vol increase, in weighted units."""
    v = prep.v
    return (v["fed.w_basis"] * 0.1 * jnp.maximum(basis - v["initial.basis_bp"], 0.0)
            + v["fed.w_move"] * 400.0 * jnp.maximum(y10 - ewma10, 0.0)
            + v["fed.w_vol"] * jnp.maximum(jnp.sqrt(var10) * (1.0 / v["initial.vol_10y"]) - 1.0, 0.0))


def initial_state(prep: Prep, initial_regime: int) -> State:
    v = prep.v
    z = jnp.zeros((), v["curve.k"].dtype)
    pos = v["basis_funds.position"]
    tau = tau_total(prep, v["initial.tau"], z, z)
    y2 = _yield(prep.load_2, v["initial.r"], v["initial.pi"], tau, v["initial.r_star"], v["initial.p"])
    var10 = v["initial.vol_10y"] ** 2 + z
    return State(
        regime=jnp.asarray(initial_regime, jnp.int32), logp=z, r=v["initial.r"] + z, pi=v["initial.pi"] + z,
        tau_f=v["initial.tau"] + z, impact=z, stock=z, r_star=v["initial.r_star"] + z, p=v["initial.p"] + z,
        basis=v["initial.basis_bp"] + z, fund_pos=pos + z, fund_eq=pos / v["basis_funds.leverage"],
        var10=var10, ewma10=prep.y10_0 + z, volfund=v["vol_funds.holdings"] + z,
        dealer=z, fed=z, holdings=tuple(x + z for x in prep.hold["holdings"]),
        debt=tuple(x + z for x in v["debt.amounts"]),
        interest=tuple(d * c + z for d, c in zip(v["debt.amounts"], v["debt.coupons"], strict=True)),
        log_equity=z, log_dollar=jnp.log(v["initial.dollar_index"]) + z, cash=z,
        foreign_sales=z, forced_sales=z, volfund_sales=z, max_y10=prep.y10_0 + z, tau=tau + z, y10=prep.y10_0 + z,
        y2=y2 + z, dysfunction=dysfunction(prep, v["initial.basis_bp"] + z, prep.y10_0, prep.y10_0, var10),
    )


# Code shapes that are fast on one backend and slow on another; the values are the same either way. None: decide
# by `jax.default_backend()` when the step is traced (True on CPU); the benchmark script sets them to compare.
MATERIALISE: bool | None = None


def cpu_shape(setting: bool | None) -> bool:
    """A code-shape setting (`MATERIALISE`, `_simulate.CARRY_DRAWS`): as set, or None for the CPU's choice on a
    CPU and the other on an accelerator."""
    return jax.default_backend() == "cpu" if setting is None else setting


def materialise() -> bool:
    return cpu_shape(MATERIALISE)


def keep(prep: Prep, x):
    """x, computed once and stored: the division by a run-time 1.0 is exact, and XLA does not copy a division
    into several consumers, so the cheap arithmetic that produces x is evaluated once instead of once in each
    fused kernel that reads x (XLA's CPU backend has no multi-output fusion). On a GPU, where memory traffic
    costs more than arithmetic and XLA fuses several outputs into one kernel, x is left to the compiler
    (`MATERIALISE`)."""
    return x / prep.one if materialise() else x


def pick(onehot: list, table):
    """table[regime] as a select chain over the (few) regimes: elementwise, so it fuses with the step (a
    gather from a small table does not vectorize)."""
    out = table[-1]
    for r in range(len(onehot) - 1):
        out = jnp.where(onehot[r], table[r], out)
    return out


def _holder_sales(prep: Prep, i: int, held, foreign_selling, rise, fall, t):
    """Sales of foreign holder i over the step: regime and pro-cyclical selling (partly replaced by FIMA repo)
    plus its program, never more than it holds."""
    h = {f: a[i] for f, a in prep.hold.items()}
    dt = prep.dt
    rates = (1.0 - h["fima_share"]) * dt
    intensity = h["sell_rate"] * foreign_selling + h["procyclical_rates"] * rise + h["procyclical_dollar"] * fall
    years = h["program_months"] / 12.0
    # the program sells at total / years over the part of the step inside its window [start, start + years): its
    # total whatever the window's alignment with the steps (a whole step's sale for any overlap sold 43bn of a 30bn
    # program of 2.1 steps); exactly dt inside the window (t is a scalar: a few operations a step, not a path)
    inside = dt - jnp.maximum(h["program_start"] - t, 0.0) - jnp.maximum(t + dt - (h["program_start"] + years), 0.0)
    desired = rates * intensity * held + h["program_total"] / years * jnp.clip(inside, 0.0, dt)
    return held * one_minus_exp_neg(desired / (held + 1e-9))


def one_minus_exp_neg(x):
    """1 - exp(-x) = -expm1(-x). In float32 at half the cost of expm1 on CPU, within 6e-7 relative (expm1: 3e-7),
    see `_one_minus_exp_neg32`; in float64, expm1."""
    return -jnp.expm1(-x) if jnp.result_type(x) == jnp.float64 else _one_minus_exp_neg32(x)


@jax.custom_jvp
def _one_minus_exp_neg32(x):
    """For |x| < 0.1 a Taylor polynomial (the first omitted term, x^6 / 720, is below 2e-8 relative there), beyond
    it 1 - exp(-x), which does not cancel there. Its derivative exp(-x) is 1 - the value (the JVP rule), so the
    reverse mode costs one multiplication."""
    series = x * (1.0 - x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x * (1.0 / 120.0)))))
    return jnp.where(jnp.abs(x) < 0.1, series, 1.0 - jnp.exp(-x))


@_one_minus_exp_neg32.defjvp
def _one_minus_exp_neg32_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = _one_minus_exp_neg32(x)
    return y, (1.0 - y) * dx


def _regime_tables(prep: Prep) -> dict:
    """Everything the step reads that depends on the regime, as tables over the regimes (shape (R,) each),
    parameters combined where they enter together: scalar work done once a step, then one pick per path."""
    v, reg, dt = prep.v, prep.reg, prep.dt
    sq = jnp.sqrt(dt)
    pj = prep.jump_p
    sig_e = v["equity.sigma"] * reg["equity_vol_mult"]
    tables = {f"chol_{i}{j}": prep.chol[:, i, j] for i in range(5) for j in range(i + 1)}
    tables.update(
        # a jump's probability and the log-probabilities of a jump and of none (the log of a zero probability is
        # never selected, and kept finite for the gradient). Where the intensity is 0 the score function has no
        # jumps to weigh against the no-jump steps: d log(1 - p) / d intensity = -dt there would make the score's
        # mean -dt a step instead of 0 (the likelihood ratio does not exist on that boundary), and the gradient
        # with respect to the intensity -Cov(metric, time in the regime) rather than the effect of jumps. So no
        # gradient flows through the no-jump term there: the intensity's derivative at 0 is its pathwise part, 0
        # (exact where the regime's jumps are of size 0, as in the shipped calm and pause regimes)
        jump_p=pj, log_jump=jnp.log(jnp.where(pj > 0, pj, 1.0)),
        log_no_jump=jnp.where(pj > 0, -reg["jump_intensity"] * dt, 0.0),  # log(1 - p), finite when p rounds to 1
        jump_pi_mean=reg["jump_pi_mean"], jump_pi_sd=reg["jump_pi_sd"],
        jump_tau_mean=reg["jump_tau_mean"], jump_tau_sd=reg["jump_tau_sd"],
        pi_target=v["inflation.mean"] + reg["pi_shift"] + v["inflation.pass_through"] * reg["tariff"],
        pi_sd=v["inflation.sigma"] * reg["pi_vol_mult"] * ou_sd(v["inflation.k"], dt),
        tau_target=v["term_premium.mean"] + reg["tau_shift"],
        tau_sd=v["term_premium.sigma"] * reg["tau_vol_mult"] * ou_sd(v["term_premium.k"], dt),
        selling=reg["foreign_selling"],
        haircut0=v["basis_funds.haircut0"] * reg["risk"],
        deficit=v["issuance.deficit"] * reg["deficit_mult"] * dt,
        absorption=v["issuance.absorption"] * reg["absorption_mult"] * dt,
        equity_drift=(v["equity.mu"] + reg["equity_drift"] - 0.5 * sig_e**2) * dt,
        equity_sd=sig_e * sq,
        dollar_drift=reg["dollar_drift"] * dt,
    )
    return tables


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def lookup(tables: dict, index, n_regimes: int) -> dict:
    """{name: table[index]} for per-regime tables (shape (R,)) and a batch of regime indices (shape (paths,)).

    All tables at once, as one product (tables, R) @ (R, paths) with the one-hot regimes (exact: one term is
    nonzero; a gather from a small table does not vectorize on CPU). Reverse mode: the cotangents of all tables
    as one product (tables, paths) x (R, paths)^T, where indexing each table would transpose into one scatter-add
    per table (and a select chain into one reduction over paths per table and regime)."""
    names = list(tables)
    stacked = jnp.stack([tables[k] for k in names])
    onehot_t = (jnp.arange(n_regimes)[:, None] == index[None, :]).astype(stacked.dtype)
    rows = jnp.matmul(stacked, onehot_t, precision=jax.lax.Precision.HIGHEST)
    return {k: rows[i] for i, k in enumerate(names)}


def _lookup_fwd(tables, index, n_regimes):
    return lookup(tables, index, n_regimes), index


def _lookup_bwd(n_regimes, index, ct):
    with jax.named_scope("regime_lookup"):
        names = list(ct)
        stacked = jnp.stack([ct[k] for k in names])
        # the one-hot as (R, paths), both operands contracted along their contiguous last axis: XLA's CPU library
        # product ran 2x faster so than with a (paths, R) one-hot (78 vs 146 us for 33 tables x 8192 paths), and
        # the gradient 4-5% faster
        onehot = (jnp.arange(n_regimes)[:, None] == index[None, :]).astype(stacked.dtype)
        per_regime = jnp.einsum("tp,rp->tr", stacked, onehot, precision=jax.lax.Precision.HIGHEST)
        return {k: per_regime[i] for i, k in enumerate(names)}, None


lookup.defvjp(_lookup_fwd, _lookup_bwd)


def _transition(prep: Prep, regime, u):
    """(one-hot of the current regime as a list of masks, next regime): the inverse CDF of the current row at the
    uniform u, by comparisons with the row's cumulative probabilities picked by select chains (elementwise, for
    one path under `vmap` or for a batch)."""
    n_reg = prep.cum_p.shape[0]
    was = [regime == q for q in range(n_reg)]
    nxt = sum(((u >= pick(was, prep.cum_p[:, q])).astype(jnp.int32) for q in range(n_reg - 1)),
              jnp.zeros_like(regime))
    return was, nxt


def next_regime(prep: Prep, s: State, u):
    """For a batch of paths (s of shape (paths,)): the regime of the next step (`_transition`, as in `step`), the
    path log-probability with that transition, and the regime tables looked up (`lookup`).
    `step(..., regime=next_regime(...))` is the step the reverse mode differentiates."""
    with jax.named_scope("regime_lookup"):
        n_reg = prep.cum_p.shape[0]
        was, nxt = _transition(prep, s.regime, u)
        # log P(current -> next): the column of log_p for the next regime looked up with the tables, then the
        # current regime's entry picked; indexing log_p by both would transpose into a scatter-add from every path
        # onto its R x R entries (atomics on a GPU: 23% of the gradient's kernel time on an H100, 4 regimes)
        rows = {f"log_p_from_{q}": prep.log_p[q] for q in range(n_reg)}
        rg = lookup({**_regime_tables(prep), **rows}, nxt, n_reg)
        logp = s.logp + pick(was, [rg.pop(k) for k in rows])
        return nxt, logp, rg


def step(prep: Prep, t, s: State, normal, uniform, regime=None, tables=None) -> State:
    """Advance one path by one step of length dt; t is the time at the start of the step.

    normal: 10 standard normals, uniform: 2 uniforms in (0, 1) (sequences of scalars).
    Under `vmap` the cost is the per-path arithmetic, so it is kept lean: regime parameters by select chains
    (`pick`) from per-regime tables that combine them beforehand (`_regime_tables`, scalar work once a step),
    holders and debt buckets unrolled, divisions by parameters as multiplications by their reciprocals, the
    yields, term premium and dysfunction that many equations read computed once, at the end of the previous
    step, and other shared intermediates computed once (`keep`).
    `regime`: the next regime, the log-probability and the looked-up tables from `next_regime` (batched, outside
    the `vmap`), the same values as the select chains; reverse mode differentiates that form (see `lookup`).
    `tables`: `_regime_tables(prep)` computed beforehand (the GPU kernel's scalars, see `_kernel`).
    Each block of the step is a `jax.named_scope`, kept in the compiled program's op names in the forward and the
    reverse pass alike, so that profiles split the time by block (`scripts/profile_run.py`).
    """
    v, dt = prep.v, prep.dt
    sq = jnp.sqrt(dt)
    y10, y2, dys = s.y10, s.y2, s.dysfunction
    vol = jnp.sqrt(s.var10)

    with jax.named_scope("regime"):
        # regime: transition at the start of the step (inverse CDF of the current row), then the parameters of the
        # regime in force during the step; the correlated shocks by an unrolled 5x5 Cholesky product
        if regime is not None:
            nxt, logp, rg = regime
        else:
            n_reg = prep.cum_p.shape[0]
            tables = _regime_tables(prep) if tables is None else tables
            was, nxt = _transition(prep, s.regime, uniform[0])
            now = [nxt == q for q in range(n_reg)]
            logp = s.logp + pick(now, [pick(was, prep.log_p[:, q]) for q in range(n_reg)])
            rg = {name: pick(now, table) for name, table in tables.items()}

        z = [sum(rg[f"chol_{i}{j}"] * normal[j] for j in range(i + 1)) for i in range(5)]

    with jax.named_scope("jumps"):
        # announcement jumps, and the log-probability of the jump draw (for score-function gradients w.r.t. the
        # intensities)
        hit = uniform[1] < rg["jump_p"]
        logp = logp + jnp.where(hit, rg["log_jump"], rg["log_no_jump"])
        j_pi = jnp.where(hit, rg["jump_pi_mean"] + rg["jump_pi_sd"] * normal[8], 0.0)
        j_tau = jnp.where(hit, rg["jump_tau_mean"] + rg["jump_tau_sd"] * normal[9], 0.0)

    with jax.named_scope("macro"):
        # macro drivers
        r_target = s.r_star + s.pi + v["short_rate.phi_pi"] * (s.pi - v["short_rate.pi_star"]) \
            - v["short_rate.phi_stress"] * dys
        r = keep(prep, s.r + decay(v["short_rate.k"], dt) * (r_target - s.r)
                 + v["short_rate.sigma"] * ou_sd(v["short_rate.k"], dt) * z[0])
        pi = keep(prep, s.pi + decay(v["inflation.k"], dt) * (rg["pi_target"] - s.pi) + rg["pi_sd"] * z[1] + j_pi)
        tau_f = keep(prep, s.tau_f + decay(v["term_premium.k"], dt) * (rg["tau_target"] - s.tau_f) + rg["tau_sd"] * z[2]
                     + j_tau)
        r_star = keep(prep, s.r_star + decay(v["neutral_rate.k"], dt) * (v["neutral_rate.mean"] - s.r_star)
                      + v["neutral_rate.sigma"] * ou_sd(v["neutral_rate.k"], dt) * normal[5])
        p_target = (v["policy_path.mean"] + v["policy_path.phi_gap"] * (r_target - s.r)
                    - v["policy_path.phi_stress"] * dys)
        p = keep(prep, s.p + decay(v["policy_path.k"], dt) * (p_target - s.p)
                 + v["policy_path.sigma"] * ou_sd(v["policy_path.k"], dt) * normal[6])

    with jax.named_scope("holders"):
        # foreign official holders: regime and pro-cyclical selling (partly replaced by FIMA repo) + programs
        rise = jnp.maximum(y10 - prep.y10_0, 0.0) * 100.0  # per 100bp
        fall = jnp.maximum(jnp.log(v["initial.dollar_index"]) - s.log_dollar, 0.0) * 10.0  # per 10% (log)
        selling = rg["selling"]
        sales = tuple(_holder_sales(prep, i, s.holdings[i], selling, rise, fall, t) for i in range(len(s.holdings)))
        foreign = sum(sales, jnp.zeros_like(y10))

    with jax.named_scope("vol_funds"):
        # volatility-targeting funds: holdings scale with target_vol / realized vol (capped at 2x)
        vt = v["vol_funds.target_vol"]
        vol_target = v["vol_funds.holdings"] * vt / jnp.maximum(vol, 0.5 * vt)
        volfund_sales = decay(v["vol_funds.speed"], dt) * (s.volfund - vol_target)

    with jax.named_scope("basis_funds"):
        # basis funds: repo haircut, margin constraint B <= E / h, smooth forced deleveraging, re-levering
        haircut = rg["haircut0"] + v["basis_funds.haircut_vol"] * vol
        haircut = haircut - v["fed.srf"] * jnp.maximum(haircut - v["fed.srf_cap"], 0.0)
        haircut = jnp.maximum(haircut, 1e-4)
        width = v["basis_funds.width"]
        equity_pos = jnp.maximum(s.fund_eq, 0.0)
        capacity = equity_pos / haircut  # the largest position the margin allows
        excess = smooth_relu(s.fund_pos - capacity, width)
        # smooth min(excess, position), clipped to [0, position]: the smoothing never sells what is not held
        forced = keep(prep, jnp.clip(s.fund_pos - smooth_relu(s.fund_pos - excess, width), 0.0,
                                     jnp.maximum(s.fund_pos, 0.0)))
        # funds rebuild toward their initial size at most (carry alone must not grow them without bound)
        target_pos = jnp.minimum(jnp.minimum(v["basis_funds.leverage"] * equity_pos, capacity),
                                 v["basis_funds.position"])
        relever = keep(prep, decay(v["basis_funds.relever"], dt) * jnp.maximum(target_pos - s.fund_pos, 0.0))
        fund_pos = s.fund_pos - forced + relever

    with jax.named_scope("flows"):
        # issuance, Fed backstop, net flow, dealers and price impact
        deficit = keep(prep, rg["deficit"])
        net_issuance = deficit - rg["absorption"]
        fed_buy = (v["fed.backstop"] * v["fed.max_purchases"] * dt
                   * smooth_step(dys - v["fed.threshold"], v["fed.width"]))
        net_flow = keep(prep, foreign + forced + volfund_sales + net_issuance - fed_buy - relever)
        dealer = s.dealer + net_flow - decay(v["dealers.distribute_rate"], dt) * s.dealer
        cap = v["dealers.capacity"]
        lam = v["impact.lambda0"] / v["impact.depth"] * (1.0 + v["impact.convexity"] / cap
                                                         * jnp.maximum(s.dealer - cap, 0.0))
        impact = s.impact * jnp.exp(-v["impact.rho"] * dt) + lam * net_flow  # lam: impact per $bn of net flow
        stock = s.stock + net_flow

        basis = (s.basis + decay(v["basis_funds.k"], dt) * (v["basis_funds.mean_bp"] - s.basis)
                 + v["basis_funds.sigma_bp"] * ou_sd(v["basis_funds.k"], dt) * normal[7]
                 + v["basis_funds.impact_bp_per_100bn"] * 0.01 * forced)
        fund_eq = s.fund_eq + s.fund_pos * (v["basis_funds.carry"] * dt - v["basis_funds.duration"] * 1e-4
                                            * (basis - s.basis))

    with jax.named_scope("curve"):
        # the curve of the new state
        tau_new = keep(prep, tau_total(prep, tau_f, impact, stock))
        y10_new = keep(prep, _yield(prep.load_10, r, pi, tau_new, r_star, p))
        y2_new = keep(prep, _yield(prep.load_2, r, pi, tau_new, r_star, p))
        a = 0.5 ** (1.0 / v["basis_funds.vol_halflife_days"])
        var10 = a * s.var10 + (1.0 - a) / dt * (y10_new - y10) ** 2
        ewma10 = s.ewma10 + (-jnp.expm1(-dt / FIVE_DAYS)) * (y10_new - s.ewma10)

    with jax.named_scope("equity_dollar"):
        # equity (discount-rate channel through the term premium) and the dollar (rate differential, regime drift)
        log_equity = (s.log_equity + rg["equity_drift"] + rg["equity_sd"] * z[3]
                      - v["equity.tp_beta"] * (tau_new - s.tau))
        log_dollar = (s.log_dollar + rg["dollar_drift"] + v["dollar.sigma"] * sq * z[4]
                      + v["dollar.rate_beta"] * (y2_new - y2))

    with jax.named_scope("debt"):
        # federal debt: each bucket rolls 1/maturity per year into the current yield; deficits add new debt. The
        # state is each bucket's interest bill (debt x average coupon): the rolled share's old coupons are
        # replaced by y_i, new debt pays y_i, so the bill updates without dividing by the debt
        debt, interest = [], []
        for i, (d_i, m_i) in enumerate(zip(s.debt, s.interest, strict=True)):
            y_i = _yield([row[i] for row in prep.load_debt], r, pi, tau_new, r_star, p)
            roll = decay(1.0 / prep.debt_mat[i], dt)  # the share of the bucket maturing in the step
            new_debt = prep.debt_share[i] * deficit
            debt.append(d_i + new_debt)
            interest.append(m_i * (1.0 - roll) + y_i * (roll * d_i + new_debt))

    with jax.named_scope("state"):
        return State(
            regime=nxt, logp=logp, r=r, pi=pi, tau_f=tau_f, impact=impact, stock=stock, r_star=r_star, p=p, basis=basis,
            fund_pos=fund_pos, fund_eq=fund_eq, var10=var10, ewma10=ewma10,
            volfund=s.volfund - volfund_sales, dealer=dealer, fed=s.fed + fed_buy,
            holdings=tuple(x - y for x, y in zip(s.holdings, sales, strict=True)), debt=tuple(debt),
            interest=tuple(interest),
            log_equity=log_equity, log_dollar=log_dollar, cash=s.cash + s.r * dt,
            foreign_sales=s.foreign_sales + foreign, forced_sales=s.forced_sales + forced,
            volfund_sales=s.volfund_sales + volfund_sales, max_y10=jnp.maximum(s.max_y10, y10_new),
            tau=tau_new, y10=y10_new, y2=y2_new, dysfunction=dysfunction(prep, basis, y10_new, ewma10, var10),
        )
