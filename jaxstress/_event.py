"""Event-window calibration: fit shock sizes so the simulated moves over a window match the observed ones.

For a window [start, end] of the shipped daily data (e.g. 2025-04-02..2025-04-11) the observed changes are the
differences between the last and the first observation in the window, in bp, of

    y2: DGS2, y10: DGS10, y30: DGS30 (ust_cmt_yields_daily_fred.csv), breakeven: T10YIE
    (us_inflation_breakevens_daily_fred.csv), term_premium: ACMTP10 (acm_tp10_daily_nyfed.csv).

The window has n business days: n + 1 rows of DGS10 from start to end (t = 0 is the close of the first day). The
scenario is simulated over exactly n daily steps (`horizon = n / 252`, `steps_per_year = 252`), and the fit
minimises, by Adam (optax) through the simulator,

    sum_targets ((simulated mean change - observed change) / scale)^2  +  prior_weight * sum_params u^2,
    u = (theta - theta0) / prior_scale,

Choices, stated:
- Par vs zero yields: the model's yields are zero yields, the CMT data par yields. The fit compares *changes*
  (the `*_change_bp` metrics against the change of the CMT series), without converting: par and zero changes
  differ by a few percent of the move (the par yield averages the zero curve's move over the coupon dates). On
  the 2 April 2025 curve a +35bp term-premium move lifts the 2y/10y/30y zero yields 15.3/35.0/41.6bp and the par
  yields 15.4/34.1/39.1bp: 1bp at 10y and 2.5bp at 30y, against a per-path sd of ~30bp over the window.
- Standardisation `scale`: a fixed 10bp for every target by default (so the loss reads as squared 10bp misses,
  and every target counts the same per bp); `scale="sd"` uses instead the simulated standard deviation of each
  change at the starting parameters, held fixed during the fit (a z-score of the one observed window).
- Prior: `prior_scale` per parameter defaults to max(2 |theta0|, 20 natural units) for the regime's shock sizes
  (doubling a shock costs a quarter of one 10bp miss) and to max(|theta0| / 2, 2 natural units) for structural
  parameters shared by every regime and scenario (basis_funds.haircut_vol, impact.lambda0): one window should
  only nudge those. With equal priors, the cheapest way to raise the *mean* 10y change is to push the basis funds
  over their margin threshold in a quarter of the paths (haircut_vol 0.4 -> 0.85 in April 2025): the mean then
  matches through a fat right tail (10y q95 +150bp over 7 days) while the median does not move, which a single
  observed window cannot support. The prior also keeps parameters the window does not identify (the term
  premium target over 7 days, the several channels that all raise the term premium) near the scenario's values.
- Bounds: the fit runs in the standardised coordinates u, and after each Adam step u is projected so that theta
  stays within the schema bounds (projected gradient descent).
- Common random numbers: the paths (seed) and their draws are the same at every iteration; the means carry the
  score-function term of the discrete draws (`_sensitivities._score`), so jump intensities and generator entries
  can be fitted too. One jitted loss-and-gradient function differentiates the union of the default parameters
  and the requested ones, so fits of any subset of them (and their tables) share one compilation.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import pathlib
import shlex
import time
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _data
from ._config import Scenario, _fmt, configs_dir, load_scenario, parse_key, parse_value, resolve_path, validate
from ._errors import ConfigError, DataError, SimulationError
from ._output import atomic_file
from ._reverse import Driver, finite_block_draws, resolve_drivers, set_values
from ._schema import SECTIONS
from ._sensitivities import _score, rare_draw_notes
from ._simulate import BLOCK, METRIC_NAMES, horizon_metrics, seed_key

STEPS_PER_YEAR = 252

# target -> (per-path metric, data file, column)
TARGETS: dict[str, tuple[str, str, str]] = {
    "y2": ("y2_change_bp", _data.CMT_FILE, "DGS2"),
    "y10": ("y10_change_bp", _data.CMT_FILE, "DGS10"),
    "y30": ("y30_change_bp", _data.CMT_FILE, "DGS30"),
    "breakeven": ("breakeven_10y_change_bp", _data.BREAKEVEN_FILE, "T10YIE"),
    "term_premium": ("term_premium_10y_change_bp", _data.TERM_PREMIUM_FILE, "ACMTP10"),
}
_METRIC_IDX = tuple(METRIC_NAMES.index(TARGETS[t][0]) for t in TARGETS)
# A simulated mean change beyond this (bp: a yield moving by 100 percentage points over the window) is a simulation
# that diverged, not a market move: the fit refuses to start from it or to write it.
DIVERGED_BP = 1e4
_DIVERGED_HINT = ("the simulation diverged under these parameters (e.g. price impact feeding on itself: a large "
                  "impact.lambda0 with a small dealers.capacity or impact.depth, or huge shock sizes): undo or soften "
                  "the --set changes (or the base's values) that cause it")
REGIME_PARAMS = ("tau_shift", "jump_tau_mean", "jump_pi_mean", "pi_shift", "foreign_selling")
GLOBAL_PARAMS = ("basis_funds.haircut_vol", "impact.lambda0")


def default_params_to_fit(scenario: Scenario) -> list[str]:
    """The initial regime's shock sizes and the two amplifiers of flows into the term premium."""
    reg = scenario.config["regimes"]["initial"]
    return [f"regimes.{reg}.{f}" for f in REGIME_PARAMS] + list(GLOBAL_PARAMS)


