"""Simulation: one jitted function advances a chunk of paths over the horizon with `lax.scan`.

Random numbers are counter-based: Philox-2x32 of (path index, step) under the seed's key (`_BlockDraws`), so
the draws of a path depend only on the seed and its index, and results are identical for any chunk size, device
count or process count (chunks are whole numbers of blocks of `BLOCK` paths). Callers may instead inject the
draws (`simulate_draws`) for common random numbers.

An outer scan runs over the reporting intervals and observes the reported variables once per interval, so only
the reporting dates are kept and the portfolio is revalued only there. Within an interval the steps run as XLA's
`fori_loop`, or on an NVIDIA GPU in float32 as one Pallas kernel that keeps the state in registers (`_kernel`,
`KERNEL`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._config import Params, Scenario
from ._curve import par_yields, zero_yields
from ._errors import ConfigError, SimulationError
from ._model import N_NORMAL, Prep, State, cpu_shape, initial_state, next_regime, prepare, step
from ._portfolio import portfolio_value
from ._resources import host_memory_error

BLOCK = 256
PRNG_IMPL = "threefry2x32"  # the seed's key (its data words key the counter-based draws, `counter_bits`)
PATHS_AXIS = "paths"  # the mesh axis that path blocks are sharded along


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
    tau = s.tau
    return jnp.stack([jnp.broadcast_to(c, tau.shape) for c in observe_columns(params, prep, s, t)])


def observe_columns(params: Params, prep: Prep, s: State, t) -> list:
    """The reported variables of `observe` as a list (in the order of `variable_names`), not stacked: reverse
    mode through a row of the stack would pad its cotangent to the whole stack."""
    v = params.values
    k, kc, mu = v["curve.k"], v["curve.kc"], v["curve.mu"]
    tau = s.tau

    def zero_fn(m):
        return zero_yields(m, s.r, s.pi, tau, s.r_star, s.p, k, kc, mu)

    def zero_fn0(m):
        return zero_yields(m, v["initial.r"], v["initial.pi"], v["initial.tau"], v["initial.r_star"],
                           v["initial.p"], k, kc, mu)

    mats = jnp.asarray(params.maturities, tau.dtype)
    zeros = zero_fn(mats)  # (paths, m)
    pars = par_yields(zero_fn, params.maturities)
    i10 = params.maturities.index(10.0)
    y10 = zeros[..., i10]
    mortgage = y10 + v["mortgage.spread"] + v["mortgage.stress_spread"] * s.dysfunction
    interest_bill = sum(s.interest, jnp.zeros_like(tau))
    value = portfolio_value(params.portfolio, t, zero_fn, zero_fn0, jnp.exp(s.log_equity), jnp.exp(s.cash))
    return (
        [zeros[..., j] * 100 for j in range(len(params.maturities))]
        + [pars[..., j] * 100 for j in range(len(params.maturities))]
        + [s.r * 100, s.pi * 100, tau * 100, s.impact * 100, s.r_star * 100, s.p * 100, mortgage * 100]
        + list(s.holdings)
        + [sum(s.holdings, jnp.zeros_like(tau)), s.fund_eq, s.fund_pos, s.basis, s.volfund, s.dealer, s.fed,
           interest_bill, value, 100 * jnp.exp(s.log_equity), jnp.exp(s.log_dollar),
           s.regime.astype(tau.dtype), s.dysfunction, s.foreign_sales, s.forced_sales]
    )


def _observe_initial(params: Params, prep: Prep, s0: State) -> jax.Array:
    """The reported variables at t = 0, the same on every path: observed once, shape (variables,)."""
    return observe(params, prep, s0, jnp.zeros((), prep.y10_0.dtype))


def broadcast_paths(tree, n: int):
    """Every leaf of `tree` (one path's state, say) broadcast to n paths on a new leading axis."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree)


def _head(tree, k: int):
    """The first k paths of a batch of states (every leaf has the paths on its leading axis)."""
    return jax.tree_util.tree_map(lambda x: x[:k], tree)


METRIC_NAMES = (
    "y2_change_bp", "y10_change_bp", "y30_change_bp", "y10_max_rise_bp", "y10_level_pct", "y10_max_level_pct",
    "breakeven_10y_change_bp", "term_premium_10y_change_bp", "mortgage_rate_change_bp", "portfolio_loss",
    "foreign_sales_bn", "forced_sales_bn", "vol_fund_sales_bn", "fed_purchases_bn", "interest_cost_change_bn",
    "equity_return_pct", "dollar_change_pct", "basis_change_bp", "basis_fund_equity_change_bn", "regime_logp",
)


def path_metrics(names: tuple[str, ...], obs0, obs1, s: State) -> jax.Array:
    """Per-path metrics at the horizon from the initial and final observations (stacked as from `observe`, or
    lists of columns as from `observe_columns`, the initial ones possibly unbatched); shape (metrics, paths)."""
    ix = {n: i for i, n in enumerate(names)}

    def d(name, mult=1.0):
        return (obs1[ix[name]] - obs0[ix[name]]) * mult

    y10_0 = obs0[ix["yield_10y"]]  # the grid holds 2, 10 and 30 (`_config.validate`)
    cols = {
        "y2_change_bp": d("yield_2y", 100),
        "y10_change_bp": d("yield_10y", 100),
        "y30_change_bp": d("yield_30y", 100),
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


def _simulate(params: Params, n_paths: int, draw: Callable, reports: tuple[int, ...], snap_paths: int | None = None):
    """Core loop shared by the keyed and the injected-draws entry points. Returns (metrics, snapshots, final).

    An outer `lax.scan` runs over the reporting intervals; inside each, a `fori_loop` with traced bounds advances
    the paths step by step (one compiled loop body however many reporting dates there are), and the reporting
    variables are observed once per interval. Forward only: gradients use `horizon_metrics`.

    snap_paths: the snapshots (reports, variables, snap_paths) are those of the first snap_paths paths (static;
    None: all). The metrics need only the horizon's observation, so the paths past them are observed once, at the
    horizon: a run keeps the reporting dates of its first `retain` paths only (`simulate`), and on an H100 the
    observations at the reporting dates cost ~28% of a one-year run of 4M paths that were all observed.
    """
    k = n_paths if snap_paths is None else snap_paths
    if not 0 <= k <= n_paths:
        raise ValueError(f"snap_paths must be in [0, {n_paths}], got {snap_paths}")
    prep = prepare(params)
    names = variable_names(params)
    s0 = initial_state(prep, params.initial_regime)
    state = broadcast_paths(s0, n_paths)
    obs0 = _observe_initial(params, prep, s0)
    bounds = np.asarray(reports, np.int32)

    kernel = use_kernel(draw, prep.one.dtype)
    if kernel == "cuda":  # the kernel where this is lowered for an NVIDIA GPU, XLA's loop elsewhere
        state, obs = jax.lax.platform_dependent(cuda=lambda: _kernel_loop(params, prep, state, draw, bounds, k),
                                                default=lambda: _xla_loop(params, prep, state, draw, bounds, k))
    else:
        state, obs = (_kernel_loop if kernel else _xla_loop)(params, prep, state, draw, bounds, k)
    if k:
        snaps = jnp.concatenate([jnp.broadcast_to(obs0[None, :, None], (1, obs0.shape[0], k)), obs], axis=0)
    else:
        snaps = jnp.zeros((len(reports), obs0.shape[0], 0), obs0.dtype)
    # the metrics from the horizon's observation of every path, made here whatever k is (so the same code gives
    # them in every variant: bitwise the same per path), not from the loop's, which observes the first k
    obs1 = observe(params, prep, state, bounds[-1] * params.dt)
    metrics = path_metrics(names, obs0, obs1, state)
    return metrics, snaps, state


def _observed(params: Params, prep, k: int, interval: Callable, state_of: Callable = lambda carry: carry):
    """`interval` (carry, lo_hi) -> carry, for `lax.scan`, with the observations of the first k paths at the
    interval's end as its output (None when k = 0); `state_of(carry)` is the state."""
    dt = params.dt

    def fn(carry, lo_hi):
        carry = interval(carry, lo_hi)
        return carry, (observe(params, prep, _head(state_of(carry), k), lo_hi[1] * dt) if k else None)

    return fn


def _xla_loop(params: Params, prep, state, draw, bounds, k: int):
    """`_simulate`'s loop as XLA's: `fori_loop` over the steps of each reporting interval. Returns the final
    state and the observations of the first k paths at the ends of the intervals."""
    step_b = jax.vmap(step, in_axes=(None, None, 0, 0, 0))
    dt = params.dt
    make, unpack = _carried_draws(draw)

    def advance(t, carry):
        state, draws = carry
        normal, uniform = unpack(draws)
        return step_b(prep, t * dt, state, normal, uniform), make(t + 1)

    def interval(carry, lo_hi):
        return jax.lax.fori_loop(lo_hi[0], lo_hi[1], advance, carry)

    first = make(jnp.asarray(bounds[0]))
    (state, _), obs = jax.lax.scan(_observed(params, prep, k, interval, lambda c: c[0]),
                                   (_vary_like(state, unpack(first)), first),
                                   (jnp.asarray(bounds[:-1]), jnp.asarray(bounds[1:])))
    return state, obs


def kernel_setting(value: str | None) -> bool | None:
    """`KERNEL` from the environment variable JAXSTRESS_GPU_KERNEL: "0" turns the GPU kernel off (XLA's loop
    everywhere, e.g. where Triton cannot compile it), unset or anything else leaves the default."""
    return False if value is not None and value.strip().lower() in ("0", "off", "false", "no") else None


# Whether the forward loop over each reporting interval is one Pallas kernel (`_kernel`) instead of XLA's loop.
# None: on a GPU, in float32, for keyed draws (decided when traced). On a CPU the kernel runs in Pallas'
# interpreter only (for tests: same values, slow). Like the other code-shape settings it is read when a function
# is traced, so a change after a jitted function (`simulate_chunk`, say) has run affects only new traces.
KERNEL: bool | None = kernel_setting(os.environ.get("JAXSTRESS_GPU_KERNEL"))


def use_kernel(draw, dtype) -> bool | str:
    """Whether `_simulate` runs the kernel: True, False, or "cuda" (where lowered for an NVIDIA GPU: the default
    for float32 when the default backend is a GPU; a computation placed on the CPU then runs XLA's loop)."""
    if not isinstance(draw, _BlockDraws) or draw.clip is not None:  # the kernel makes unclipped draws
        return False
    if KERNEL is None:
        return "cuda" if jax.default_backend() == "gpu" and jnp.dtype(dtype) == jnp.float32 else False
    return KERNEL


def _kernel_loop(params: Params, prep, state, draw, bounds, k: int):
    """`_xla_loop` with each reporting interval advanced by `_kernel.advance`."""
    from . import _kernel

    interpret = jax.default_backend() == "cpu"

    def interval(state, lo_hi):
        return _kernel.advance(prep, state, draw.kd, draw.ids, lo_hi[0], lo_hi[1], draws_at, interpret=interpret)

    return jax.lax.scan(_observed(params, prep, k, interval), _vary_like(state, draw.ids),
                        (jnp.asarray(bounds[:-1]), jnp.asarray(bounds[1:])))


# Whether the loops carry the next step's draws (see `_carried_draws`). None: on CPU only (decided when traced).
CARRY_DRAWS: bool | None = None


def _carried_draws(draw: Callable):
    """(make, unpack): the loops carry make(t + 1), made in step t, and step t + 1 reads unpack(carried).

    Carried draws are materialised once; made in the iteration that uses them, XLA fuses them, integer rounds and
    all, into every consumer. `_BlockDraws` are carried packed (one output per generator call, see there);
    injected draws as they are. Where that recomputation is cheaper than the memory traffic of a carried copy
    (a GPU; `CARRY_DRAWS`), the loops carry the step index (and the generator) and `_BlockDraws` are made where
    they are used."""
    if not isinstance(draw, _BlockDraws):
        return draw, lambda x: x
    if cpu_shape(CARRY_DRAWS):
        return draw.packed, draw.unpack
    # the step index and the generator (a pytree of integer arrays), not a closure over them: the differentiable
    # step's custom VJP must not close over traced values
    return (lambda t: (jnp.asarray(t, jnp.int32), draw)), (lambda td: td[1](td[0]))


def _varying_axes(x) -> tuple:
    """The manual mesh axes that x varies over under `shard_map` (none outside it)."""
    aval = jax.typeof(x)
    axes = getattr(aval, "vma", None)  # the varying manual axes; newer jax: manual_axis_type.varying
    if axes is None:
        axes = getattr(getattr(aval, "manual_axis_type", None), "varying", ())
    return tuple(sorted(axes or ()))


def _vary_like(tree, draws):
    """Under `shard_map`, mark `tree` (e.g. the initial state, the same on every device) as varying over the mesh
    axes that `draws` (which differ by device) vary over, so that a loop carrying both type-checks. Leaves that
    vary over them already are left as they are."""
    axes = _varying_axes(jax.tree_util.tree_leaves(draws)[0])
    if not axes:
        return tree

    def vary(a):
        missing = tuple(ax for ax in axes if ax not in _varying_axes(a))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return jax.tree_util.tree_map(vary, tree)


def _step_forms(dt: float, n: int, masked: bool, unpack: Callable):
    """(forward, step_vjp) of one step for a batch of paths: forward(prep, state, draws, t) -> the state after
    step t; step_vjp(prep, state, draws, t, ct) -> (cotangent of prep, cotangent of state).

    The forward is the select-chain step (the cheaper form); step_vjp recomputes the step in the looked-up form
    (`next_regime`, whose transpose is one product a step for all regime tables) and transposes that: the same
    values. The draws are constants; steps t >= n leave the state unchanged.
    """
    select = jax.vmap(step, in_axes=(None, None, 0, 0, 0))
    looked_up = jax.vmap(step, in_axes=(None, None, 0, 0, 0, 0))

    def finish(new, state, t):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(t < n, a, b), new, state) if masked else new

    def forward(prep, state, draws, t):
        normal, uniform = unpack(draws)
        return finish(select(prep, t * dt, state, normal, uniform), state, t)

    def step_vjp(prep, state, draws, t, ct):
        normal, uniform = unpack(draws)

        def f(prep, state):
            return finish(looked_up(prep, t * dt, state, normal, uniform, next_regime(prep, state, uniform[0])),
                          state, t)

        return jax.vjp(f, prep, state)[1](ct)

    return forward, step_vjp


def _segment_forms(cfg: tuple, prep, draw):
    """(advance, step_vjp, make, n_seg) for `cfg` = (dt, n, seg): advance(carry, t) takes the carry (state,
    draws of step t) over step t; `make` and `step_vjp` as in `_carried_draws` and `_step_forms`."""
    dt, n, seg = cfg
    n_seg = -(-n // seg)
    make, unpack = _carried_draws(draw)
    forward, step_vjp = _step_forms(dt, n, n_seg * seg != n, unpack)

    def advance(carry, t):
        state, draws = carry
        return forward(prep, state, draws, t), make(jnp.minimum(t + 1, n - 1))

    return advance, step_vjp, make, n_seg


def _segment_starts(cfg: tuple, prep, state, draw):
    """(final state, the carry (state, draws) at the start of each segment, stacked): the steps in segments of
    `seg`, an outer scan over the segments and an inner one over their steps."""
    seg = cfg[2]
    advance, _, make, n_seg = _segment_forms(cfg, prep, draw)

    def segment(carry, j):
        end, _ = jax.lax.scan(lambda c, t: (advance(c, t), None), carry, j * seg + jnp.arange(seg))
        return end, carry

    (final, _), starts = jax.lax.scan(segment, (state, make(jnp.asarray(0))), jnp.arange(n_seg))
    return final, starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _final_state(cfg: tuple, prep, state, draw):
    """The state after n steps (cfg = (dt, n, seg)), with a reverse mode by segments of `seg` steps.

    The forward keeps the carry at the start of each segment; the backward pass, segment by segment from the
    last, runs the segment forward again into a buffer of its `seg` carries (one buffer, reused by every
    segment) and then steps back through it with `_step_forms`' step_vjp, accumulating the parameters'
    cotangent. So ~(n / seg + seg) carries a path are stored instead of n, and each step's internals are
    recomputed rather than stored. `jax.checkpoint` around a scan of per-step custom VJPs computes the same;
    written out, the buffer is allocated once rather than zeroed for every segment, and the loops carry fewer
    copies (on a 2-core CPU 11% less kernel time and 2-4% less wall time for the full gradient).
    The draws are constants: their cotangent is zero.
    """
    return _segment_starts(cfg, prep, state, draw)[0]


def _final_state_fwd(cfg, prep, state, draw):
    final, starts = _segment_starts(cfg, prep, state, draw)
    return final, (prep, starts, draw)


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _final_state_bwd(cfg, res, ct_final):
    seg = cfg[2]
    prep, starts, draw = res
    advance, step_vjp, _, n_seg = _segment_forms(cfg, prep, draw)
    tree_map = jax.tree_util.tree_map

    def back(acc, j):
        ct_state, ct_prep, buf = acc

        # the segment's carries: its start, then seg - 1 steps (the carry after the segment's last step is not
        # needed, so that step is not run)
        def fill(i, carry_buf):
            carry, buf = carry_buf
            carry = advance(carry, j * seg + i - 1)
            return carry, tree_map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, i, 0), buf, carry)

        start = tree_map(lambda x: x[j], starts)
        buf = tree_map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, 0, 0), buf, start)
        _, buf = jax.lax.fori_loop(1, seg, fill, (start, buf))

        def reverse(k, cts):
            ct_state, ct_prep = cts
            i = seg - 1 - k
            state, draws = tree_map(lambda b: jax.lax.dynamic_index_in_dim(b, i, 0, keepdims=False), buf)
            d_prep, d_state = step_vjp(prep, state, draws, j * seg + i, ct_state)
            return d_state, tree_map(jnp.add, ct_prep, d_prep)

        ct_state, ct_prep = jax.lax.fori_loop(0, seg, reverse, (ct_state, ct_prep))
        return (ct_state, ct_prep, buf), None

    # under `shard_map` (a chunk a device, `_sensitivities`) the loop's zeros vary by device as the rest does
    buf = _vary_like(tree_map(lambda x: jnp.zeros((seg,) + x.shape[1:], x.dtype), starts), starts)
    zeros = _vary_like(tree_map(jnp.zeros_like, prep), starts)
    (ct_state, ct_prep, _), _ = jax.lax.scan(back, (ct_final, zeros, buf),
                                             jnp.arange(n_seg), reverse=True)
    return ct_prep, ct_state, tree_map(_zero_cotangent, draw)


