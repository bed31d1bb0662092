"""Reverse stress tests: the smallest change of chosen drivers that moves a metric to a target.

    minimise  sum_i ((x_i - x0_i) / scale_i)^2   subject to   metric(x) = target,   lo_i <= x_i <= hi_i

Drivers are config values named as `--set` takes them (`holders.japan.sell_rate`, `regimes.generator[0][1]`);
`scale_i` is the natural unit of change of the field (`_schema`: 1bp for rates, $100bn for amounts, ...), so the
distance is in "natural units" and drivers of different kinds are comparable.

Method (gradient descent through the simulator): first a bracketing line search along the linearised
minimum-norm step -(metric - target) grad / |grad|^2 finds a point on the constraint (exact for one driver, and
robust when the metric is far from linear, e.g. near the basis funds' margin threshold); then an augmented
Lagrangian, L(v) = |v|^2 + lam g(v) + (rho / 2) g(v)^2, minimised by Adam (optax) with projection onto the bounds
after each step and a dual update lam += rho g every few steps, slides along the constraint to the minimum-norm
point. Coordinates are standardised twice: u = (x - x0) / scale, then v = u / R with R the distance of the
starting point (so a learning rate means the same for any metric and driver), and g is the gap
(metric - target) divided by the initial gap. The metric and its gradient come from
`_sensitivities.metric_function` (pathwise + score-function terms, so generator and jump intensities work too), on
fixed paths (common random numbers: the same seed and draws at every iteration), so the objective is a smooth
deterministic function of the drivers and the iteration converges like a deterministic one.

The solution is then re-estimated on fresh paths (another seed) by the forward `simulate`, with the solution applied
to the scenario as `--set` overrides (which also checks that it is a valid config), with a Monte Carlo standard
error.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._config import Params, Scenario, apply_override, load_scenario, parse_key, validate
from ._errors import ConfigError, SimulationError
from ._metrics import estimate, summarize
from ._schema import DYNAMIC_TABLES, MAX_INTENSITY, SECTIONS, Field
from ._sensitivities import (
    driver_leaves,
    driver_unit_scale,
    expand_names,
    metric_function,
    parse_metric,
    rare_draw_notes,
    unknown_driver,
)
from ._simulate import BLOCK, EXPLODES, _block_draws

# ----------------------------------------------------------------------------------------------------------------
# drivers by their --set name


@dataclasses.dataclass(frozen=True)
class Driver:
    """One scalar driver: its --set name, the Params.values leaf and index it lives at, start value and bounds."""

    name: str
    leaf: str
    index: tuple[int, ...]
    x0: float
    scale: float
    unit: str
    lo: float
    hi: float

    @property
    def slot(self) -> tuple[str, tuple[int, ...]]:
        return self.leaf, self.index


def _field(leaf: str) -> Field | None:
    parts = leaf.split(".")
    if parts[0] in DYNAMIC_TABLES and len(parts) == 3:
        return DYNAMIC_TABLES[parts[0]].get(parts[2])
    return SECTIONS.get(parts[0], {}).get(parts[1]) if len(parts) == 2 else None


def _config_value(config: dict, parts: list):
    node = config
    for p in parts:
        node = node[p]
    return node


def resolve_drivers(scenario: Scenario, names: Sequence[str], what: str = "--drivers") -> list[Driver]:
    """Check driver names against the scenario and return them with start values, scales and bounds.

    Accepts scalar config values (`basis_funds.leverage`, `regimes.tariff_shock.tau_shift`) and entries of list or
    matrix values (`debt.amounts[0]`, `regimes.generator[0][1]`, off-diagonal only: the diagonal follows from the
    row). Correlation entries, switches and portfolio notionals are not drivers here. Raises ConfigError naming the
    driver and the closest known name.
    """
    if not names:
        raise ConfigError("give at least one driver, e.g. holders.japan.sell_rate", key=what)
    if len(set(names)) != len(names):
        twice = dict.fromkeys(n for n in names if list(names).count(n) > 1)  # each name once, in order
        raise ConfigError(f"drivers repeated: {', '.join(twice)}", key=what)
    params = scenario.params()
    leaves = driver_leaves(params)
    known = [n for n, leaf, _ in expand_names(params, leaves) if leaf != "portfolio.notional"]
    out = []
    for name in names:
        name = name.strip()
        try:
            parts = parse_key(name)
        except ConfigError:
            raise ConfigError(f"malformed driver '{name}': expected a dotted config key as --set takes it, e.g. "
                              "holders.japan.sell_rate or regimes.generator[0][1]", key=what) from None
        leaf = ".".join(p for p in parts if isinstance(p, str))
        index = tuple(p for p in parts if isinstance(p, int))
        strs = [p for p in parts if isinstance(p, str)]
        if name == "portfolio" or name.startswith("portfolio."):  # the notionals and anything else of the book
            raise ConfigError(f"driver '{name}': a reverse stress test moves the market's drivers, not the portfolio "
                              "it revalues; change the portfolio file (--portfolio) instead", key=what)
        if parts[:len(strs)] != strs or leaf not in leaves:
            raise unknown_driver(scenario.config, name, known, what,
                                 " (drivers are the numeric config keys of the scenario, as --set takes them)")
        field = _field(leaf)
        shape = np.shape(leaves[leaf])
        if len(index) != len(shape) or any(i >= s for i, s in zip(index, shape)):
            want = "no index" if not shape else "index " + "".join(f"[0..{s - 1}]" for s in shape)
            raise ConfigError(f"driver '{name}': '{leaf}' has shape {tuple(shape)}; give {want}", key=what)
        lo = -math.inf if field.lo is None else float(field.lo)
        hi = math.inf if field.hi is None else float(field.hi)
        if leaf.endswith(".correlation"):
            raise ConfigError(f"driver '{name}': correlation entries cannot be driven one at a time (the matrix "
                              "must stay symmetric and positive definite); change the scenario file instead",
                              key=what)
        if leaf == "regimes.generator":
            if index[0] == index[1]:
                raise ConfigError(f"driver '{name}': the diagonal of the generator follows from its row (rows sum "
                                  "to zero); drive an off-diagonal intensity instead", key=what)
            lo, hi = 0.0, MAX_INTENSITY  # as the config bounds them
        unit, scale = driver_unit_scale(leaf)
        if field.lo_open:
            lo = lo + max(abs(lo), scale) * 1e-6
        x0 = float(_config_value(scenario.config, parts))
        out.append(Driver(name=name, leaf=leaf, index=index, x0=x0, scale=float(scale), unit=unit, lo=lo, hi=hi))
    return out


def set_values(params: Params, slots: Sequence[tuple[str, tuple[int, ...]]], x: jax.Array) -> Params:
    """Params with the driver slots replaced by the entries of x (traceable, so gradients flow to x)."""
    values = dict(params.values)
    for i, (leaf, index) in enumerate(slots):
        xi = x[i].astype(values[leaf].dtype)
        values[leaf] = values[leaf].at[index].set(xi) if index else xi
    return eqx.tree_at(lambda p: p.values, params, values)


def _round(v: float, d: Driver) -> float:
    """A clean decimal (8 significant digits) inside the driver's bounds."""
    r = float(f"{v:.8g}")
    if r < d.lo or r > d.hi:
        r = min(max(v, d.lo), d.hi)
    return r