def default_prior_scale(d: Driver) -> float:
    """Wide for a regime's shock sizes (what one event window is about): max(2 |theta0|, 20 natural units);
    narrower for structural parameters shared by all regimes (haircut_vol, lambda0, ...): max(|theta0| / 2,
    2 natural units)."""
    if d.leaf.startswith("regimes.") and d.leaf.count(".") == 2:
        return max(2.0 * abs(d.x0), 20.0 * d.scale)
    return max(0.5 * abs(d.x0), 2.0 * d.scale)


def parse_targets(targets: str | Sequence[str] | None) -> tuple[str, ...]:
    if targets is None:
        return tuple(TARGETS)
    items = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    if not items:
        raise ConfigError(f"no target given: give at least one of {', '.join(TARGETS)} (comma-separated)",
                          key="--targets")
    bad = [t for t in items if t not in TARGETS]
    if bad:
        raise ConfigError(f"unknown target(s) {', '.join(bad)}: choose from {', '.join(TARGETS)}", key="--targets")
    if len(set(items)) != len(items):
        raise ConfigError("targets repeated", key="--targets")
    return tuple(items)


# ----------------------------------------------------------------------------------------------------------------
# observed changes


@dataclasses.dataclass(frozen=True)
class Window:
    first: str  # first data date in the window (t = 0)
    last: str  # last data date (day n)
    n_days: int  # business days = rows of DGS10 in the window - 1

    @property
    def label(self) -> str:
        return f"{self.first}..{self.last}"


def _column_dates(file: str, col: str, data_dir=None) -> np.ndarray:
    """The dates with a value of one column of a data file (whole file)."""
    d, v = _data.load_series(file, col, None, None, data_dir, min_rows=0)
    return d[~np.isnan(v)]


def _data_range(file: str, col: str, data_dir=None) -> str:
    """'the data cover FIRST..LAST' of one column of a data file (for messages about a window without data)."""
    d = _column_dates(file, col, data_dir)
    return f"the data cover {d[0]}..{d[-1]}" if len(d) else "the column has no data"


def _outside(start, end, dates: np.ndarray) -> str:
    """'' if [start, end] lies within dates[0]..dates[-1], else what sticks out ('starts before ...')."""
    lo, hi = np.datetime64(start, "D"), np.datetime64(end, "D")
    why = []
    if lo < dates[0]:
        why.append(f"starts before the first date of the data ({dates[0]})")
    if hi > dates[-1]:
        why.append(f"ends after the last date of the data ({dates[-1]})")
    return " and ".join(why)


def event_window(start, end, data_dir=None) -> Window:
    """The business days of [start, end] in the CMT data (DGS10 rows); at least two rows, and the window within
    the data's dates (a window reaching past them would be fitted to the days that happen to exist)."""
    all_days = _column_dates(_data.CMT_FILE, "DGS10", data_dir)
    lo, hi = np.datetime64(start, "D"), np.datetime64(end, "D")
    d = all_days[(all_days >= lo) & (all_days <= hi)]
    if len(d) < 2:
        raise DataError(f"the window {start}..{end} has {len(d)} day(s) of DGS10 data ("
                        f"{_data_range(_data.CMT_FILE, 'DGS10', data_dir)}); an event window needs at least two (a "
                        "start and an end date): choose a --window inside the data, or a --data folder whose files "
                        "cover it", file=_data.CMT_FILE, key="DGS10")
    why = _outside(start, end, all_days)
    if why:
        raise DataError(f"the window {start}..{end} {why}: the data cover {all_days[0]}..{all_days[-1]}, so the fit "
                        f"would see only {len(d)} of its dates ({d[0]}..{d[-1]}); choose a --window inside the "
                        "data, or a --data folder whose files cover it", file=_data.CMT_FILE, key="DGS10")
    return Window(str(d[0]), str(d[-1]), len(d) - 1)