_final_state.defvjp(_final_state_fwd, _final_state_bwd)


def segment_length(n: int) -> int:
    """Steps a segment of the gradient's checkpointing for n steps: the divisor of n nearest sqrt(n), within a
    factor of 1.5 of it, else sqrt(n) rounded. With segments that divide n no step is masked; the masked form
    selects every leaf of the state between its new and old value at every step, an extra pass over the state
    (252 daily steps: 18 segments of 14 instead of 16 of 16, 642 kernel launches a step instead of 680; in time
    within 2% of each other on the 2-core CPU, one process, alternated)."""
    root = np.sqrt(n)
    divisors = [d for d in range(1, n + 1) if n % d == 0 and root / 1.5 <= d <= root * 1.5]
    return min(divisors, key=lambda d: abs(d - root)) if divisors else max(1, int(round(root)))


def horizon_metrics(params: Params, n_paths: int, draw: _BlockDraws, segment: int | None = None):
    """Per-path metrics at the horizon, differentiable and memory-bounded: returns (metrics, final State).

    Reverse mode through `lax.scan` stores the carry of every step it differentiates; here the steps are
    grouped into segments of about sqrt(T) that the backward pass runs again (`_final_state`), so it keeps
    ~2 sqrt(T) states per path instead of T, and each step's internals are recomputed rather than stored.
    `segment`: steps a segment (None: `segment_length(T)`). Where segments do not divide T, steps past the
    horizon in the last segment are masked out. The draws (a `_BlockDraws`, a pytree: the reverse mode takes it
    as an argument) are not differentiated.
    """
    if not isinstance(draw, _BlockDraws):
        raise TypeError(f"horizon_metrics needs the draws as a _BlockDraws, got {type(draw).__name__}")
    # under `shard_map` all of `prep` varies by device, as the draws do: constants made in `prepare` (the debt's
    # maturities) among them, so that their cotangents, each device's own, type-check (`_sensitivities`)
    prep = _vary_like(prepare(params), draw.ids)
    names = variable_names(params)
    s0 = initial_state(prep, params.initial_regime)
    obs0 = observe_columns(params, prep, s0, jnp.zeros((), prep.y10_0.dtype))
    n = params.n_steps
    seg = segment or segment_length(n)
    state = _vary_like(broadcast_paths(s0, n_paths), draw.ids)  # as `_kernel_loop`: the ids vary like the draws
    state = _final_state((params.dt, n, seg), prep, state, draw)
    obs1 = observe_columns(params, prep, state, n * params.dt)
    return path_metrics(names, obs0, obs1, state), state


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds, Salmon et al. 2011) of the counter pairs (x0, x1) under the key (k0, k1).

    The same bits as `jax.extend.random.threefry_2x32` (tested), written as unrolled elementwise uint32
    arithmetic: XLA's CPU lowering of the primitive is a rolled loop whose rounds each write the whole array
    to memory, while this fuses with the conversion to floats that follows (4x the throughput of the draws).
    """
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
        x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


_PHILOX_M, _PHILOX_W = np.uint32(0xD256D193), np.uint32(0x9E3779B9)  # Random123's philox2x32 constants


def philox2x32(k, x0, x1):
    """Philox-2x32 (10 rounds, Salmon et al. 2011) of the counter pairs (x0, x1) under the 32-bit key k.

    Random123's known answers (tested). A round is one 32 x 32 -> 64-bit product, its high word xored into the
    other word with the round's key: on an NVIDIA GPU a `mul.wide.u32` and a three-input xor, against threefry's
    adds, rotations and xors on the slower integer pipe (the GPU kernel's draws were bound by them). The product
    is taken in uint64, which needs 64-bit types for the duration (JAX's x64 flag is off in float32 runs).
    """
    cpu = jax.default_backend() == "cpu"
    with jax.enable_x64(True):
        for _ in range(10):
            prod = x0.astype(jnp.uint64) * np.uint64(_PHILOX_M)
            # the low word: on a CPU as a separate 32-bit product (XLA's CPU code is faster so, ~15% on the draws)
            lo = x0 * _PHILOX_M if cpu else prod.astype(jnp.uint32)
            x0, x1 = (prod >> np.uint64(32)).astype(jnp.uint32) ^ k ^ x1, lo
            k = k + _PHILOX_W
    return x0, x1


# The counter-based generator of the draws: "philox2x32" (the default) or "threefry2x32" (JAX's own, the engine's
# draws before). On an H100 Philox's bits cost 13.5 ps a path-step in the GPU kernel against threefry's 28 (the
# draws with their normal quantiles 37.5 against 53), the full one-year run 1.23x faster; on a 2-core CPU the
# whole step is ~5% slower with it (40.5 against 38.5 ns a path-step: XLA's CPU code for the 64-bit products).
# Read when a function is traced, like the other code-shape settings. Every random number depends on it.
COUNTER_RNG = "philox2x32"
COUNTER_RNGS = ("philox2x32", "threefry2x32")


def counter_bits(k0, k1, x0, x1):
    """The two 32-bit words of the counter pairs (x0, x1) under the key words (k0, k1), by `COUNTER_RNG`.

    Philox takes one key word: k1 ^ (k0 * golden ratio). `jax.random.key(seed)` has k0 = 0 and k1 = seed for
    seeds below 2^32 (`check_seed`), so each such seed has its own key."""
    if COUNTER_RNG == "philox2x32":
        return philox2x32(k1 ^ (k0 * _PHILOX_W), x0, x1)
    if COUNTER_RNG == "threefry2x32":
        return threefry2x32(k0, k1, x0, x1)
    raise ValueError(f"COUNTER_RNG must be one of {', '.join(COUNTER_RNGS)}, got {COUNTER_RNG!r}")


def _integer_scalar(seed) -> bool:
    return (isinstance(seed, jax.Array) and seed.shape == () and jnp.issubdtype(seed.dtype, jnp.integer)
            and not jnp.issubdtype(seed.dtype, jnp.bool_))


def check_seed(seed: int) -> int:
    """The seed if it is an integer in [0, 2^32) (each such seed has its own random streams), else ValueError.
    A concrete JAX integer scalar counts as its value."""
    if _integer_scalar(seed) and not isinstance(seed, jax.core.Tracer):
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2^32), got {seed!r}")
    return int(seed)


def seed_key(seed: int) -> jax.Array:
    """The random key of a seed in [0, 2^32) (`check_seed`). A traced integer seed (under a caller's `jax.jit` or
    `jax.vmap`) cannot be checked and is taken modulo 2^32; in [0, 2^31) it gives the same key as the number."""
    if isinstance(seed, jax.core.Tracer):
        if not _integer_scalar(seed):
            raise ValueError(f"seed must be an integer scalar, got a traced {seed.dtype}{list(seed.shape)}")
        return jax.random.key(seed.astype(jnp.uint32), impl=PRNG_IMPL)
    return jax.random.key(check_seed(seed), impl=PRNG_IMPL)


# Giles (2010), "Approximating the erfinv function", single precision: erfinv(v) = v p(w), w = -log(1 - v^2), with
# one polynomial for w < 5 (|v| < 0.9966) and one in sqrt(w) beyond; highest degree first
_GILES_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                  -0.00417768164, 0.246640727, 1.50140941)
_GILES_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
               0.00943887047, 1.00167406, 2.83297682)


def _normal_icdf32(v, log=jnp.log, sqrt=jnp.sqrt):
    """sqrt(2) erfinv(v) in float32 for v in (-1, 1): the standard normal quantile of u = (v + 1) / 2.

    Giles' approximation, as XLA's erf_inv, but with w = -log((1 - v)(1 + v)): 1 - v is exact and the product
    keeps its relative precision as |v| -> 1 (1 - v^2 cancels), and log costs half of log1p on CPU. `log` and
    `sqrt`: the functions used (the GPU kernel may pass faster approximations).
    """
    w = -log((1.0 - v) * (1.0 + v))
    a, b = w - 2.5, sqrt(w) - 3.0
    p, q = jnp.float32(_GILES_CENTRAL[0]), jnp.float32(_GILES_TAIL[0])
    for c, d in zip(_GILES_CENTRAL[1:], _GILES_TAIL[1:], strict=True):
        p, q = p * a + np.float32(c), q * b + np.float32(d)
    return jnp.where(w < 5.0, p, q) * (v * np.float32(np.sqrt(2.0)))


def draw_value(bits, k: int, dtype, **icdf):
    """Word k (0..11: word 0 of the calls j = 0..5, then their word 1) as a normal or a uniform.

    Exact arithmetic keeps every value strictly inside the open interval: v = 2u - 1 is an odd multiple of
    2^-b with |v| <= 1 - 2^-b (b = 24 bits in float32, 32 in float64), and the uniforms are (k + 1/2) 2^-b'
    with b' = 23 (float32) so that their largest value 1 - 2^-24 is representable (1 - 2^-25 would round
    to 1)."""
    if dtype == jnp.float64:
        if k < N_NORMAL:
            v = (2.0 * bits.astype(dtype) + 1.0 - 2.0**32) * 2.0**-32
        else:
            return (bits.astype(dtype) + 0.5) * 2.0**-32
    elif k < N_NORMAL:
        v = (2 * jnp.right_shift(bits, np.uint32(8)).astype(jnp.int32) + 1 - (1 << 24)).astype(dtype) * 2.0**-24
    else:
        return (jnp.right_shift(bits, np.uint32(9)).astype(dtype) + 0.5) * 2.0**-23
    if dtype == jnp.float64:
        return jnp.asarray(np.sqrt(2.0), dtype) * jax.lax.erf_inv(v)
    return _normal_icdf32(v, **icdf)


def _word_pairs(k0, k1, ids, t, dtype, **icdf) -> list[tuple[jax.Array, jax.Array]]:
    """The 12 draws of step t as the 6 pairs (word j, word j + 6) that the generator (`counter_bits`) gives for the
    counters (ids, 6 t + j), each word as a normal or a uniform (`draw_value`)."""
    c = jnp.asarray(t).astype(jnp.uint32) * np.uint32(6)
    pairs = []
    for j in range(6):
        w0, w1 = counter_bits(k0, k1, ids, c + np.uint32(j))
        pairs.append((draw_value(w0, j, dtype, **icdf), draw_value(w1, j + 6, dtype, **icdf)))
    return pairs


def draws_at(k0, k1, ids, t, dtype, **icdf):
    """The draws of step t for the paths with counters `ids` under the key words (k0, k1): (10 normals, 2
    uniforms) as in `_BlockDraws`, unpacked (the same values; the GPU kernel's form). `icdf`: the float32
    normal quantile's `log` and `sqrt` (`_normal_icdf32`)."""
    pairs = _word_pairs(k0, k1, ids, t, dtype, **icdf)
    words = [a for a, _ in pairs] + [b for _, b in pairs]
    return tuple(words[:N_NORMAL]), tuple(words[N_NORMAL:])


class _BlockDraws(eqx.Module):
    """Draws for the paths of the given blocks: counter-based, so path i's stream depends only on the seed and i.

    Each path-step needs 12 uniforms: the two 32-bit words of the generator (`counter_bits`, Philox-2x32 by
    default) at the counters (path index, 6 t + j) for j = 0..5. Ten become standard normals by the inverse CDF
    (sqrt(2) erfinv(2u - 1)), two stay uniforms in (0, 1). Elementwise in the path index, the result is the same
    however paths are chunked or sharded. Calling it with a step t gives (10 normals, 2 uniforms), each an array
    of shape (paths,) (separate arrays, so each is contiguous and the step reads it without strides).

    `packed(t)` gives the same draws as 6 complex arrays, the two values from one generator call as the real and
    imaginary part of one element, and `unpack` turns them back. The simulation loop carries the packed draws
    of the next step: one output per generator call means each call is evaluated once (XLA's CPU backend has
    no multi-output fusion, so two separate outputs would each recompute it), and a loop-carried value is
    materialised, where draws made in the iteration that uses them get fused, integer rounds and all, into
    every consumer (an optimization barrier does not survive XLA's CPU pipeline).
    """

    kd: jax.Array
    ids: jax.Array
    dtype: np.dtype = eqx.field(static=True)
    clip: float | None = eqx.field(static=True)  # the normals clipped to [-clip, clip] (None: not clipped)

    def __init__(self, key, block_ids, dtype, clip: float | None = None):
        self.kd = jax.random.key_data(key).astype(jnp.uint32).reshape(-1)[:2]
        self.ids = (block_ids.astype(jnp.uint32)[:, None] * BLOCK
                    + jnp.arange(BLOCK, dtype=jnp.uint32)[None, :]).reshape(-1)
        self.dtype = jnp.dtype(dtype)
        self.clip = clip

    def packed(self, t):
        with jax.named_scope("draws"):  # a block of its own in profiles (scripts/profile_run.py)
            pairs = _word_pairs(self.kd[0], self.kd[1], self.ids, t, self.dtype)
            return tuple(jax.lax.complex(a, b) for a, b in pairs)

    def unpack(self, packed):
        words = [jnp.real(x) for x in packed] + [jnp.imag(x) for x in packed]
        normal = words[:N_NORMAL] if self.clip is None else [jnp.clip(x, -self.clip, self.clip) for x in
                                                              words[:N_NORMAL]]
        return tuple(normal), tuple(words[N_NORMAL:])

    def __call__(self, t):
        return self.unpack(self.packed(t))


def _block_draws(key, block_ids, dtype, clip: float | None = None) -> _BlockDraws:
    """The draws of the paths in the given blocks (see `_BlockDraws`)."""
    return _BlockDraws(key, block_ids, dtype, clip)


def _run_blocks(params: Params, key: jax.Array, block_ids: jax.Array, reports: tuple[int, ...],
                snap_paths: int | None = None):
    draw = _block_draws(key, block_ids, params.values["curve.k"].dtype)
    metrics, snaps, _ = _simulate(params, block_ids.shape[0] * BLOCK, draw, reports, snap_paths)
    return metrics, snaps


@eqx.filter_jit
def simulate_blocks(params: Params, key: jax.Array, block_ids: jax.Array, reports: tuple[int, ...],
                    mesh: Mesh | None = None, snap_paths: int | None = None):
    """Simulate the blocks listed in `block_ids` (BLOCK paths each, in that order); n_blocks is its static shape.

    Returns metrics (len(METRIC_NAMES), paths) and snapshots (reports, variables, paths). With a `mesh` (one axis,
    `"paths"`, see `paths_mesh`) the blocks are split evenly over its devices: each device runs the single-device
    program on its own contiguous share of `block_ids` (`jax.shard_map`; pass `block_ids` placed with
    `NamedSharding(mesh, PartitionSpec("paths"))` to avoid a transfer), with no communication, and the outputs
    come back sharded along paths. Plain GSPMD propagation from a sharded `block_ids` does not do this: the
    flattening in `_block_draws` makes XLA all-gather the counters and run every path on every device.
    `snap_paths` (static; None: all): each device observes the reporting dates of the first snap_paths paths of
    its share only (the others at the horizon, as `simulate_chunk`'s), so the snapshots are (reports, variables,
    devices x snap_paths), device by device; `chunk_snapshots` turns them into the chunk's first paths.
    """
    if mesh is None or mesh.size == 1:
        return _run_blocks(params, key, block_ids, reports, snap_paths)
    if block_ids.shape[0] % mesh.size:
        raise ValueError(f"{block_ids.shape[0]} blocks do not split evenly over {mesh.size} devices")
    dynamic, static = eqx.partition(params, eqx.is_array)

    def local(dynamic, key, ids):
        return _run_blocks(eqx.combine(dynamic, static), key, ids, reports, snap_paths)

    spec = PartitionSpec(PATHS_AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(), spec),
                         out_specs=(PartitionSpec(None, PATHS_AXIS), PartitionSpec(None, None, PATHS_AXIS)))(
        dynamic, key, block_ids)


@eqx.filter_jit
def simulate_chunk(params: Params, key: jax.Array, first_block: jax.Array, n_blocks: int,
                   reports: tuple[int, ...], snap_paths: int | None = None):
    """Simulate blocks first_block .. first_block + n_blocks - 1 (BLOCK paths each), on one device: (metrics,
    snapshots) as `simulate_blocks`, the snapshots of the first `snap_paths` paths only (static; None: all)."""
    block_ids = first_block + jnp.arange(n_blocks, dtype=jnp.uint32)
    return _run_blocks(params, key, block_ids, reports, snap_paths)


def snapshot_paths(chunk: int, chunk_paths: int, n_paths: int, retain: int) -> int:
    """How many paths of chunk `chunk` (of `chunk_paths`, in a run of n_paths) have their reporting dates kept
    when the run keeps those of its first `retain` paths: the chunk's `snap_paths`."""
    return max(0, min(chunk_paths, n_paths - chunk * chunk_paths, retain - chunk * chunk_paths))


def observed_paths(chunk: int, chunk_paths: int, n_paths: int, retain: int) -> int:
    """How many paths of chunk `chunk` are observed at the reporting dates (its program's static snap_paths): the
    `snapshot_paths` it keeps, but all of its paths where an earlier chunk kept all of its own, so that a chunk
    keeping only some is run by the program of the chunks before it instead of a program of its own (on a CPU one
    more compilation, 5-6 s, saves observing fewer than a chunk's paths at 7 dates, ~0.01 s); and all of them where
    it keeps every path it has, the last block's padding included, so that the path count of a run shorter than a
    chunk is not a program of its own (1000 and 1001 paths run the same program: 4 blocks, all observed)."""
    keep = snapshot_paths(chunk, chunk_paths, n_paths, retain)
    whole = 0 < keep and (chunk > 0 or keep >= min(chunk_paths, n_paths))
    return chunk_paths if whole else keep


def device_snapshot_paths(keep: int, chunk_paths: int, n_dev: int) -> int | None:
    """`simulate_blocks`' snap_paths for a chunk of chunk_paths over n_dev devices whose first `keep` paths have
    their reporting dates kept: every device observes as many paths as the first needs (one compiled program
    serves them all); None (all: the same compiled program as without the argument) where the kept paths reach
    past the first device's share."""
    return keep if keep < chunk_paths // n_dev else None


def chunk_snapshots(snaps: np.ndarray, chunk_paths: int, n_dev: int) -> np.ndarray:
    """The snapshots of a chunk's first paths, in path order, from `simulate_blocks`' (reports, variables,
    n_dev x k) of `device_snapshot_paths` k: all of the chunk's paths where k is a whole share, else the first
    device's k (the others observed paths that are not kept)."""
    k = snaps.shape[2] // n_dev
    return snaps if k == chunk_paths // n_dev else snaps[:, :, :k]


def paths_mesh(devices: int | None = None) -> Mesh:
    """A 1-D mesh (axis `"paths"`) over the first `devices` local devices (default: all of them)."""
    local = jax.local_devices()
    n = len(local) if devices is None else devices
    if not 1 <= n <= len(local):
        raise ValueError(f"devices must be between 1 and {len(local)} (the local {jax.default_backend()} devices),"
                         f" got {n}")
    return Mesh(np.asarray(local[:n]), (PATHS_AXIS,))


def replicate(mesh: Mesh, params: Params, key: jax.Array) -> tuple[Params, jax.Array]:
    """The parameters' arrays and the key placed on every device of `mesh` (once a run, not at every chunk)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    dynamic, static = eqx.partition(params, eqx.is_array)
    return eqx.combine(jax.device_put(dynamic, replicated), static), jax.device_put(key, replicated)


def simulate_draws(params: Params, normals: jax.Array, uniforms: jax.Array, reports: tuple[int, ...] | None = None):
    """Simulate with injected draws: normals (steps, paths, N_NORMAL = 10) and uniforms (steps, paths, 2) in
    (0, 1), steps = params.n_steps (numpy or JAX arrays). `reports`: the steps observed, increasing, from 0 to
    params.n_steps (default (0, n_steps)).

    Returns (metrics (len(METRIC_NAMES), paths), snapshots (reports, variables, paths), final State). Not jitted
    here, so it can be used inside a caller's jit, vmap or forward-mode `jax.jvp`; for reverse-mode gradients
    (`jax.grad`) use `metric_function`, whose loop is written for them (this one's reporting intervals are loops
    with traced bounds, which reverse mode does not take).
    """
    normals, uniforms = jnp.asarray(normals), jnp.asarray(uniforms)
    n = params.n_steps
    if normals.ndim != 3 or normals.shape[0] != n or normals.shape[2] != N_NORMAL:
        raise ValueError(f"normals must have shape (steps, paths, {N_NORMAL}) with steps = params.n_steps = {n}, "
                         f"got {normals.shape}")
    if uniforms.shape != (n, normals.shape[1], 2):
        raise ValueError(f"uniforms must have shape (steps, paths, 2) = {(n, normals.shape[1], 2)}, got "
                         f"{uniforms.shape}")
    n_paths = normals.shape[1]
    reports = tuple(int(r) for r in reports) if reports else (0, n)
    if reports[0] != 0 or reports[-1] != n or any(b <= a for a, b in zip(reports, reports[1:])):
        raise ValueError(f"reports must be increasing steps from 0 to params.n_steps = {n}, got {reports}")

    def draw(t):
        return columns(normals[t]), columns(uniforms[t])

    return _simulate(params, n_paths, draw, reports)


def columns(x: jax.Array) -> tuple[jax.Array, ...]:
    """The draws of shape (paths, k) as the k arrays of shape (paths,) that the step takes."""
    return tuple(x[:, j] for j in range(x.shape[1]))


def check_finite(metrics: np.ndarray, snaps: np.ndarray, variables, reports, name: str) -> None:
    """Refuse to report NaN or infinite values: name the first variable and reporting interval where they appear."""
    bad_paths = ~np.isfinite(metrics).all(axis=0)
    bad_snap = ~np.isfinite(snaps).all(axis=(0, 1))
    bad_paths[: bad_snap.size] |= bad_snap
    if not bad_paths.any():
        return
    where = "at the horizon"
    for j in range(snaps.shape[0]):
        bad = ~np.isfinite(snaps[j])
        if bad.any():
            var = variables[int(np.argwhere(bad.any(axis=1))[0, 0])]
            lo = reports[j - 1] if j else 0
            where = f"first in '{var}' between steps {lo} and {reports[j]}"
            break
    else:
        where = f"first in metric '{METRIC_NAMES[int(np.argwhere(~np.isfinite(metrics).all(axis=1))[0, 0])]}'"
    raise SimulationError(
        f"scenario '{name}': {int(bad_paths.sum())} of {bad_paths.size} paths produced non-finite values ({where}); "
        + EXPLODES)


# what a SimulationError (`check_finite`, `sensitivities`, `reverse`) says of its cause and the fix
EXPLODES = ("the parameters make the dynamics explode (e.g. a margin spiral with feedback above 1, zero depth or "
            "capacity, huge volatilities or jump sizes): reduce them, take shorter steps "
            "(simulation.steps_per_year), or run with --float64")


@dataclasses.dataclass
class SimulationResult:
    """What `simulate` returns. `metrics`: per-path metric name (METRIC_NAMES: `y10_change_bp` in bp of the 10y
    zero yield, `portfolio_loss` in $bn, ...; units by `_metrics.unit_of`) -> an array of n_paths values at the
    horizon; `snapshots[r, v, p]`: variable `variables[v]` at step `reports[r]` for the first retained paths (the
    reporting dates of the first 200,000 by default); `wall_s`, `compile_s`: seconds (`compile_s`: the first
    chunk, compile included); `chunk_size`: paths a chunk."""

    scenario: Scenario
    params: Params
    seed: int
    n_paths: int
    metrics: dict[str, np.ndarray]  # per path, at the horizon, in the simulation's dtype
    snapshots: np.ndarray  # (reports, variables, retained paths)
    variables: tuple[str, ...]
    reports: tuple[int, ...]
    wall_s: float
    compile_s: float
    chunk_size: int

    @property
    def note(self) -> str | None:
        """A warning where the 10y leaves the range the model is built for on some paths (`range_note`)."""
        return range_note(self.metrics)


# The 10y yield (%) the model is built for: a run whose paths leave it has parameters far from any shipped
# scenario's (price impact, issuance, Fed purchases, volatilities), which every config bound still allows
PLAUSIBLE_10Y = (-10.0, 50.0)


def range_note(metrics: dict[str, np.ndarray]) -> str | None:
    """Why a run's numbers are not a market's, where the 10y ends outside PLAUSIBLE_10Y or its running maximum
    rises above it on some paths; else None."""
    level, peak = metrics["y10_level_pct"], metrics["y10_max_level_pct"]  # (no float64 copies of 10^8 paths)
    lo, hi = PLAUSIBLE_10Y
    out = (level < lo) | (level > hi) | (peak > hi)
    if not out.any():
        return None
    low, high, top = (float(x) for x in (level.min(), level.max(), peak.max()))
    return (f"{int(out.sum()):,} of {out.size:,} paths take the 10y outside {lo:g}% to {hi:g}% (at the horizon "
            f"{low:.4g}% to {high:.4g}%, its running maximum up to {top:.4g}%): the parameters push the model far "
            "past the shipped scenarios (price impact, issuance, Fed purchases, volatilities), and its numbers past "
            "what it is built for")


CPU_CHUNK = 16384  # paths a chunk on CPU: the step's arrays stay in the caches
# paths a gradient chunk on CPU, 2-core CPU with the written-out reverse mode (`_final_state`): 186 ns a path-step
# against 229 (4096), 192-198 (8192) and 187 (32768); with `jax.checkpoint` before, 8192 had been the best
CPU_GRAD_CHUNK = 16384
MAX_ACCELERATOR_CHUNK = 1 << 22
# gradients on an accelerator: with the reverse mode written out, larger chunks amortize the loops' ~320 kernel
# launches a step. H100, 2^20 paths x 252 steps in chunks of 2^18 / 2^19 / 2^20: 1.26 / 0.96 / 0.86 s; after the
# scatter-free log-probability (next_regime) 0.59 s in one chunk of 2^20 and 1.06 s for 2^21 paths in one chunk
# (peak GPU memory 5.5 and 10.7 GiB). (Before the written-out reverse mode a chunk of 2^20 did not finish within
# 130 s on an H200.) The memory estimate below decides within this cap.
MAX_ACCELERATOR_GRAD_CHUNK = 1 << 21
ACCELERATOR_MEMORY_SHARE = 0.3  # of the device's memory, for one chunk's arrays


def chunk_bytes_per_path(params: Params, kind: str = "forward", n_reports: int = 7) -> int:
    """Device memory one path of a chunk takes, an upper estimate: for the forward, the snapshot output
    (n_reports x variables) three times (the output, the loop's stacked observations, the chunk in flight beside
    it) and the state; for the gradient, the states kept at the segments' starts and in the segment buffer,
    growing as sqrt(steps). Measured on an H200 for `april_2025` over a year (7 report points, 47 variables: this
    gives 6.0 KB): forward 4.1 KB a path (peak 38.5 GiB at 10^7 paths), gradient under 16 KB (peak 4.0 GiB for
    2^18 gradient paths beside 2^20 forward paths; before the segment buffer). On an H100 with the segment buffer,
    float32: 5.5 KB a gradient path (peak 5.5 GiB at 2^20, 10.7 GiB at 2^21); 16 KB leaves room for float64."""
    if kind == "forward":
        return 4 * (3 * n_reports * len(variable_names(params)) + 512)
    return int(16_000 * max(1.0, np.sqrt(params.n_steps / 252)))


def default_chunk_size(params: Params, kind: str = "forward", cpu: int | None = None, n_reports: int = 7) -> int:
    """Paths a chunk when none is given: `cpu` on a CPU (None: `CPU_CHUNK` for the forward, `CPU_GRAD_CHUNK` for
    gradients); on an accelerator, whose kernels need millions of paths to fill it, the largest power of two (at
    most 2^22, 2^21 for gradients) whose arrays take at most 30% of its memory."""
    if cpu is None:
        cpu = CPU_CHUNK if kind == "forward" else CPU_GRAD_CHUNK
    if jax.default_backend() == "cpu":
        return cpu
    try:
        limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        limit = None
    most = MAX_ACCELERATOR_CHUNK if kind == "forward" else MAX_ACCELERATOR_GRAD_CHUNK
    if not limit:
        return max(cpu, min(most, 1 << 20))
    fit = int(ACCELERATOR_MEMORY_SHARE * limit / chunk_bytes_per_path(params, kind, n_reports))
    return int(min(most, max(cpu, 1 << (max(fit, 1).bit_length() - 1))))


def pipelined(items, dispatch, collect, first=None):
    """collect(item, dispatch(item)) for each item, with one item in flight while the one before is copied out, so
    that the device never waits for the host: JAX dispatches asynchronously, each result's device-to-host copies
    are started as soon as it is dispatched (`copy_to_host_async`; a GPU run of 10^7-path chunks was bound by the
    host's copy-out), and it is collected after the next item has been dispatched. first(): called once the first
    item has been collected, which is collected before the second is dispatched (its call compiles; `simulate`
    times it)."""
    pending = None
    for i, item in enumerate(items):
        out = dispatch(item)
        for x in jax.tree_util.tree_leaves(out):
            x.copy_to_host_async()
        if pending is not None:
            collect(*pending)
        pending = (item, out)
        if i == 0 and first is not None:
            collect(*pending)
            pending = None
            first()
    if pending is not None:
        collect(*pending)


def check_counts(**counts: tuple) -> None:
    """ValueError naming the argument unless each value (None allowed) is an integer >= its least."""
    for name, (value, least) in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer >= {least}, got {type(value).__name__} {value!r}")
        if value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value}")


def simulate(scenario: Scenario, n_paths: int, seed: int = 0, chunk_size: int | None = None, retain: int = 200_000,
             dtype=None, progress: Callable[[int, int], None] | None = None, devices: int | None = None,
             distributed: bool = False) -> SimulationResult:
    """Run n_paths of a scenario in chunks; keep per-path metrics for all paths and reporting-date values for the
    first `retain` paths (enough for quantiles; the paths are i.i.d., so they are a random sample). Returns a
    `SimulationResult` (`.metrics`, `.snapshots`, `.variables`, `.reports`; `summarize(res.metrics)` gives the
    statistics a run reports).

    seed: an integer in [0, 2^32); each path's draws depend only on it and the path's index.
    dtype: None (JAX's default float), float32 or float64 (`jax.config.update("jax_enable_x64", True)` first).
    progress: called as progress(paths done, paths this process runs) after each chunk.

    chunk_size: the most paths a chunk holds; the chunks of a run are of equal size (whole blocks of `BLOCK`).
    None: `default_chunk_size` (16,384 on CPU; sized to the device's memory on an accelerator).
    devices: shard each chunk's path blocks over this many local devices (`simulate_blocks` with `paths_mesh`);
    None or 1 runs on one device. Chunks are rounded up to a multiple of devices * BLOCK paths.
    distributed: in a `jax.distributed` job (see `_distributed.initialize`) process p of P runs chunks
    p, p + P, p + 2P, ... on its local devices; the per-path metrics and retained snapshots are then gathered in
    path order (`_distributed.gather_chunks`) and every process returns the whole result.
    Per path, results do not depend on chunk size, device count or process count (draws are counter-based).
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"simulate takes a Scenario (jaxstress.load_scenario(...)), got {type(scenario).__name__}")
    check_counts(n_paths=(n_paths, 1), chunk_size=(chunk_size, 1), retain=(retain, 0), devices=(devices, 1))
    n_paths, retain = int(n_paths), int(retain)  # numpy integers are accepted as Python's
    chunk_size = None if chunk_size is None else int(chunk_size)
    params = scenario.params(dtype)
    reports = report_steps(scenario.config, params.n_steps)
    blocks_total = -(-n_paths // BLOCK)
    if chunk_size is None:  # sized for one device; a chunk sharded over several holds a device's share of each
        chunk_size = default_chunk_size(params, "forward", n_reports=len(reports)) * (devices or 1)
    chunk_blocks = max(1, min(blocks_total, -(-chunk_size // BLOCK)))
    # chunks of equal size, at most chunk_size: the last one is computed at full width too (one compiled shape),
    # so 100,000 paths run as 7 chunks of 14,336 rather than 7 of 16,384 of which the last keeps 1,696
    chunk_blocks = -(-blocks_total // -(-blocks_total // chunk_blocks))
    seed = check_seed(seed)  # a Python int from here (a JAX integer is taken by its value)
    key = seed_key(seed)
    n_dev = 1 if devices is None else devices
    rank, n_proc = (jax.process_index(), jax.process_count()) if distributed else (0, 1)
    if n_dev == 1:
        def run_chunk(c: int):  # the reporting dates of the retained paths only (`keep`, below; `observed`)
            return simulate_chunk(params, key, jnp.asarray(c * chunk_blocks, jnp.uint32), chunk_blocks, reports,
                                  observed(c))
    else:
        mesh = paths_mesh(n_dev)
        chunk_blocks = -(-chunk_blocks // n_dev) * n_dev
        params_m, key_m = replicate(mesh, params, key)
        ids_sharding = NamedSharding(mesh, PartitionSpec(PATHS_AXIS))

        def run_chunk(c: int):  # each device observes the reporting dates of as many paths as are kept
            first = c * chunk_blocks
            ids = jax.device_put(np.arange(first, first + chunk_blocks, dtype=np.uint32), ids_sharding)
            return simulate_blocks(params_m, key_m, ids, reports, mesh,
                                   device_snapshot_paths(observed(c), chunk_blocks * BLOCK, n_dev))

    chunk_paths = chunk_blocks * BLOCK
    n_chunks = -(-blocks_total // chunk_blocks)
    sim_dtype = np.dtype(params.values["curve.k"].dtype)
    names = variable_names(params)
    n_vars = len(names)
    # every process holds the whole result: one short of memory stops them all (through check_same), not only itself
    short_of_memory = host_memory_error(n_paths, len(METRIC_NAMES), retain, len(reports) * n_vars,
                                        sim_dtype.itemsize)
    if n_proc > 1:
        from ._distributed import check_same, fingerprint, gather_chunks

        try:
            check_same("the run", {"paths": n_paths, "seed": seed, "chunk_paths": chunk_paths, "retain": retain,
                                   "scenario": fingerprint(scenario.hash(), str(sim_dtype)),
                                   "host_memory_ok": int(short_of_memory is None)})
        except ConfigError:
            if short_of_memory is None:
                raise
            raise short_of_memory from None  # this process's own reason
    if short_of_memory is not None:
        raise short_of_memory

    def take(c):  # paths of chunk c that are kept, and those whose snapshots are retained
        return min(chunk_paths, n_paths - c * chunk_paths)

    def keep(c):
        return snapshot_paths(c, chunk_paths, n_paths, retain)

    def observed(c):
        return observed_paths(c, chunk_paths, n_paths, retain)

    t0 = time.perf_counter()
    # the outputs are allocated once and filled chunk by chunk (no list of parts and concatenated copy), in the
    # simulation's dtype (what the device computed; 10^8 paths of metrics are 8 GB in float32, 16 GB in float64)
    allm = np.empty((len(METRIC_NAMES), n_paths), sim_dtype)
    snaps = np.empty((len(reports), n_vars, min(n_paths, retain)), sim_dtype)
    metric_parts, snap_parts = [], []
    compile_s = 0.0
    done = 0
    mine = range(rank, n_chunks, n_proc)
    total = sum(take(c) for c in mine)

    def place_metrics(c, m):  # chunk c's kept paths into the output
        allm[:, c * chunk_paths:c * chunk_paths + take(c)] = m[:, :take(c)]

    def place_snaps(c, sn):
        snaps[:, :, c * chunk_paths:c * chunk_paths + keep(c)] = sn[:, :, :keep(c)]

    def collect(c, m, sn):
        nonlocal done
        m = np.asarray(m)
        if keep(c):
            sn = np.asarray(sn) if n_dev == 1 else chunk_snapshots(np.asarray(sn), chunk_paths, n_dev)
        if n_proc > 1:  # whole chunks in the simulation dtype, for the gather
            metric_parts.append(m)
            if keep(c):  # padded to the chunk's width (its paths past keep(c) were not observed)
                snap_parts.append(np.pad(sn, ((0, 0), (0, 0), (0, chunk_paths - sn.shape[2]))))
        else:
            place_metrics(c, m)
            if keep(c):
                place_snaps(c, sn)
        done += take(c)
        if progress is not None:
            progress(done, total)

    def first_done():  # the first chunk compiles: it is collected at once, to report the compile time
        nonlocal compile_s
        compile_s = time.perf_counter() - t0

    # snapshots copied out only of the retained paths
    pipelined(mine, lambda c: run_chunk(c) if keep(c) else (run_chunk(c)[0], None), lambda c, out: collect(c, *out),
              first=first_done)
    if n_proc > 1:
        ms = gather_chunks(metric_parts, n_chunks, (len(METRIC_NAMES), chunk_paths), sim_dtype)
        for c, x in enumerate(ms):
            place_metrics(c, x)
        n_kept = sum(keep(c) > 0 for c in range(n_chunks))
        sns = gather_chunks(snap_parts, n_kept, (len(reports), n_vars, chunk_paths), sim_dtype)
        for c, x in enumerate(sns):
            place_snaps(c, x)
    check_finite(allm, snaps, names, reports, scenario.name)
    metrics = {n: allm[i] for i, n in enumerate(METRIC_NAMES)}
    wall = time.perf_counter() - t0
    return SimulationResult(scenario=scenario, params=params, seed=seed, n_paths=n_paths, metrics=metrics,
                            snapshots=snaps, variables=names,
                            reports=reports, wall_s=wall, compile_s=compile_s, chunk_size=chunk_paths)
