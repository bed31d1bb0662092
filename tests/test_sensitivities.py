"""Autodiff sensitivities against central finite differences under common random numbers (float64).

Each check: |autodiff - finite difference| <= 3 combined standard errors (+ a small absolute slack for the O(h^2)
bias of the difference quotient). The autodiff standard error is the spread of the per-chunk estimates; the
finite difference's is sd_i((f_i(x+h) - f_i(x-h)) / 2h) / sqrt(n) over paths (for ES it is approximated by the
same per-path formula on the tail). One compiled gradient function serves every metric and driver.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstress._config import load_scenario
from jaxstress._sensitivities import (
    BLOCK,
    METRIC_NAMES,
    chunk_values,
    metric_function,
    parse_metric,
    sensitivities,
)
from jaxstress._simulate import PRNG_IMPL

PATHS = 4096
CHUNK = 512
SEED = 7


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):  # scoped: the mode that modules collected earlier set at import is kept after
        yield


@pytest.fixture(scope="module")
def scenario(x64):
    # april_2025 over 25 business days: every mechanism is active, the scan is short
    return load_scenario("april_2025", horizon=0.1, overrides=["fed.threshold=1.0"])


def _per_path(params, base):
    key = jax.random.key(SEED, impl=PRNG_IMPL)
    nb = CHUNK // BLOCK
    ix = jnp.asarray(METRIC_NAMES.index(base), jnp.int32)
    return np.concatenate([np.asarray(chunk_values(params, key, jnp.asarray(c * nb, jnp.uint32), nb, ix))
                           for c in range(PATHS // CHUNK)])


def _bump(params, leaf, idx, h):
    if leaf == "portfolio.notional":
        import equinox as eqx

        return eqx.tree_at(lambda p: p.portfolio.notional, params, params.portfolio.notional.at[idx].add(h))
    values = dict(params.values)
    values[leaf] = values[leaf].at[idx].add(h) if idx else values[leaf] + h
    if leaf.endswith("correlation"):  # the matrix stays symmetric: [j][i] moves with [i][j]
        values[leaf] = values[leaf].at[idx[::-1]].add(h)
    import equinox as eqx

    return eqx.tree_at(lambda p: p.values, params, values)


def _leaf_index(name):
    if name.startswith("portfolio.positions["):
        return "portfolio.notional", (int(name.split("[")[1].split("]")[0]),)
    if "[" in name:
        leaf = name.split("[")[0]
        idx = tuple(int(x) for x in name.split("[")[1:] for x in [x.rstrip("]")])
        return leaf, idx
    return name, ()


def finite_difference(scenario, metric, name, h):
    spec = parse_metric(metric)
    params = scenario.params()
    leaf, idx = _leaf_index(name)
    up = _per_path(_bump(params, leaf, idx, h), spec.base)
    dn = _per_path(_bump(params, leaf, idx, -h), spec.base)
    if spec.kind == "mean":
        d = (up - dn) / (2 * h)
        return d.mean(), d.std(ddof=1) / np.sqrt(d.size)
    if spec.kind == "es":
        def es(x):
            v = np.quantile(x, spec.q)
            return v + np.maximum(x - v, 0).mean() / (1 - spec.q)

        base = _per_path(params, spec.base)
        tail = base >= np.quantile(base, spec.q)
        d = (up - dn) / (2 * h)
        return (es(up) - es(dn)) / (2 * h), d[tail].std(ddof=1) / np.sqrt(tail.sum())
    raise AssertionError(spec.kind)


CASES = [
    # (metric, driver, finite-difference step) -- one or more per driver family
    ("y10_change_bp_mean", "initial.r", 1e-3),  # rates
    ("y10_change_bp_mean", "short_rate.phi_pi", 0.05),
    ("y10_change_bp_mean", "inflation.pass_through", 0.005),  # inflation
    ("y10_change_bp_mean", "term_premium.mean", 1e-3),  # term premium
    ("y10_change_bp_mean", "regimes.tariff_shock.jump_tau_mean", 2e-4),
    ("y10_change_bp_mean", "impact.lambda0", 2e-3),  # impact
    ("foreign_sales_bn_mean", "holders.china.sell_rate", 0.01),  # foreign selling
    ("forced_sales_bn_mean", "basis_funds.leverage", 1.0),  # leverage and haircuts
    ("forced_sales_bn_mean", "basis_funds.haircut0", 1e-3),
    ("fed_purchases_bn_mean", "fed.threshold", 0.1),  # Fed rule
    ("y10_change_bp_mean", "regimes.generator[1][3]", 5.0),  # regime intensities (score function)
    ("y10_change_bp_mean", "regimes.tariff_shock.jump_intensity", 10.0),  # jump intensity (score function)
    ("portfolio_loss_mean", "portfolio.positions[0].notional", 0.05),  # portfolio notionals
    ("portfolio_loss_es_95", "regimes.tariff_shock.tau_vol_mult", 0.2),  # a tail metric
    # a correlation ([i][j] moves [j][i] with it): inflation's and the term premium's shocks, through the spread of
    # the 10y yield that its running maximum feels
    ("y10_max_rise_bp_mean", "regimes.tariff_shock.correlation[1][2]", 0.05),
]


@pytest.fixture(scope="module")
def results(scenario):
    out = {}
    for metric in sorted({c[0] for c in CASES}):
        drivers = [c[1] for c in CASES if c[0] == metric]
        out[metric] = sensitivities(scenario, metric, PATHS, seed=SEED, chunk_size=CHUNK, drivers=drivers)
    return out


@pytest.mark.parametrize("metric, driver, h", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_gradient_matches_finite_difference(scenario, results, metric, driver, h):
    g = results[metric].gradients[driver]
    fd, fd_se = finite_difference(scenario, metric, driver, h)
    tol = 3 * np.hypot(g["stderr"], fd_se) + 1e-6 * max(1.0, abs(fd))
    assert abs(g["value"] - fd) <= tol, (g, fd, fd_se)
    assert g["at"] == pytest.approx(float(np.asarray(_value_of(scenario, driver))))


def test_a_correlation_driver_moves_both_entries(scenario, results):
    """`correlation[i][j]` names the pair [i][j], [j][i] (the config keeps the matrix symmetric), so its derivative
    is the metric's when both move: the model reads the symmetrized matrix, and one entry's partial derivative is
    half of that (which is what used to be reported). Checked tightly against a central difference of the same
    estimator on the same paths: under common random numbers the difference quotient of this mean differs from
    its derivative by O(h^2) and the few paths whose running maximum changes its day, far below the standard
    errors that bound the check above (which cannot tell a factor of 2 apart here)."""
    metric, driver = "y10_max_rise_bp_mean", "regimes.tariff_shock.correlation[1][2]"
    g = results[metric].gradients[driver]["value"]
    leaf, idx = _leaf_index(driver)
    h = 1e-4
    params = scenario.params()
    up = _per_path(_bump(params, leaf, idx, h), "y10_max_rise_bp")
    dn = _per_path(_bump(params, leaf, idx, -h), "y10_max_rise_bp")
    fd = float(np.mean(up - dn) / (2 * h))
    assert abs(fd) > 0.1  # a derivative that matters here
    assert g == pytest.approx(fd, rel=0.02), (g, fd)


def test_audit_script_finds_every_driver_agreeing(results, capsys):
    """scripts/sensitivity_audit.py on this module's paths (its compiled programs, so no compilation): the tight
    common-random-numbers check of pathwise drivers (a correlation, whose factor of 2 it would catch, a holder's)
    and the standard-error check of regime intensities (a generator row, a jump intensity of 0)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import sensitivity_audit

    rc = sensitivity_audit.main(["--metrics", "y10_max_rise_bp_mean", "--paths", str(PATHS), "--chunk", str(CHUNK),
                                 "--seed", str(SEED), "--drivers", "regimes.tariff_shock.correlation[1],"
                                 "holders.china,regimes.generator[1],regimes.calm.jump_intensity"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "y10_max_rise_bp_mean: 15 agree, 0 do not, 0 noted" in out, out


def _value_of(scenario, name):
    leaf, idx = _leaf_index(name)
    params = scenario.params()
    arr = params.portfolio.notional if leaf == "portfolio.notional" else params.values[leaf]
    return arr[idx] if idx else arr


def test_drivers_that_cannot_matter_have_zero_gradient(scenario):
    # no regime sells (foreign_selling = 0 everywhere): the holders' sell rates cannot matter; the portfolio and
    # the mortgage spread never feed back into the curve
    names = load_scenario("april_2025", horizon=0.1).config["regimes"]["names"]
    quiet = load_scenario("april_2025", horizon=0.1,
                          overrides=[f"regimes.{n}.foreign_selling=0.0" for n in names] + ["fed.threshold=1.0"])
    r = sensitivities(quiet, "y10_change_bp_mean", PATHS, seed=SEED, chunk_size=CHUNK,
                      drivers=["holders.uk.sell_rate", "holders.china.sell_rate", "portfolio.positions[0].notional",
                               "mortgage.spread"])
    for name, g in r.gradients.items():
        assert g["value"] == 0.0, name


def test_every_driver_is_named_with_unit_and_scale(results):
    grads = results["y10_change_bp_mean"].gradients
    for g in grads.values():
        assert {"at", "value", "stderr", "unit", "scale", "scaled", "note"} <= set(g)
        assert g["scaled"] == pytest.approx(g["value"] * g["scale"])


def test_value_is_the_plain_estimate_a_run_reports(scenario, results):
    """`value` +- `stderr` is the metric's plain estimate (as `run` reports it); `surrogate` what is differentiated.
    A quantile's chunks all share one VaR, so their spread was a standard error of 0; a probability's value was
    the sigmoid-smoothed one, which moves with --width."""
    mean = results["y10_change_bp_mean"]
    assert mean.surrogate == pytest.approx(mean.value, rel=1e-9) and mean.width is None  # equal chunks: the same
    q = sensitivities(scenario, "y10_change_bp_q95", PATHS, seed=SEED, chunk_size=CHUNK, drivers=["initial.r"])
    assert q.stderr > 0 and q.surrogate == pytest.approx(q.value, rel=1e-9)  # the VaR itself
    assert q.note is None and mean.note is None  # 512 x 0.05 = 25.6 paths beyond the VaR a chunk: enough
    prob = {w: sensitivities(scenario, "prob_y10_above_4p5pct", PATHS, seed=SEED, chunk_size=CHUNK, width=w,
                             drivers=["initial.r"]) for w in (0.05, 0.5)}
    a, b = prob[0.05], prob[0.5]
    assert a.value == b.value and a.stderr == b.stderr  # the plain probability: no width in it
    assert (a.value * a.n_paths) == pytest.approx(round(a.value * a.n_paths), abs=1e-6)  # a count of paths
    assert 0 < a.value < 1 and a.stderr == pytest.approx(np.sqrt(a.value * (1 - a.value) / a.n_paths))
    assert (a.width, b.width) == (0.05, 0.5) and a.surrogate != b.surrogate  # the smoothed one moves with width


def test_tail_note_where_chunks_hold_few_paths_beyond_the_var():
    from jaxstress._sensitivities import parse_metric, tail_note

    note = tail_note(parse_metric("portfolio_loss_var_99"), 512)
    assert "about 5.12 paths beyond the VaR, fewer than 20" in note
    assert "chunks of at least 2048 paths" in note and "at least 16384 paths" in note  # 20 / 0.01, whole blocks
    assert tail_note(parse_metric("portfolio_loss_var_99"), 2048) is None  # the default chunk at 16,384 paths
    assert tail_note(parse_metric("y10_change_bp_q01"), 512) is not None  # the lower tail counts the same
    assert tail_note(parse_metric("portfolio_loss_es_95"), 512) is None


def test_all_drivers_by_default(scenario):
    # PATHS: the chunks of `results` (2 * CHUNK paths would make chunks of 128, a program of their own to compile)
    r = sensitivities(scenario, "y10_change_bp_mean", PATHS, seed=SEED, chunk_size=CHUNK)
    names = set(r.gradients)
    for expected in ("curve.k", "regimes.generator[0][1]", "holders.japan.sell_rate", "basis_funds.leverage",
                     "fed.max_purchases", "portfolio.positions[0].notional", "regimes.calm.correlation[0][2]"):
        assert expected in names
    assert "regimes.generator[0][0]" not in names  # the diagonal follows from the row
    assert all(np.isfinite(g["value"]) for g in r.gradients.values())
    # calm and pause have no jumps (intensity 0) and jumps of size 0, so their intensities cannot matter; the score
    # function used to report -Cov(metric, time in the regime) for them (0.063 +- 0.004 bp a jump a year for
    # calm's at 32,768 paths, where a central difference gives exactly 0)
    for regime in ("calm", "pause"):
        assert scenario.config["regimes"][regime]["jump_intensity"] == 0.0
        assert r.gradients[f"regimes.{regime}.jump_intensity"]["value"] == 0.0


def test_metric_function_under_user_jit_and_grad(scenario):
    """A user's loss of drivers set by name (`set_drivers`), under their own jit and grad: its gradient equals a
    central difference of the same loss on the same paths (common random numbers: O(h^2) and the few paths whose
    running maximum changes its day apart); the correlation entry moves its mirror with it."""
    from jaxstress import drivers, set_drivers

    params = scenario.params()
    names = ("term_premium.mean", "regimes.tariff_shock.correlation[1][2]")

    def loss(x):
        p = set_drivers(params, dict(zip(names, x)))
        return metric_function(p, "y10_max_rise_bp_mean", 512, seed=SEED)

    value_and_grad = jax.jit(jax.value_and_grad(loss))  # one program for the gradient and the differences' values
    x0 = jnp.asarray([float(drivers(params)[n]) for n in names])
    g = np.asarray(value_and_grad(x0)[1])
    for i, h in enumerate((1e-5, 1e-4)):
        e = jnp.zeros(2).at[i].set(h)
        fd = float(value_and_grad(x0 + e)[0] - value_and_grad(x0 - e)[0]) / (2 * h)
        assert abs(fd) > 0.1 and g[i] == pytest.approx(fd, rel=0.02), (names[i], g[i], fd)


def test_unknown_metric_and_driver_are_config_errors(scenario):
    from jaxstress import ConfigError

    with pytest.raises(ConfigError, match="unknown metric 'y10_chnage_bp_mean' \\(did you mean 'y10_change_bp_mean'"):
        parse_metric("y10_chnage_bp_mean")
    for name in ("y10_change_bp_q00", "portfolio_loss_es00", "portfolio_loss_var_00"):  # once a ZeroDivisionError
        with pytest.raises(ConfigError, match=f"metric '{name}': a level of 00 has no tail; use a level from 01"):
            parse_metric(name)
    with pytest.raises(ConfigError, match="did you mean"):
        sensitivities(scenario, "y10_change_bp_mean", CHUNK, seed=SEED, chunk_size=CHUNK,
                      drivers=["holders.japan.sell_rat"])
    with pytest.raises(ConfigError, match="'fed.backstop' is a switch .* not a driver"):  # not "did you mean"
        sensitivities(scenario, "y10_change_bp_mean", CHUNK, seed=SEED, chunk_size=CHUNK, drivers=["fed.backstop"])
    # not "did you mean 'regimes.generator[3][0]'" (the closest name), as it used to say
    with pytest.raises(ConfigError, match=r"'regimes.generator\[1\]\[1\]' is a diagonal entry of the generator, "
                                          "which follows from its row"):
        sensitivities(scenario, "y10_change_bp_mean", CHUNK, seed=SEED, chunk_size=CHUNK,
                      drivers=["regimes.generator[1][1]"])


@pytest.mark.parametrize("drivers", ["", ",", " , "])
def test_empty_driver_list_is_a_config_error(tmp_path, capsys, drivers):
    """`--drivers ''` used to run every driver, as if --drivers had been left out."""
    from jaxstress._cli import main

    out = tmp_path / "sens"
    assert main(["sensitivities", "april_2025", "--drivers", drivers, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "key '--drivers': give at least one driver name" in err, err
    assert not out.exists()


def test_one_chunk_is_a_config_error(scenario, tmp_path, capsys):
    """The standard errors need two chunks: 256 paths (one block, one chunk) is refused before any work, with one
    line naming --paths, and nothing is written (it used to fail writing a NaN standard error to JSON)."""
    from jaxstress import ConfigError
    from jaxstress._cli import main

    with pytest.raises(ConfigError, match="at least 512 paths"):
        sensitivities(scenario, "y10_change_bp_mean", 256, seed=SEED)
    out = tmp_path / "sens"
    assert main(["sensitivities", "april_2025", "--paths", "256", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--paths" in err and "at least 512 paths" in err, err
    assert not out.exists()


def test_cli_writes_ranked_json_and_tornado(tmp_path, results, capsys):
    import json

    from jaxstress._cli import main

    out = tmp_path / "s"
    rc = main(["sensitivities", "april_2025", "--metric", "y10_change_bp_mean", "--paths", str(PATHS),
               "--chunk-size", str(CHUNK), "--seed", str(SEED), "--horizon", "0.1", "--set", "fed.threshold=1.0",
               "--out", str(out), "--quiet", "--float64"])
    assert rc == 0
    from jaxstress._output import OUTPUT_NAMES

    assert {p.name for p in out.iterdir()} <= OUTPUT_NAMES  # so that a second run into `out` replaces it
    doc = json.loads((out / "sensitivities.json").read_text())
    assert doc["metric"] == "y10_change_bp_mean"
    ref = results["y10_change_bp_mean"]
    assert doc["value"] == pytest.approx(ref.value, rel=1e-9)
    scaled = [abs(g["scaled"]) for g in doc["gradients"].values()]
    assert scaled == sorted(scaled, reverse=True)
    for name in ("initial.r", "regimes.generator[1][3]"):
        assert doc["gradients"][name]["value"] == pytest.approx(ref.gradients[name]["value"], rel=1e-9)
    assert (out / "sensitivities.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["note"] is None
    # a VaR 99 in chunks of 512: about 5 paths beyond the VaR a chunk, so the result says not to trust it
    rc = main(["sensitivities", "april_2025", "--metric", "portfolio_loss_var_99", "--paths", str(PATHS),
               "--chunk-size", str(CHUNK), "--seed", str(SEED), "--horizon", "0.1", "--set", "fed.threshold=1.0",
               "--out", str(tmp_path / "var"), "--quiet", "--float64", "--drivers", "initial.r"])
    note = json.loads((tmp_path / "var" / "sensitivities.json").read_text())["note"]
    assert rc == 0 and "about 5.12 paths beyond the VaR" in note
    assert f"jaxstress: warning: portfolio_loss_var_99: {note}" in capsys.readouterr().err
    assert main(["sensitivities", "april_2025", "--metric", "nonsense", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_cli_defaults_in_32_bit_mode(tmp_path, capsys):
    """Without --float64 and --chunk-size (the chunk then defaults by backend, capped so that there are 8 chunks
    where there are 8 blocks: one block of 256 paths here, the float32 program of test_robustness's gradient
    runs, compiled once for both where the session's cache has it). Calm's jumps given a size but no intensity:
    its intensity's gradient misses them, and its note says so (in the JSON and below the table); pause's jumps
    have no size, no note."""
    import json

    from jaxstress._cli import main

    out = tmp_path / "s32"
    with jax.enable_x64(False):
        rc = main(["sensitivities", "april_2025", "--paths", "2048", "--horizon", "0.02", "--out", str(out),
                   "--set", "regimes.calm.jump_tau_mean=0.001", "--top", "3"])
    assert rc == 0
    doc = json.loads((out / "sensitivities.json").read_text())
    assert doc["paths"] == 2048 and doc["chunks"] == 8
    assert np.isfinite(doc["value"]) and all(np.isfinite(g["value"]) for g in doc["gradients"].values())
    notes = {k: g["note"] for k, g in doc["gradients"].items() if g["note"]}
    assert notes["regimes.calm.jump_intensity"].startswith("a jump in regime calm is never drawn (its intensity is 0)")
    assert "regimes.pause.jump_intensity" not in notes and "regimes.generator[1][3]" not in notes
    # over 5 steps from tariff_shock the chain rarely reaches calm: its transitions are noted too, and only
    # regime intensities are
    assert "regimes.generator[0][1]" in notes and all(k.startswith("regimes.") for k in notes), notes
    assert all(k.startswith("regimes.generator[") or k.endswith(".jump_intensity") for k in notes), notes
    printed = capsys.readouterr().out
    assert all(f"note: {k}: {v}" in printed for k, v in notes.items())


def test_rare_draws_are_noted():
    """march_2020 starts in dash_for_cash; calm -> stabilization has no intensity and only a three-step route: at
    32,768 paths x 25 steps it is expected 0.28 times (the chain's occupation of calm x the step probability), and
    its score-function gradient there was 0.199 +- 0.005 bp per 1/year against 0.026 +- 0.013 by a one-sided
    difference under common random numbers. Transitions drawn thousands of times agreed (|z| <= 1.3)."""
    from jaxstress._sensitivities import MIN_DRAWS, expected_draws, rare_draw_note

    params = load_scenario("march_2020", horizon=0.1).params()
    assert params.regime_names[0] == "calm" and params.regime_names[3] == "stabilization"
    transitions, jumps = expected_draws(params, 32768)
    assert transitions.sum() == pytest.approx(32768 * 25)  # one transition (or stay) a step a path
    assert transitions[0, 3] == pytest.approx(0.28, rel=0.01)
    note = rare_draw_note(params, "regimes.generator", (0, 3), 32768)
    assert note.startswith("the transition calm -> stabilization is expected to be drawn 0.28 times over these "
                           "32,768 paths x 25 steps, too rarely")
    assert "--set regimes.generator[0][3]=" in note
    assert rare_draw_note(params, "regimes.generator", (0, 3), 10**7) is None  # 85 expected draws
    for i, j in ((1, 2), (2, 3), (3, 0), (2, 0)):  # drawn hundreds of times or more
        assert transitions[i, j] >= MIN_DRAWS and rare_draw_note(params, "regimes.generator", (i, j), 32768) is None
    assert rare_draw_note(params, "initial.r", (), 32768) is None
    # jumps: a tariff_shock jump (intensity 50) is common; a regime with no jumps and jumps of size 0, exact
    april = load_scenario("april_2025", horizon=0.1).params()
    assert expected_draws(april, 256)[1][1] > MIN_DRAWS
    assert rare_draw_note(april, "regimes.tariff_shock.jump_intensity", (), 256) is None
    assert rare_draw_note(april, "regimes.calm.jump_intensity", (), 256) is None
    assert MIN_DRAWS == 20.0


def test_values_pass_only_where_a_var_is_needed(scenario, results, monkeypatch):
    """A mean's plain estimate comes from the per-path values the gradient's pass returns (no pass of values of
    its own: bitwise the values that pass gives); an ES's VaR needs the values first, so it keeps its pass."""
    from jaxstress import _sensitivities

    calls = []
    chunk_values = _sensitivities.chunk_values
    monkeypatch.setattr(_sensitivities, "chunk_values", lambda *a: calls.append(a) or chunk_values(*a))
    mean = sensitivities(scenario, "y10_change_bp_mean", PATHS, seed=SEED, chunk_size=CHUNK, drivers=["initial.r"])
    assert calls == [] and mean.forward_s == 0.0
    ref = results["y10_change_bp_mean"]
    assert (mean.value, mean.stderr) == (ref.value, ref.stderr)
    assert mean.value == pytest.approx(float(np.mean(_per_path(scenario.params(), "y10_change_bp"))), rel=1e-12)
    es = sensitivities(scenario, "portfolio_loss_es_95", PATHS, seed=SEED, chunk_size=CHUNK, drivers=["initial.r"])
    assert len(calls) == PATHS // CHUNK and es.forward_s > 0