def override_strings(scenario: Scenario, drivers: Sequence[Driver], x: Sequence[float]) -> list[str]:
    """`--set` assignments for new driver values; generator rows get their diagonal updated (rows sum to zero)."""
    out = [f"{d.name}={_round(float(v), d)!r}" for d, v in zip(drivers, x)]
    q = None
    for d, v in zip(drivers, x):
        if d.leaf == "regimes.generator":
            if q is None:
                q = np.asarray(scenario.config["regimes"]["generator"], dtype=np.float64)
            q[d.index] = _round(float(v), d)
    if q is not None:
        rows = sorted({d.index[0] for d in drivers if d.leaf == "regimes.generator"})
        for i in rows:
            diag = -float(sum(q[i, j] for j in range(q.shape[1]) if j != i))  # 12 digits: no 0.30000000000000004
            out.append(f"regimes.generator[{i}][{i}]={float(f'{diag:.12g}')!r}")
    return out


def with_overrides(scenario: Scenario, overrides: Sequence[str]) -> Scenario:
    """The scenario with `--set` overrides applied to its resolved config and validated again."""
    raw = copy.deepcopy(scenario.config)
    for ov in overrides:
        try:
            apply_override(raw, ov)
        except ConfigError as e:
            raise ConfigError(f"--set {ov}: {e}") from None
    return Scenario(validate(raw, scenario.file), scenario.file, scenario.portfolio, scenario.portfolio_file)


