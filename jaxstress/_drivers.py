"""Drivers by name in Python: read and set the differentiable numbers of a `Params`.

A driver is named as `--set` and `sensitivities.json` name it: `holders.japan.sell_rate`, `debt.amounts[0]`,
`regimes.generator[0][1]` (off-diagonal: the diagonal follows from its row), `regimes.calm.correlation[0][2]`
(i < j: `[j][i]` moves with it, so the matrix stays symmetric), `portfolio.positions[0].notional`. A leaf that
holds several drivers can be set whole by its own name (`debt.amounts`, `regimes.generator`,
`regimes.calm.correlation`) with an array of its shape.

`set_drivers` is traceable: values may be JAX tracers (under `jax.grad`, `jax.jit`, `jax.vmap`), so a loss of the
drivers can be differentiated and optimized. Concrete values are checked as the config checks them (finite, in
the field's range, a correlation matrix symmetric and positive definite); traced values cannot be, and a value
outside its range gives what the model makes of it.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ._config import Params, _check, _check_correlation, parse_key
from ._errors import ConfigError, did_you_mean
from ._schema import MAX_INTENSITY, Field
from ._sensitivities import _field_of, driver_entry, driver_leaves, expand_names, with_drivers

PORTFOLIO = "portfolio.notional"


def driver_names(params: Params) -> list[str]:
    """Every scalar driver of `params`, by name, in the order of `sensitivities`' gradients before ranking."""
    return [name for name, _, _ in expand_names(params, driver_leaves(params))]


def drivers(params: Params) -> dict[str, jax.Array]:
    """Every scalar driver's value, by name (`driver_names`); traceable. For a gradient (`jax.grad` of a loss of
    the params) use `driver_gradients`: a correlation driver's derivative is not its [i][j] entry alone."""
    leaves = driver_leaves(params)
    return {name: leaves[leaf][idx] if idx else leaves[leaf] for name, leaf, idx in expand_names(params, leaves)}


def driver_gradients(grad: Params) -> dict[str, jax.Array]:
    """Every scalar driver's derivative, by name (the names of `driver_names`, in the order of `grad`'s leaves:
    `jax.grad` sorts them), from `grad`, the gradient of a scalar loss with respect to a `Params`
    (`jax.grad(loss)(params)`); traceable. A correlation driver [i][j] moves [j][i]
    with it, so its derivative is the sum of the two entries' (twice what `drivers(grad)` reads for a symmetric
    loss); the same numbers as `sensitivities`' gradients."""
    leaves = driver_leaves(grad)
    return {name: driver_entry(leaves[leaf], leaf, idx) for name, leaf, idx in expand_names(grad, leaves)}


def _slots(params: Params) -> tuple[dict[str, tuple[str, tuple]], dict[str, jax.Array]]:
    leaves = driver_leaves(params)
    slots = {name: (leaf, idx) for name, leaf, idx in expand_names(params, leaves)}
    for leaf, value in leaves.items():  # whole leaves of several drivers by their own name
        if leaf != PORTFOLIO and np.ndim(value) > 0:
            slots[leaf] = (leaf, None)
    return slots, leaves


def _unknown(params: Params, name: str, known: list[str]) -> ConfigError:
    if name in params.values:  # in the values, not a driver: a switch
        return ConfigError(f"'{name}' is a switch (true/false), not a driver: set it in the scenario (load_scenario("
                           "..., overrides=[...])) instead", key=name)
    try:
        parts = parse_key(name)
    except ConfigError:
        parts = []
    strs = [p for p in parts if isinstance(p, str)]
    ints = [p for p in parts if isinstance(p, int)]
    field = _field_of(".".join(strs))
    if field is not None and field.static:
        return ConfigError(f"'{name}' is a static setting (it fixes the simulation's shape and is not "
                           "differentiable), not a driver: set it in the scenario instead", key=name)
    if ".".join(strs) == "regimes.generator" and len(ints) == 2 and ints[0] == ints[1]:
        return ConfigError(f"'{name}' is a diagonal entry of the generator, which follows from its row (rows sum "
                           "to zero), not a driver: set an off-diagonal intensity instead", key=name)
    hint = did_you_mean(name, known, "; did you mean '{}'?")
    return ConfigError(f"unknown driver '{name}'{hint} (jaxstress.driver_names(params) lists them)", key=name)


def _concrete(x) -> np.ndarray | None:
    """x as a numpy array where it is concrete, None where it is traced."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_value(name: str, leaf: str, x: np.ndarray) -> None:
    """A concrete value checked as the config checks the field's entries (finite, in range)."""
    field = _field_of(leaf) if leaf != PORTFOLIO else None
    for i in np.ndindex(x.shape):
        v = float(x[i])
        key = name + "".join(f"[{k}]" for k in i)
        if field is None or field.kind == "matrix":  # notionals, matrices: finite (matrices are checked whole)
            if not np.isfinite(v):
                raise ConfigError(f"expected a finite number, got {v}", key=key)
            continue
        scalar = Field("float", field.unit, lo=field.lo, hi=field.hi, lo_open=field.lo_open)
        _check(scalar, v, key, None)


def set_drivers(params: Params, values: Mapping[str, object]) -> Params:
    """`params` with the named drivers set to `values` (name -> number or array; see the module's docstring for
    the names). Traceable. Raises ConfigError naming the driver for an unknown name (with the closest known one),
    a switch or static setting, a value of the wrong shape, and a concrete value the config would refuse."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a mapping of driver names to values, got {type(values).__name__}",
                          key="values")
    slots, leaves = _slots(params)
    new = dict(leaves)
    touched: set[str] = set()
    for name, value in values.items():
        if not isinstance(name, str) or name not in slots:
            raise _unknown(params, str(name), list(slots))
        leaf, idx = slots[name]
        whole = idx is None
        old = new[leaf]
        want = np.shape(old) if whole else ()
        try:
            x = jnp.asarray(value)
        except (TypeError, ValueError):
            x = None
        if x is None or not jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.complexfloating):
            got = type(value).__name__ if x is None else x.dtype
            raise ConfigError(f"expected real numbers for '{name}', got {got}", key=name)
        if x.shape != want:
            what = f"an array of shape {want}" if whole else "one number"
            raise ConfigError(f"expected {what} for '{name}', got shape {tuple(x.shape)}", key=name)
        concrete = _concrete(value)
        if concrete is not None:
            _check_value(name, leaf, concrete)
        x = x.astype(old.dtype)
        if whole:
            new[leaf] = x
        else:
            new[leaf] = old.at[idx].set(x)
            if leaf.endswith("correlation"):  # the mirror entry moves with it
                new[leaf] = new[leaf].at[idx[::-1]].set(x)
        touched.add(leaf)
    for leaf in touched:  # matrices whole, where concrete: what the config requires of them
        m = _concrete(new[leaf])
        if m is None:
            continue
        if leaf.endswith("correlation"):
            _check_correlation(m.tolist(), leaf, None)
        if leaf == "regimes.generator":
            off = [(i, j) for i, j in np.ndindex(m.shape) if i != j and not 0 <= m[i, j] <= MAX_INTENSITY]
            if off:
                i, j = off[0]
                raise ConfigError(f"off-diagonal intensities must be in [0, {MAX_INTENSITY:g}] per year, got "
                                  f"{m[i, j]}", key=f"regimes.generator[{i}][{j}]")
    return with_drivers(params, new)
