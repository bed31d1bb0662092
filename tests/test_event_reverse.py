"""Event-window fits and reverse stress tests: recovery of known shock sizes from a synthetic window, the April 2025
fit, a reverse solution checked on fresh paths, and one-line errors from the CLI verbs.

Compilation dominates the cost (a gradient through the model compiles in ~20-40 s on two cores), so every event
fit here uses the same scenario, horizon (the 7 business days of the April window) and path count: they share one
compiled loss-and-gradient function (fits of any subset of the default parameters do). The reverse test runs
through the CLI so it compiles once too.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
import types

import numpy as np
import pytest

from jaxstress._calibrate_cli import add_parsers, parse_target, parse_window
from jaxstress._cli import _Parser
from jaxstress._config import configs_dir, load_scenario
from jaxstress._errors import ConfigError
from jaxstress._event import (
    TARGETS,
    event_window,
    fit_event,
    observed_changes,
    regenerate_command,
    simulated_changes,
    write_fitted_config,
)
from jaxstress._reverse import override_strings, resolve_drivers

APRIL = ("2025-04-02", "2025-04-11")
PATHS = 512  # 2 blocks; every event fit below uses it (one compilation)
TAU = "regimes.tariff_shock.jump_tau_mean"
PI = "regimes.tariff_shock.jump_pi_mean"


def run_cli(argv: list[str]) -> int:
    """The verbs behind a parser like jaxstress._cli's: ConfigError -> one line on stderr, exit 2."""
    parser = _Parser(prog="jaxstress")
    handlers = add_parsers(parser.add_subparsers(dest="command", parser_class=_Parser))
    try:
        args = parser.parse_args(argv)
        return handlers[args.command](args)
    except ConfigError as e:
        print(f"jaxstress: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return int(e.code)


# ------------------------------------------------------------------------------------------------ data and parsing


def test_window_and_observed_changes_from_the_data():
    w = event_window(*APRIL)
    assert (w.first, w.last, w.n_days) == ("2025-04-02", "2025-04-11", 7)
    obs, detail = observed_changes(w, tuple(TARGETS))
    # DESIGN.md facts: 2y 3.91 -> 3.96, 10y 4.20 -> 4.48, 30y 4.54 -> 4.85, breakeven 2.32 -> 2.20, ACM 0.32 -> 0.68
    assert obs["y2"] == pytest.approx(5.0, abs=1e-9)
    assert obs["y10"] == pytest.approx(28.0, abs=1e-9)
    assert obs["y30"] == pytest.approx(31.0, abs=1e-9)
    assert obs["breakeven"] == pytest.approx(-12.0, abs=1e-9)
    assert obs["term_premium"] == pytest.approx(35.3726, abs=1e-3)
    assert detail["term_premium"]["column"] == "ACMTP10"
    assert event_window("2020-03-09", "2020-03-18").n_days == 7


def test_parse_window_and_target():
    assert parse_window("2025-04-02:2025-04-11") == APRIL
    assert parse_window("2025-04-02..2025-04-11") == APRIL
    assert parse_target("prob_y10_above_5pct=0.5") == ("prob_y10_above_5pct", 0.5)
    assert parse_target(" y10_change_bp_mean = -3 ") == ("y10_change_bp_mean", -3.0)
    for bad in ("2025-04-02", "2025-04-11:2025-04-02", "2025-02-30:2025-04-11", "a:b"):
        with pytest.raises(ConfigError):
            parse_window(bad)
    for bad in ("prob_y10_above_5pct", "x=1", "y10_change_bp_mean=", "y10_change_bp_mean=nan", "a=1=2"):
        with pytest.raises(ConfigError):
            parse_target(bad)


def test_drivers_indexed_entries_bounds_and_overrides():
    sc = load_scenario("april_2025_prior")
    d = resolve_drivers(sc, ["regimes.generator[1][3]", "holders.japan.sell_rate", "debt.amounts[0]"])
    # bounded above as the config bounds it (it was inf: a solution past 1e4 failed after the whole optimisation)
    assert (d[0].leaf, d[0].index, d[0].x0, d[0].lo, d[0].hi) == ("regimes.generator", (1, 3), 25.0, 0.0, 1e4)
    assert (d[1].x0, d[1].scale, d[1].lo, d[1].hi) == (0.0, 0.01, 0.0, 100.0)
    assert (d[2].x0, d[2].scale) == (6200.0, 100.0)
    ovs = override_strings(sc, d, [20.0, 0.5, 6000.0])
    assert "regimes.generator[1][1]=-28.0" in ovs  # row 1 = [2, -33, 6, 25]: the diagonal follows the new entry
    new = load_scenario("april_2025_prior", ovs)  # a valid --set override
    assert new.config["regimes"]["generator"][1] == [2.0, -28.0, 6.0, 20.0]
    assert new.config["holders"]["japan"]["sell_rate"] == 0.5
    # each refusal says why: a key that exists but is not a number to move says what it is
    for bad, why in (("regimes.generator[1][1]", "diagonal"), ("regimes.calm.correlation[0][1]", "symmetric"),
                     ("debt.amounts", "give index"), ("curve.maturities[0]", "static setting"),
                     ("simulation", "holds no drivers"),
                     ("holders.japan.sell_rat", "did you mean 'holders.japan.sell_rate'"),
                     ("scenario.name", "is a name or date in the scenario, not a driver"),
                     ("fed.backstop", "is a switch .* not a driver"),
                     ("holders.japan", "is a table .* e.g. 'holders.japan.holdings'"),
                     ("portfolio.positions[0].notional", "not the portfolio")):
        with pytest.raises(ConfigError, match=why):
            resolve_drivers(sc, [bad])


def test_write_fitted_config_indexed_and_atomic(tmp_path):
    out = tmp_path / "fit.toml"
    write_fitted_config("april_2025_prior", {TAU: 0.0021, "regimes.generator[1][3]": 20.0}, out, APRIL,
                        sources="data/x.csv X")
    text = out.read_text()
    assert 'extends = "april_2025_prior"' in text
    assert "fit to 2025-04-02..2025-04-11 (data/x.csv X) by jaxstress calibrate event" in text
    cfg = load_scenario(str(out)).config
    assert cfg["regimes"]["tariff_shock"]["jump_tau_mean"] == 0.0021
    assert cfg["regimes"]["generator"][1] == [2.0, -28.0, 6.0, 20.0]
    before = out.read_text()
    with pytest.raises(ConfigError):  # out of bounds: nothing is written, the old file stays
        write_fitted_config("april_2025_prior", {TAU: 0.5}, out, APRIL)
    assert out.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.toml"]


def parse_regenerate(text: str):
    """The parsed arguments of a fitted file's '# Regenerate: jaxstress calibrate event ...' header line."""
    lines = [ln for ln in text.splitlines() if ln.startswith("# Regenerate: ")]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0].removeprefix("# Regenerate: "))
    assert argv[:3] == ["jaxstress", "calibrate", "event"]
    parser = _Parser(prog="jaxstress")
    add_parsers(parser.add_subparsers(dest="command", parser_class=_Parser))
    return parser.parse_args(argv[1:])


