"""Sensitivities: d(metric)/d(driver) for every continuous driver, by one backward pass per chunk of paths.

Estimators (all unbiased up to the stated smoothing):
- Continuous drivers enter through the pathwise derivative (the draws held fixed: common random numbers).
- Discrete draws (the regime path and the jump occurrences) do not move with the parameters, so their
  dependence on the generator and the jump intensities enters through the score-function (likelihood-ratio)
  term E[(f - b) d log p], with b the leave-one-out mean of f over the chunk as a baseline (so the estimator
  stays unbiased). Both terms are added for every driver.
- Means: mean of the per-path derivatives (+ score term).
- ES at level q: VaR is found first without gradients; then ES' = E[(L' + (L - VaR) d log p) 1{L > VaR}] / (1-q).
- Quantiles (VaR) at level q: kernel-smoothed, VaR' = (E[L' K_h(L - VaR)] - E[(1{L <= VaR} - q) d log p])
  / E[K_h(L - VaR)], Gaussian kernel of bandwidth h = 0.53 sd n^-0.2 (`BANDWIDTH`, half Silverman's).
- Probabilities of exceeding a level: the indicator is smoothed as sigmoid((x - level) / width) (width in the
  unit of x, the 10y yield in percent; configurable), then differentiated as a mean.
Standard errors come from the spread of the per-chunk estimates (at least 8 chunks). The chunks share the VaR of all
the paths; so that their spread carries what the estimate on all the paths carries, a quantile's chunk centres its
kernel at its own VaR linearised about the shared one and an ES's chunk adds the VaR's control variate (`surrogate`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._config import Params, Scenario
from ._errors import ConfigError, SimulationError, did_you_mean
from ._metrics import estimate
from ._regimes import transition_matrix, with_diagonal
from ._schema import DYNAMIC_TABLES, SECTIONS, Field
from ._simulate import (
    BLOCK,
    EXPLODES,
    METRIC_NAMES,
    PATHS_AXIS,
    _block_draws,
    _vary_like,
    check_counts,
    check_seed,
    default_chunk_size,
    horizon_metrics,
    paths_mesh,
    pipelined,
    replicate,
    seed_key,
)

_MEAN = re.compile(r"^(?P<base>\w+?)_mean$")
_Q = re.compile(r"^(?P<base>\w+?)_(?:q|var_)(?P<q>\d\d)$")
_ES = re.compile(r"^(?P<base>\w+?)_es_?(?P<q>\d\d)$")
_PROB = re.compile(r"^prob_y10_(?P<max>max_)?above_(?P<level>[\d.p]+)pct$")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A differentiable metric: kind in {"mean", "quantile", "es", "prob"} of a per-path metric."""

    name: str
    base: str
    kind: str
    q: float = 0.0
    level: float = 0.0


def parse_metric(name: str) -> MetricSpec:
    m = _PROB.match(name)
    if m:
        base = "y10_max_level_pct" if m.group("max") else "y10_level_pct"
        return MetricSpec(name, base, "prob", level=float(m.group("level").replace("p", ".")))
    for kind, rx in (("es", _ES), ("quantile", _Q), ("mean", _MEAN)):
        m = rx.match(name)
        if m:
            base = m.group("base")
            if base == "portfolio_loss" or base in METRIC_NAMES:
                q = int(m.group("q")) / 100 if "q" in m.groupdict() else 0.0
                if kind != "mean" and q == 0:  # the minimum: no tail to estimate a gradient from
                    raise ConfigError(f"metric '{name}': a level of 00 has no tail; use a level from 01 to 99, "
                                      f"e.g. {name[:-2]}01", key="--metric")
                return MetricSpec(name, base, kind, q=q)
    names = [n for n in METRIC_NAMES if n not in ("regime_logp",)]
    known = ", ".join(names)
    examples = [f"{n}_{s}" for n in (*names, "portfolio_loss") for s in ("mean", "q99", "es99")]
    hint = did_you_mean(name, [*examples, "portfolio_loss_var_99", "portfolio_loss_es_99", "prob_y10_above_5pct"])
    raise ConfigError(f"unknown metric '{name}'{hint}: use <metric>_mean, <metric>_qNN (quantile), <metric>_esNN "
                      f"(expected shortfall), portfolio_loss_var_99, portfolio_loss_es_99 or "
                      f"prob_y10_above_5pct, with <metric> one of: {known}", key="--metric")


# ----------------------------------------------------------------------------------------------------------------
# drivers: every continuous config value, by the dotted name --set takes


def _field_of(key: str) -> Field | None:
    parts = key.split(".")
    if parts[0] in DYNAMIC_TABLES and len(parts) == 3:
        return DYNAMIC_TABLES[parts[0]].get(parts[2])
    return SECTIONS.get(parts[0], {}).get(parts[1]) if len(parts) == 2 else None


