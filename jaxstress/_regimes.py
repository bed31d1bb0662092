"""Markov regimes: per-step transition matrices from a generator of annual intensities, sampling, stationarity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


def with_diagonal(q: Float[Array, "R R"]) -> Float[Array, "R R"]:
    """The generator with q's off-diagonal intensities and the diagonal that makes each row sum to zero (q's own
    diagonal is ignored: it follows from the row, so it is not a driver)."""
    off = q * (1.0 - jnp.eye(q.shape[0], dtype=q.dtype))
    return off - jnp.diag(jnp.sum(off, axis=1))


def transition_matrix(generator: Float[Array, "R R"], dt: float) -> Float[Array, "R R"]:
    """P = expm(Q dt): per-step transition probabilities from the generator Q (rows sum to zero)."""
    p = jax.scipy.linalg.expm(generator * dt)
    p = jnp.clip(p, 0.0, 1.0)
    return p / jnp.sum(p, axis=1, keepdims=True)


def sample_next(
    cum_row: Float[Array, " R"], u: Float[Array, ""]
) -> Int[Array, ""]:
    """Inverse-CDF draw of the next regime from the cumulative row of the current regime and a uniform u."""
    return jnp.sum(u >= cum_row[:-1]).astype(jnp.int32)  # regime k iff cum[k-1] <= u < cum[k]


def stationary_distribution(generator) -> np.ndarray:
    """The stationary distribution pi of the chain (pi Q = 0, sum pi = 1), in numpy float64."""
    q = np.asarray(generator, dtype=np.float64)
    n = q.shape[0]
    a = np.vstack([q.T, np.ones(n)])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    return np.linalg.lstsq(a, b, rcond=None)[0]
