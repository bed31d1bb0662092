"""`driver_names`, `drivers` and `set_drivers`: the drivers of a Params by the names `--set` and the sensitivities
use, read and set from Python (traceable), with bad names and values refused as the config refuses them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstress import ConfigError, driver_names, drivers, load_scenario, set_drivers
from jaxstress._sensitivities import driver_leaves, expand_names


@pytest.fixture(scope="module")
def params():
    return load_scenario("april_2025", horizon=0.05).params()


def test_names_are_the_sensitivities_names_and_read_back(params):
    names = driver_names(params)
    assert names == [n for n, _, _ in expand_names(params, driver_leaves(params))]
    for expected in ("initial.r", "holders.japan.sell_rate", "debt.amounts[0]", "regimes.generator[0][1]",
                     "regimes.calm.correlation[0][2]", "portfolio.positions[0].notional"):
        assert expected in names
    assert "regimes.generator[1][1]" not in names and "regimes.calm.correlation[2][0]" not in names
    values = drivers(params)
    assert list(values) == names
    assert float(values["initial.r"]) == float(params.values["initial.r"])
    assert float(values["debt.amounts[2]"]) == float(params.values["debt.amounts"][2])
    assert float(values["portfolio.positions[1].notional"]) == float(params.portfolio.notional[1])


def test_setting_every_driver_to_its_value_changes_nothing(params):
    same = set_drivers(params, drivers(params))
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(same)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_set_drivers_sets_entries_mirrors_and_whole_leaves(params):
    new = set_drivers(params, {"holders.japan.sell_rate": 0.3, "regimes.calm.correlation[0][2]": 0.25,
                               "debt.amounts[0]": 1000, "portfolio.positions[0].notional": 2.0,
                               "regimes.generator": np.asarray(params.values["regimes.generator"]) * 2})
    v = new.values
    assert float(v["holders.japan.sell_rate"]) == pytest.approx(0.3)
    assert float(v["regimes.calm.correlation"][0, 2]) == float(v["regimes.calm.correlation"][2, 0]) == 0.25
    assert float(v["debt.amounts"][0]) == 1000.0 and v["debt.amounts"].dtype == params.values["debt.amounts"].dtype
    assert float(new.portfolio.notional[0]) == 2.0
    np.testing.assert_allclose(v["regimes.generator"], 2 * np.asarray(params.values["regimes.generator"]))
    # the rest is untouched, and so is the original
    assert float(v["holders.china.sell_rate"]) == float(params.values["holders.china.sell_rate"])
    assert float(params.values["regimes.calm.correlation"][0, 2]) == pytest.approx(0.2)


def test_set_drivers_is_traceable(params):
    """Under jit and grad: a traced correlation entry moves its mirror, so d/dx of the matrix's sum is 2."""
    def total(x):
        p = set_drivers(params, {"regimes.calm.correlation[0][2]": x, "initial.r": 2 * x})
        return jnp.sum(p.values["regimes.calm.correlation"]) + p.values["initial.r"]

    assert float(jax.jit(jax.grad(total))(0.1)) == pytest.approx(4.0)
    batched = jax.vmap(lambda x: set_drivers(params, {"initial.r": x}).values["initial.r"])(jnp.arange(3.0) / 100)
    np.testing.assert_allclose(batched, [0.0, 0.01, 0.02])
    # traced values are not checked (a value out of range gives what the model makes of it)
    assert float(jax.jit(lambda x: set_drivers(params, {"holders.japan.sell_rate": x}).values[
        "holders.japan.sell_rate"])(-1.0)) == -1.0