def observed_changes(window: Window, targets: Sequence[str], data_dir=None) -> tuple[dict, dict]:
    """Observed change (bp) of each target over the window, and where each number came from."""
    obs, detail = {}, {}
    for t in targets:
        _, file, col = TARGETS[t]
        d, v = _data.load_series(file, col, window.first, window.last, data_dir, min_rows=0)
        ok = ~np.isnan(v)
        d, v = d[ok], v[ok]
        if len(d) < 2:
            raise DataError(f"fewer than two observations in {window.label} ({_data_range(file, col, data_dir)}); "
                            f"drop '{t}' from --targets or choose a window inside the data", file=file, key=col)
        cover = _column_dates(file, col, data_dir)
        why = _outside(window.first, window.last, cover)
        if why:
            raise DataError(f"the window {window.label} {why} (the data cover {cover[0]}..{cover[-1]}): its change "
                            f"would be measured over {d[0]}..{d[-1]} only; drop '{t}' from --targets or choose a "
                            "--window inside the data", file=file, key=col)
        obs[t] = float((v[-1] - v[0]) * 100.0)
        detail[t] = {"file": file, "column": col, "from": str(d[0]), "to": str(d[-1]), "start_pct": float(v[0]),
                     "end_pct": float(v[-1])}
    return obs, detail


def sources_text(targets: Sequence[str], data_prefix: str = "data/") -> str:
    """'data/ust_cmt_yields_daily_fred.csv DGS2/DGS10, data/...' for the targets' files and columns."""
    by_file: dict[str, list[str]] = {}
    for t in targets:
        _, file, col = TARGETS[t]
        by_file.setdefault(file, []).append(col)
    return ", ".join(f"{data_prefix}{f} {'/'.join(c)}" for f, c in by_file.items())


# ----------------------------------------------------------------------------------------------------------------
# the jitted loss and gradient


@eqx.filter_jit
def _loss_and_grad(theta, params, slots, key, n_blocks: int, observed, weights, scale):
    """Data loss sum w ((mean - observed) / scale)^2 over the five change metrics, its gradient w.r.t. theta (the
    values at `slots`), and the per-target means and standard deviations (bp) on these paths."""

    def loss(theta):
        p = set_values(params, slots, theta)
        metrics, state = horizon_metrics(p, n_blocks * BLOCK, finite_block_draws(key, n_blocks, theta.dtype))
        vals = metrics[jnp.asarray(_METRIC_IDX)]
        means = jax.vmap(lambda f: jnp.mean(_score(f, state.logp)))(vals)
        sds = jnp.std(jax.lax.stop_gradient(vals), axis=1)
        return jnp.sum(weights * ((means - observed) / scale) ** 2), (means, sds)

    return jax.value_and_grad(loss, has_aux=True)(theta)


