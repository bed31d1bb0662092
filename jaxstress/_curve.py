"""The structural yield curve: zero yields affine in the drivers, par yields derived.

    y(m) = r B(m) + (r_star + pi) (1 - B(m)) + p C(m) + tau G(m) / G(10)

with B(m) = (1 - exp(-k m)) / (k m), C(m) = (1 - exp(-kc m)) / (kc m) - exp(-kc m) and
G(m) = 1 - (1 - exp(-m / mu)) / (m / mu). All yields are continuously compounded decimals, maturities in years.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

_SMALL = 1e-6


def _one_minus_exp_over(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """(1 - exp(-x)) / x, continuous at x = 0 (value 1) and safe to differentiate there."""
    safe = jnp.where(jnp.abs(x) < _SMALL, 1.0, x)
    series = 1.0 - x / 2.0 + x * x / 6.0
    return jnp.where(jnp.abs(x) < _SMALL, series, -jnp.expm1(-safe) / safe)


def loadings(
    m: Float[ArrayLike, "..."], k: Float[ArrayLike, ""], kc: Float[ArrayLike, ""], mu: Float[ArrayLike, ""]
) -> tuple[Float[Array, "..."], Float[Array, "..."], Float[Array, "..."]]:
    """Loadings (B, C, G/G(10)) of the short rate, the policy-path factor and the term premium at maturities m."""
    m = jnp.asarray(m)
    b = _one_minus_exp_over(k * m)
    c = _one_minus_exp_over(kc * m) - jnp.exp(-kc * m)
    g = 1.0 - _one_minus_exp_over(m / mu)
    g10 = 1.0 - _one_minus_exp_over(10.0 / mu)
    return b, c, g / g10


def zero_yields(
    m: Float[ArrayLike, " m"],
    r: Float[ArrayLike, "*batch"],
    pi: Float[ArrayLike, "*batch"],
    tau: Float[ArrayLike, "*batch"],
    r_star: Float[ArrayLike, "*batch"],
    p: Float[ArrayLike, "*batch"],
    k: Float[ArrayLike, ""],
    kc: Float[ArrayLike, ""],
    mu: Float[ArrayLike, ""],
) -> Float[Array, "*batch m"]:
    """Zero yields at maturities m for a batch of states (broadcast on the leading axes).

    Computed as a product of the factors (*batch, 4) with the loadings (m, 4): for a batch of paths and many
    maturities (a portfolio's payment dates), reverse mode transposes it into two products, where the same sum
    written elementwise keeps each factor broadcast to (*batch, m) in memory to differentiate the loadings.
    """
    m = jnp.asarray(m)
    b, c, g = loadings(m.reshape(-1), k, kc, mu)
    load = jnp.stack([b, 1.0 - b, c, g], axis=-1)
    r, pi, tau, r_star, p = jnp.broadcast_arrays(*(jnp.asarray(x) for x in (r, pi, tau, r_star, p)))
    factors = jnp.stack([r, r_star + pi, p, tau], axis=-1)
    dtype = jnp.result_type(factors, load)
    y = jnp.matmul(factors.reshape(-1, 4).astype(dtype), load.T.astype(dtype), precision=jax.lax.Precision.HIGHEST)
    return y.reshape(r.shape + m.shape)


def par_yield_from_zero(zero_fn, m: float) -> Float[Array, "..."]:
    """Par yield (semiannual coupons, decimal) of maturity m from a function t -> zero yields (t an array).

    For m < 0.5 there is a single payment and the par yield is the simple-compounded rate over m (no coupons
    before maturity), which is how bills are quoted on a bond-equivalent basis to first order.
    """
    if m < 0.5:
        t = jnp.asarray([m])
        d = jnp.exp(-zero_fn(t) * t)[..., 0]
        return (1.0 / d - 1.0) / m
    n = int(round(2 * m))
    t = jnp.arange(1, n + 1) * 0.5
    t = t * (m / t[-1])  # keep the last payment exactly at m for non-half-year maturities
    d = jnp.exp(-zero_fn(t) * t)
    return 2.0 * (1.0 - d[..., -1]) / jnp.sum(d, axis=-1)


def par_yields(zero_fn, maturities) -> Float[Array, "... m"]:
    """Par yields at several maturities (stacked on the last axis), as `par_yield_from_zero` for each.

    Maturities of whole half years (0.5, 1, 2, ..., 30) share one semiannual grid of discount factors, so a
    curve of 10 maturities costs 60 exponentials per path instead of one per payment of every bond (157);
    others are priced on their own grid.
    """
    halves = [int(round(2 * m)) for m in maturities]
    on_grid = [m >= 0.5 and abs(2 * m - h) < 1e-12 for m, h in zip(maturities, halves, strict=True)]
    n_max = max((h for h, g in zip(halves, on_grid, strict=True) if g), default=0)
    if n_max:
        t = jnp.arange(1, n_max + 1) * 0.5
        d = jnp.exp(-zero_fn(t) * t)
    out = []
    for m, h, g in zip(maturities, halves, on_grid, strict=True):
        if g:
            out.append(2.0 * (1.0 - d[..., h - 1]) / jnp.sum(d[..., :h], axis=-1))
        else:
            out.append(par_yield_from_zero(zero_fn, m))
    return jnp.stack(out, axis=-1)