def driver_leaves(params: Params) -> dict[str, jax.Array]:
    """The differentiable leaves: params.values minus switches, plus the portfolio notionals."""
    out = {}
    for k, v in params.values.items():
        f = _field_of(k)
        if f is None or f.kind == "bool":
            continue
        out[k] = v
    out["portfolio.notional"] = params.portfolio.notional
    return out


def with_drivers(params: Params, drivers: dict[str, jax.Array]) -> Params:
    values = dict(params.values)
    for k, v in drivers.items():
        if k != "portfolio.notional":
            values[k] = v
    port = eqx.tree_at(lambda p: p.notional, params.portfolio, drivers["portfolio.notional"])
    return eqx.tree_at(lambda p: (p.values, p.portfolio), params, (values, port))


def expand_names(params: Params, leaves: dict[str, jax.Array]) -> list[tuple[str, str, tuple]]:
    """(display name, leaf key, index) for every scalar driver, e.g. regimes.generator[0][1]."""
    out = []
    for k, v in leaves.items():
        shape = np.shape(v)  # (the leaves may be traced: params passed through the user's jit)
        if k == "portfolio.notional":
            for i in range(math.prod(shape)):
                out.append((f"portfolio.positions[{i}].notional", k, (i,)))
            continue
        if not shape:
            out.append((k, k, ()))
            continue
        for idx in np.ndindex(shape):
            if k.endswith("generator") and idx[0] == idx[1]:
                continue  # the diagonal follows from the row (rows sum to zero)
            if k.endswith("correlation") and idx[0] >= idx[1]:
                continue  # unit diagonal; the lower triangle mirrors the upper one
            out.append((k + "".join(f"[{i}]" for i in idx), k, idx))
    return out


def driver_entry(grad_leaf, leaf: str, idx: tuple) -> np.ndarray:
    """A scalar driver's derivative from its leaf's gradient. A correlation entry [i][j] (i < j) names the pair
    [i][j] and [j][i], which move together (the matrix stays symmetric, as the config requires), so its derivative
    is the sum of the two entries' partial derivatives (the model reads the symmetrized matrix, which splits a
    one-sided change evenly between them); every other driver is one entry of its leaf."""
    a = grad_leaf if isinstance(grad_leaf, jax.Array) else np.asarray(grad_leaf)  # (traced: `driver_gradients`)
    if leaf.endswith("correlation"):
        i, j = idx
        return a[..., i, j] + a[..., j, i]
    return a[(...,) + tuple(idx)] if idx else a


# expected draws of a discrete outcome below which its score-function term is not trusted (`rare_draw_note`)
MIN_DRAWS = 20.0
_JUMP_SIZES = ("jump_pi_mean", "jump_pi_sd", "jump_tau_mean", "jump_tau_sd")


def expected_draws(params: Params, n_paths: int) -> tuple[np.ndarray, np.ndarray]:
    """(transitions (R, R), jumps (R,)): how many times each regime transition i -> j and a jump in each regime
    are expected to be drawn over n_paths paths of `params.n_steps` steps, from the regime chain started at the
    initial regime (a step draws its next regime from the current one, then its jump in the next one)."""
    with jax.enable_x64(True):  # the model's step probabilities, in float64 (rare transitions are small numbers)
        q = jnp.asarray(np.asarray(params.values["regimes.generator"]), jnp.float64)
        p = np.asarray(transition_matrix(with_diagonal(q), params.dt))
    pi = np.eye(len(p))[params.initial_regime]
    at_start, at_next = np.zeros(len(p)), np.zeros(len(p))
    for _ in range(params.n_steps):
        at_start += pi
        pi = pi @ p
        at_next += pi
    lam = np.array([float(params.values[f"regimes.{r}.jump_intensity"]) for r in params.regime_names])
    return n_paths * at_start[:, None] * p, n_paths * at_next * -np.expm1(-lam * params.dt)


def rare_draw_notes(params: Params, drivers, n_paths: int) -> dict[str, str]:
    """name -> `rare_draw_note` for the (name, leaf, index) `drivers` that have one, the expected draws computed
    once."""
    draws = expected_draws(params, n_paths)
    return {name: note for name, leaf, idx in drivers if (note := rare_draw_note(params, leaf, idx, n_paths, draws))}