class _Model:
    """The scenario at the window's horizon, with the fitted slots and a jitted evaluator."""

    def __init__(self, scenario: Scenario, names: Sequence[str], n_paths: int, dtype):
        self.scenario = scenario
        core = list(dict.fromkeys(default_params_to_fit(scenario) + list(names)))
        self.drivers: list[Driver] = resolve_drivers(scenario, core, what="params_to_fit")
        self.fit_idx = np.array([core.index(n) for n in names], dtype=int)
        self.slots = tuple(d.slot for d in self.drivers)
        self.params = scenario.params(dtype)
        self.dtype = dtype
        self.n_blocks = -(-n_paths // BLOCK)
        self.x0 = np.array([d.x0 for d in self.drivers])

    def __call__(self, x_fit, seed, observed, weights, scale):
        x = self.x0.copy()
        x[self.fit_idx] = x_fit
        key = seed_key(seed)
        (loss, (means, sds)), g = _loss_and_grad(
            jnp.asarray(x, self.dtype), self.params, self.slots, key, self.n_blocks,
            jnp.asarray(observed, self.dtype), jnp.asarray(weights, self.dtype), jnp.asarray(scale, self.dtype))
        return float(loss), np.asarray(means, np.float64), np.asarray(sds, np.float64), \
            np.asarray(g, np.float64)[self.fit_idx]


def window_scenario(scenario: Scenario | str, n_days: int, overrides: Sequence[str] = ()) -> Scenario:
    """The scenario with a horizon of exactly n_days daily steps."""
    horizon = n_days / STEPS_PER_YEAR
    if isinstance(scenario, Scenario):
        raw = copy.deepcopy(scenario.config)
        raw["simulation"]["horizon"] = horizon
        raw["simulation"]["steps_per_year"] = STEPS_PER_YEAR
        sc = Scenario(validate(raw, scenario.file), scenario.file, scenario.portfolio, scenario.portfolio_file)
        if overrides:
            from ._reverse import with_overrides

            sc = with_overrides(sc, overrides)
        return sc
    return load_scenario(scenario, overrides, horizon=horizon, steps_per_year=STEPS_PER_YEAR)


def simulated_changes(scenario: Scenario | str, n_days: int, n_paths: int = 2048, seed: int = 0,
                      overrides: Sequence[str] = (), dtype=jnp.float32) -> dict[str, dict[str, float]]:
    """Simulated mean, sd and standard error (bp) of each target's change over n_days daily steps."""
    sc = window_scenario(scenario, n_days, overrides)
    model = _Model(sc, [], n_paths, dtype)
    k = len(TARGETS)
    _, means, sds, _ = model(np.zeros(0), seed, np.zeros(k), np.zeros(k), np.ones(k))
    n = model.n_blocks * BLOCK
    return {t: {"mean": float(means[i]), "sd": float(sds[i]), "stderr": float(sds[i] / math.sqrt(n))}
            for i, t in enumerate(TARGETS)}


# ----------------------------------------------------------------------------------------------------------------
# the fit


@dataclasses.dataclass
class EventFit:
    """Result of `fit_event`. Changes are in bp; `fitted`/`initial` map dotted config keys to values."""

    base: str
    scenario: str
    window: Window
    targets: tuple[str, ...]
    observed: dict[str, float]
    observed_detail: dict[str, dict]
    before: dict[str, dict[str, float]]  # target -> {"mean", "sd"} at the starting values, fit paths
    after: dict[str, dict[str, float]]  # at the fitted values, fit paths
    after_fresh: dict[str, dict[str, float]]  # at the fitted values, fresh paths (seed + 1)
    initial: dict[str, float]
    fitted: dict[str, float]
    prior_scale: dict[str, float]
    scale: dict[str, float]
    scale_mode: str
    loss_history: list[float]
    data_loss_before: float
    data_loss_after: float
    n_paths: int
    seed: int
    steps: int
    lr: float
    prior_weight: float
    sources: str
    wall_s: float = 0.0
    compile_s: float = 0.0
    # fitted regime intensities whose draws are too rare on the fit's paths for their gradient (`rare_draw_note`)
    notes: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def loss_before(self) -> float:
        return self.loss_history[0]

    @property
    def loss_after(self) -> float:
        return self.loss_history[-1]

    def table(self) -> str:
        """Observed vs simulated mean changes (bp) before and after, and the fitted parameters."""
        lines = [f"{self.scenario}: window {self.window.label} ({self.window.n_days} business days), "
                 f"{self.n_paths} paths, seed {self.seed}",
                 f"{'target':14s} {'observed':>9s} {'before':>9s} {'after':>9s} {'fresh':>9s} {'sd':>7s}  (bp)"]
        for t in TARGETS:
            if t not in self.after:
                continue
            mark = "" if t in self.targets else "  (not fitted)"
            obs = f"{self.observed[t]:9.1f}" if t in self.observed else f"{'-':>9s}"
            lines.append(f"{t:14s} {obs} {self.before[t]['mean']:9.1f} {self.after[t]['mean']:9.1f} "
                         f"{self.after_fresh[t]['mean']:9.1f} {self.after[t]['sd']:7.1f}{mark}")
        lines.append(f"loss {self.loss_before:.4g} -> {self.loss_after:.4g} (data part {self.data_loss_before:.4g} "
                     f"-> {self.data_loss_after:.4g}; scale {self.scale_mode}), {self.steps} steps, "
                     f"{self.wall_s:.1f} s")
        lines.append(f"{'parameter':40s} {'start':>12s} {'fitted':>12s} {'prior scale':>12s}")
        for k, v in self.fitted.items():
            lines.append(f"{k:40s} {self.initial[k]:12.6g} {v:12.6g} {self.prior_scale[k]:12.4g}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["window"] = dataclasses.asdict(self.window)
        return out


def fit_event(
    scenario: Scenario | str,
    start,
    end,
    targets: str | Sequence[str] | None = None,
    params_to_fit: Sequence[str] | None = None,
    n_paths: int = 2048,
    steps: int = 150,
    seed: int = 0,
    lr: float = 0.05,
    *,
    observed: Mapping[str, float] | None = None,
    scale: float | str = 10.0,
    prior_scale: Mapping[str, float] | None = None,
    prior_weight: float = 1.0,
    overrides: Sequence[str] = (),
    data_dir=None,
    dtype=jnp.float32,
    callback: Callable[[int, float], None] | None = None,
) -> EventFit:
    """Fit shock parameters of `scenario` to the observed changes over the data window [start, end].

    Args:
        scenario: shipped name, TOML path or a loaded Scenario (its horizon is replaced by the window's).
        start, end: window bounds (ISO dates); the window is the CMT business days between them.
        targets: subset of y2, y10, y30, breakeven, term_premium (default all).
        params_to_fit: dotted config keys (default `default_params_to_fit`: the initial regime's tau_shift,
            jump_tau_mean, jump_pi_mean, pi_shift, foreign_selling, basis_funds.haircut_vol, impact.lambda0).
        n_paths, seed: the fixed paths (common random numbers); steps, lr: Adam iterations and learning rate
            (in prior-scale units per step).
        observed: target -> observed change in bp, bypassing the data (the window still sets the horizon).
        scale: 10.0 (bp, default) or another number, or "sd" (simulated sd at the start, held fixed).
        prior_scale: per-parameter overrides of the prior scale; prior_weight multiplies the prior term.
    """
    t_start = time.perf_counter()
    tg = parse_targets(targets)
    window = event_window(start, end, data_dir)
    if observed is None:
        obs, detail = observed_changes(window, tg, data_dir)
    else:
        missing = [t for t in tg if t not in observed]
        if missing:
            raise ConfigError(f"observed= lacks target(s) {', '.join(missing)}")
        obs = {t: float(observed[t]) for t in tg}
        bad = [f"{t} = {v}" for t, v in obs.items() if not math.isfinite(v)]
        if bad:
            raise ConfigError(f"observed changes must be finite numbers of bp, got {', '.join(bad)}")
        detail = {t: {"file": "(given)", "column": t} for t in tg}
    base = scenario.file or scenario.name if isinstance(scenario, Scenario) else str(scenario)
    sc = window_scenario(scenario, window.n_days, overrides)
    names = list(dict.fromkeys(params_to_fit or default_params_to_fit(sc)))
    if steps < 0 or n_paths < 1:
        raise ConfigError("steps must be >= 0 and paths >= 1")
    model = _Model(sc, names, n_paths, dtype)
    n_used = model.n_blocks * BLOCK
    drivers = [model.drivers[i] for i in model.fit_idx]
    x0 = np.array([d.x0 for d in drivers])
    ps = {d.name: default_prior_scale(d) for d in drivers}
    for k, v in (prior_scale or {}).items():
        if k not in ps:
            raise ConfigError(f"prior_scale given for '{k}', which is not fitted ({', '.join(ps)})")
        if not v > 0:
            raise ConfigError(f"prior_scale of '{k}' must be > 0, got {v}")
        ps[k] = float(v)
    pscale = np.array([ps[d.name] for d in drivers])
    lo_u = (np.array([d.lo for d in drivers]) - x0) / pscale
    hi_u = (np.array([d.hi for d in drivers]) - x0) / pscale

    k = len(TARGETS)
    o = np.array([obs.get(t, 0.0) for t in TARGETS])
    w = np.array([1.0 if t in tg else 0.0 for t in TARGETS])
    tc = time.perf_counter()
    _, means0, sds0, _ = model(x0, seed, o, w, np.ones(k))
    compile_s = time.perf_counter() - tc
    _check_means(means0, sds0, f"at the starting values ({_at(drivers, x0)})", window, n_used, seed)
    if scale == "sd":
        s = np.maximum(sds0, 1e-3)
        scale_mode = "simulated sd at the start (held fixed)"
    else:
        try:
            s = np.full(k, float(scale))
        except (TypeError, ValueError):
            raise ConfigError(f"scale must be a number of bp or 'sd', got {scale!r}") from None
        if not s[0] > 0:
            raise ConfigError(f"scale must be > 0, got {scale}")
        scale_mode = f"{float(scale):g}bp"

    opt = optax.adam(lr)
    update = jax.jit(opt.update)
    u = np.zeros(len(drivers))
    state = opt.init(jnp.zeros(len(drivers), jnp.float32))
    history = []
    data_loss0 = None
    for it in range(steps + 1):
        x = x0 + pscale * u
        dl, means, sds, g = model(x, seed, o, w, s)
        loss = dl + prior_weight * float(u @ u)
        if not (math.isfinite(loss) and np.all(np.isfinite(g))):
            _check_means(means, sds, f"at Adam step {it} of {steps} ({_at(drivers, x)})", window, n_used, seed)
            what = "the loss" if not math.isfinite(loss) else "its gradient"
            if it == 0 and not math.isfinite(loss):
                raise SimulationError(
                    f"the loss at the starting values is not finite ({loss:.6g}) although the simulated mean changes "
                    f"are ({_means_text(means, tg)} bp, against observed {_means_text(o, tg)} bp, scale "
                    f"{_means_text(s, tg)} bp): the observed changes are too far off to fit; check the data of the "
                    "window (or the observed changes given) and --scale; nothing is written")
            if it == 0:
                raise SimulationError(f"the gradient of the loss at the starting values is not finite "
                                      f"({_at(drivers, x)}): {_DIVERGED_HINT}; nothing is written")
            raise SimulationError(
                f"{what} became non-finite at Adam step {it} of {steps} (loss {loss:.6g}; {_at(drivers, x)}; it was "
                f"{history[-1]:.6g} at step {it - 1}): the steps took the parameters where the simulation diverges; "
                f"use a smaller --lr (now {lr:g}) or a larger --prior-weight (now {prior_weight:g}), leave the "
                "parameter that runs off out of --params, or soften the --set changes; nothing is written")
        history.append(loss)
        if data_loss0 is None:
            data_loss0 = dl
        if callback:
            callback(it, loss)
        if it == steps:
            break
        grad = g * pscale + 2.0 * prior_weight * u
        upd, state = update(jnp.asarray(grad, jnp.float32), state)
        u = np.clip(u + np.asarray(upd, np.float64), lo_u, hi_u)
    x_fit = x0 + pscale * u
    if not np.all(np.isfinite(x_fit)):
        raise SimulationError(f"the fitted values are not finite ({_at(drivers, x_fit)}) after {steps} Adam steps: "
                              f"use a smaller --lr (now {lr:g}); nothing is written")
    fitted = {d.name: _clean(float(v), d) for d, v in zip(drivers, x_fit)}
    x_clean = np.array(list(fitted.values()))
    data_loss1, means1, sds1, _ = model(x_clean, seed, o, w, s)
    _check_means(means1, sds1, f"at the fitted values ({_at(drivers, x_clean)})", window, n_used, seed)
    _, means_f, sds_f, _ = model(x_clean, seed + 1, o, w, s)
    _check_means(means_f, sds_f, f"at the fitted values ({_at(drivers, x_clean)})", window, n_used, seed + 1)
    if not math.isfinite(data_loss1):
        raise SimulationError(f"the loss at the fitted values is not finite ({data_loss1:.6g}; "
                              f"{_at(drivers, x_clean)}): " + _DIVERGED_HINT + "; nothing is written")

    def tab(m, sd):
        return {t: {"mean": float(m[i]), "sd": float(sd[i])} for i, t in enumerate(TARGETS)}

    return EventFit(
        base=base, scenario=sc.name, window=window, targets=tg, observed=obs, observed_detail=detail,
        before=tab(means0, sds0), after=tab(means1, sds1), after_fresh=tab(means_f, sds_f),
        initial={d.name: d.x0 for d in drivers}, fitted=fitted, prior_scale=ps,
        scale={t: float(s[i]) for i, t in enumerate(TARGETS) if t in tg}, scale_mode=scale_mode,
        loss_history=history, data_loss_before=float(data_loss0), data_loss_after=float(data_loss1),
        n_paths=model.n_blocks * BLOCK, seed=seed, steps=steps, lr=lr, prior_weight=prior_weight,
        sources=sources_text(tg) if observed is None else "given observations",
        wall_s=time.perf_counter() - t_start, compile_s=compile_s,
        notes=rare_draw_notes(model.params, [(d.name, d.leaf, d.index) for d in drivers], model.n_blocks * BLOCK))


def _at(drivers: Sequence[Driver], x) -> str:
    return ", ".join(f"{d.name} = {float(v):.6g}" for d, v in zip(drivers, x))


def _means_text(values, targets: Sequence[str]) -> str:
    return ", ".join(f"{t} {float(values[i]):.6g}" for i, t in enumerate(TARGETS) if t in targets)


def _check_means(means, sds, where: str, window: Window, n_paths: int, seed: int) -> None:
    """SimulationError if a simulated mean change (or sd) is not finite or beyond DIVERGED_BP: a simulation that
    diverged, from which no fit is made and nothing is written."""
    bad = [f"{t} {float(means[i]):.6g}" for i, t in enumerate(TARGETS)
           if not (math.isfinite(means[i]) and math.isfinite(sds[i]) and abs(means[i]) <= DIVERGED_BP)]
    if bad:
        raise SimulationError(
            f"the simulated mean changes over {window.label} {where} are not finite or beyond {DIVERGED_BP:g} bp "
            f"({', '.join(bad)} bp; {n_paths} paths, seed {seed}): {_DIVERGED_HINT}; nothing is written")


def _clean(v: float, d: Driver) -> float:
    """8 significant digits, inside the bounds."""
    r = float(f"{v:.8g}")
    return r if d.lo <= r <= d.hi else min(max(v, d.lo), d.hi)


# ----------------------------------------------------------------------------------------------------------------
# writing a scenario file that extends the base and overrides the fitted keys


def _extends_value(base: str, out_path: pathlib.Path) -> str:
    """How the written file names its base: a shipped name as it is, a file by a path relative to the output."""
    path = resolve_path(base)
    if path.resolve().parent == configs_dir().resolve() and not base.endswith(".toml") and "/" not in base:
        return path.stem
    try:
        return os.path.relpath(path.resolve(), out_path.resolve().parent)
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def write_override_toml(base: str, entries: Sequence[tuple[str, object, str]], out_path, header: Sequence[str] = (),
                        table_comments: Mapping[str, Sequence[str]] | None = None) -> pathlib.Path:
    """Write a scenario TOML that `extends` base and sets `entries` (dotted key, value, comment), atomically.

    Keys with an index (`regimes.generator[1][3]`) set that entry of the base's list or matrix (for generator
    entries the row's diagonal follows). `table_comments` adds comment lines at the top of a table (which may
    then hold no keys). The file is written to a temporary file beside the target, loaded with `load_scenario`
    (so a file that does not validate is never written), then renamed into place.
    """
    out_path = pathlib.Path(out_path)
    if out_path.suffix != ".toml":
        raise ConfigError("the output must be a .toml file", file=str(out_path))
    base_cfg = None
    tables: dict[str, list[tuple[str, object, str]]] = {}
    indexed: dict[str, list] = {}
    for key, value, comment in entries:
        parts = parse_key(key)
        strs = [p for p in parts if isinstance(p, str)]
        idx = [p for p in parts if isinstance(p, int)]
        leaf = ".".join(strs)
        if idx:
            if base_cfg is None:
                base_cfg = load_scenario(base).config
            if leaf not in indexed:
                node = base_cfg
                for p in strs:
                    node = node[p]
                indexed[leaf] = copy.deepcopy(node)
            arr = indexed[leaf]
            node = arr
            for i in idx[:-1]:
                node = node[i]
            node[idx[-1]] = value
            if leaf == "regimes.generator":
                row = arr[idx[0]]
                row[idx[0]] = -sum(x for j, x in enumerate(row) if j != idx[0])
            tables.setdefault(".".join(strs[:-1]), []).append((strs[-1], None, f"{key}: {comment}"))
            continue
        tables.setdefault(".".join(strs[:-1]), []).append((strs[-1], value, comment))
    for leaf, arr in indexed.items():
        strs = leaf.split(".")
        tab = tables[".".join(strs[:-1])]
        notes = [c for k, v, c in tab if k == strs[-1] and v is None]
        tab[:] = [e for e in tab if not (e[0] == strs[-1] and e[1] is None)]
        tab.append((strs[-1], arr, "; ".join(dict.fromkeys(notes))))
    for t in table_comments or {}:
        tables.setdefault(t, [])
    lines = [f"# {h}" if h else "#" for h in header]
    lines.append(f"extends = {_fmt(_extends_value(base, out_path))}")
    lines.append("")
    known = list(SECTIONS)
    order = sorted(tables, key=lambda t: (known.index(t.split(".")[0]) if t.split(".")[0] in known else len(known), t))
    for t in order:
        lines.append(f"[{t}]")
        for c in (table_comments or {}).get(t, ()):
            lines.append(f"# {c}")
        for key, value, comment in tables[t]:
            text = f"{key} = {_fmt(_plain(value))}"
            lines.append(f"{text}  # {comment}" if comment else text)
        lines.append("")
    text = "\n".join(lines)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path, suffix=".toml") as tmp:
        tmp.write_text(text)
        try:
            load_scenario(str(tmp))  # validate before it replaces anything
        except ConfigError as e:  # named as the file it would have been, not the temporary file (deleted)
            raise ConfigError(f"not written, the values would not make a valid scenario: "
                              f"{str(e).replace(str(tmp), str(out_path))}") from None
    return out_path


def _plain(v):
    """Python values for the TOML writer; floats to 10 significant digits (beyond float32 simulation precision)."""
    if isinstance(v, (np.ndarray, np.generic)):
        v = v.tolist()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.10g}")
    return v