# ----------------------------------------------------------------------------------------------------------------
# the solver


def _stationary(v, grad_g, lo_v, hi_v, angle: float = 0.02) -> bool:
    """KKT of min |v|^2 s.t. g(v) = 0, lo_v <= v <= hi_v: 2 v + lam grad_g = mu_lo - mu_hi with mu >= 0 for some
    multiplier lam. On the free coordinates v is parallel to the constraint gradient (the sine of the angle below
    `angle`), with lam from them by least squares; on a coordinate at its lower (upper) bound the Lagrangian's
    derivative 2 v_i + lam grad_g_i must not be negative (positive) beyond `angle` |2 v|: otherwise moving that
    driver off its bound shortens the distance along the constraint. With no free coordinate some lam must satisfy
    every bound's sign at once."""
    at_lo, at_hi = v <= lo_v + 1e-9, v >= hi_v - 1e-9
    free = ~(at_lo | at_hi)
    vf, gf = v[free], grad_g[free]
    nv, ng = float(np.linalg.norm(vf)), float(np.linalg.norm(gf))
    if free.sum() > 1 and nv > 0.0 and ng > 0.0:
        cos = float(vf @ gf) / (nv * ng)
        if math.sqrt(max(1.0 - cos * cos, 0.0)) > angle:
            return False
    slack = angle * 2.0 * float(np.linalg.norm(v))
    # the bounds' conditions a_i + lam b_i >= -slack, with a = 2 v, b = grad_g (the upper bounds' signs flipped)
    sign = np.where(at_lo, 1.0, -1.0)[~free]
    a, b = sign * 2.0 * v[~free], sign * grad_g[~free]
    if not a.size:
        return True
    if ng > 0.0:
        lam = -2.0 * float(vf @ gf) / (ng * ng)
        return bool(np.all(a + lam * b >= -slack))
    if free.any() and nv > 0.0:  # a free coordinate away from the start that the constraint does not see
        return False
    # no free coordinate constrains lam: is there one that satisfies every bound?
    lo_lam = max([(-slack - ai) / bi for ai, bi in zip(a, b) if bi > 0], default=-math.inf)
    hi_lam = min([(-slack - ai) / bi for ai, bi in zip(a, b) if bi < 0], default=math.inf)
    return bool(lo_lam <= hi_lam and np.all(a[b == 0] >= -slack))


def finite_block_draws(key, n_blocks: int, dtype):
    """`_simulate._block_draws` for blocks 0..n_blocks-1 with the normals clipped to +-6 (used by the event fit).

    A guard: the counter-based draws keep 2u - 1 strictly inside (-1, 1), so their normals are finite (at most
    ~5.4 in float32) and the clip changes nothing; it keeps an infinite normal from ever turning a fitted path
    to NaN should the draws change.
    """
    return _block_draws(key, jnp.arange(n_blocks, dtype=jnp.uint32), dtype, clip=6.0)


@eqx.filter_jit
def _metric_and_grad(x, params: Params, slots, metric: str, n_paths: int, seed: int, width: float):
    """`_sensitivities.metric_function` (value, and unbiased gradient: pathwise + score-function terms) and its
    gradient with respect to the driver values x."""

    def f(x):
        return metric_function(set_values(params, slots, x), metric, n_paths, seed, width=width)

    return jax.value_and_grad(f)(x)