def rare_draw_note(params: Params, leaf: str, idx: tuple, n_paths: int, draws=None) -> str | None:
    """Why the score-function gradient of a regime intensity cannot be trusted on `n_paths` paths, or None.

    The score function sees an intensity's effect only through the draws it governs: a regime transition i -> j,
    a jump in a regime. Where that outcome is expected to be drawn fewer than `MIN_DRAWS` times over all the paths
    and steps (`expected_draws`), the gradient is left with the no-draw terms (-Cov(metric, time in the regime)
    for a transition, nothing for a jump intensity of 0) and the few draws, and misses or misjudges the outcome's
    effect; its standard error, from the same few draws, does not show it. A jump intensity of 0 in a regime
    whose jumps are of size 0 has an exact gradient of 0 and no note. `draws`: `expected_draws(params, n_paths)`
    where already computed."""
    names = params.regime_names
    if draws is None and leaf.startswith("regimes."):
        draws = expected_draws(params, n_paths)
    if leaf == "regimes.generator":
        i, j = idx
        expected = float(draws[0][i, j])
        what = f"the transition {names[i]} -> {names[j]}"
    elif leaf.startswith("regimes.") and leaf.endswith(".jump_intensity"):
        regime = leaf.split(".")[1]
        if (float(params.values[leaf]) == 0.0
                and all(float(params.values[f"regimes.{regime}.{k}"]) == 0.0 for k in _JUMP_SIZES)):
            return None
        expected = float(draws[1][names.index(regime)])
        what = f"a jump in regime {regime}"
    else:
        return None
    if expected >= MIN_DRAWS:
        return None
    name = leaf + "".join(f"[{k}]" for k in idx)
    if expected == 0.0:
        return (f"{what} is never drawn (its intensity is 0), so the score function cannot see the effect of more "
                f"of them; compare runs with --set {name}=...")
    return (f"{what} is expected to be drawn {expected:.2g} times over these {n_paths:,} paths x {params.n_steps} "
            "steps, too rarely for the score function to estimate its effect (the standard error, from the same "
            f"few draws, may not show it); use more paths, or compare runs with --set {name}=...")


def driver_unit_scale(key: str) -> tuple[str, float]:
    if key.startswith("portfolio."):
        return "$bn", 0.1
    f = _field_of(key)
    return (f.unit, f.scale) if f else ("", 1.0)


# ----------------------------------------------------------------------------------------------------------------
# the differentiable estimator on one chunk


def _score(f, logp):
    """f + stop_grad(f - b) (logp - stop_grad(logp)), b = leave-one-out mean: value f, gradient f' + (f-b) logp'."""
    n = f.shape[0]
    b = (jnp.sum(f) - f) / max(n - 1, 1)
    return f + jax.lax.stop_gradient(f - b) * (logp - jax.lax.stop_gradient(logp))


KINDS = ("mean", "prob", "es", "quantile")
# The quantile's kernel bandwidth is sd x n^-0.2 times this: half Silverman's 1.06, which is tuned to a density, not
# to a conditional mean in the tail. At 1.06 a VaR 99's gradient against a notional was 1.7% low (1.75 standard
# errors of a run of 16,384 paths) and against a regime intensity 5.7% low; at 0.53 0.5% and 2% (0.5 and 0.14 run
# errors), the run's spread the same for the notional and 1.35-1.45x for the others (24 runs each against finite
# differences on 2^20 paths).
BANDWIDTH = 0.53
REACH = 6.0  # bandwidths: a VaR with no path this close has no kernel estimate (`_quantile`)


def kernel_bandwidth(sd, n: int):
    """The quantile kernel's bandwidth for n values of standard deviation sd (a float, or traced):
    BANDWIDTH sd n^-0.2, kept above 0 for a constant metric."""
    return BANDWIDTH * sd * n ** (-0.2) + 1e-12


def _quantile(values, logp, q, var, bandwidth, density, shift: bool = True):
    """The quantile's surrogate: value `var`, gradient the kernel estimate of E[L' | L = VaR] plus the score term
    -E[(1{L <= VaR} - q) logp'] / f(VaR) (f by the same kernel). The kernel is centred at the chunk's own VaR
    linearised about the shared one, var + (q - F_chunk(var)) / density (`density`: f(var) of all the paths; None:
    this chunk's), so that the chunks' spread carries the VaR's own sampling error, as the estimate on all the
    paths does: the VaR moves with the paths and E[L' | L = v] moves with it (sensitivities of a VaR to a
    portfolio's notionals, say: without the shift the chunks' spread understated their error 3.5x). The shifts sum
    to about 0 over the chunks, so the estimate is that of the shared VaR. `shift` False: centred at `var`."""
    sg = jax.lax.stop_gradient
    x = sg(values)
    norm = bandwidth * jnp.sqrt(2 * jnp.pi)
    centre = var
    if shift:
        if density is None:
            density = jnp.mean(jnp.exp(-0.5 * ((x - var) / bandwidth) ** 2)) / norm
        # (clipped to 4 bandwidths: a VaR in a gap of the distribution, where the density is ~0, keeps paths near)
        # (a density of 0, where the chunk's own is used: no shift rather than 0 / 0)
        shift = (q - jnp.mean((x <= var).astype(x.dtype))) / jnp.maximum(density, jnp.finfo(x.dtype).tiny)
        centre = var + jnp.clip(shift, -4 * bandwidth, 4 * bandwidth)
    k = jnp.exp(-0.5 * ((x - centre) / bandwidth) ** 2)
    below = (x <= centre).astype(x.dtype) - q
    num = jnp.mean(k * (values - x)) - jnp.mean(below * (logp - sg(logp))) * norm
    # No path within REACH bandwidths of the centre (a VaR in a gap of a discrete metric): the kernel sees no
    # density there, and the whole gradient is 0, not 0 / 0, nor the score term over a density of ~0 (1e32)
    den = jnp.mean(k)
    seen = jnp.max(k) > jnp.exp(-0.5 * REACH**2)
    return var + jnp.where(seen, num, 0.0) / jnp.where(seen, den, 1.0)


