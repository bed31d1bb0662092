"""The structural yield curve: zero yields affine in the drivers, par yields derived.

    y(m) = r B(m) + (r_star + pi) (1 - B(m)) + p C(m) + tau G(m) / G(10)

with B(m) = (1 - exp(-k m)) / (k m), C(m) = (1 - exp(-kc m)) / (kc m) - exp(-kc m) and
G(m) = 1 - (1 - exp(-m / mu)) / (m / mu). All yields are continuously compounded decimals, maturities in years.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, ArrayLike, Float

_SMALL = 1e-6


def one_minus_exp_over(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """(1 - exp(-x)) / x, continuous at x = 0 (value 1) and safe to differentiate there."""
    safe = jnp.where(jnp.abs(x) < _SMALL, 1.0, x)
    series = 1.0 - x / 2.0 + x * x / 6.0
    return jnp.where(jnp.abs(x) < _SMALL, series, -jnp.expm1(-safe) / safe)


def loadings(
    m: Float[ArrayLike, "..."], k: Float[ArrayLike, ""], kc: Float[ArrayLike, ""], mu: Float[ArrayLike, ""]
) -> tuple[Float[Array, "..."], Float[Array, "..."], Float[Array, "..."]]:
    """Loadings (B, C, G/G(10)) of the short rate, the policy-path factor and the term premium at maturities m."""
    m = jnp.asarray(m)
    b = one_minus_exp_over(k * m)
    c = one_minus_exp_over(kc * m) - jnp.exp(-kc * m)
    g = 1.0 - one_minus_exp_over(m / mu)
    g10 = 1.0 - one_minus_exp_over(10.0 / mu)
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
    """Zero yields at maturities m (years) for a batch of states (broadcast on the leading axes): decimals
    (0.04 for 4%), continuously compounded, as the model's factors are.

    The factors (r, r_star + pi, p, tau) times the loadings (B, 1 - B, C, G) at m, summed (`_affine`).
    """
    m = jnp.asarray(m)
    b, c, g = loadings(m.reshape(-1), k, kc, mu)
    r, pi, tau, r_star, p = jnp.broadcast_arrays(*(jnp.asarray(x) for x in (r, pi, tau, r_star, p)))
    dtype = jnp.result_type(r, b)
    factors = jnp.stack([r, r_star + pi, p, tau], axis=-1).astype(dtype)
    load = jnp.stack([b, 1.0 - b, c, g]).astype(dtype)
    y = _affine(factors.reshape(-1, 4), load)
    return y.reshape(r.shape + m.shape)


@jax.custom_jvp
def _affine(factors: Float[Array, "n 4"], load: Float[Array, "4 m"]) -> Float[Array, "n m"]:
    """factors @ load, evaluated elementwise (so that it fuses with what reads the yields, the discount factors of
    a portfolio's payment dates, say; the loadings are materialised first, else XLA recomputes their exponentials
    for every element of the result) and differentiated as products: the tangent dF @ L + F @ dL transposes into
    two products, where differentiating the elementwise sum would keep each factor broadcast to (n, m) in memory
    to differentiate the loadings."""
    load = jax.lax.optimization_barrier(load)
    return sum(factors[:, f, None] * load[f] for f in range(4))


def _affine_jvp(primals, tangents):
    factors, load = primals
    d_factors, d_load = tangents
    out = _affine(factors, load)
    hi = jax.lax.Precision.HIGHEST
    terms = []
    if not isinstance(d_factors, SymbolicZero):
        terms.append(jnp.matmul(d_factors, load, precision=hi))
    if not isinstance(d_load, SymbolicZero):
        terms.append(jnp.matmul(factors, d_load, precision=hi))
    return out, sum(terms) if terms else jnp.zeros_like(out)


_affine.defjvp(_affine_jvp, symbolic_zeros=True)


def par_yield_from_zero(zero_fn, m: float) -> Float[Array, "..."]:
    """Par yield (semiannual coupons, decimal) of maturity m from a function t -> zero yields (t an array).

    For m < 0.5 there is a single payment and the par yield is the simple-compounded rate over m (no coupons
    before maturity), which is how bills are quoted on a bond-equivalent basis to first order. Otherwise the
    coupons c/2 fall every half year counted back from m (as a Treasury's, and as `_portfolio` prices bonds), the
    first after a period of `a` half years, 0 < a <= 1, and par is a clean price of 1: the dirty price less the
    accrued c/2 (1 - a), so c = 2 (1 - d(m)) / (sum of the d(t_i) - (1 - a)); for whole half years a = 1.
    """
    if not (isinstance(m, int | float | np.number) and 0.0 < m <= 100.0):
        raise ValueError(f"par_yield_from_zero takes one maturity, a number of years in (0, 100], got {m!r}")
    if m < 0.5:
        t = jnp.asarray([m])
        d = jnp.exp(-zero_fn(t) * t)[..., 0]
        return (1.0 / d - 1.0) / m
    n = int(np.ceil(2 * m - 1e-9))  # payments; within 1e-9 of a whole half year m counts as one
    first = m - 0.5 * (n - 1)  # time to the first payment, in (0, 0.5]
    t = first + 0.5 * jnp.arange(n)
    d = jnp.exp(-zero_fn(t) * t)
    accrued = max(0.0, 1.0 - 2.0 * first)  # the share of a coupon accrued at t = 0
    return 2.0 * (1.0 - d[..., -1]) / (jnp.sum(d, axis=-1) - accrued)


def par_yields(zero_fn, maturities) -> Float[Array, "... m"]:
    """Par yields at several maturities (stacked on the last axis), as `par_yield_from_zero` for each.

    Maturities of whole half years (0.5, 1, 2, ..., 30) share one semiannual grid of discount factors, so a
    curve of 10 maturities costs 60 exponentials per path instead of one per payment of every bond (157);
    others are priced on their own grid.
    """
    halves = [int(round(2 * m)) for m in maturities]
    on_grid = [m >= 0.5 and abs(2 * m - h) < 1e-12 for m, h in zip(maturities, halves, strict=True)]
    grid = [h for h, g in zip(halves, on_grid, strict=True) if g]
    if grid:
        n_max = max(grid)
        t = jnp.arange(1, n_max + 1) * 0.5
        d = jnp.exp(-zero_fn(t) * t)
        # the annuities (sums of the first h discount factors) of all grid maturities as one product with a 0/1
        # matrix: on CPU 2.3x faster than a sum over a slice per maturity (a reduction along the short last axis)
        first_h = (np.arange(n_max)[:, None] < np.asarray(grid)[None, :]).astype(d.dtype)
        annuity = jnp.matmul(d, first_h, precision=jax.lax.Precision.HIGHEST)
        on = 2.0 * (1.0 - d[..., np.asarray(grid) - 1]) / annuity
    out, j = [], 0
    for m, g in zip(maturities, on_grid, strict=True):
        if g:
            out.append(on[..., j])
            j += 1
        else:
            out.append(par_yield_from_zero(zero_fn, m))
    return jnp.stack(out, axis=-1)