def fitted_keys(text: str) -> list[str]:
    """The dotted keys a fitted file sets with a 'fit to ...' comment, in file order."""
    section, keys = None, []
    for line in text.splitlines():
        if m := re.match(r"\[(.+)\]", line):
            section = m.group(1)
        elif m := re.match(r"(\w+(?:\[\d+\])*)\s*=.*# fit to ", line):
            keys.append(f"{section}.{m.group(1)}")
    return keys


def test_regenerate_command_parses_back_to_every_setting_of_the_fit(tmp_path):
    fit = types.SimpleNamespace(
        window=types.SimpleNamespace(first="2025-04-02", last="2025-04-11"), targets=("y10", "term_premium"),
        fitted={TAU: 0.003, "regimes.generator[1][3]": 20.0}, n_paths=512, steps=7, seed=3, lr=0.0123,
        scale_mode="12.5bp", scale={"y10": 12.5, "term_premium": 12.5}, prior_weight=0.25)
    out = tmp_path / "my fit.toml"
    cmd = regenerate_command(fit, "april_2025_prior", out, ['scenario.description="a b"'], data_dir=tmp_path)
    a = parse_regenerate("# Regenerate: " + cmd)
    assert (a.base, a.window, a.targets, a.params) == ("april_2025_prior", "2025-04-02:2025-04-11",
                                                       "y10,term_premium", f"{TAU},regimes.generator[1][3]")
    assert (a.paths, a.steps, a.seed, a.lr, a.scale, a.prior_weight) == (512, 7, 3, 0.0123, "12.5", 0.25)
    assert (a.overrides, a.data, a.out) == (['scenario.description="a b"'], str(tmp_path), str(out))
    fit.scale_mode = "simulated sd at the start (held fixed)"
    assert parse_regenerate("# Regenerate: " + regenerate_command(fit, "x", out)).scale == "sd"


@pytest.mark.parametrize("name", ["april_2025", "march_2020"])
def test_shipped_fits_say_the_command_that_fitted_them(name):
    text = (configs_dir() / f"{name}.toml").read_text()
    a = parse_regenerate(text)
    assert f'extends = "{a.base}"' in text and a.out == f"{name}.toml"
    assert sorted(a.params.split(",")) == sorted(fitted_keys(text)) != []
    header = text.split("extends")[0]
    assert f"{a.paths} paths, seed {a.seed}, {a.steps} Adam steps (lr {a.lr:g})" in header
    assert f"scale {float(a.scale):g}bp, prior weight {a.prior_weight:g}" in header
    assert f"targets {a.targets.replace(',', ', ')}," in header
    assert a.window.replace(":", "..") in header
    (desc,) = a.overrides
    assert load_scenario(name).config["scenario"]["description"] == json.loads(desc.split("=", 1)[1])