def regenerate_command(fit: EventFit, base: str, out_path, overrides: Sequence[str] = (), data_dir=None) -> str:
    """The `jaxstress calibrate event` command line that makes `fit` again and writes it to `out_path`: every
    setting of the fit spelled out (the fitted keys as `--params`), so that it does not depend on defaults."""
    scale = "sd" if fit.scale_mode.startswith("simulated sd") else repr(float(fit.scale[fit.targets[0]]))
    argv = ["jaxstress", "calibrate", "event", "--base", str(base), "--window", f"{fit.window.first}:{fit.window.last}",
            "--targets", ",".join(fit.targets), "--params", ",".join(fit.fitted), "--paths", str(fit.n_paths),
            "--steps", str(fit.steps), "--seed", str(fit.seed), "--lr", repr(float(fit.lr)), "--scale", scale,
            "--prior-weight", repr(float(fit.prior_weight))]
    for ov in overrides:
        argv += ["--set", ov]
    if data_dir is not None:
        argv += ["--data", str(data_dir)]
    return shlex.join(argv + ["--out", str(out_path)])


def write_fitted_config(base_scenario_file_or_name: str, fitted: EventFit | Mapping[str, float], out_path,
                        window: str | Window | tuple | None = None, sources: str | None = None,
                        method: str = "jaxstress calibrate event", overrides: Sequence[str] = (),
                        data_dir=None) -> pathlib.Path:
    """Write a TOML that extends the base scenario and overrides the fitted keys, each with a comment naming the
    window, the data files and the method. `fitted` is an EventFit (window and sources are taken from it; the
    header then gives the command that makes the file again, `regenerate_command`) or a mapping of dotted keys to
    values; `overrides` are the `--set key=value` applied to the base when fitting (written too, so the file
    reproduces the fitted model); `data_dir` the `--data` folder of the fit, if not the package's. Written
    atomically and validated before it replaces anything."""
    out_path = pathlib.Path(out_path)
    header: list[str] = []
    if isinstance(fitted, EventFit):
        fit = fitted
        values = dict(fit.fitted)
        window = window or fit.window
        sources = sources or fit.sources
        header = [f"{out_path.stem}: {base_scenario_file_or_name} with its shock sizes fitted to the event window "
                  f"{fit.window.label} ({fit.window.n_days} business days)",
                  f"by {method}: {fit.n_paths} paths, seed {fit.seed}, {fit.steps} Adam steps (lr {fit.lr:g}), "
                  f"targets {', '.join(fit.targets)}, scale {fit.scale_mode}, prior weight {fit.prior_weight:g}.",
                  "Mean changes over the window, bp: observed / simulated before / after the fit on its own paths "
                  f"/ after the fit on {fit.n_paths} fresh paths (seed {fit.seed + 1}) +- standard error:"]
        for t in fit.targets:
            fresh = fit.after_fresh[t]
            header.append(f"  {t:13s} {fit.observed[t]:7.1f} / {fit.before[t]['mean']:7.1f} / "
                          f"{fit.after[t]['mean']:7.1f} / {fresh['mean']:7.1f} +- "
                          f"{fresh['sd'] / math.sqrt(fit.n_paths):.1f}")
        header.append("Regenerate: " + regenerate_command(fit, base_scenario_file_or_name, out_path, overrides,
                                                            data_dir))
    else:
        fit = None
        values = {k: float(v) for k, v in fitted.items()}
    if isinstance(window, Window):
        label = window.label
    elif isinstance(window, tuple):
        label = f"{window[0]}..{window[1]}"
    elif window:
        label = str(window)
    else:
        raise ConfigError("write_fitted_config needs the window the values were fitted to")
    src = f" ({sources})" if sources else ""
    comment = f"fit to {label}{src} by {method}"
    entries = [("scenario.name", out_path.stem, f"the base was {base_scenario_file_or_name}")]
    if fit is not None:
        entries += [(k, v, f"{comment}; was {fit.initial[k]:.6g}") for k, v in values.items()]
    else:
        entries += [(k, v, comment) for k, v in values.items()]
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"--set expects dotted.key=value, got '{ov}'")
        key, text = (t.strip() for t in ov.split("=", 1))
        if key not in values:
            entries = [e for e in entries if e[0] != key]  # a --set of a written key (e.g. scenario.name) wins
            entries.append((key, parse_value(text, key), "--set on the base when fitting"))
    return write_override_toml(base_scenario_file_or_name, entries, out_path, header)
