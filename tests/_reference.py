"""Pieces of the numpy references written from docs/MODEL.md that the reference tests share (float64): the
parameters as numpy values, the zero curve, the term premium, the dysfunction and a state's derived fields."""

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxstress._model import State


class RefValues:
    """The scenario's parameters as numpy float64 values by dotted key, with its holders and regimes."""

    def __init__(self, params):
        self.v = {k: np.asarray(x, np.float64) for k, x in params.values.items()}
        self.holders = params.holder_names
        self.regimes = params.regime_names

    def holder(self, f):
        """A holder field as an array over the holders."""
        return np.array([self.v[f"holders.{h}.{f}"] for h in self.holders])


def zero_yield(ref, m, r, pi, tau, r_star, p):
    """docs/MODEL.md "Curve": y(m) = r B(m) + (r_star + pi)(1 - B(m)) + p C(m) + tau G(m)/G(10), m > 0."""
    k, kc, mu = ref.v["curve.k"], ref.v["curve.kc"], ref.v["curve.mu"]

    def g(m):
        return 1.0 - (1.0 - np.exp(-m / mu)) / (m / mu)

    b = (1.0 - np.exp(-k * m)) / (k * m)
    c = (1.0 - np.exp(-kc * m)) / (kc * m) - np.exp(-kc * m)
    return r * b + (r_star + pi) * (1.0 - b) + p * c + tau * g(m) / g(10.0)


def term_premium(ref, tau_f, impact, stock):
    """tau = tau_f + I + stock_bp_per_tn x (cumulative F) / $1tn (bp to decimal: 1e-4; $bn to $tn: 1e-3)."""
    return tau_f + impact + ref.v["impact.stock_bp_per_tn"] * 1e-4 * stock / 1000.0


def dysfunction(ref, basis, y10, ewma10, var10):
    """D = w_basis (b - b0)+ / 10bp + w_move (y10 - ewma5(y10))+ / 25bp + w_vol (vol / vol0 - 1)+."""
    v = ref.v
    return (v["fed.w_basis"] * np.maximum(basis - v["initial.basis_bp"], 0.0) / 10.0
            + v["fed.w_move"] * np.maximum(y10 - ewma10, 0.0) / 0.0025
            + v["fed.w_vol"] * np.maximum(np.sqrt(var10) / v["initial.vol_10y"] - 1.0, 0.0))


def finish(ref, s):
    """A state's derived fields (a dict of arrays, in place): the 10y term premium, the 10y and 2y zero yields,
    the dysfunction."""
    s["tau"] = term_premium(ref, s["tau_f"], s["impact"], s["stock"])
    s["y10"] = zero_yield(ref, 10.0, s["r"], s["pi"], s["tau"], s["r_star"], s["p"])
    s["y2"] = zero_yield(ref, 2.0, s["r"], s["pi"], s["tau"], s["r_star"], s["p"])
    s["dysfunction"] = dysfunction(ref, s["basis"], s["y10"], s["ewma10"], s["var10"])
    return s


def to_state(s) -> State:
    """A batch of JAX float64 states from a numpy state (field -> array over paths; holdings, debt and interest
    (items, paths))."""
    out = {}
    for f in dataclasses.fields(State):
        x = s[f.name]
        if f.name == "regime":
            out[f.name] = jnp.asarray(x, jnp.int32)
        elif f.name in ("holdings", "debt", "interest"):
            out[f.name] = tuple(jnp.asarray(row, jnp.float64) for row in x)
        else:
            out[f.name] = jnp.asarray(x, jnp.float64)
    return State(**out)