# ------------------------------------------------------------------------------------------------ event fits


@pytest.fixture(scope="module")
def synthetic():
    """'Observed' changes simulated with known shock sizes (seed 1), fitted from the scenario's (seed 0)."""
    truth = {TAU: 0.0028, PI: -0.0012}  # april_2025_prior has 0.0008 and -0.0004
    ovs = [f"{k}={v!r}" for k, v in truth.items()]
    obs = simulated_changes("april_2025_prior", 7, PATHS, seed=1, overrides=ovs)
    # slopes d(mean)/d(parameter) on the fit's paths, by a CRN difference, to turn standard errors into
    # parameter tolerances
    bumped = simulated_changes("april_2025_prior", 7, PATHS, seed=0,
                               overrides=[f"{TAU}={truth[TAU] + 1e-4!r}", f"{PI}={truth[PI] - 1e-4!r}"])
    at = simulated_changes("april_2025_prior", 7, PATHS, seed=0, overrides=ovs)
    targets = ("y10", "y30", "breakeven", "term_premium")
    fit = fit_event("april_2025_prior", *APRIL, targets=targets, params_to_fit=[TAU, PI], n_paths=PATHS, steps=150,
                    seed=0, observed={t: obs[t]["mean"] for t in targets}, prior_weight=1e-4)
    return truth, obs, at, bumped, fit


@pytest.mark.slow
def test_event_fit_recovers_known_shock_sizes(synthetic):
    truth, obs, at, bumped, fit = synthetic
    assert set(fit.fitted) == {TAU, PI}
    assert fit.loss_after < 0.05 * fit.loss_before
    # fitted means match the observed within Monte Carlo error (both sets of paths are noisy)
    for t in fit.targets:
        se = math.hypot(obs[t]["stderr"], at[t]["stderr"])
        assert abs(fit.after[t]["mean"] - fit.observed[t]) < 3 * se, t
    # parameters: back toward the truth, within 3 standard errors mapped through the slopes
    for key, target, sign in ((TAU, "term_premium", 1.0), (PI, "breakeven", -1.0)):
        slope = sign * (bumped[target]["mean"] - at[target]["mean"]) / 1e-4
        assert slope > 0.3, (key, slope)  # the window identifies the parameter
        tol = 3 * math.hypot(obs[target]["stderr"], at[target]["stderr"]) / slope
        start, got = fit.initial[key], fit.fitted[key]
        assert abs(got - truth[key]) < tol, (key, got, truth[key], tol)
        assert abs(got - truth[key]) < 0.5 * abs(start - truth[key]), (key, start, got)
    # the other (unfitted) parameters are untouched: the table shows only the fitted ones
    assert fit.initial[TAU] == 0.0008 and fit.initial[PI] == -0.0004


@pytest.fixture(scope="module")
def april_fit():
    return fit_event("april_2025_prior", *APRIL, n_paths=PATHS, steps=100, seed=0)


@pytest.mark.slow
def test_april_2025_fit_reduces_the_loss_and_matches_the_10y(april_fit, tmp_path):
    fit = april_fit
    assert fit.window.n_days == 7 and fit.observed["y10"] == pytest.approx(28.0)
    assert fit.loss_after < 0.5 * fit.loss_before
    assert fit.data_loss_after < 0.25 * fit.data_loss_before
    assert abs(fit.before["y10"]["mean"] - 28.0) > 15.0  # the scenario as shipped undershoots the week
    assert abs(fit.after["y10"]["mean"] - 28.0) < 10.0
    assert abs(fit.after_fresh["y10"]["mean"] - 28.0) < 10.0  # also on paths the fit never saw
    # a term-premium shock, not an inflation one: the fit raises the term-premium jumps, lowers breakeven jumps
    assert fit.fitted[TAU] > fit.initial[TAU] and fit.fitted[PI] < fit.initial[PI]
    out = tmp_path / "april_fit.toml"
    write_fitted_config("april_2025_prior", fit, out)
    text = out.read_text()
    assert "fit to 2025-04-02..2025-04-11 (data/ust_cmt_yields_daily_fred.csv DGS2/DGS10/DGS30" in text
    assert "data/acm_tp10_daily_nyfed.csv ACMTP10) by jaxstress calibrate event" in text
    cfg = load_scenario(str(out)).config
    assert cfg["scenario"]["name"] == "april_fit"
    assert cfg["regimes"]["tariff_shock"]["jump_tau_mean"] == fit.fitted[TAU]
    assert cfg["impact"]["lambda0"] == fit.fitted["impact.lambda0"]
    assert cfg["simulation"]["horizon"] == 1.0  # the file is the full scenario, not the 7-day fit horizon