def surrogate(kind: str, values: jax.Array, logp: jax.Array, q, level, var, bandwidth, width,
              density=None) -> jax.Array:
    """A per-chunk scalar whose value is the chunk's estimate and whose gradient is the estimator above.

    An ES is VaR + E[(L - VaR)+] / (1 - q) with the VaR as the quantile's surrogate (its kernel at the shared VaR:
    the ES does not move with the VaR to first order): its gradient is the tail's mean gradient plus
    VaR' (1 - P_chunk(L > VaR) / (1 - q)). Over all the paths the second term is about 0 (the
    empirical VaR leaves a share 1 - q above it), but by chunk it is the control variate that the empirical VaR
    applies: without it the chunks' spread counts the chunk-to-chunk variation of the number of tail paths, which
    the estimate on all the paths does not have, and overstates the error (8x for ES 99 against notionals)."""
    sg = jax.lax.stop_gradient
    if kind == "mean":
        return jnp.mean(_score(values, logp))
    if kind == "prob":
        ind = jax.nn.sigmoid((values - level) / width)
        return jnp.mean(_score(ind, logp))
    if kind == "es":
        v = _quantile(values, logp, q, var, bandwidth, None, shift=False)  # value var
        excess = jnp.maximum(values - v, 0.0)
        tail = excess + sg(excess) * (logp - sg(logp))
        return v + jnp.mean(tail) / (1.0 - q)
    if kind == "quantile":
        return _quantile(values, logp, q, var, bandwidth, density)
    raise AssertionError(kind)


def _per_path(params: Params, key, first_block, n_blocks: int, base_ix):
    draw = _block_draws(key, first_block + jnp.arange(n_blocks, dtype=jnp.uint32), params.values["curve.k"].dtype)
    metrics, state = horizon_metrics(params, n_blocks * BLOCK, draw)
    return metrics[base_ix], state.logp


@eqx.filter_jit
def chunk_values(params: Params, key, first_block, n_blocks: int, base_ix):
    """Per-path values of one metric (no gradient), for finding VaR and the bandwidth, and for finite
    differences under common random numbers. `base_ix` indexes METRIC_NAMES (traced: one compile for all)."""
    return _per_path(params, key, first_block, n_blocks, base_ix)[0]


def _value_and_gradient(params: Params, key, first_block, n_blocks: int, kind_ix, base_ix, q, level, var, bandwidth,
                        width, density):
    leaves = driver_leaves(params)

    def f(d):
        vals, logp = _per_path(with_drivers(params, d), key, first_block, n_blocks, base_ix)
        branches = [lambda v, lp, k=k: surrogate(k, v, lp, q, level, var, bandwidth, width, density) for k in KINDS]
        return jax.lax.switch(kind_ix, branches, vals, logp), jax.lax.stop_gradient(vals)

    (est, vals), grads = jax.value_and_grad(f, has_aux=True)(leaves)
    return est, grads, vals


@eqx.filter_jit
def chunk_gradient(params: Params, key, first_block, n_blocks: int, kind_ix, base_ix, q, level, var, bandwidth,
                   width, density):
    """(estimate, gradient w.r.t. the driver leaves, the metric's per-path values) on one chunk. The metric
    (`base_ix` into METRIC_NAMES) and its kind (`kind_ix` into KINDS) are traced, so one compilation serves every
    metric. The per-path values are those of `chunk_values`, so a mean or a probability needs no pass of its own
    for its plain estimate."""
    return _value_and_gradient(params, key, first_block, n_blocks, kind_ix, base_ix, q, level, var, bandwidth, width,
                               density)


def _one_chunk_a_device(fn, stack: bool, mesh, params: Params, key, first_blocks, *scalars):
    """fn(params, key, first_block, *scalars) for as many chunks as `mesh` has devices, one a device: each device
    runs the one-chunk program on its own chunk (`jax.shard_map`, no communication). The results come back in the
    order of `first_blocks`: stacked along a new leading axis (`stack`), else concatenated along their first."""
    dynamic, static = eqx.partition(params, eqx.is_array)
    spec, rep = PartitionSpec(PATHS_AXIS), PartitionSpec()

    def local(dynamic, key, firsts, *scalars):
        # the parameters marked as differing by device, as each device's chunk does: its gradient is its own (a
        # replicated input's cotangent would be summed over the devices)
        dynamic = _vary_like(dynamic, firsts)
        out = fn(eqx.combine(dynamic, static), key, firsts[0], *scalars)
        return jax.tree_util.tree_map(lambda x: x[None], out) if stack else out

    return jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, spec) + (rep,) * len(scalars), out_specs=spec)(
        dynamic, key, first_blocks, *scalars)