def _solve(evaluate, record, m0, grad0, target, tol, lo_u, hi_u, steps, lr, rho, dual_every):
    """min |u|^2 s.t. metric(u) = target, lo_u <= u <= hi_u. Returns (u, metric at u, reached).

    1. Line search along the linearised minimum-norm step u_lin = -(m0 - target) grad / |grad|^2 (projected on
       the bounds): expand until the gap changes sign, then regula falsi (Illinois) to a feasible point. This is
       the exact answer for one driver and a robust start when the metric is strongly nonlinear (thresholds such
       as the basis funds' margin constraint make the first linear step over- or undershoot by far).
    2. Augmented Lagrangian with Adam from the best point, in v = u / R (R = its distance), to move along the
       constraint towards the minimum-norm point (or towards the constraint, if the line search found no feasible
       point: then the penalty rho grows x4 whenever a dual period reduces the gap by less than half); stops when
       feasible and stationary (v parallel to the constraint gradient on the free coordinates).
    Every evaluation counts against `steps`. The best feasible iterate (smallest distance) is returned; if none
    is feasible, the one closest to the target.
    """
    gscale = abs(m0 - target)
    # best point so far: ((gap if infeasible else 0, distance), u, metric, d metric / d u)
    best = [(abs(m0 - target), 0.0), np.zeros_like(grad0), m0, grad0]

    def ev(u, phase):
        m, gu = evaluate(u)
        record(u, m, phase)
        gap = abs(m - target)
        key = (0.0 if gap <= tol else gap, float(np.linalg.norm(u)))
        if key < best[0]:
            best[:] = [key, u.copy(), m, gu]
        return m, gu

    budget = [steps]

    def spend():
        budget[0] -= 1
        return budget[0] >= 0

    # 1. bracketing line search along the linearised step: expand x4 until the gap changes sign (stop expanding
    #    when it grows: the metric is not monotone along the line), then regula falsi (Illinois)
    direction = -(m0 - target) * grad0 / float(grad0 @ grad0)
    t_lo, g_lo, t_hi, g_hi = 0.0, (m0 - target) / gscale, None, None
    t, prev_u = 1.0, None
    feasible = False
    while spend():
        u = np.clip(t * direction, lo_u, hi_u)
        if prev_u is not None and np.allclose(u, prev_u, rtol=0, atol=1e-12):
            break  # stuck on the bounds: not reachable along this line
        m, _ = ev(u, "line search")
        g = (m - target) / gscale
        if abs(m - target) <= tol:
            feasible = True
            break
        if np.sign(g) != np.sign(g_lo):  # bracketed
            t_hi, g_hi = t, g
            break
        if abs(g) >= abs(g_lo):
            break  # moving away from the target along this line
        t_lo, g_lo, prev_u = t, g, u
        t *= 4.0
    side = 0
    while not feasible and t_hi is not None and spend():
        t = (t_lo * g_hi - t_hi * g_lo) / (g_hi - g_lo)
        u = np.clip(t * direction, lo_u, hi_u)
        m, _ = ev(u, "line search")
        g = (m - target) / gscale
        if abs(m - target) <= tol:
            feasible = True
            break
        if np.sign(g) == np.sign(g_lo):
            t_lo, g_lo = t, g
            if side == -1:
                g_hi /= 2.0
            side = -1
        else:
            t_hi, g_hi = t, g
            if side == 1:
                g_lo /= 2.0
            side = 1
    if feasible and len(grad0) == 1:
        return best[1], best[2], True

    # 2. augmented Lagrangian + Adam from the best point: along the constraint towards the minimum-norm point (or,
    #    if the line search found no feasible point, towards the constraint)
    u, gu = best[1], best[3]
    radius = float(np.linalg.norm(u)) or gscale / float(np.linalg.norm(grad0))
    v = u / radius
    lo_v, hi_v = lo_u / radius, hi_u / radius
    g = (best[2] - target) / gscale
    grad_g = gu * radius / gscale
    if feasible and _stationary(v, grad_g, lo_v, hi_v):
        return best[1], best[2], True
    gg = float(grad_g @ grad_g)
    lam = -2.0 * float(v @ grad_g) / gg if gg > 0 else 0.0  # least-squares multiplier: 2v + lam grad_g ~ 0
    g_dual = abs(g) if abs(g) * gscale > tol else math.inf
    n_adam = max(budget[0] + 1, 1)
    opt = optax.adam(optax.cosine_decay_schedule(lr, n_adam, alpha=0.05))
    update = jax.jit(opt.update)
    state = opt.init(jnp.zeros(len(v), jnp.float32))
    for it in range(n_adam):
        if it > 0:
            if not spend():
                break
            m, gu = ev(v * radius, "descent")
            g = (m - target) / gscale
            grad_g = gu * radius / gscale
            if abs(m - target) <= tol and _stationary(v, grad_g, lo_v, hi_v):
                break  # `ev` kept it as the best point if it is the smallest feasible one so far
        grad = 2.0 * v + (lam + rho * g) * grad_g
        upd, state = update(jnp.asarray(grad, jnp.float32), state)
        v = np.clip(v + np.asarray(upd, np.float64), lo_v, hi_v)
        if (it + 1) % dual_every == 0:
            lam = lam + rho * g
            if abs(g) * gscale > tol and abs(g) > 0.5 * g_dual:
                rho *= 4.0  # too little progress towards the constraint: stiffen the penalty
            g_dual = abs(g)
    return best[1], best[2], best[0][0] == 0.0


