"""Command-line verbs for calibration and reverse stress tests.

    jaxstress calibrate history [--data DIR] [--start DATE --end DATE] --out FILE.toml [--seed S]
    jaxstress calibrate event --window 2025-04-02:2025-04-11 --base CONFIG --out FILE.toml [--targets ...]
    jaxstress reverse CONFIG_OR_NAME --target "prob_y10_above_5pct=0.5" --drivers a.b,c.d --out DIR

`add_parsers(subparsers)` adds the verbs to the main parser and returns {verb: handler}; a handler takes the
parsed namespace and returns an exit status. Bad input raises `ConfigError` (the main CLI prints one line and
exits 2) before any simulation starts.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable

import numpy as np

from ._cli import _seed
from ._errors import ConfigError

DEFAULT_HISTORY = ("2019-01-01", "2025-12-31")


def add_parsers(subparsers) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add `calibrate {history,event}` and `reverse` to an argparse subparsers object; return the handlers."""
    cal = subparsers.add_parser("calibrate", help="fit the model to daily history or to an event window",
                                description="Fit the model to daily history or shock sizes to an event window.")
    csub = cal.add_subparsers(dest="calibrate_command", parser_class=type(cal), required=True,
                              metavar="{history,event}")

    h = csub.add_parser("history", help="fit curve, driver dynamics and volatility regimes to daily history",
                        description="Fit curve loadings, OU dynamics and volatility regimes to the daily data; "
                                    "write a scenario TOML that extends baseline, and a regime chart.")
    h.add_argument("--data", default=None, metavar="DIR", help="folder of the CSVs (default: the package's data/)")
    h.add_argument("--start", default=DEFAULT_HISTORY[0], help=f"first date (default {DEFAULT_HISTORY[0]})")
    h.add_argument("--end", default=DEFAULT_HISTORY[1], help=f"last date (default {DEFAULT_HISTORY[1]})")
    h.add_argument("--out", required=True, metavar="FILE.toml", help="scenario file to write")
    h.add_argument("--seed", type=_seed, default=0, help="seed of the Hamilton filter's starting point (default 0)")
    h.add_argument("--hamilton-steps", type=int, default=300, help="Adam steps before L-BFGS (default 300)")

    e = csub.add_parser("event", help="fit shock sizes to the moves of an event window",
                        description="Fit the initial regime's shock sizes so the simulated mean changes over a "
                                    "window match the observed ones; write a scenario TOML that extends the base.")
    e.add_argument("--window", required=True, metavar="START:END", help="e.g. 2025-04-02:2025-04-11")
    e.add_argument("--base", required=True, metavar="CONFIG", help="shipped scenario name or path to a TOML file")
    e.add_argument("--out", required=True, metavar="FILE.toml", help="scenario file to write")
    e.add_argument("--targets", default="y2,y10,y30,breakeven,term_premium",
                   help="comma list of y2, y10, y30, breakeven, term_premium (default all)")
    e.add_argument("--params", default=None, metavar="KEYS",
                   help="comma list of config keys to fit (default: the initial regime's tau_shift, jump_tau_mean, "
                        "jump_pi_mean, pi_shift, foreign_selling, basis_funds.haircut_vol, impact.lambda0)")
    e.add_argument("--paths", type=int, default=2048, help="Monte Carlo paths (default 2048)")
    e.add_argument("--steps", type=int, default=150, help="Adam steps (default 150)")
    e.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    e.add_argument("--lr", type=float, default=0.05, help="Adam learning rate, prior scales per step (default 0.05)")
    e.add_argument("--scale", default="10", help="bp per unit of misfit, or 'sd' (default 10)")
    e.add_argument("--prior-weight", type=float, default=1.0, help="weight of the prior penalty (default 1)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config value before fitting (repeatable; written to the output too)")
    e.add_argument("--data", default=None, metavar="DIR", help="folder of the CSVs (default: the package's data/)")

    r = subparsers.add_parser("reverse", help="smallest driver change that moves a metric to a target",
                              description="Reverse stress test: the smallest change of the drivers (in units of "
                                          "their scale) that moves the metric to the target, by gradient descent "
                                          "through the simulator; re-estimated on fresh paths.")
    r.add_argument("scenario", help="shipped scenario name or path to a TOML file")
    r.add_argument("--target", required=True, metavar="METRIC=VALUE", help="e.g. prob_y10_above_5pct=0.5")
    r.add_argument("--drivers", required=True, metavar="KEYS",
                   help="comma list of config keys as --set takes them, e.g. holders.japan.sell_rate,"
                        "basis_funds.leverage or regimes.generator[0][1]")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory for reverse.json")
    r.add_argument("--paths", type=int, default=4096, help="paths of the optimisation (default 4096)")
    r.add_argument("--seed", type=_seed, default=0, help="seed of the optimisation paths (default 0)")
    r.add_argument("--steps", type=int, default=100, help="most gradient evaluations after the first (default 100)")
    r.add_argument("--fresh-paths", type=int, default=None, help="paths of the re-estimate (default 2 x --paths)")
    r.add_argument("--fresh-seed", type=_seed, default=None, help="seed of the re-estimate (default --seed + 1)")
    r.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (default 0.02)")
    r.add_argument("--width", type=float, default=0.05,
                   help="smoothing width of probability metrics (prob_y10_...), in "
                        "percentage points of the 10y yield (default 0.05)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    r.add_argument("--horizon", type=float, default=None, help="horizon in years (default: the scenario's)")
    r.add_argument("--quiet", action="store_true", help="print no progress")
    return {"calibrate": cmd_calibrate, "reverse": cmd_reverse}


# ----------------------------------------------------------------------------------------------------------------
# argument checks


def _date(text: str, what: str) -> str:
    try:
        return _dt.date.fromisoformat(text.strip()).isoformat()
    except (ValueError, AttributeError):
        raise ConfigError(f"'{text}' is not a date; expected ISO YYYY-MM-DD", key=what) from None


def parse_window(text: str) -> tuple[str, str]:
    """'2025-04-02:2025-04-11' (or '..' between the dates) -> ('2025-04-02', '2025-04-11')."""
    sep = ".." if ".." in text else ":"
    parts = text.split(sep)
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"expected START:END, e.g. 2025-04-02:2025-04-11, got '{text}'", key="--window")
    start, end = _date(parts[0], "--window"), _date(parts[1], "--window")
    if end < start:
        raise ConfigError(f"the window ends ({end}) before it starts ({start})", key="--window")
    if end == start:
        raise ConfigError(f"the window starts and ends on {start}: it must end after it starts (a window needs at "
                          "least two dates, its first and its last close)", key="--window")
    return start, end


def parse_target(text: str) -> tuple[str, float]:
    """'prob_y10_above_5pct=0.5' -> ('prob_y10_above_5pct', 0.5); the metric is checked."""
    from ._sensitivities import parse_metric

    if text.count("=") != 1:
        raise ConfigError(f"expected METRIC=VALUE, e.g. prob_y10_above_5pct=0.5, got '{text}'", key="--target")
    name, value = (p.strip() for p in text.split("="))
    if not name or not value:
        raise ConfigError(f"expected METRIC=VALUE, e.g. prob_y10_above_5pct=0.5, got '{text}'", key="--target")
    try:
        parse_metric(name)
    except ConfigError as e:
        raise ConfigError(str(e).removeprefix("key '--metric': "), key="--target") from None
    try:
        v = float(value)
    except ValueError:
        raise ConfigError(f"target value '{value}' is not a number", key="--target") from None
    if not math.isfinite(v):
        raise ConfigError(f"target value must be finite, got {value}", key="--target")
    return name, v


def _positive(value, what: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"expected a positive integer, got {value}", key=what)


def _positive_number(value: float, what: str, *, zero: bool = False) -> None:
    """ConfigError naming the option unless value is finite and > 0 (>= 0 with zero=True)."""
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise ConfigError(f"expected a finite number {'>= 0' if zero else '> 0'}, got {value:g}", key=what)


def _toml_out(path: str) -> pathlib.Path:
    p = pathlib.Path(path)
    if p.suffix != ".toml":
        raise ConfigError("expected a path ending in .toml", key="--out")
    from ._output import check_output

    return check_output(p, kind="file")  # written after the work: checked before it


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# ----------------------------------------------------------------------------------------------------------------
# calibrate


def cmd_calibrate(args) -> int:
    if args.calibrate_command == "history":
        return cmd_history(args)
    return cmd_event(args)


def cmd_event(args) -> int:
    from ._config import load_scenario
    from ._event import event_window, fit_event, observed_changes, parse_targets, write_fitted_config

    start, end = parse_window(args.window)
    out = _toml_out(args.out)
    targets = parse_targets(args.targets)
    _positive(args.paths, "--paths")
    if args.steps < 0:
        raise ConfigError(f"expected a number >= 0, got {args.steps}", key="--steps")
    scale: float | str = args.scale
    if scale != "sd":
        try:
            scale = float(scale)
        except ValueError:
            raise ConfigError(f"expected a number of bp or 'sd', got '{args.scale}'", key="--scale") from None
        if not scale > 0:
            raise ConfigError(f"expected a positive number of bp, got {args.scale}", key="--scale")
    _positive_number(args.lr, "--lr")
    _positive_number(args.prior_weight, "--prior-weight", zero=True)
    base = load_scenario(args.base, args.overrides)  # validates the base and the overrides
    params = _split(args.params) if args.params else None
    if params:  # named as the option the user typed (fit_event's argument is params_to_fit); "" = the defaults
        from ._reverse import resolve_drivers

        resolve_drivers(base, params, what="--params")
    # a window (or a target) without data fails here, before anything is compiled
    observed_changes(event_window(start, end, args.data), targets, args.data)
    t0 = time.perf_counter()
    print(f"calibrate event: {args.base} on {start}..{end}, targets {', '.join(targets)}, {args.paths} paths, "
          f"{args.steps} steps, seed {args.seed}", flush=True)
    fit = fit_event(base, start, end, targets=targets, params_to_fit=params, n_paths=args.paths, steps=args.steps,
                    seed=args.seed, lr=args.lr, scale=scale, prior_weight=args.prior_weight, data_dir=args.data)
    print(fit.table())
    write_fitted_config(args.base, fit, out, overrides=args.overrides, data_dir=args.data)
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    for name, note in fit.notes.items():
        print(f"jaxstress: warning: {name}: {note}", file=sys.stderr)
    return 0


def _monthly_ou(dates: np.ndarray, x: np.ndarray) -> dict:
    """Exact OU fit on monthly averages (dt = 1/12); sigma scaled by sqrt(3/2) for the averaging (the change of
    monthly averages of a random walk has 2/3 of the variance of the change of its month-end values)."""
    from ._calibrate import fit_ou

    months = dates.astype("datetime64[M]")
    uniq = np.unique(months)
    m = np.array([x[months == u].mean() for u in uniq])
    o = fit_ou(m, 1.0 / 12.0)
    o["sigma_adj"] = o["sigma"] * math.sqrt(1.5)
    o["n_months"] = len(m)
    return o


HISTORY_KEYS = {  # config key -> (ou series, field)
    "short_rate.k": ("r", "k"), "short_rate.sigma": ("r", "sigma"),
    "inflation.k": ("pi", "k"), "inflation.mean": ("pi", "mean"), "inflation.sigma": ("pi", "sigma"),
    "term_premium.k": ("tau", "k"), "term_premium.mean": ("tau", "mean"), "term_premium.sigma": ("tau", "sigma"),
    "policy_path.k": ("p", "k"), "policy_path.sigma": ("p", "sigma"),
}


def _span_years(first: str, last: str) -> str:
    """'7 years', '1 year', '2.5 years': the length of first..last in years, to one decimal."""
    y = round((_dt.date.fromisoformat(last) - _dt.date.fromisoformat(first)).days / 365.25, 1)
    return f"{y:g} year" + ("" if y == 1 else "s")


def history_entries(res: dict, base_config: dict, out_stem: str) -> tuple[list, dict, list]:
    """(entries, table comments, header) of the scenario file written by `calibrate history`.

    Judgement calls, each written next to the numbers:
    - A mean-reversion speed whose standard error is at least its value is not identified by the window (the
      short rate's k ~ 0.02 +- 0.08 over 2019-2025: a hiking and cutting cycle, not reversion to a fixed mean; the
      model's k is the pull toward the moving reaction-function target). The baseline's value is kept.
    - neutral_rate.k and .sigma keep the baseline's values: the r_star filtered from each day's cross-section is
      not slow (daily OU half-life ~0.6y, sigma ~95bp/yr), its day-to-day moves are mostly the filter's noise; an OU
      fit on monthly averages is shown beside them (half-life ~2y, standard error about as large as k), so the
      window (7 years for 2019-2025; the comment gives its length) cannot pin the slow mean reversion the design
      calls for.
    - curve: a fit that leaves k, kc or mu unidentified (`_calibrate.curve_notes`: k = kc, say, on one year of
      data) is written as fitted, with the note as a comment of [curve] (and a warning from the CLI).
    - regimes: the two Hamilton regimes of daily 10y changes are reported in comments (and the chart), not
      written: the scenario's regimes are named shock regimes (tariff_shock, escalation, pause) that a child file
      cannot replace by two vol regimes.
    """
    cfg = res["config"]
    w = res["window"]
    span = f"{w['first']}..{w['last']}"
    entries: list[tuple[str, object, str]] = [
        ("scenario.name", out_stem, "jaxstress calibrate history"),
        ("scenario.description",
         f"Baseline with dynamics recalibrated to daily history {span} (jaxstress calibrate history)", ""),
        ("scenario.start_date", w["last"], "the initial state below is that of the last day of the window"),
    ]
    comments: dict[str, list[str]] = {}
    for key in ("curve.k", "curve.kc", "curve.mu"):
        entries.append((key, cfg[key]["value"], cfg[key]["source"]))
    if res["curve"].get("notes"):
        comments["curve"] = list(res["curve"]["notes"])
    ou = res["ou"]
    for key, (series, field) in HISTORY_KEYS.items():
        o = ou[series]
        if field == "k" and not (o["se_k"] < o["k"]):
            sec = key.split(".")[0]
            comments.setdefault(sec, []).append(
                f"k kept from baseline ({base_config[sec]['k']:g}/year): the exact OU fit on {series} over {span} "
                f"gives k = {o['k']:.3g} +- {o['se_k']:.2g}/year, not identified by the window (standard error >= "
                "value); here k is the pull toward the moving target, not reversion to a fixed mean")
            continue
        src = cfg[key]["source"] if key in cfg else f"exact OU MLE on {series}, {span}"
        entries.append((key, float(o[field]), src))
    rs = ou["r_star"]
    entries.append(("neutral_rate.mean", cfg["neutral_rate.mean"]["value"], cfg["neutral_rate.mean"]["source"]))
    mo = _monthly_ou(np.asarray(res["series"]["dates"]), np.asarray(res["series"]["r_star"]))
    nr = base_config["neutral_rate"]
    comments["neutral_rate"] = [
        f"k and sigma kept from baseline (k = {nr['k']:g}/year, sigma = {nr['sigma']:g}): r_star filtered from each "
        f"day's cross-section over {span} is not slow; a daily exact OU fit gives k = {rs['k']:.3g} +- "
        f"{rs['se_k']:.2g} (half-life {rs['half_life']:.2f}y), sigma = {rs['sigma'] * 1e4:.0f}bp/yr: the filter's "
        "day-to-day noise, not a neutral rate.",
        f"On monthly averages ({mo['n_months']} months, dt = 1/12) the OU fit gives k = {mo['k']:.3g} +- "
        f"{mo['se_k']:.2g} (half-life {mo['half_life']:.1f}y), sigma = {mo['sigma_adj'] * 1e4:.0f}bp/yr "
        f"(x sqrt(3/2) for averaging): {_span_years(w['first'], w['last'])} of data cannot pin down the slow mean "
        f"reversion the design calls for, so the baseline's half-life of ~{math.log(2.0) / nr['k']:.0f} years "
        "stays.",
    ]
    for key in ("initial.r", "initial.pi", "initial.tau", "initial.r_star", "initial.p"):
        entries.append((key, cfg[key]["value"], cfg[key]["source"]))
    hm = res["hamilton"]
    trans = np.asarray(hm["transition"])
    gen = np.asarray(hm["generator"])
    comments["regimes"] = [
        f"Not overridden (the baseline's named shock regimes stay). {hm['window']}: 2-regime Hamilton filter of "
        f"{hm['series']} ({hm['n']} changes), log-likelihood {hm['loglik']:.2f}:",
        f"  means {np.round(hm['means_bp'], 3).tolist()} bp/day, variances {np.round(hm['variances_bp2'], 2).tolist()}"
        f" bp^2, annual vol {np.round(np.asarray(hm['vol_annual']) * 1e4, 1).tolist()} bp (calm, volatile)",
        f"  daily transition P = {np.round(trans, 5).tolist()}, expected durations "
        f"{np.round(hm['expected_durations_days'], 1).tolist()} days, generator (1/year) {np.round(gen, 3).tolist()}",
        f"  smoothed probabilities: {out_stem}_regimes.png",
    ]
    rmse = ", ".join(f"{m} {e:.1f}" for m, e in res["curve"]["rmse_bp"].items())
    header = [
        f"{out_stem}: baseline with its dynamics recalibrated to the daily history {span} ({w['n_days']} days with "
        "every series)",
        f"by jaxstress calibrate history: data/{'ust_cmt_yields_daily_fred.csv'} (DGS3MO, DGS1..DGS30), "
        "data/us_inflation_breakevens_daily_fred.csv (T10YIE), data/acm_tp10_daily_nyfed.csv (ACMTP10).",
        f"Curve fit RMSE (bp): {rmse}. Methods: least squares of the curve formula with latent r_star, p; exact OU "
        "likelihood per driver; Hamilton filter of daily 10y changes (regimes: comments only).",
        "initial.vol_10y, dollar_index, basis_bp, holdings and all shock regimes stay at baseline's (2025-04-02).",
    ]
    return entries, comments, header


def regimes_chart(res: dict, path: pathlib.Path, data_dir=None) -> None:
    """Daily 10y changes and the smoothed probability of the volatile regime, as a PNG (written atomically)."""
    from matplotlib.figure import Figure

    from . import _data

    hm = res["hamilton"]
    dates = np.asarray(res["series"]["hamilton_dates"]).astype("datetime64[D]")
    probs = np.asarray(res["series"]["smoothed_probs"])
    d10, y10 = _data.load_series(_data.CMT_FILE, "DGS10", res["window"]["start"], res["window"]["end"], data_dir)
    ok = ~np.isnan(y10)
    d10, y10 = d10[ok], y10[ok]
    dy = np.diff(y10) * 100.0
    x = dates.astype(object)
    fig = Figure(figsize=(10, 5.5), dpi=110)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.2, 1]})
    ax1.plot(d10[1:].astype(object), dy, lw=0.6, color="#555555")
    ax1.set_ylabel("DGS10 daily change, bp")
    ax1.set_title(f"Volatility regimes of daily 10y changes, {hm['window']} (Hamilton filter, Kim smoother)")
    vols = np.asarray(hm["vol_annual"]) * 1e4
    ax2.fill_between(x, probs[:, -1], step="mid", color="#b2182b", alpha=0.5, lw=0)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("P(volatile | all data)")
    ax2.set_xlabel(f"calm {vols[0]:.0f}bp/yr, volatile {vols[-1]:.0f}bp/yr")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    from ._output import atomic_file

    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def cmd_history(args) -> int:
    from ._calibrate import calibrate_history
    from ._config import load_scenario
    from ._event import write_override_toml
    from ._output import atomic_file

    start, end = _date(args.start, "--start"), _date(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end ({end}) is before --start ({start})", key="--end")
    out = _toml_out(args.out)
    _positive(args.hamilton_steps, "--hamilton-steps")
    if args.data is not None and not pathlib.Path(args.data).is_dir():
        raise ConfigError("no such directory", file=args.data, key="--data")
    t0 = time.perf_counter()
    res = calibrate_history(start, end, args.data, seed=args.seed, hamilton_steps=args.hamilton_steps)
    print_history(res)
    for note in res["curve"].get("notes", ()):
        print(f"jaxstress: warning: curve: {note}", file=sys.stderr)
    base = load_scenario("baseline").config
    entries, comments, header = history_entries(res, base, out.stem)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_name(f"{out.stem}_regimes.png")
    with atomic_file(png, suffix=".png") as tmp_png:  # in place only once the fitted file is written
        regimes_chart(res, tmp_png, args.data)
        write_override_toml("baseline", entries, out, header, comments)
    load_scenario(str(out))  # the file written is a valid scenario
    print(f"wrote {out} (valid scenario, extends baseline) and {png} in {time.perf_counter() - t0:.1f} s")
    return 0


def print_history(res: dict) -> None:
    w = res["window"]
    c = res["curve"]
    print(f"window {w['first']} .. {w['last']}: {w['n_days']} days with every series")
    print(f"curve: k={c['k']:.4f}  kc={c['kc']:.4f}  mu={c['mu']:.4f}  (loss {c['loss']:.4g} bp^2: mean over days "
          "of the summed squared par-yield errors)")
    print("  RMSE bp " + " ".join(f"{m:>6}" for m in c["rmse_bp"]))
    print("          " + " ".join(f"{e:6.1f}" for e in c["rmse_bp"].values()))
    print(f"OU (exact MLE)  {'k':>7} {'+-se':>6} {'half-life y':>11} {'mean %':>8} {'sigma bp/yr':>11}  log-lik")
    for name, o in res["ou"].items():
        hl = o["half_life"]
        hl_txt = f"{hl:11.2f}" if math.isfinite(hl) else f"{'inf':>11}"
        print(f"  {name:13s} {o['k']:7.3f} {o['se_k']:6.3f} {hl_txt} {100 * o['mean']:8.3f} "
              f"{1e4 * o['sigma']:11.1f}  {o['loglik']:.1f}")
    h = res["hamilton"]
    print(f"Hamilton: {h['series']}, {h['n']} changes {h['window']}, log-likelihood {h['loglik']:.4f}")
    print(f"  regime means {np.round(h['means_bp'], 4).tolist()} bp, variances "
          f"{np.round(h['variances_bp2'], 3).tolist()} bp^2, annual vol "
          f"{np.round(np.asarray(h['vol_annual']) * 1e4, 1).tolist()} bp")
    print(f"  transition P {np.round(np.asarray(h['transition']), 5).tolist()}, expected durations "
          f"{np.round(h['expected_durations_days'], 1).tolist()} days")


# ----------------------------------------------------------------------------------------------------------------
# reverse


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def cmd_reverse(args) -> int:
    from ._config import load_scenario
    from ._output import atomic_dir, check_output
    from ._reverse import fresh_warning, resolve_drivers, reverse_stress

    metric, value = parse_target(args.target)
    drivers = _split(args.drivers)
    for v, what in ((args.paths, "--paths"), (args.steps, "--steps"), (args.fresh_paths, "--fresh-paths")):
        _positive(v, what)
    if args.horizon is not None and not (args.horizon > 0 and math.isfinite(args.horizon)):
        raise ConfigError(f"expected a positive number of years, got {args.horizon}", key="--horizon")
    _positive_number(args.lr, "--lr")
    _positive_number(args.width, "--width")
    scenario = load_scenario(args.scenario, args.overrides, horizon=args.horizon)
    resolve_drivers(scenario, drivers)  # unknown drivers fail here, before anything is compiled
    out = check_output(args.out)  # a directory that can be written, checked before the work

    def progress(h):
        if not args.quiet:
            drv = ", ".join(f"{k}={v:.6g}" for k, v in h["drivers"].items())
            print(f"  {h['iteration']:4d} {h['phase']:11s} {metric} = {h['metric']:.6g}  distance "
                  f"{h['distance']:.4g}  {drv}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    res = reverse_stress(scenario, metric, value, drivers, n_paths=args.paths, seed=args.seed, steps=args.steps,
                         lr=args.lr, width=args.width, fresh_paths=args.fresh_paths, fresh_seed=args.fresh_seed,
                         callback=progress)
    res["source"] = {"scenario": args.scenario, "overrides": list(args.overrides), "horizon": args.horizon}
    with atomic_dir(out) as tmp:
        (tmp / "reverse.json").write_text(json.dumps(_jsonable(res), indent=1) + "\n")
    print(format_reverse(res))
    print(f"wrote {out / 'reverse.json'} in {time.perf_counter() - t0:.1f} s")
    warn = fresh_warning(res)
    if warn:
        print(f"jaxstress: warning: {warn}", file=sys.stderr)
    for name, note in res["notes"].items():
        print(f"jaxstress: warning: {name}: {note}", file=sys.stderr)
    if not res["reached"]:
        print(f"jaxstress: warning: {not_reached_text(res)}", file=sys.stderr)
        return 1
    return 0


def not_reached_text(res: dict) -> str:
    """Why a reverse stress test ended away from its target: the drivers held at a bound, or the steps used up."""
    steps, used = res["settings"]["steps"], res["evaluations"] - 1  # the start is not a step
    why = []
    if res["at_bound"]:
        why.append(f"{', '.join(res['at_bound'])} at {'its' if len(res['at_bound']) == 1 else 'their'} bound")
    why.append(f"all {steps} steps used (--steps)" if used >= steps else f"{used} of {steps} steps used")
    return (f"target not reached ({'; '.join(why)}); the closest point is reported: "
            f"{res['target']['metric']} = {res['fit_value']:.6g} against {res['target']['value']:.6g}")


def format_reverse(res: dict) -> str:
    t = res["target"]
    a = res["achieved"]
    lines = [f"reverse stress {res['scenario']}: {t['metric']} = {t['value']:.6g} (start {res['start']['metric']:.6g})",
             f"{'driver':40s} {'start':>12s} {'solution':>12s} {'change/scale':>13s}"]
    for name, v in res["solution"].items():
        lines.append(f"{name:40s} {res['start']['drivers'][name]:12.6g} {v:12.6g} "
                     f"{res['change_in_scales'][name]:13.4g}")
    lines.append(f"distance {res['distance']:.4g} scales; --set " + " --set ".join(res["overrides"]))
    lines.append(f"achieved on fresh paths ({a['n_paths']}, seed {a['seed']}): {a['value']:.6g} +- {a['stderr']:.2g}"
                 f" (optimisation paths: {res['fit_value']:.6g} +- {res['fit_stderr']:.2g}); "
                 f"{len(res['history'])} gradient evaluations")
    return "\n".join(lines)