@eqx.filter_jit
def chunk_values_on_devices(params: Params, key, first_blocks, n_blocks: int, base_ix, mesh: Mesh):
    """`chunk_values` of len(first_blocks) chunks, one on each device of `mesh`: their per-path values, chunk after
    chunk."""
    def fn(p, k, first, b):
        return _per_path(p, k, first, n_blocks, b)[0]

    return _one_chunk_a_device(fn, False, mesh, params, key, first_blocks, base_ix)


@eqx.filter_jit
def chunk_gradients_on_devices(params: Params, key, first_blocks, n_blocks: int, kind_ix, base_ix, q, level, var,
                               bandwidth, width, density, mesh: Mesh):
    """`chunk_gradient` of len(first_blocks) chunks, one on each device of `mesh`: (estimates (chunks,), gradients
    and per-path values with a leading axis of chunks). One compiled program (SPMD) serves every device."""
    def fn(p, k, first, *scalars):
        return _value_and_gradient(p, k, first, n_blocks, *scalars)

    return _one_chunk_a_device(fn, True, mesh, params, key, first_blocks, kind_ix, base_ix, q, level, var,
                               bandwidth, width, density)


MIN_TAIL_PATHS = 20


def tail_note(spec: MetricSpec, chunk_paths: int) -> str | None:
    """Why a VaR's or an ES's gradient is not to be trusted where each chunk holds fewer than MIN_TAIL_PATHS paths
    beyond the VaR (chunk paths x min(q, 1 - q)), else None. Each chunk forms its own kernel ratio (quantile) or
    control variate (ES) from its paths near the VaR: with a handful the ratio is biased, by tens of percent for
    regime intensities (an audit at chunks of 256 paths, VaR 99: +56% to +248%), and its spread understates the
    error."""
    tail = chunk_paths * min(spec.q, 1.0 - spec.q)
    if tail >= MIN_TAIL_PATHS:
        return None
    need = math.ceil(MIN_TAIL_PATHS / min(spec.q, 1.0 - spec.q) / BLOCK) * BLOCK
    return (f"each chunk of {chunk_paths} paths holds about {tail:.3g} paths beyond the VaR, fewer than "
            f"{MIN_TAIL_PATHS}: the chunks' kernel estimates are biased and their spread understates the error; use "
            f"chunks of at least {need} paths (--chunk-size; the chunks are at most an eighth of --paths, so at "
            f"least {8 * need} paths)")


def check_width(width) -> None:
    """A probability's smoothing width must be a positive number (a width <= 0 turns the sigmoid's gradient round
    or into NaN)."""
    if isinstance(width, jax.core.Tracer):
        return
    if not (isinstance(width, int | float | np.number) and np.isfinite(width) and width > 0):
        raise ConfigError(f"the smoothing width must be a finite number > 0 (percentage points of the 10y yield), "
                          f"got {width!r}", key="width (--width)")