def _fresh_z(value: float, fit: float, se_fresh: float, se_fit: float) -> float:
    """How many standard errors of their difference (independent paths) the fresh estimate lies from the value
    the optimisation reached on its own paths: large where the solution fitted those paths' noise."""
    sd = math.hypot(se_fresh, se_fit)
    return abs(value - fit) / sd if sd > 0 else (0.0 if value == fit else math.inf)


def fresh_warning(res: dict, limit: float = 2.0) -> str | None:
    """A warning where the fresh paths' estimate is more than `limit` standard errors from the optimisation's own
    (None otherwise): the solution fitted the optimisation paths' noise, and more paths are needed to trust it.
    Measured against the fit, not the target, so that a target out of reach (`reached` false) is not taken for
    noise."""
    z = res.get("fresh_z", 0.0)
    if not z > limit:
        return None
    a = res["achieved"]
    return (f"the estimate on fresh paths, {a['value']:.6g} +- {a['stderr']:.2g}, is {z:.1f} standard errors from "
            f"the optimisation's {res['fit_value']:.6g} +- {res['fit_stderr']:.2g}: the solution fits the "
            f"optimisation paths' noise; rerun with more --paths (now {res['settings']['paths']})")


def fresh_estimate(scenario: Scenario, metric: str, n_paths: int, seed: int, dtype=None) -> dict:
    """{"value", "stderr"} of a metric by the forward simulator on n_paths fresh paths."""
    from ._simulate import simulate

    spec = parse_metric(metric)
    res = simulate(scenario, n_paths, seed=seed, dtype=dtype)
    ok = np.all([np.isfinite(v) for v in res.metrics.values()], axis=0)
    per_path = {k: v[ok] for k, v in res.metrics.items()}
    if not ok.all():
        warnings.warn(f"{int((~ok).sum())} of {n_paths} fresh paths are not finite and are left out of the "
                      "re-estimate (see finite_block_draws)", RuntimeWarning, stacklevel=2)
    if ok.sum() < 2:
        raise ConfigError(f"the re-estimate of {metric} has no finite paths")
    level = spec.level if spec.kind == "prob" else 5.0
    table = summarize(per_path, level)
    if metric in table:  # a probability's interval is left to run's summary: achieved is {"value", "stderr"}
        out = {"value": table[metric]["value"], "stderr": table[metric]["stderr"]}
    else:  # names summarize spells differently (prob_y10_above_5.5pct, y10_level_pct_mean, ..._q97)
        v, se = estimate(per_path[spec.base], spec.kind, spec.q, spec.level)
        out = {"value": v, "stderr": se}
    out["n_paths"] = int(ok.sum())
    out["seed"] = seed
    return out


def target_tolerance(start: float, target: float, kind: str, dtype) -> float:
    """The default accepted |metric - target|: 1% of the starting gap, but not below 64 times the dtype's resolution
    of the larger of the start and the target (a target that the metric already meets in floating point is not
    searched for), nor below 1e-4 for a probability."""
    tol = max(abs(start - target) * 0.01, 64 * float(jnp.finfo(dtype).eps) * max(abs(start), abs(target)))
    return max(tol, 1e-4) if kind == "prob" else tol


