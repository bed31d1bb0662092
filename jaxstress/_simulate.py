"""Simulation: one jitted function advances a chunk of paths over the horizon with `lax.scan`.

Random numbers are drawn per block of `BLOCK` paths: the key of block b at step t is
`fold_in(fold_in(key(seed), b), t)`, so the draws of a path depend only on the seed and its index, and results
are identical for any chunk size (chunks are whole numbers of blocks). Callers may instead inject the draws
(`simulate_draws`) for common random numbers.

Values at the reporting dates are written into a small buffer from inside the scan with a `lax.cond` on the
(shared) step counter, so only those dates are kept; the portfolio is revalued only there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32

from ._config import Params, Scenario
from ._curve import par_yield_from_zero, zero_yields
from ._model import N_NORMAL, N_UNIFORM, Prep, State, initial_state, prepare, step, tau_total
from ._portfolio import portfolio_value

BLOCK = 256
PRNG_IMPL = "threefry2x32"  # the seed's key; draws are counter-based threefry on (path index, step)


def report_steps(config: dict, n_steps: int) -> tuple[int, ...]:
    days = sorted({int(d) for d in config["simulation"]["report_days"]} | {0, n_steps})
    return tuple(d for d in days if d <= n_steps)


def _fmt_m(m: float) -> str:
    return f"{m:g}"


def variable_names(params: Params) -> tuple[str, ...]:
    mats = [_fmt_m(m) for m in params.maturities]
    return tuple(
        [f"yield_{m}y" for m in mats] + [f"par_yield_{m}y" for m in mats]
        + ["short_rate", "breakeven_10y", "term_premium_10y", "term_premium_impact", "neutral_rate",
           "policy_path", "mortgage_rate"]
        + [f"holdings_{h}" for h in params.holder_names]
        + ["foreign_holdings_total", "basis_fund_equity", "basis_fund_position", "basis_bp", "vol_fund_holdings",
           "dealer_load", "fed_holdings", "interest_bill", "portfolio_value", "equity_index", "dollar_index",
           "regime", "dysfunction", "foreign_sales_cum", "forced_sales_cum"]
    )


PERCENT = ("yield_", "par_yield_", "short_rate", "breakeven_10y", "term_premium_10y", "term_premium_impact",
           "neutral_rate", "policy_path", "mortgage_rate")


def observe(params: Params, prep: Prep, s: State, t) -> jax.Array:
    """Reported variables for a batch of states at time t, stacked to shape (variables, paths)."""
    v = params.values
    k, kc, mu = v["curve.k"], v["curve.kc"], v["curve.mu"]
    tau = tau_total(prep, s)

    def zero_fn(m):
        return zero_yields(m, s.r, s.pi, tau, s.r_star, s.p, k, kc, mu)

    def zero_fn0(m):
        return zero_yields(m, v["initial.r"], v["initial.pi"], v["initial.tau"], v["initial.r_star"],
                           v["initial.p"], k, kc, mu)

    mats = jnp.asarray(params.maturities, tau.dtype)
    zeros = zero_fn(mats)  # (paths, m)
    pars = jnp.stack([par_yield_from_zero(zero_fn, m) for m in params.maturities], axis=-1)
    i10 = params.maturities.index(10.0)
    y10 = zeros[..., i10]
    mortgage = y10 + v["mortgage.spread"] + v["mortgage.stress_spread"] * s.dysfunction
    value = portfolio_value(params.portfolio, t, zero_fn, zero_fn0, jnp.exp(s.log_equity), jnp.exp(s.cash))
    cols = (
        [zeros[..., j] * 100 for j in range(len(params.maturities))]
        + [pars[..., j] * 100 for j in range(len(params.maturities))]
        + [s.r * 100, s.pi * 100, tau * 100, s.impact * 100, s.r_star * 100, s.p * 100, mortgage * 100]
        + [s.holdings[..., j] for j in range(len(params.holder_names))]
        + [jnp.sum(s.holdings, axis=-1), s.fund_eq, s.fund_pos, s.basis, s.volfund, s.dealer, s.fed,
           jnp.sum(s.debt * s.coupon, axis=-1), value, 100 * jnp.exp(s.log_equity), jnp.exp(s.log_dollar),
           s.regime.astype(tau.dtype), s.dysfunction, s.foreign_sales, s.forced_sales]
    )
    return jnp.stack([jnp.broadcast_to(c, tau.shape) for c in cols])


METRIC_NAMES = (
    "y2_change_bp", "y10_change_bp", "y30_change_bp", "y10_max_rise_bp", "y10_level_pct", "y10_max_level_pct",
    "breakeven_10y_change_bp", "term_premium_10y_change_bp", "mortgage_rate_change_bp", "portfolio_loss",
    "foreign_sales_bn", "forced_sales_bn", "vol_fund_sales_bn", "fed_purchases_bn", "interest_cost_change_bn",
    "equity_return_pct", "dollar_change_pct", "basis_change_bp", "basis_fund_equity_change_bn", "regime_logp",
)


def path_metrics(names: tuple[str, ...], obs0: jax.Array, obs1: jax.Array, s: State) -> jax.Array:
    """Per-path metrics at the horizon from the initial and final observations; shape (metrics, paths)."""
    ix = {n: i for i, n in enumerate(names)}

    def d(name, mult=1.0):
        return (obs1[ix[name]] - obs0[ix[name]]) * mult

    y2 = d("yield_2y", 100) if "yield_2y" in ix else jnp.zeros_like(obs1[0])
    y30 = d("yield_30y", 100) if "yield_30y" in ix else jnp.zeros_like(obs1[0])
    y10_0 = obs0[ix["yield_10y"]]
    cols = {
        "y2_change_bp": y2,
        "y10_change_bp": d("yield_10y", 100),
        "y30_change_bp": y30,
        "y10_max_rise_bp": (s.max_y10 * 100 - y10_0) * 100,
        "y10_level_pct": obs1[ix["yield_10y"]],
        "y10_max_level_pct": s.max_y10 * 100,
        "breakeven_10y_change_bp": d("breakeven_10y", 100),
        "term_premium_10y_change_bp": d("term_premium_10y", 100),
        "mortgage_rate_change_bp": d("mortgage_rate", 100),
        "portfolio_loss": -d("portfolio_value"),
        "foreign_sales_bn": s.foreign_sales,
        "forced_sales_bn": s.forced_sales,
        "vol_fund_sales_bn": s.volfund_sales,
        "fed_purchases_bn": s.fed,
        "interest_cost_change_bn": d("interest_bill"),
        "equity_return_pct": (obs1[ix["equity_index"]] / obs0[ix["equity_index"]] - 1) * 100,
        "dollar_change_pct": (obs1[ix["dollar_index"]] / obs0[ix["dollar_index"]] - 1) * 100,
        "basis_change_bp": d("basis_bp"),
        "basis_fund_equity_change_bn": d("basis_fund_equity"),
        "regime_logp": s.logp,
    }
    return jnp.stack([jnp.broadcast_to(cols[n], obs1[0].shape) for n in METRIC_NAMES])


def _simulate(params: Params, n_paths: int, draw: Callable, reports: tuple[int, ...]):
    """Core loop shared by the keyed and the injected-draws entry points. Returns (metrics, snapshots, final).

    An outer `lax.scan` runs over the reporting intervals; inside each, a `fori_loop` with traced bounds advances
    the paths step by step (one compiled loop body however many reporting dates there are), and the reporting
    variables are observed once per interval. Forward only: gradients use `final_state` (a checkpointed scan).
    """
    prep = prepare(params)
    names = variable_names(params)
    s0 = initial_state(prep, params.initial_regime)
    state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n_paths,) + x.shape), s0)
    obs0 = observe(params, prep, state, jnp.zeros((), prep.y10_0.dtype))
    step_b = jax.vmap(step, in_axes=(None, None, 0, 0, 0))
    dt = params.dt
    bounds = np.asarray(reports, np.int32)

    def advance(t, state):
        normal, uniform = draw(t)
        return step_b(prep, t * dt, state, normal, uniform)

    def interval(state, lo_hi):
        lo, hi = lo_hi
        state = jax.lax.fori_loop(lo, hi, advance, state)
        return state, observe(params, prep, state, hi * dt)

    state, obs = jax.lax.scan(interval, state, (jnp.asarray(bounds[:-1]), jnp.asarray(bounds[1:])))
    snaps = jnp.concatenate([obs0[None], obs], axis=0)
    metrics = path_metrics(names, obs0, snaps[-1], state)
    return metrics, snaps, state


def horizon_metrics(params: Params, n_paths: int, draw: Callable, segment: int | None = None):
    """Per-path metrics at the horizon, differentiable and memory-bounded: returns (metrics, final State).

    Reverse mode through `lax.scan` stores the carry of every step it differentiates; here the steps are
    grouped into segments of about sqrt(T) whose inner scans are rematerialised (`jax.checkpoint`), so the
    backward pass keeps ~2 sqrt(T) states per path instead of T, and each step's internals are recomputed
    rather than stored. Steps past the horizon in the last segment are masked out.
    """
    prep = prepare(params)
    names = variable_names(params)
    s0 = initial_state(prep, params.initial_regime)
    state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n_paths,) + x.shape), s0)
    obs0 = observe(params, prep, state, jnp.zeros((), prep.y10_0.dtype))
    n = params.n_steps
    seg = segment or max(1, int(round(np.sqrt(n))))
    n_seg = -(-n // seg)
    step_b = jax.vmap(step, in_axes=(None, None, 0, 0, 0))
    dt = params.dt

    def one(state, t):
        normal, uniform = draw(jnp.minimum(t, n - 1))
        new = step_b(prep, t * dt, state, normal, uniform)
        if n_seg * seg != n:
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(t < n, a, b), new, state)
        return new, None

    @jax.checkpoint
    def segment_fn(state, j):
        state, _ = jax.lax.scan(one, state, j * seg + jnp.arange(seg))
        return state, None

    state, _ = jax.lax.scan(segment_fn, state, jnp.arange(n_seg))
    obs1 = observe(params, prep, state, n * dt)
    return path_metrics(names, obs0, obs1, state), state


def _block_draws(key, block_ids, dtype):
    """Draws for the paths of the given blocks: counter-based, so path i's stream depends only on the seed and i.

    Each path-step needs 12 uniforms: the 32-bit words of threefry2x32(key, (path index, 6 t + j)) for
    j = 0..5. Ten become standard normals by the inverse CDF (sqrt(2) erfinv(2u - 1)), two stay uniforms in
    (0, 1). Elementwise in the path index, the result is the same however paths are chunked or sharded.
    """
    kd = jax.random.key_data(key).astype(jnp.uint32).reshape(-1)[:2]
    ids = (block_ids.astype(jnp.uint32)[:, None] * BLOCK + jnp.arange(BLOCK, dtype=jnp.uint32)[None, :]).reshape(-1)
    n = ids.shape[0]
    j = jnp.arange(6, dtype=jnp.uint32)
    x0 = jnp.broadcast_to(ids[None, :], (6, n)).reshape(-1)
    wide = jnp.dtype(dtype) == jnp.float64

    def draw(t):
        x1 = jnp.broadcast_to((jnp.asarray(t).astype(jnp.uint32) * 6 + j)[:, None], (6, n)).reshape(-1)
        bits = threefry_2x32(kd, jnp.concatenate([x0, x1])).reshape(12, n)
        if wide:
            u = (bits.astype(dtype) + 0.5) * 2.0**-32
        else:
            u = (jnp.right_shift(bits, 8).astype(dtype) + 0.5) * 2.0**-24
        normal = jnp.sqrt(jnp.asarray(2.0, dtype)) * jax.lax.erf_inv(2.0 * u[:N_NORMAL] - 1.0)
        return normal.T, u[N_NORMAL:].T

    return draw


@eqx.filter_jit
def simulate_chunk(params: Params, key: jax.Array, first_block: jax.Array, n_blocks: int,
                   reports: tuple[int, ...]):
    """Simulate blocks first_block .. first_block + n_blocks - 1 (BLOCK paths each)."""
    block_ids = first_block + jnp.arange(n_blocks, dtype=jnp.uint32)
    draw = _block_draws(key, block_ids, params.values["curve.k"].dtype)
    metrics, snaps, _ = _simulate(params, n_blocks * BLOCK, draw, reports)
    return metrics, snaps


def simulate_draws(params: Params, normals: jax.Array, uniforms: jax.Array, reports: tuple[int, ...] | None = None):
    """Simulate with injected draws: normals (steps, paths, 10) and uniforms (steps, paths, 2) in (0, 1).

    Returns (metrics (len(METRIC_NAMES), paths), snapshots (reports, variables, paths), final State). Not jitted
    here, so it can be used inside a caller's jit or grad.
    """
    n_paths = normals.shape[1]
    reports = reports or (0, params.n_steps)

    def draw(t):
        return normals[t], uniforms[t]

    return _simulate(params, n_paths, draw, reports)


@dataclasses.dataclass
class SimulationResult:
    scenario: Scenario
    params: Params
    seed: int
    n_paths: int
    metrics: dict[str, np.ndarray]  # per path, at the horizon
    snapshots: np.ndarray  # (reports, variables, retained paths)
    variables: tuple[str, ...]
    reports: tuple[int, ...]
    wall_s: float
    compile_s: float
    chunk_size: int


def simulate(scenario: Scenario, n_paths: int, seed: int = 0, chunk_size: int = 65536, retain: int = 200_000,
             dtype=None, progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Run n_paths of a scenario in chunks; keep per-path metrics for all paths and reporting-date values for the
    first `retain` paths (enough for quantiles; the paths are i.i.d., so they are a random sample)."""
    if n_paths < 1:
        raise ValueError("paths must be >= 1")
    params = scenario.params(dtype)
    reports = report_steps(scenario.config, params.n_steps)
    blocks_total = -(-n_paths // BLOCK)
    chunk_blocks = max(1, min(blocks_total, -(-chunk_size // BLOCK)))
    key = jax.random.key(seed, impl=PRNG_IMPL)
    t0 = time.perf_counter()
    metric_parts, snap_parts, kept = [], [], 0
    compile_s = 0.0
    done = 0
    for first in range(0, blocks_total, chunk_blocks):
        tc = time.perf_counter()
        m, sn = simulate_chunk(params, key, jnp.asarray(first, jnp.uint32), chunk_blocks, reports)
        m = np.asarray(m)
        if first == 0:
            compile_s = time.perf_counter() - tc
        take = min(chunk_blocks * BLOCK, n_paths - first * BLOCK)
        metric_parts.append(m[:, :take].astype(np.float64))
        if kept < retain:
            n_keep = min(take, retain - kept)
            snap_parts.append(np.asarray(sn[:, :, :n_keep]))
            kept += n_keep
        done += take
        if progress is not None:
            progress(done, n_paths)
    allm = np.concatenate(metric_parts, axis=1)
    metrics = {n: allm[i] for i, n in enumerate(METRIC_NAMES)}
    wall = time.perf_counter() - t0
    return SimulationResult(scenario=scenario, params=params, seed=seed, n_paths=n_paths, metrics=metrics,
                            snapshots=np.concatenate(snap_parts, axis=2), variables=variable_names(params),
                            reports=reports, wall_s=wall, compile_s=compile_s, chunk_size=chunk_blocks * BLOCK)