def metric_function(params: Params, metric: str, n_paths: int, seed: int = 0, var=None, width: float = 0.05):
    """The metric as a differentiable function of the parameters, for use under jax.grad/jit by user code.

    Returns the scalar that `sensitivities` differentiates, on n_paths (rounded up to whole blocks of 256; the
    same paths for the same seed): a mean's estimate; an ES's estimate at `var`; for a quantile, `var` itself
    plus the surrogate whose gradient is the quantile's (so its value is `var`, its gradient the quantile's); for a
    probability, the share of paths above the level smoothed by a sigmoid of `width` (percentage points of the
    10y yield, > 0). For quantile and ES metrics pass `var` (the VaR, found beforehand without gradients);
    otherwise it is computed from these paths with stop_gradient. The estimator includes the score-function term
    of the regime and jump draws, so gradients are unbiased. `seed` may be traced (an integer under the caller's
    jit or vmap: one program for every seed; see `seed_key`).
    """
    if not isinstance(params, Params):
        raise TypeError(f"metric_function takes a Params (scenario.params(), or jaxstress.set_drivers(...) of one), "
                        f"got {type(params).__name__}")
    spec = parse_metric(metric)
    check_width(width)
    check_counts(n_paths=(n_paths, 1))
    n_blocks = -(-int(n_paths) // BLOCK)
    key = seed_key(seed)
    vals, logp = _per_path(params, key, jnp.asarray(0, jnp.uint32), n_blocks, METRIC_NAMES.index(spec.base))
    if spec.kind in ("quantile", "es") and var is None:
        var = jnp.quantile(jax.lax.stop_gradient(vals), spec.q)
    var = jnp.asarray(0.0 if var is None else var, vals.dtype)
    sd = jax.lax.stop_gradient(jnp.std(vals))
    bw = kernel_bandwidth(sd, vals.shape[0])
    return surrogate(spec.kind, vals, logp, spec.q, spec.level, var, bw, jnp.asarray(width, vals.dtype))


@dataclasses.dataclass
class SensitivityResult:
    """`value` and `stderr`: the metric's plain estimate on all the paths, as `run` reports it (its standard error
    by the same estimator). `surrogate`: the mean over chunks of what is differentiated, the estimate with its
    smoothing (a probability's sigmoid of `width`) and score term; equal to `value` for means and ES, the VaR
    itself for quantiles. `gradients`: driver -> {"at", "value", "stderr" (across chunks), "unit", "scale",
    "scaled", "note" (None, or why a regime intensity's gradient misses draws too rare to see: `rare_draw_note`)}.
    `forward_s`: the pass of values that finds a quantile's or an ES's VaR before the gradient (0 for means and
    probabilities, whose values come with the gradient); `gradient_s`: the gradient's pass."""

    metric: str
    value: float
    stderr: float
    gradients: dict[str, dict]
    n_paths: int
    n_chunks: int
    forward_s: float
    gradient_s: float
    surrogate: float = float("nan")
    width: float | None = None
    note: str | None = None  # `tail_note`: a VaR's or an ES's chunks hold too few paths beyond the VaR


def not_a_driver(config: dict, name: str, known=()) -> str | None:
    """Why `name`, a key of the scenario's config that is not a driver, is not one (None where `name` is no
    config key): drivers are the continuous numbers of the model, not its switches, names, dates, tables or the
    static settings that fix the compiled shapes. `known`: the driver names, for an example in a table."""
    from ._config import parse_key

    try:
        parts = parse_key(name)
    except ConfigError:
        return None
    node = config
    for p in parts:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(node, dict):
        inside = [k for k in known if k.startswith(name + ".") or k.startswith(name + "[")]
        what = f"name one of its numbers, e.g. '{inside[0]}'" if inside else "it holds no drivers"
        return f"'{name}' is a table in the scenario, not a driver: {what}"
    strs = [p for p in parts if isinstance(p, str)]
    if strs == ["regimes", "generator"] and len(parts) == 4 and parts[2] == parts[3]:
        return (f"'{name}' is a diagonal entry of the generator, which follows from its row (rows sum to zero), "
                "not a driver: name an off-diagonal intensity instead")
    field = _field_of(".".join(strs))
    if field is not None and field.static:
        return (f"'{name}' is a static setting of the scenario (it fixes the simulation's shape and is not "
                "differentiable), not a driver")
    kind = "a switch (true/false)" if isinstance(node, bool) else "a name or date" if isinstance(node, str) else None
    if kind is None:
        return None
    return f"'{name}' is {kind} in the scenario, not a driver (drivers are its continuous numbers)"


def unknown_driver(config: dict, name: str, known, key: str, note: str = "") -> ConfigError:
    """The error for a driver `name` that is none of the `known` driver names: why a key of `config` (the
    scenario's) is not a driver (`not_a_driver`), else the closest known name; `note` follows the latter."""
    reason = not_a_driver(config, name, known)
    if reason:
        return ConfigError(reason, key=key)
    hint = did_you_mean(name, known, "; did you mean '{}'?")
    return ConfigError(f"unknown driver '{name}'{hint}{note}", key=key)


def _check_drivers(names: list[tuple[str, str, tuple]], drivers: list[str] | None,
                   config: dict | None = None) -> list[tuple[str, str, tuple]]:
    """The (display name, leaf, index) of the named drivers (a name or a prefix of names: `holders.japan`); an
    unknown one is a ConfigError naming the closest known driver, or saying why a key of `config` (the
    scenario's) is not a driver."""
    if not drivers:
        return names

    def named(n: str, d: str) -> bool:  # n is driver d, or one of its elements or fields
        return n == d or n.startswith(d + "[") or n.startswith(d + ".")

    known = [n for n, _, _ in names]
    for d in drivers:
        if not any(named(n, d) for n in known):
            raise unknown_driver(config or {}, d, known, "--drivers")
    return [t for t in names if any(named(t[0], d) for d in drivers)]


def check_finite_result(name: str, metric: str, vals: np.ndarray, gradients: dict) -> None:
    """Refuse non-finite per-path values or gradients (a SimulationError naming how many paths, or which drivers'
    gradients, and the usual causes) rather than report NaN or fail writing the JSON."""
    bad = ~np.isfinite(vals)
    if bad.any():
        raise SimulationError(f"scenario '{name}': {int(bad.sum())} of {bad.size} paths produced non-finite values "
                              f"of {metric}; " + EXPLODES)
    shown = [d for d, g in gradients.items() if not np.isfinite(g["value"])]
    if shown:
        raise SimulationError(f"scenario '{name}': the gradients of {metric} with respect to {', '.join(shown[:5])}"
                              f"{f' and {len(shown) - 5} more drivers' if len(shown) > 5 else ''} are not finite, "
                              "although its values are; " + EXPLODES)


def sensitivities(scenario: Scenario, metric: str, n_paths: int, seed: int = 0, chunk_size: int | None = None,
                  drivers: list[str] | None = None, width: float = 0.05, dtype=None,
                  progress=None, devices: int | None = None, distributed: bool = False) -> SensitivityResult:
    """Gradient of `metric` w.r.t. every driver (or those named), with standard errors across chunks (at least 8
    chunks where there are 8 blocks). chunk_size None: 16384 paths on CPU, sized to the memory of an accelerator
    (`default_chunk_size`).

    devices: spread the chunks over this many local devices (None or 1: one), one chunk a device at a time
    (`chunk_gradients_on_devices`, one compiled program for all of them); a last group with fewer chunks than
    devices is filled up with repeats of its last chunk, whose results are dropped.
    distributed: in a `jax.distributed` job (see `_distributed.initialize`) process p of P computes chunks p,
    p + P, ...; the chunks' values and gradients are then gathered (`_distributed.gather_chunks`) and every
    process returns the whole result.
    Either way the chunks and their estimates are those of a one-device run."""
    spec = parse_metric(metric)
    check_width(width)
    if not isinstance(scenario, Scenario):
        raise TypeError(f"sensitivities takes a Scenario (jaxstress.load_scenario(...)), got {type(scenario).__name__}")
    check_counts(n_paths=(n_paths, 1), chunk_size=(chunk_size, 1))
    if isinstance(drivers, str):  # one name, or a comma-separated list as --drivers takes it
        drivers = [d.strip() for d in drivers.split(",") if d.strip()]
    params = scenario.params(dtype)
    leaves = driver_leaves(params)
    names = _check_drivers(expand_names(params, leaves), drivers, scenario.config)  # before the work
    if chunk_size is None:
        chunk_size = default_chunk_size(params, "gradient")
    n_paths, chunk_size = int(n_paths), int(chunk_size)
    blocks = -(-n_paths // BLOCK)
    chunk_blocks = max(1, min(-(-chunk_size // BLOCK), blocks // 8 if blocks >= 8 else 1))
    n_chunks = -(-blocks // chunk_blocks)
    if n_chunks < 2:
        raise ConfigError(f"{n_paths} paths make one chunk (paths are drawn in blocks of {BLOCK}, the smallest "
                          "chunk whatever --chunk-size says), and the standard errors come from the spread between "
                          f"chunks: give at least {2 * BLOCK} paths", key="--paths")
    blocks = n_chunks * chunk_blocks
    chunk_paths = chunk_blocks * BLOCK
    seed = check_seed(seed)  # a Python int from here (a JAX integer is taken by its value)
    key = seed_key(seed)
    base_ix = jnp.asarray(METRIC_NAMES.index(spec.base), jnp.int32)
    rank, n_proc = (jax.process_index(), jax.process_count()) if distributed else (0, 1)
    mine = list(range(rank, n_chunks, n_proc))
    if n_proc > 1:
        from ._distributed import check_same, fingerprint, gather_chunks

        what = fingerprint(scenario.hash(), str(params.values["curve.k"].dtype), metric, [n for n, _, _ in names],
                           width)
        check_same("the sensitivities", {"paths": n_paths, "seed": seed, "chunk_paths": chunk_paths,
                                         "scenario": what})
    n_dev = max(1, min(devices or 1, len(mine)))
    if n_dev > 1:
        mesh = paths_mesh(n_dev)
        params_m, key_m = replicate(mesh, params, key)
        firsts_sharding = NamedSharding(mesh, PartitionSpec(PATHS_AXIS))

    def groups():
        """This process's chunks in groups of n_dev and the first block of each, one a device (on one device: one
        chunk and its first block, a scalar); a last group short of n_dev repeats its last chunk."""
        for g in range(0, len(mine), n_dev):
            chunks = mine[g:g + n_dev]
            firsts = [c * chunk_blocks for c in chunks + chunks[-1:] * (n_dev - len(chunks))]
            if n_dev == 1:
                yield chunks, jnp.asarray(firsts[0], jnp.uint32)
            else:
                yield chunks, jax.device_put(np.asarray(firsts, np.uint32), firsts_sharding)

    dt_ = params.values["curve.k"].dtype
    # a mean's and a probability's estimator use neither VaR, bandwidth nor density
    var, bw, density, forward_s = 0.0, 1.0, 1.0, 0.0
    if spec.kind in ("quantile", "es"):  # the VaR (and the kernel's bandwidth) first, from a pass of values
        t0 = time.perf_counter()
        parts = []  # per chunk of this process: its per-path values

        def values(firsts):
            if n_dev == 1:
                return chunk_values(params, key, firsts, chunk_blocks, base_ix)
            return chunk_values_on_devices(params_m, key_m, firsts, chunk_blocks, base_ix, mesh)

        def keep_values(chunks, v):
            parts.extend(np.split(np.asarray(v)[:len(chunks) * chunk_paths], len(chunks)))

        pipelined(groups(), lambda g: values(g[1]), lambda g, v: keep_values(g[0], v))
        if n_proc > 1:
            parts = gather_chunks(parts, n_chunks, (chunk_paths,), np.dtype(dt_))
        vals = np.concatenate(parts)
        var = float(np.quantile(vals, spec.q))
        bw = kernel_bandwidth(float(vals.std()), vals.size)
        z = (vals.astype(np.float64) - var) / bw
        # f(VaR) of all the paths, by the quantile's kernel (floored: a VaR in a gap of the distribution)
        density = max(float(np.mean(np.exp(-0.5 * z * z))) / (bw * math.sqrt(2 * math.pi)), 1e-30)
        forward_s = time.perf_counter() - t0
    scalars = (jnp.asarray(KINDS.index(spec.kind), jnp.int32), base_ix,
               *(jnp.asarray(x, dt_) for x in (spec.q, spec.level, var, bw, width, density)))
    # per chunk, the estimate and the gradient's leaves flattened into one float64 vector (exact for float32; one
    # array a chunk to gather)
    treedef = jax.tree_util.tree_structure(leaves)
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(leaves)]
    sizes = [int(np.prod(sh)) for sh in shapes]

    def flat(v, g, pv):  # the estimate, the gradient's leaves, the per-path values
        return np.concatenate([np.atleast_1d(np.float64(v))]
                              + [np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(g)]
                              + [np.asarray(pv, np.float64)])

    flats = []  # per chunk of this process

    def gradients(firsts):
        if n_dev == 1:
            return chunk_gradient(params, key, firsts, chunk_blocks, *scalars)
        return chunk_gradients_on_devices(params_m, key_m, firsts, chunk_blocks, *scalars, mesh)

    def keep_gradients(chunks, out):
        v, g, pv = jax.device_get(out)
        if n_dev == 1:
            flats.append(flat(v, g, pv))
        else:  # a leading axis of chunks
            flats.extend(flat(v[i], jax.tree_util.tree_map(lambda x, i=i: x[i], g), pv[i])
                         for i in range(len(chunks)))
        if progress:
            progress(len(flats) * chunk_paths, len(mine) * chunk_paths)

    t0 = time.perf_counter()
    pipelined(groups(), lambda g: gradients(g[1]), lambda g, out: keep_gradients(g[0], out))
    if n_proc > 1:
        flats = gather_chunks(flats, n_chunks, (1 + sum(sizes) + chunk_paths,), np.float64)
    gradient_s = time.perf_counter() - t0
    offsets = np.cumsum(sizes)[:-1]
    n_grad = 1 + sum(sizes)
    est = [float(f[0]) for f in flats]
    grads = [jax.tree_util.tree_unflatten(treedef, [x.reshape(sh) for x, sh in
                                                    zip(np.split(f[1:n_grad], offsets), shapes)]) for f in flats]
    if spec.kind not in ("quantile", "es"):  # the per-path values came with the gradients
        vals = np.concatenate([f[n_grad:] for f in flats])
    out = {}
    nc = len(grads)
    notes = rare_draw_notes(params, names, blocks * BLOCK)
    for display, leaf, idx in names:
        per = np.array([driver_entry(g[leaf], leaf, idx) for g in grads], dtype=np.float64)
        at = np.asarray(leaves[leaf])[idx] if idx else np.asarray(leaves[leaf])
        unit, scale = driver_unit_scale(leaf)
        gval = float(per.mean())
        out[display] = {"at": float(at), "value": gval,
                        "stderr": float(per.std(ddof=1) / np.sqrt(nc)) if nc > 1 else float("nan"),
                        "unit": unit, "scale": scale, "scaled": gval * scale,
                        "note": notes.get(display)}
    check_finite_result(scenario.name, metric, np.asarray(vals), out)
    # the value as a run reports it (a quantile's chunks all share one VaR, so their spread says nothing of it);
    # the values in the simulation's dtype, as the values pass gives them
    value, stderr = estimate(np.asarray(vals, dt_).astype(np.float64), spec.kind, spec.q, spec.level)
    note = tail_note(spec, chunk_paths) if spec.kind in ("quantile", "es") else None
    return SensitivityResult(metric=metric, value=value, stderr=stderr, gradients=out, n_paths=blocks * BLOCK,
                             n_chunks=nc, forward_s=forward_s, gradient_s=gradient_s,
                             surrogate=float(np.mean(est)), width=width if spec.kind == "prob" else None, note=note)