def reverse_stress(
    scenario: Scenario | str,
    target_metric: str,
    target_value: float,
    drivers: Sequence[str],
    n_paths: int = 4096,
    seed: int = 0,
    steps: int = 200,
    *,
    lr: float = 0.02,
    rho: float = 10.0,
    dual_every: int = 10,
    tol: float | None = None,
    fresh_seed: int | None = None,
    fresh_paths: int | None = None,
    width: float = 0.05,
    dtype=jnp.float32,
    overrides: Sequence[str] = (),
    callback: Callable[[dict], None] | None = None,
) -> dict:
    """Smallest change of `drivers` (in units of their scale) that moves `target_metric` to `target_value`.

    Args:
        scenario: a loaded Scenario, or a shipped name / TOML path (then `overrides` are applied).
        target_metric: a differentiable metric (`_sensitivities.parse_metric`): `y10_change_bp_mean`,
            `prob_y10_above_5pct`, `portfolio_loss_es_99`, ...
        drivers: config keys as --set takes them; `regimes.generator[i][j]` entries are allowed.
        n_paths, seed: the fixed paths of the optimisation (common random numbers).
        steps: at most this many gradient steps (Adam, learning rate `lr` with cosine decay).
        tol: accepted |metric - target| on the optimisation paths (default `target_tolerance`: 1% of the initial
            gap, at least what the dtype resolves; for a probability at least 1e-4).
        fresh_seed, fresh_paths: the re-estimate (default seed + 1 and 2 x n_paths).
        n_paths is rounded up to whole blocks of 256.
        width: smoothing width of probability metrics (percent), as in `sensitivities`.

    Returns a dict: `solution` (driver -> new value), `overrides` (the --set strings, with implied generator
    diagonals), `change_in_scales` (driver -> (new - old) / scale) and `distance` (Euclidean norm of those),
    `achieved` ({"value", "stderr"} on fresh paths), `fit_value` (metric on the optimisation paths) and
    `fit_stderr` (its Monte Carlo standard error, scaled from the fresh paths' spread), `target`,
    `start` (metric and drivers before), `reached`, `at_bound` (the drivers the solution holds at a bound),
    `evaluations` (gradient evaluations, the start's included), `history` (list of {iteration, metric, distance,
    drivers}),
    `drivers` (start value, scale, unit, bounds of each) and timings.
    """
    t_start = time.perf_counter()
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, overrides)
    spec = parse_metric(target_metric)
    try:
        target = float(target_value)
    except (TypeError, ValueError):
        raise ConfigError(f"target value '{target_value}' is not a number", key="--target") from None
    if not math.isfinite(target):
        raise ConfigError(f"target value must be finite, got {target_value}", key="--target")
    if spec.kind == "prob" and not 0.0 < target < 1.0:
        raise ConfigError(f"a probability target must be strictly between 0 and 1, got {target}", key="--target")
    if n_paths < 1 or steps < 1:
        raise ConfigError("paths and steps must be >= 1")
    drv = resolve_drivers(sc, list(drivers))
    names = [d.name for d in drv]
    params = sc.params(dtype)
    slots = tuple(d.slot for d in drv)
    x0 = np.array([d.x0 for d in drv])
    scale = np.array([d.scale for d in drv])
    lo_u = (np.array([d.lo for d in drv]) - x0) / scale
    hi_u = (np.array([d.hi for d in drv]) - x0) / scale
    fresh_seed = seed + 1 if fresh_seed is None else fresh_seed
    fresh_paths = 2 * n_paths if fresh_paths is None else fresh_paths

    n_blocks = -(-n_paths // BLOCK)

    def evaluate(u):
        x = x0 + scale * u
        m, g = _metric_and_grad(jnp.asarray(x, dtype), params, slots, target_metric, n_blocks * BLOCK, seed, width)
        m, g = float(m), np.asarray(g, np.float64) * scale  # d metric / d u
        if not (math.isfinite(m) and np.all(np.isfinite(g))):
            at = ", ".join(f"{n} = {float(v):.6g}" for n, v in zip(names, x))
            raise SimulationError(f"{target_metric} = {m:.6g} or its gradient is not finite at {at} on the paths "
                                  f"of seed {seed}: " + EXPLODES)
        return m, g

    history: list[dict] = []

    def record(u, m, phase):
        history.append({"iteration": len(history), "phase": phase, "metric": m,
                        "distance": float(np.linalg.norm(u)),
                        "drivers": {d.name: float(xv) for d, xv in zip(drv, x0 + scale * u)}})
        if callback:
            callback(history[-1])

    tc = time.perf_counter()
    m0, grad0 = evaluate(np.zeros(len(drv)))
    compile_s = time.perf_counter() - tc
    record(np.zeros(len(drv)), m0, "start")
    gap0 = m0 - target
    tol = target_tolerance(m0, target, spec.kind, dtype) if tol is None else float(tol)
    if spec.kind == "prob":
        tol = max(tol, 1e-4)
    if abs(gap0) <= tol:
        best_u, m_best, reached = np.zeros(len(drv)), m0, True
    else:
        if not float(np.linalg.norm(grad0)) > 0.0 or not np.all(np.isfinite(grad0)):
            raise ConfigError(
                f"{target_metric} does not respond to {', '.join(drivers)} at the start ({target_metric} = {m0:.6g}, "
                "gradient 0 on these paths); choose other drivers, or for a probability more paths or a larger "
                "smoothing width", key="--drivers")
        best_u, m_best, reached = _solve(evaluate, record, m0, grad0, target, tol, lo_u, hi_u, steps, lr, rho,
                                         dual_every)
    x_best = x0 + scale * best_u
    ovs = override_strings(sc, drv, x_best)
    solution = {d.name: _round(float(v), d) for d, v in zip(drv, x_best)}
    u_final = (np.array(list(solution.values())) - x0) / scale
    at_bound = [d.name for d, x in zip(drv, solution.values()) if x <= d.lo or x >= d.hi]
    t_fit = time.perf_counter() - t_start

    # re-estimate on fresh paths with the solution as --set overrides (validates the solution as a config)
    t1 = time.perf_counter()
    solved = with_overrides(sc, ovs)
    achieved = fresh_estimate(solved, target_metric, fresh_paths, fresh_seed, dtype)
    t_fresh = time.perf_counter() - t1
    fit_se = achieved["stderr"] * math.sqrt(achieved["n_paths"] / (n_blocks * BLOCK))
    return {
        "scenario": sc.name,
        "target": {"metric": target_metric, "value": target, "tol": tol},
        "start": {"metric": m0, "drivers": {d.name: d.x0 for d in drv}},
        "solution": solution,
        "overrides": ovs,
        "change_in_scales": {d.name: float(c) for d, c in zip(drv, u_final)},
        "distance": float(np.linalg.norm(u_final)),
        "reached": bool(reached),
        # the drivers the solution holds at a bound, and the gradient evaluations used (of `steps`, plus the start)
        "at_bound": at_bound,
        "evaluations": len(history),
        "fit_value": m_best,
        # standard error of fit_value (the optimisation paths' own Monte Carlo error), from the fresh paths' spread
        "fit_stderr": fit_se,
        "achieved": achieved,
        # the fresh estimate's distance from the fit, in standard errors of their difference (independent paths):
        # large where the optimisation paths' own noise was fitted
        "fresh_z": _fresh_z(achieved["value"], m_best, achieved["stderr"], fit_se),
        # regime intensities whose draws are too rare on the optimisation paths for their gradient (at the start)
        "notes": rare_draw_notes(params, [(d.name, d.leaf, d.index) for d in drv], n_blocks * BLOCK),
        "drivers": {d.name: {"start": d.x0, "scale": d.scale, "unit": d.unit,
                             "lo": d.lo if math.isfinite(d.lo) else None,
                             "hi": d.hi if math.isfinite(d.hi) else None} for d in drv},
        "settings": {"paths": n_blocks * BLOCK, "seed": seed, "steps": steps, "lr": lr, "rho": rho, "width": width,
                     "fresh_paths": fresh_paths, "fresh_seed": fresh_seed,
                     "dtype": str(jnp.dtype(dtype)), "horizon_steps": params.n_steps},
        "history": history,
        "timing_s": {"first_gradient_incl_compile": compile_s, "optimisation": t_fit, "fresh_estimate": t_fresh},
    }