@pytest.mark.parametrize("values, message", [
    ({"holders.japan.sell_rat": 1.0}, r"key 'holders.japan.sell_rat': unknown driver .* did you mean "
                                      r"'holders.japan.sell_rate'\?"),
    ({"x": 1.0}, r"unknown driver 'x' \(jaxstress.driver_names\(params\) lists them\)"),
    ({"fed.backstop": 1.0}, r"'fed.backstop' is a switch \(true/false\), not a driver"),
    ({"simulation.steps_per_year": 12.0}, "is a static setting"),
    ({"curve.maturities": 1.0}, "is a static setting"),
    ({"regimes.generator[1][1]": 1.0}, "diagonal entry of the generator, which follows from its row"),
    ({"regimes.generator[1]": 1.0}, r"unknown driver 'regimes.generator\[1\]'; did you mean"),
    ({"debt.amounts[7]": 1.0}, r"unknown driver 'debt.amounts\[7\]'; did you mean 'debt.amounts\[\d\]'"),
    ({"holders.japan.sell_rate": -1.0}, r"key 'holders.japan.sell_rate': value -1.0 out of range: expected a "
                                        r"number in \[0.0, 100.0\]"),
    ({"holders.japan.sell_rate": float("nan")}, "expected a finite number"),
    ({"debt.amounts": [1.0, -2.0, 3.0, 4.0, 5.0]}, r"key 'debt.amounts\[1\]': value -2.0 out of range"),
    ({"portfolio.positions[0].notional": float("inf")}, "expected a finite number"),
    ({"regimes.calm.correlation[0][2]": 0.999}, r"key 'regimes.calm.correlation': correlation matrix is not "
                                                "positive definite"),
    ({"regimes.calm.correlation": np.eye(5) + np.eye(5, k=1) * 0.1}, "must be symmetric"),
    ({"regimes.generator[0][1]": -1.0},
     r"key 'regimes.generator\[0\]\[1\]': off-diagonal intensities must be in \[0, 10000\]"),
    ({"regimes.generator[0][1]": 1e5},  # past 1e4 a year (3e38: expm(Q dt) overflows)
     r"key 'regimes.generator\[0\]\[1\]': off-diagonal intensities must be in \[0, 10000\] per year, got 100000"),
    ({"debt.amounts": [1.0]}, r"expected an array of shape \(5,\) for 'debt.amounts', got shape \(1,\)"),
    ({"initial.r": [0.01, 0.02]}, r"expected one number for 'initial.r', got shape \(2,\)"),
    ({"initial.r": "0.01"}, "expected real numbers for 'initial.r'"),
    ([("initial.r", 0.01)], "expected a mapping of driver names to values, got list"),
])
def test_bad_names_and_values_are_one_config_error(params, values, message):
    with pytest.raises(ConfigError, match=message):
        set_drivers(params, values)


def test_params_traced_by_the_callers_jit(params):
    """`set_drivers`, `drivers` and `driver_names` on params that are themselves an argument of the user's jit
    (one program for every scenario of a structure): they used to make numpy arrays of the traced leaves."""
    @jax.jit
    def bump(p, x):
        q = set_drivers(p, {"term_premium.mean": x, "regimes.calm.correlation[0][2]": 0.2 * x / x})
        return drivers(q)["term_premium.mean"], len(driver_names(q))

    value, n = bump(params, jnp.float32(0.02))
    assert float(value) == pytest.approx(0.02) and int(n) == len(driver_names(params))


def test_driver_gradients_sum_a_correlations_mirror_entries(params):
    """A correlation driver moves [i][j] and [j][i] together: its derivative is the sum of the two entries'."""
    from jaxstress import driver_gradients

    def loss(p):  # reads the matrix unsymmetrically, so the two entries' derivatives differ
        c = p.values["regimes.calm.correlation"]
        return 3.0 * c[0, 2] + 5.0 * c[2, 0] + 7.0 * p.values["initial.r"]

    g = driver_gradients(jax.grad(loss)(params))
    assert float(g["regimes.calm.correlation[0][2]"]) == 8.0 and float(g["initial.r"]) == 7.0
    assert set(g) == set(driver_names(params))
    # the same through set_drivers, the definition of the driver
    x = drivers(params)["regimes.calm.correlation[0][2]"]
    assert float(jax.grad(lambda x: loss(set_drivers(params, {"regimes.calm.correlation[0][2]": x})))(x)) == 8.0


def test_wrong_objects_and_float64_without_x64_are_clear_errors():
    from jaxstress import metric_function

    scenario = load_scenario("april_2025", horizon=0.05)
    with pytest.raises(TypeError, match="metric_function takes a Params .* got Scenario"):
        metric_function(scenario, "y10_change_bp_mean", 256)
    with jax.enable_x64(False), pytest.raises(ValueError, match="dtype float64 needs JAX's 64-bit mode"):
        scenario.params(jnp.float64)  # it returned float32 without a word
