"""The standard errors of VaR and ES sensitivities, against the spread of independent replications, on a loss with
closed-form sensitivities: L = theta . X with X ~ N(0, S), so VaR_q = z_q sigma_L and ES_q = sigma_L phi(z_q) / (1 - q)
(sigma_L^2 = theta' S theta), and their gradients are S theta / sigma_L times z_q and phi(z_q) / (1 - q).

`sensitivities` estimates a gradient by chunks that share the VaR of all the paths, and its standard error by the
chunks' spread. That spread must carry what the estimate on all the paths carries: for a VaR the VaR's own sampling
error (E[L' | L = v] moves with v), for an ES not the chunk-to-chunk variation of the number of tail paths (the
empirical VaR fixes it over all the paths). Before the chunks' kernel was centred at their own linearised VaR and the
ES took the VaR's control variate, the spread across replications was 3.5x the reported error for VaR 99 and 0.12x
for ES 99 (sensitivities to a portfolio's notionals); this test fails on both.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from jaxstress._sensitivities import kernel_bandwidth, surrogate

Q = 0.99
R, CHUNKS, CHUNK = 400, 8, 512  # replications of 8 chunks of 512 paths (4,096 paths: the user audit's setup)
S = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, -0.3], [0.2, -0.3, 1.0]])
THETA = np.array([1.0, 0.5, 0.8])


def _replications(kind: str, seed: int):
    """(estimates (R, 3), reported standard errors (R, 3)) as `sensitivities` forms them: the VaR, bandwidth and
    density from all the paths of a replication, a gradient a chunk, their mean and its standard error."""
    x = np.random.default_rng(seed).multivariate_normal(np.zeros(3), S, size=(R, CHUNKS * CHUNK))
    x = jnp.asarray(x, jnp.float32)
    logp = jnp.zeros(CHUNK, jnp.float32)

    def chunk(theta, xc, var, bw, density):
        return surrogate(kind, xc @ theta, logp, Q, 0.0, var, bw, 0.05, density)

    grad = jax.vmap(jax.vmap(jax.grad(chunk), in_axes=(None, 0, None, None, None)), in_axes=(None, 0, 0, 0, 0))

    vals = np.asarray(x @ jnp.asarray(THETA, jnp.float32), np.float64)  # (R, paths)
    var = np.quantile(vals, Q, axis=1)
    bw = kernel_bandwidth(vals.std(axis=1), vals.shape[1])
    z = (vals - var[:, None]) / bw[:, None]
    density = np.mean(np.exp(-0.5 * z * z), axis=1) / (bw * np.sqrt(2 * np.pi))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    g = np.asarray(jax.jit(grad)(f32(THETA), x.reshape(R, CHUNKS, CHUNK, 3), f32(var), f32(bw), f32(density)),
                   np.float64)  # (R, chunks, 3)
    return g.mean(axis=1), g.std(axis=1, ddof=1) / np.sqrt(CHUNKS)


@pytest.mark.parametrize("kind", ["quantile", "es"])
def test_chunk_errors_match_the_spread_of_replications(kind):
    est, se = _replications(kind, seed={"quantile": 1, "es": 2}[kind])
    sigma = np.sqrt(THETA @ S @ THETA)
    zq = norm.ppf(Q)
    exact = S @ THETA / sigma * (zq if kind == "quantile" else norm.pdf(zq) / (1 - Q))
    # the estimates: within their standard error over R replications plus the kernel's bias (a Nadaraya-Watson
    # estimate of the linear E[X | L = v] in the tail, where f'/f = -v / sigma^2, is off by O((h / sigma)^2 z_q^2),
    # 1.2% measured with h = 0.53 sigma n^-0.2 at n = 4,096, 4% with Silverman's 1.06) and the ES's finite-sample
    # bias (0.1-0.8%)
    spread = est.std(axis=0, ddof=1)
    np.testing.assert_allclose(est.mean(axis=0), exact, rtol=0.03, atol=4 * spread.max() / np.sqrt(R))
    # the errors: the replications' spread over the root-mean-square reported error is 1 within its own sampling
    # error, about 1 / sqrt(2 R) = 0.035 (and more for the chunk errors' spread over 7 degrees of freedom): 0.8-1.25
    # is over five of them either way
    ratio = spread / np.sqrt(np.mean(se**2, axis=0))
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio


@pytest.mark.parametrize("d, seen", [(6.5, False), (5.5, True)])
def test_reach_is_the_nearest_paths_distance_not_the_kernels_total_weight(d, seen):
    """4,096 paths at +-d bandwidths from the VaR: beyond REACH = 6 the kernel has no estimate (a gradient of 0),
    however many paths add up a total weight past exp(-18) (which let the score term through at 1.7e7)."""
    n = 4096
    x = jnp.asarray(np.where(np.arange(n) % 2, d, -d), jnp.float32)
    u = jnp.asarray(np.random.default_rng(1).standard_normal(n), jnp.float32)

    def f(lam):
        return surrogate("quantile", x, lam * u, 0.5, 0.0, 0.0, 1.0, 0.05, 1.0)

    g = float(jax.grad(f)(jnp.float32(0.0)))
    assert np.isfinite(g) and (g != 0.0) == seen, g


def test_a_var_with_its_share_exactly_q_and_no_density_is_not_nan():
    """The chunk's own density (`density=None`, `metric_function`) of 0 with F(var) = q exactly: no shift, where
    (q - F) / density was 0 / 0."""
    x = jnp.concatenate([jnp.zeros(256), jnp.full(256, 50.0)]).astype(jnp.float32)
    g = jax.grad(lambda th: surrogate("quantile", th[0] * x, th[1] * x, 0.5, 0.0, 25.0, 1e-3, 0.05))(
        jnp.asarray([1.0, 0.0], jnp.float32))
    np.testing.assert_array_equal(np.asarray(g), 0.0)


@pytest.mark.parametrize("kind", ["quantile", "es"])
@pytest.mark.parametrize("density", [1.0, None])
def test_a_var_with_no_path_in_the_kernels_reach_gives_the_tails_gradient(kind, density):
    """A discrete metric (no forced sales on most paths, say) whose VaR lies in a gap: the kernel's weights
    underflow to 0, and its whole share of the gradient is 0, the score term's as well (divided by a density of
    ~0 it was 5e32 for a regime intensity), so a VaR's gradient is 0 and an ES's the tail's mean: its pathwise
    derivative and its score term E[(L - VaR)+ logp'] / (1 - q)."""
    x = jnp.concatenate([jnp.zeros(500), jnp.full(12, 50.0)]).astype(jnp.float32)
    u = jnp.asarray(np.random.default_rng(0).standard_normal(x.size), jnp.float32)  # logp' of a regime intensity

    def f(th):  # th: a notional-like scale of the values, and the intensity (logp = lam u)
        return surrogate(kind, th[0] * x, th[1] * u, 0.99, 0.0, 25.0, 1e-3, 0.05, density)

    g = np.asarray(jax.grad(f)(jnp.asarray([1.0, 0.0], jnp.float32)))
    if kind == "quantile":
        np.testing.assert_array_equal(g, 0.0)
    else:
        excess = np.maximum(np.asarray(x, np.float64) - 25.0, 0.0)
        tail = [12 * 50.0 / 512, np.mean(excess * np.asarray(u, np.float64))]
        np.testing.assert_allclose(g, np.asarray(tail) / 0.01, rtol=1e-5)