@pytest.mark.slow
def test_event_cli_writes_a_valid_scenario(april_fit, tmp_path, capsys):
    # same scenario, paths and horizon as the fixture: no new compilation
    out = tmp_path / "ev.toml"
    rc = run_cli(["calibrate", "event", "--window", "2025-04-02:2025-04-11", "--base", "april_2025_prior", "--out",
                  str(out), "--paths", str(PATHS), "--steps", "20", "--targets", "y10,term_premium"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "observed" in text and "before" in text and "after" in text and "term_premium" in text
    cfg = load_scenario(str(out)).config
    assert cfg["regimes"]["tariff_shock"]["jump_tau_mean"] > 0.0008
    a = parse_regenerate(out.read_text())  # the file says how to make it again, as typed and with the defaults
    assert (a.base, a.window, a.out, a.paths, a.steps, a.targets) == ("april_2025_prior", "2025-04-02:2025-04-11",
                                                                      str(out), PATHS, 20, "y10,term_premium")
    assert (a.seed, a.lr, a.scale, a.prior_weight, a.overrides, a.data) == (0, 0.05, "10.0", 1.0, [], None)
    assert sorted(a.params.split(",")) == sorted(fitted_keys(out.read_text()))
    # the header's rows: observed / before / after (fit paths) / after on fresh paths +- its standard error, the
    # fresh column as the printed table gives it
    for t in ("y10", "term_premium"):
        row = re.search(rf"^#\s+{t}\s+(\S+) /\s+(\S+) /\s+(\S+) /\s+(\S+) \+- (\S+)$", out.read_text(), re.M)
        printed = next(line.split() for line in text.splitlines() if line.split()[:1] == [t])
        assert row and row.group(4) == printed[4] and float(row.group(5)) > 0, (row, printed)


# ------------------------------------------------------------------------------------------------ reverse


def test_repeated_driver_is_named_once_and_generator_diagonal_is_clean():
    sc = load_scenario("april_2025_prior")
    with pytest.raises(ConfigError, match=r"drivers repeated: holders.japan.sell_rate$"):
        resolve_drivers(sc, ["holders.japan.sell_rate", "basis_funds.leverage", "holders.japan.sell_rate"])
    d = resolve_drivers(sc, ["regimes.generator[1][0]", "regimes.generator[1][2]"])
    ovs = override_strings(sc, d, [0.1, 0.2])  # row 1 = [0.1, ., 0.2, 25]: 0.1 + 0.2 + 25 is 25.3000000000000007
    assert "regimes.generator[1][1]=-25.3" in ovs


# ------------------------------------------------------------------------------------------------ the solver


def test_stationary_checks_the_bounds_signs():
    """KKT of min |v|^2 s.t. g(v) = 0 with bounds: min v0^2 + v1^2 s.t. v0 + v1 = 1, v1 <= 0.2 has its minimum at
    (0.8, 0.2), with v1 on its bound (the multiplier -1.6 leaves 2 v1 + lam = -1.2 <= 0, the bound's sign)."""
    from jaxstress._reverse import _stationary

    inf = np.inf
    grad = np.array([1.0, 1.0])
    assert _stationary(np.array([0.8, 0.2]), grad, np.array([-inf, -inf]), np.array([inf, 0.2]))
    assert not _stationary(np.array([0.8, 0.2]), grad, np.array([-inf, -inf]), np.array([inf, 0.5]))  # both free
    assert _stationary(np.array([0.5, 0.5]), grad, np.array([-inf, -inf]), np.array([inf, inf]))  # the free optimum
    # a driver held at its lower bound away from the start although the constraint does not see it there (the
    # leverage of the README's example, where the metric is flat): moving it back shortens the distance
    assert not _stationary(np.array([1.0, -3.0]), np.array([1.0, 0.0]), np.array([-inf, -3.0]),
                           np.array([inf, inf]))
    # v0 - v1 = 4 with v1 >= -1.5: the free optimum (2, -2) is out of bounds, so (2.5, -1.5) is the minimum
    # (lam = -5 from v0, and 2 v1 + lam g1 = -3 + 5 >= 0); (1, -3) on the same line, at a bound of -3, is not
    assert _stationary(np.array([2.5, -1.5]), np.array([1.0, -1.0]), np.array([-inf, -1.5]), np.array([inf, inf]))
    assert not _stationary(np.array([1.0, -3.0]), np.array([1.0, -1.0]), np.array([-inf, -3.0]),
                           np.array([inf, inf]))
    # no free coordinate: some multiplier must satisfy both bounds' signs. At the corner (0.5, -0.5) of
    # v0 <= 0.5, v1 >= -0.5 the line v0 + v1 = 0 runs on towards the origin inside the bounds (lam <= -1 for the
    # upper bound, lam >= 1 for the lower: none), while on v0 - v1 = 1 the corner is the only feasible point
    lo, hi = np.array([-inf, -0.5]), np.array([0.5, inf])
    assert not _stationary(np.array([0.5, -0.5]), np.array([1.0, 1.0]), lo, hi)
    assert _stationary(np.array([0.5, -0.5]), np.array([1.0, -1.0]), lo, hi)


def test_solver_moves_a_bounded_driver_back_off_its_bound():
    """The README example's shape: the metric rises with u0 and with a lower u1 until u1 = -7, flat below; the
    line search lands on the target with u1 on its bound (-20), distance 21.9, but the minimum-norm point on
    m = u0 + 3 min(-u1, 7) = 30 is the kink (9, -7), distance 11.40. The solver must not stop at the bound; every
    point it returns as reached is the smallest feasible one it evaluated."""
    from jaxstress._reverse import _solve

    def metric(u):
        return float(u[0] + 3 * min(-u[1], 7.0)), np.array([1.0, -3.0 if u[1] > -7.0 else 0.0])

    seen = []
    target, tol = 30.0, 0.3
    m0, g0 = metric(np.zeros(2))
    u, m, reached = _solve(metric, lambda u, m, phase: seen.append((u.copy(), m)), m0, g0, target, tol,
                           np.array([-np.inf, -20.0]), np.array([np.inf, np.inf]), 200, 0.02, 10.0, 10)
    assert reached and abs(m - target) <= tol
    assert u[1] > -8.0 and np.linalg.norm(u) <= math.hypot(9.0, 7.0) + 1e-9
    assert any(v[1] == -20.0 and abs(mv - target) <= tol for v, mv in seen)  # the line search's corner was seen
    assert np.linalg.norm(u) == min(np.linalg.norm(v) for v, mv in seen if abs(mv - target) <= tol)


def test_default_tolerance_is_not_below_the_dtype_resolution():
    from jaxstress._reverse import target_tolerance

    assert target_tolerance(50.0, 80.0, "mean", np.float32) == pytest.approx(0.3)  # 1% of the gap
    # a target 3e-5 from a start of 59.4 (the user audit's case): 1% of the gap is below float32's resolution
    tol = target_tolerance(59.40893, 59.40890, "mean", np.float32)
    assert tol == pytest.approx(64 * np.finfo(np.float32).eps * 59.40893) and tol > 3e-5
    assert target_tolerance(59.40893, 59.40890, "mean", np.float64) < 1e-6
    assert target_tolerance(0.2, 0.2001, "prob", np.float32) == 1e-4


def test_not_reached_says_why():
    from jaxstress._calibrate_cli import not_reached_text

    res = {"settings": {"steps": 100}, "evaluations": 101, "at_bound": ["term_premium.sigma"],
           "target": {"metric": "portfolio_loss_var_99", "value": 0.25}, "fit_value": 0.2566}
    text = not_reached_text(res)
    assert "term_premium.sigma at its bound" in text and "all 100 steps used (--steps)" in text
    assert "portfolio_loss_var_99 = 0.2566 against 0.25" in text
    assert "at_bound" not in not_reached_text({**res, "at_bound": [], "evaluations": 31}).replace("bound", "")
    assert "30 of 100 steps used" in not_reached_text({**res, "at_bound": [], "evaluations": 31})


@pytest.mark.slow
def test_reverse_reaches_the_target_on_fresh_paths(tmp_path, capsys):
    out = tmp_path / "rev"
    rc = run_cli(["reverse", "april_2025_prior", "--horizon", repr(7 / 252), "--target", "y10_change_bp_mean=20",
                  "--drivers", TAU, "--paths", "2048", "--fresh-paths", "2048", "--steps", "30", "--out", str(out),
                  "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    res = json.loads((out / "reverse.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["reverse.json"]
    assert res["reached"] and res["target"]["value"] == 20.0
    assert res["notes"] == {}  # no regime intensity among the drivers
    start = res["start"]["metric"]
    assert start < 15.0  # the scenario starts well below the target: the solve has work to do
    new = res["solution"][TAU]
    assert new > 0.0008 and res["change_in_scales"][TAU] == pytest.approx((new - 0.0008) / 1e-4, rel=1e-6)
    # fresh paths (another seed): within 3 standard errors of the target; the optimisation paths' own error
    # (same number of paths, so the same standard error) adds in quadrature, plus 0.1bp of solver tolerance
    a = res["achieved"]
    assert a["seed"] != res["settings"]["seed"] and a["n_paths"] == 2048
    assert abs(a["value"] - 20.0) < 3 * math.hypot(a["stderr"], res["fit_stderr"]) + 0.1, a
    assert abs(a["value"] - start) > 10 * a["stderr"]  # it moved the metric, by far more than the noise
    # the solution is a valid --set override of the scenario
    sc = load_scenario("april_2025_prior", res["overrides"])
    assert sc.config["regimes"]["tariff_shock"]["jump_tau_mean"] == new
    hist = res["history"]
    assert hist[0]["metric"] == start and hist[0]["distance"] == 0.0
    assert {"iteration", "metric", "distance", "drivers"} <= set(hist[-1])
    assert "achieved on fresh paths" in printed
    assert res["fresh_z"] == pytest.approx(abs(a["value"] - res["fit_value"])
                                           / math.hypot(a["stderr"], res["fit_stderr"]))


def test_fresh_estimate_far_from_the_fit_is_warned():
    """The user audit's case (1,024 optimisation paths): fitted 80.1 for a target of 80, fresh 72.3 +- 2.1; the
    difference of the two independent estimates has a standard error of hypot(2.1, 2.97): 2.1 of them off. The
    distance is from the fit, not the target: a target out of reach is not noise."""
    from jaxstress._reverse import _fresh_z, fresh_warning

    se_fit = 2.1 * math.sqrt(2)
    z = _fresh_z(72.3, 80.1, 2.1, se_fit)
    assert z == pytest.approx(7.8 / math.hypot(2.1, se_fit))
    res = {"fresh_z": z, "achieved": {"value": 72.3, "stderr": 2.1}, "fit_value": 80.1, "fit_stderr": se_fit,
           "settings": {"paths": 1024}}
    msg = fresh_warning(res)
    assert msg and "72.3 +- 2.1" in msg and "2.1 standard errors" in msg and "more --paths (now 1024)" in msg
    assert fresh_warning({**res, "fresh_z": 1.9}) is None  # within 2 standard errors: no warning
    # a target out of reach: the fit stopped at 60 for a target of 80, and the fresh paths agree with the fit
    assert _fresh_z(60.4, 60.0, 2.1, se_fit) < 1.0


# ------------------------------------------------------------------------------------------------ CLI errors


@pytest.mark.parametrize("argv", [
    ["reverse", "april_2025_prior", "--target", "prob_y10_above_5pct", "--drivers", "basis_funds.leverage"],
    ["reverse", "april_2025_prior", "--target", "prob_y10_above_5pct=x", "--drivers", "basis_funds.leverage"],
    ["reverse", "april_2025_prior", "--target", "no_such_metric=1", "--drivers", "basis_funds.leverage"],
    ["reverse", "april_2025_prior", "--target", "prob_y10_above_5pct=1.5", "--drivers", "basis_funds.leverage"],
    ["reverse", "april_2025_prior", "--target", "y10_change_bp_mean=20", "--drivers", "basis_funds.levrage"],
    ["reverse", "april_2025_prior", "--target", "y10_change_bp_mean=20", "--drivers", "regimes.generator[0][0]"],
    ["reverse", "april_2025_prior", "--target", "y10_change_bp_mean=20", "--drivers", "basis_funds.leverage",
     "--set", "basis_funds.leverage=-1"],
    ["reverse", "april_2025_prior", "--target", "y10_change_bp_mean=20", "--drivers", "basis_funds.leverage",
     "--paths", "0"],
    ["calibrate", "event", "--window", "2025-04-11:2025-04-02", "--base", "april_2025_prior"],
    ["calibrate", "event", "--window", "2025-04-31:2025-05-09", "--base", "april_2025_prior"],
    ["calibrate", "event", "--window", "2025-04-02", "--base", "april_2025_prior"],
    ["calibrate", "event", "--window", "2025-04-05:2025-04-06", "--base", "april_2025_prior"],  # a weekend: no data
    ["calibrate", "event", "--window", "2025-04-02:2025-04-11", "--base", "no_such_scenario"],
    ["calibrate", "event", "--window", "2025-04-02:2025-04-11", "--base", "april_2025_prior", "--targets", "y5"],
    ["calibrate", "event", "--window", "2025-04-02:2025-04-11", "--base", "april_2025_prior",
     "--params", "regimes.tariff_shock.no_such"],
    ["calibrate", "history", "--start", "2025-13-01"],
    ["calibrate", "history", "--start", "2025-01-01", "--end", "2025-02-01"],  # too short for the fits
])
def test_cli_bad_input_is_one_line_exit_2(argv, tmp_path, capsys):
    out = str(tmp_path / ("x.toml" if argv[0] == "calibrate" else "rev"))
    rc = run_cli(argv + ["--out", out])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxstress"), err
    assert "Traceback" not in err
    assert not (tmp_path / "x.toml").exists() and not (tmp_path / "rev").exists()


@pytest.mark.parametrize("argv", [
    ["reverse", "april_2025_prior", "--target", "y10_change_bp_mean=20", "--drivers", "basis_funds.leverage",
     "--out", "/proc/jaxstress-rev"],
    ["calibrate", "event", "--window", "2025-04-02:2025-04-11", "--base", "april_2025_prior",
     "--out", "/proc/jaxstress-fit.toml"],
    ["calibrate", "history", "--out", "/proc/jaxstress-history.toml"],
])
def test_cli_unwritable_out_fails_before_the_work(argv, capsys, monkeypatch):
    """An --out where nothing can be created is one line naming it, before the fit (it was a traceback after it)."""
    import jaxstress._calibrate
    import jaxstress._event
    import jaxstress._reverse

    for mod, fn in ((jaxstress._reverse, "reverse_stress"), (jaxstress._event, "fit_event"),
                    (jaxstress._calibrate, "calibrate_history")):
        monkeypatch.setattr(mod, fn, lambda *a, **k: pytest.fail("the work started before --out was checked"))
    rc = run_cli(argv)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "/proc/jaxstress-" in err and "--out" in err, err


def test_cli_registers_the_verbs():
    parser = _Parser(prog="jaxstress")
    handlers = add_parsers(parser.add_subparsers(dest="command", parser_class=_Parser))
    assert set(handlers) == {"calibrate", "reverse"}
    args = parser.parse_args(["calibrate", "event", "--window", "2025-04-02:2025-04-11", "--base", "x", "--out",
                              "y.toml"])
    assert (args.command, args.calibrate_command, args.paths, args.steps) == ("calibrate", "event", 2048, 150)
    assert np.isclose(args.lr, 0.05)


# ------------------------------------------------------------------------------------------------ audit: bad input


@pytest.mark.parametrize("window, why", [
    (("2026-06-20", "2026-08-01"), r"ends after the last date of the data \(2026-06-24\)"),
    (("1989-12-20", "1990-01-10"), r"starts before the first date of the data \(1990-01-02\)"),
])
def test_event_window_reaching_past_the_data_is_an_error(window, why):
    with pytest.raises(ConfigError, match=rf"key 'DGS10': the window {window[0]}\.\.{window[1]} {why}: the data "
                                          r"cover 1990-01-02\.\.2026-06-24.*choose a --window inside the data, or a "
                                          r"--data folder"):
        event_window(*window)


def test_event_target_whose_data_do_not_cover_the_window_is_an_error():
    w = event_window("2002-12-20", "2003-01-10")  # CMT data cover it; T10YIE starts on 2003-01-02
    assert observed_changes(w, ["y10"])[0]["y10"] == pytest.approx((4.16 - 3.97) * 100)
    with pytest.raises(ConfigError, match=r"key 'T10YIE': the window 2002-12-20\.\.2003-01-10 starts before the first "
                                          r"date of the data \(2003-01-02\).*drop 'breakeven' from --targets"):
        observed_changes(w, ["y10", "breakeven"])


def test_event_cli_window_past_the_data_fails_before_the_fit(tmp_path, capsys):
    out = tmp_path / "e.toml"
    rc = run_cli(["calibrate", "event", "--base", "april_2025_prior", "--window", "2026-06-20:2026-08-01", "--out",
                  str(out), "--paths", "1", "--steps", "0"])
    stdout, err = capsys.readouterr()
    assert rc == 2 and "2026-06-20..2026-08-01 ends after the last date" in err and "--window" in err, err
    assert stdout == "" and not out.exists()


def test_event_cli_huge_value_in_the_data_fails_before_the_fit(tmp_path, capsys, data_copy):
    data = data_copy
    path = data / "ust_cmt_yields_daily_fred.csv"
    text = path.read_text()
    row = "\n2025-04-11,4.37,4.34,4.21,4.04,3.96,3.98,4.15,4.32,4.48,"
    assert row in text
    path.write_text(text.replace(row, row.replace("4.48,", "1e30,")))
    out = tmp_path / "e.toml"
    rc = run_cli(["calibrate", "event", "--base", "april_2025_prior", "--window", "2025-04-02:2025-04-11", "--data",
                  str(data), "--out", str(out), "--paths", "1", "--steps", "0"])
    stdout, err = capsys.readouterr()
    assert rc == 2 and "key 'DGS10': line" in err and "(2025-04-11): value '1e30' is outside" in err, err
    assert stdout == "" and not out.exists()


def _fake_model(monkeypatch, means=10.0, loss=1.0, bad_grad_at=None):
    """Replace the simulator by a stub (no compilation): constant means, the given loss, a NaN gradient from
    call `bad_grad_at` on (call 0 is the start's evaluation before the loop)."""
    import jaxstress._event as ev

    calls = []

    def call(self, x_fit, seed, observed, weights, scale):
        calls.append(seed)
        g = np.full(len(self.fit_idx), 0.1)
        if bad_grad_at is not None and len(calls) > bad_grad_at:
            g[0] = np.nan
        return loss, np.full(len(TARGETS), means), np.full(len(TARGETS), 30.0), g

    monkeypatch.setattr(ev._Model, "__call__", call)
    return calls


def test_event_fit_refuses_a_non_finite_starting_loss(monkeypatch):
    from jaxstress._errors import SimulationError

    _fake_model(monkeypatch, loss=math.inf)
    with pytest.raises(SimulationError, match=r"the loss at the starting values is not finite \(inf\) although the "
                                              r"simulated mean changes are \(y10 10 bp, against observed y10 28 bp"):
        fit_event("april_2025_prior", *APRIL, targets=["y10"], n_paths=PATHS, steps=3)


def test_event_fit_refuses_a_diverged_start(monkeypatch):
    from jaxstress._errors import SimulationError

    _fake_model(monkeypatch, means=6.6e6)
    with pytest.raises(SimulationError, match=r"mean changes over 2025-04-02\.\.2025-04-11 at the starting values "
                                              r"\(.*impact\.lambda0 = .*\) are not finite or beyond 10000 bp \(y2 "
                                              r"6\.6e\+06.*the simulation diverged under these parameters"):
        fit_event("april_2025_prior", *APRIL, n_paths=PATHS, steps=3)


def test_event_fit_stops_when_the_gradient_turns_non_finite(monkeypatch):
    from jaxstress._errors import SimulationError

    calls = _fake_model(monkeypatch, bad_grad_at=3)
    with pytest.raises(SimulationError, match=r"its gradient became non-finite at Adam step 2 of 50 .*use a smaller "
                                              r"--lr \(now 0\.05\)"):
        fit_event("april_2025_prior", *APRIL, targets=["y10"], n_paths=PATHS, steps=50)
    assert len(calls) == 4  # stopped there, not after 50 more steps


def test_event_cli_diverging_overrides_stop_at_the_start(tmp_path, capsys):
    """The audit's case: lambda0 = 1 with dealer capacity 1.01 simulates moves of millions of bp; the fit went on
    to NaN values and then named a deleted temporary file."""
    out = tmp_path / "e.toml"
    rc = run_cli(["calibrate", "event", "--base", "april_2025_prior", "--window", "2025-04-02:2025-04-11", "--set",
                  "impact.lambda0=1", "--set", "dealers.capacity=1.01", "--out", str(out), "--paths", str(PATHS),
                  "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "at the starting values" in err and "the simulation diverged under these parameters" in err, err
    assert ".e." not in err and "nan" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_write_fitted_config_names_the_output_not_a_temporary_file(tmp_path):
    out = tmp_path / "fit.toml"
    with pytest.raises(ConfigError) as e:
        write_fitted_config("april_2025_prior", {"impact.lambda0": math.nan}, out, APRIL)
    msg = str(e.value)
    assert msg.startswith(f"not written, the values would not make a valid scenario: {out}, key 'impact.lambda0'"), msg
    assert ".fit." not in msg and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["reverse", "april_2025_prior", "--lr", "0"], "key '--lr': expected a finite number > 0, got 0"),
    (["reverse", "april_2025_prior", "--width", "-0.5"], "key '--width': expected a finite number > 0, got -0.5"),
    (["calibrate", "event", "--lr", "0"], "key '--lr': expected a finite number > 0, got 0"),
    (["calibrate", "event", "--prior-weight", "-1"], "key '--prior-weight': expected a finite number >= 0, got -1"),
    (["calibrate", "event", "--targets", ""], "key '--targets': no target given: give at least one of y2, y10, y30, "
                                              "breakeven, term_premium (comma-separated)"),
])
def test_cli_messages_name_the_option_that_is_wrong(argv, message, tmp_path, capsys):
    if argv[0] == "reverse":
        argv = argv + ["--target", "y10_change_bp_mean=20", "--drivers", TAU, "--out", str(tmp_path / "rev")]
    else:
        argv = argv + ["--window", "2025-04-02:2025-04-11", "--base", "april_2025_prior", "--out",
                       str(tmp_path / "x.toml")]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err == f"jaxstress: error: {message}\n", err


def test_event_fit_notes_regime_intensities_drawn_too_rarely(monkeypatch):
    """A fitted regime intensity whose transition the fit's paths are not expected to draw (calm -> tariff_shock,
    over 7 steps from tariff_shock) gets a note, as in sensitivities; a shock size does not (stub simulator)."""
    _fake_model(monkeypatch)
    fit = fit_event("april_2025_prior", *APRIL, targets=["y10"], params_to_fit=[TAU, "regimes.generator[0][1]"],
                    n_paths=PATHS, steps=3)
    assert list(fit.notes) == ["regimes.generator[0][1]"], fit.notes
    assert fit.notes["regimes.generator[0][1]"].startswith("the transition calm -> tariff_shock is expected to be "
                                                           "drawn ")
