"""The Python API names a bad argument before any work: a clear ValueError / TypeError / ConfigError, not a deep
JAX or numpy traceback, and never a silently wrong result (regressions of an audit of the API)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxstress
from jaxstress import ConfigError, load_scenario
from jaxstress._simulate import N_NORMAL


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("april_2025", horizon=0.02)  # 5 steps


@pytest.fixture(scope="module")
def params(scenario):
    return scenario.params()


def test_simulate_draws_checks_shapes_and_reports(params):
    n, paths = params.n_steps, 4
    z, u = np.zeros((n, paths, N_NORMAL), np.float32), np.full((n, paths, 2), 0.5, np.float32)
    with pytest.raises(ValueError, match=rf"normals must have shape \(steps, paths, {N_NORMAL}\) with steps = "
                                         rf"params.n_steps = {n}, got \({n - 1}, 4, {N_NORMAL}\)"):
        jaxstress.simulate_draws(params, z[:-1], u)  # it reused the last step's draws in silence
    with pytest.raises(ValueError, match="normals must have shape"):
        jaxstress.simulate_draws(params, z[..., :9], u)
    with pytest.raises(ValueError, match=r"uniforms must have shape \(steps, paths, 2\)"):
        jaxstress.simulate_draws(params, z, u[:, :3])
    for reports in ((n,), (2, n), (0, 3, 2, n), (0, n + 1)):  # (n,) simulated nothing and reported zeros
        with pytest.raises(ValueError, match="reports must be increasing steps from 0 to params.n_steps"):
            jaxstress.simulate_draws(params, z, u, reports)
    # numpy arrays are taken as they are (they raised TracerArrayConversionError)
    metrics, snaps, _ = jaxstress.simulate_draws(params, z, u, (0, 2, n))
    assert metrics.shape == (len(jaxstress.METRIC_NAMES), paths) and snaps.shape[0] == 3
    assert np.isfinite(np.asarray(metrics)).all()


def test_numpy_integers_and_bad_scenarios_in_simulate(scenario):
    res = jaxstress.simulate(scenario, np.int64(256), retain=np.int64(10), chunk_size=np.int64(256))
    assert res.n_paths == 256 and res.snapshots.shape[2] == 10  # they crashed inside the loop
    with pytest.raises(TypeError, match="simulate takes a Scenario .*got str"):
        jaxstress.simulate("april_2025", 256)
    with pytest.raises(ValueError, match="dtype must be None, float32 or float64, got int32"):
        scenario.params(jnp.int32)  # it truncated every driver to an integer


@pytest.mark.parametrize("width", [0, -0.05, float("nan")])
def test_a_smoothing_width_must_be_positive(scenario, params, width):
    """width <= 0 gave a gradient of the wrong sign (-5 where +7) or NaN, or an error blaming the parameters."""
    with pytest.raises(ConfigError, match="the smoothing width must be a finite number > 0"):
        jaxstress.metric_function(params, "prob_y10_above_5pct", 256, width=width)
    with pytest.raises(ConfigError, match="the smoothing width must be a finite number > 0"):
        jaxstress.sensitivities(scenario, "prob_y10_above_5pct", 512, width=width)


def test_sensitivities_arguments(scenario):
    with pytest.raises(ValueError, match="n_paths must be an integer >= 1, got -5"):
        jaxstress.sensitivities(scenario, "y10_change_bp_mean", -5)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        jaxstress.sensitivities(scenario, "y10_change_bp_mean", 512, chunk_size=0)
    with pytest.raises(TypeError, match="sensitivities takes a Scenario"):
        jaxstress.sensitivities("april_2025", "y10_change_bp_mean", 512)
    # one driver given as a string is one driver (it was taken letter by letter: "unknown driver 't'")
    with pytest.raises(ConfigError, match="unknown driver 'term_premium.meen'; did you mean 'term_premium.mean'"):
        jaxstress.sensitivities(scenario, "y10_change_bp_mean", 512, drivers="term_premium.meen")
    with pytest.raises(ValueError, match="n_paths must be an integer >= 1"):
        jaxstress.metric_function(scenario.params(), "y10_change_bp_mean", 0)


def test_a_portfolio_built_in_code_is_checked_as_a_file_is():
    """It broadcast a 1-element notional over 2 positions, took coupon 4.0 and maturity 50, and failed deep inside
    simulate for lists."""
    import jax

    from jaxstress import Portfolio

    def book(notional=(1.0, 2.0), coupon=(0.04, 0.0), maturity=(10.0, 0.0), as_array=True):
        conv = jnp.asarray if as_array else list
        return Portfolio(name="mine", kinds=("bond", "cash"), names=("b", "c"), notional=conv(notional),
                         coupon=conv(coupon), maturity=conv(maturity))

    assert book().kinds == ("bond", "cash")
    for kwargs, needle in (({"notional": (1.0,)}, r"notional must be an array of one number a position, shape \(2,\)"),
                           ({"as_array": False}, "notional must be an array .* got list"),
                           ({"coupon": (4.0, 0.0)}, r"position 0 \(b\): coupon must be in \[0, 0.3\]"),
                           ({"maturity": (50.0, 0.0)}, r"position 0 \(b\): maturity must be in \(0, 30\] years"),
                           ({"notional": (float("nan"), 1.0)}, "notional must be finite")):
        with pytest.raises(ValueError, match=needle):
            book(**kwargs)
    # built from traced numbers (under grad), only the shapes are checked
    g = jax.grad(lambda x: book(notional=jnp.stack([x, 2.0])).notional.sum())(1.0)
    assert float(g) == 1.0


def test_load_scenario_takes_paths_and_numpy_numbers(tmp_path):
    from jaxstress._config import configs_dir

    a = load_scenario(configs_dir() / "baseline.toml", portfolio=configs_dir() / "portfolios" / "bank_afs.toml",
                      steps_per_year=np.int64(52), horizon=np.float64(0.5))  # each was refused
    assert a.config["simulation"]["steps_per_year"] == 52 and a.portfolio.name == "bank_afs"
    with pytest.raises(ConfigError, match="key 'name_or_path': expected a shipped name or a path, got int 5"):
        load_scenario(5)  # a TypeError from pathlib


def test_curve_and_summary_helpers_name_bad_input():
    from jaxstress import par_yield_from_zero, summarize, zero_yields

    def zero_fn(t):
        return zero_yields(t, 0.04, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5)

    for m in (0.0, -1.0, np.array([1.0, 2.0])):  # NaN, 0.0392, numpy's "truth value ... ambiguous"
        with pytest.raises(ValueError, match="par_yield_from_zero takes one maturity"):
            par_yield_from_zero(zero_fn, m)
    x = np.linspace(-1.0, 1.0, 101)
    out = summarize({"y10_change_bp": x}, level="5")  # KeyError 'portfolio_loss'; "Unknown format code 'g'"
    assert out["y10_change_bp_mean"]["value"] == pytest.approx(0.0, abs=1e-12) and "portfolio_loss_var_99" not in out
