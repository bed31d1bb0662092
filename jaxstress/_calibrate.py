"""Calibration to history (real-world measure): curve loadings, driver dynamics, volatility regimes.

- `fit_curve`: global curve parameters (k, kc, mu) and the daily latent r_star, p so that model par yields match
  the constant-maturity par yields (r, pi, tau observed). Variable projection: for given (k, kc, mu) each day's
  (r_star, p) is the least-squares solution (linear start on zero yields, Gauss-Newton on par yields), and the
  profiled loss is minimised over log(k, kc, mu) with L-BFGS (gradient by the envelope theorem).
- `fit_ou`: exact Gaussian OU transition likelihood; its maximiser is the AR(1) least-squares regression, mapped
  to (k, mean, sigma) through the exact discretisation.
- `fit_hamilton`: Markov-switching mean and variance (Hamilton filter, Kim smoother) maximised with optax.
- `calibrate_history`: all of the above on one window of the shipped data, with a dotted-key config mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from jaxtyping import Array, ArrayLike, Float

from . import _data
from ._curve import zero_yields
from ._errors import DataError

DT_DAY = 1.0 / 252.0
BP = 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Optimisation helper
# ----------------------------------------------------------------------------------------------------------------


def _lbfgs(fun, params, max_iter: int, tol: float):
    """Minimise `fun` with optax L-BFGS (zoom line search) until the gradient norm is below tol (traceable)."""
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def more(carry):
        _, state = carry
        count = otu.tree_get(state, "count")
        err = otu.tree_norm(otu.tree_get(state, "grad"))
        return (count == 0) | ((count < max_iter) & (err >= tol))

    params, state = jax.lax.while_loop(more, step, (params, opt.init(params)))
    return params, otu.tree_get(state, "count"), otu.tree_norm(otu.tree_get(state, "grad"))


# ----------------------------------------------------------------------------------------------------------------
# Curve
# ----------------------------------------------------------------------------------------------------------------


class CurveFit(eqx.Module):
    """Result of `fit_curve`. Rates are decimals; `rmse_bp` is per maturity in basis points."""

    k: Float[Array, ""]
    kc: Float[Array, ""]
    mu: Float[Array, ""]
    r_star: Float[Array, " days"]
    p: Float[Array, " days"]
    fitted: Float[Array, "days maturities"]
    observed: Float[Array, "days maturities"]
    rmse_bp: Float[Array, " maturities"]
    loss: Float[Array, ""]
    maturities: tuple[float, ...] = eqx.field(static=True)
    weights: tuple[float, ...] = eqx.field(static=True)

    def rmse_by_maturity(self) -> dict[float, float]:
        return {m: float(e) for m, e in zip(self.maturities, np.asarray(self.rmse_bp))}


def _par_index(maturities: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Semiannual payment grid up to the longest maturity and the index of each maturity's last payment."""
    n = [round(2.0 * m) for m in maturities]
    if any(k < 1 or abs(k - 2.0 * m) > 1e-9 for k, m in zip(n, maturities)):
        raise ValueError(f"par-yield maturities must be positive multiples of 0.5 years; got {maturities}")
    return 0.5 * np.arange(1, max(n) + 1), np.asarray(n) - 1


def _model_par(x, theta, r, pi, tau, maturities):
    """Model par yields (M,) of one day for latent x = (r_star, p) and log-parameters theta.

    Same formula as `_curve.par_yield_from_zero` (semiannual coupons), evaluated once on the common payment grid:
    par(m) = 2 (1 - d(m)) / sum of d over the payment dates up to m.
    """
    k, kc, mu = jnp.exp(theta)
    t, last = _par_index(maturities)
    d = jnp.exp(-zero_yields(t, r, pi, tau, x[0], x[1], k, kc, mu) * t)
    return 2.0 * (1.0 - d[last]) / jnp.cumsum(d)[last]


def _solve_latent(theta, r, pi, tau, y, sw, maturities, gn_steps):
    """Per-day weighted least squares for (r_star, p): linear on zero yields, then Gauss-Newton on par yields."""
    k, kc, mu = jnp.exp(theta)
    m = jnp.asarray(maturities)
    # Start: par yields read as continuously compounded zero yields, which are linear in (r_star, p).
    z_obs = 2.0 * jnp.log1p(y / 2.0)
    z0 = zero_yields(m, r, pi, tau, 0.0, 0.0, k, kc, mu)
    a = zero_yields(m, 0.0, 0.0, 0.0, 1.0, 0.0, k, kc, mu)
    c = zero_yields(m, 0.0, 0.0, 0.0, 0.0, 1.0, k, kc, mu)
    design = jnp.stack([a, c], axis=-1) * sw[:, None]
    x = jnp.linalg.lstsq(design, (z_obs - z0) * sw)[0]

    def resid(x):
        return (_model_par(x, theta, r, pi, tau, maturities) - y) * sw / BP

    def gn(x, _):
        rho = resid(x)
        jac = jax.jacfwd(resid)(x)
        jtj = jac.T @ jac
        step = jnp.linalg.solve(jtj + 1e-10 * jnp.trace(jtj) * jnp.eye(2), -jac.T @ rho)
        return x + step, None

    x, _ = jax.lax.scan(gn, x, None, length=gn_steps)
    return x


def _curve_loss(theta, xs, r, pi, tau, y, sw, maturities):
    par = jax.vmap(_model_par, in_axes=(0, None, 0, 0, 0, None))(xs, theta, r, pi, tau, maturities)
    return jnp.mean(jnp.sum(((par - y) * sw / BP) ** 2, axis=-1))


def _profiled(theta, r, pi, tau, y, sw, maturities, gn_steps):
    xs = jax.vmap(_solve_latent, in_axes=(None, 0, 0, 0, 0, None, None, None))(
        theta, r, pi, tau, y, sw, maturities, gn_steps)
    # Envelope theorem: at the inner optimum d(loss)/d(theta) is the partial derivative at fixed xs.
    return _curve_loss(theta, jax.lax.stop_gradient(xs), r, pi, tau, y, sw, maturities), xs


@eqx.filter_jit
def _fit_curve_jit(theta0s, r, pi, tau, y, sw, maturities, gn_steps, max_iter, tol):
    def fun(theta):
        return _profiled(theta, r, pi, tau, y, sw, maturities, gn_steps)[0]

    def one(theta0):
        theta, _, _ = _lbfgs(fun, theta0, max_iter, tol)
        return theta, fun(theta)

    thetas, losses = jax.lax.map(one, theta0s)
    best = jnp.argmin(jnp.where(jnp.isfinite(losses), losses, jnp.inf))
    theta = thetas[best]
    loss, xs = _profiled(theta, r, pi, tau, y, sw, maturities, gn_steps)
    par = jax.vmap(_model_par, in_axes=(0, None, 0, 0, 0, None))(xs, theta, r, pi, tau, maturities)
    return theta, xs, par, loss, thetas, losses


DEFAULT_CURVE_WEIGHTS: dict[str, float] = {c: 1.0 for c in _data.PAR_COLUMNS}
# Multi-start grid for (k, kc, mu): the profiled loss can have several basins.
_CURVE_STARTS = [(k, kc, mu) for k in (0.1, 0.5) for kc in (0.3, 1.0) for mu in (1.0, 5.0)]


def fit_curve(
    hist: Mapping[str, ArrayLike] | tuple[np.ndarray, Mapping[str, ArrayLike]],
    *,
    weights: Mapping[str, float] | None = None,
    starts: Sequence[tuple[float, float, float]] | None = None,
    gn_steps: int = 4,
    max_iter: int = 200,
    tol: float | None = None,
) -> CurveFit:
    """Fit the curve's global (k, kc, mu) and the daily latent (r_star, p) to constant-maturity par yields.

    Args:
        hist: `aligned_history(...)` output (or just its dict): decimals keyed DGS3MO (r), DGS1..DGS30, T10YIE
            (pi), ACMTP10 (tau).
        weights: weight of each par-yield column in the squared-error loss (default 1 for all); a column with
            weight 0 is reported but not fitted.
        starts: initial (k, kc, mu) triples for the multi-start L-BFGS; the best final loss wins.
        gn_steps: Gauss-Newton steps for each day's latent pair (the par map is nearly linear: 3-4 suffice).
        max_iter, tol: L-BFGS iteration cap and gradient-norm tolerance (loss in bp^2; default 1e-7 in float64,
            1e-3 in float32, where rounding noise in the gradient is about 1e-4).

    Returns:
        CurveFit with k, kc, mu, the latent paths, fitted and observed par yields and RMSE by maturity (bp).
    """
    if isinstance(hist, tuple):
        hist = hist[1]
    cols = [c for c in _data.PAR_COLUMNS if c in hist]
    if len(cols) < 3:
        raise ValueError(f"fit_curve needs at least 3 par-yield columns of {list(_data.PAR_COLUMNS)}; got {cols}")
    unknown = set(weights or {}) - set(_data.PAR_COLUMNS)
    if unknown:
        raise ValueError(f"fit_curve weights for unknown columns {sorted(unknown)}; use {list(_data.PAR_COLUMNS)}")
    w = dict(DEFAULT_CURVE_WEIGHTS, **(weights or {}))
    maturities = tuple(_data.PAR_COLUMNS[c] for c in cols)
    r = jnp.asarray(hist[_data.SHORT_RATE_COLUMN])
    pi = jnp.asarray(hist["T10YIE"])
    tau = jnp.asarray(hist["ACMTP10"])
    y = jnp.stack([jnp.asarray(hist[c]) for c in cols], axis=-1)
    sw = jnp.sqrt(jnp.asarray([w[c] for c in cols], dtype=y.dtype))
    theta0s = jnp.log(jnp.asarray(starts or _CURVE_STARTS, dtype=y.dtype))
    if tol is None:
        tol = 1e-7 if y.dtype == jnp.float64 else 1e-3
    theta, xs, par, loss, _, _ = _fit_curve_jit(theta0s, r, pi, tau, y, sw, maturities, gn_steps, max_iter, tol)
    k, kc, mu = jnp.exp(theta)
    rmse = jnp.sqrt(jnp.mean((par - y) ** 2, axis=0)) / BP
    return CurveFit(k=k, kc=kc, mu=mu, r_star=xs[:, 0], p=xs[:, 1], fitted=par, observed=y, rmse_bp=rmse,
                    loss=loss, maturities=maturities, weights=tuple(float(w[c]) for c in cols))


def curve_notes(k: float, kc: float, mu: float) -> list[str]:
    """What a curve fit's (k, kc, mu) do not say: an empty list, or one sentence per parameter the window leaves
    unidentified (k = kc; a speed at zero; a term-premium horizon running off to infinity).

    k = kc is a stationary line of the profiled loss, not a bound or a starting value: dB/dk = -C(k)/k, so at
    kc = k moving k changes the yields along the policy-path loading C(kc), which each day's latent p absorbs, and
    the gradient in k vanishes exactly. A fit that ends on the line (every start of a 2024-only window does, with
    the loss rising quadratically either side) says that the window's curves do not separate the two speeds.
    """
    notes = []
    if abs(k - kc) <= 1e-6 * max(abs(k), abs(kc)):
        notes.append(
            f"k = kc = {k:.6g}/year: the fit ends on the line k = kc, where the loss is flat in k to first order "
            "(at kc = k, moving k moves the yields along the policy-path loading, which each day's latent p absorbs)"
            ": a stationary line of the least squares, not a bound or a starting value. The window's curves do not "
            "separate the two speeds (the best fit has the policy path revert at the short rate's speed); a longer "
            "window does (2019-2025 does), or keep the baseline's k and kc.")
    for name, v in (("k", k), ("kc", kc)):
        if v < 1e-3:
            notes.append(f"{name} = {v:.3g}/year: at the edge (no mean reversion); the window does not identify it.")
    if mu > 1e3:
        notes.append(f"mu = {mu:.3g} years: the term-premium loading's horizon runs off to infinity; the window does "
                     "not identify it.")
    return notes


# ----------------------------------------------------------------------------------------------------------------
# Ornstein-Uhlenbeck
# ----------------------------------------------------------------------------------------------------------------


@jax.jit
def _ou_core(x, dt):
    x0, x1 = x[:-1], x[1:]
    n = x1.shape[0]
    m0, m1 = jnp.mean(x0), jnp.mean(x1)
    b = jnp.sum((x0 - m0) * (x1 - m1)) / jnp.sum((x0 - m0) ** 2)
    a = m1 - b * m0
    v = jnp.mean((x1 - a - b * x0) ** 2)
    loglik = -0.5 * n * (jnp.log(2.0 * jnp.pi * v) + 1.0)
    stationary = (b > 0.0) & (b < 1.0)
    bs = jnp.where(stationary, b, 0.5)
    k = jnp.where(stationary, -jnp.log(bs) / dt, 0.0)
    # sigma^2 = v * 2k / (1 - b^2), whose limit as b -> 1 is v / dt.
    sigma = jnp.sqrt(jnp.where(stationary, v * 2.0 * k / (1.0 - bs**2), v / dt))
    mean = jnp.where(stationary, a / (1.0 - bs), jnp.nan)
    return dict(b=b, a=a, v=v, k=k, mean=mean, sigma=sigma, loglik=loglik, n=n)


def fit_ou(x: ArrayLike, dt: float = DT_DAY) -> dict[str, float]:
    """Maximum likelihood OU fit of an evenly spaced path (exact transition density, conditional on x[0]).

    dx = k (mean - x) dt + sigma dW has the exact transition x[t+1] = mean + b (x[t] - mean) + e,
    b = exp(-k dt), e ~ N(0, sigma^2 (1 - b^2) / (2k)). That is a Gaussian AR(1), whose conditional MLE is the
    least-squares regression of x[t+1] on x[t]; (k, mean, sigma) follow by inverting the map (MLE is invariant).

    Returns floats: k (1/year), mean, sigma (per sqrt(year)), half_life (years, ln 2 / k), loglik, n, and the
    asymptotic standard errors se_k = sqrt(1 - b^2) / (b dt sqrt(n)) (about sqrt(2k / T)), se_mean =
    sqrt(v) / ((1 - b) sqrt(n)) (about sigma / (k sqrt(T))) and se_sigma = sigma / sqrt(2 n). If the AR
    coefficient is not in (0, 1) the path shows no mean reversion: k = 0, mean = NaN, half_life = inf.
    """
    xa = jnp.asarray(x)
    if xa.ndim != 1 or xa.shape[0] < 3:
        raise ValueError(f"fit_ou needs a 1-d path of at least 3 points; got shape {xa.shape}")
    if not bool(jnp.all(jnp.isfinite(xa))):
        raise ValueError("fit_ou: the path has NaN or infinite values")
    if not bool(jnp.any(xa != xa[0])):
        raise ValueError(f"fit_ou: the path is constant (every value is {float(xa[0]):g}): its mean reversion and "
                         "volatility are not defined; give a path that moves")
    out = {key: float(v) for key, v in _ou_core(xa, dt).items()}
    b, k, n = out["b"], out["k"], out["n"]
    stationary = 0.0 < b < 1.0
    out["half_life"] = math.log(2.0) / k if stationary else math.inf
    out["se_k"] = math.sqrt(1.0 - b * b) / (b * dt * math.sqrt(n)) if stationary else math.nan
    out["se_mean"] = math.sqrt(out["v"]) / ((1.0 - b) * math.sqrt(n)) if stationary else math.nan
    out["se_sigma"] = out["sigma"] / math.sqrt(2.0 * n)
    out["n"] = int(n)
    return out


def moment_estimates(x: ArrayLike, dt: float = DT_DAY) -> dict[str, float]:
    """Simple moment estimates to sanity-check `fit_ou`: sigma = std(dx) / sqrt(dt); half-life from the lag-1
    autocorrelation rho as ln 2 / (-ln(rho) / dt)."""
    xa = np.asarray(x, dtype=np.float64)
    sigma = float(np.std(np.diff(xa), ddof=1) / math.sqrt(dt))
    xc = xa - xa.mean()
    rho = float(np.sum(xc[1:] * xc[:-1]) / np.sum(xc * xc))
    half_life = math.log(2.0) / (-math.log(rho) / dt) if 0.0 < rho < 1.0 else math.inf
    return dict(sigma=sigma, rho=rho, half_life=half_life)


# ----------------------------------------------------------------------------------------------------------------
# Markov switching (Hamilton filter, Kim smoother)
# ----------------------------------------------------------------------------------------------------------------


def _unpack(params):
    n = params["mu"].shape[0]
    # Row-softmax with the diagonal logit fixed at 0 (identification); off-diagonal logits are free.
    rows, cols = np.nonzero(~np.eye(n, dtype=bool))
    logits = jnp.zeros((n, n), params["mu"].dtype).at[rows, cols].set(params["offdiag"].ravel())
    trans = jax.nn.softmax(logits, axis=1)
    return params["mu"], jnp.exp(params["log_var"]), trans


def _stationary(trans):
    n = trans.shape[0]
    a = (trans.T - jnp.eye(n)).at[-1].set(1.0)
    return jnp.linalg.solve(a, jnp.zeros(n, trans.dtype).at[-1].set(1.0))


def _hamilton_filter(params, y):
    """Filtered/predicted regime probabilities and the log-likelihood (initial probabilities: ergodic)."""
    mu, var, trans = _unpack(params)
    logdens = -0.5 * (jnp.log(2.0 * jnp.pi * var) + (y[:, None] - mu) ** 2 / var)

    def step(carry, ld):
        pred, ll = carry
        shift = jnp.max(ld)
        joint = pred * jnp.exp(ld - shift)
        total = jnp.sum(joint)
        filt = joint / total
        return (filt @ trans, ll + jnp.log(total) + shift), (filt, pred)

    init = (_stationary(trans), jnp.zeros((), y.dtype))
    (_, ll), (filt, pred) = jax.lax.scan(step, init, logdens)
    return ll, filt, pred


def _kim_smoother(trans, filt, pred):
    """xi[t|T] = xi[t|t] * (P @ (xi[t+1|T] / xi[t+1|t]))."""

    def step(smooth_next, fp):
        f, p_next = fp
        s = f * (trans @ (smooth_next / jnp.maximum(p_next, 1e-300)))
        s = s / jnp.sum(s)
        return s, s

    _, smooth = jax.lax.scan(step, filt[-1], (filt[:-1], pred[1:]), reverse=True)
    return jnp.concatenate([smooth, filt[-1:]], axis=0)


@eqx.filter_jit
def _fit_hamilton_jit(params0, z, steps, lbfgs_steps, learning_rate, tol):
    def nll(params):
        return -_hamilton_filter(params, z)[0] / z.shape[0]

    opt = optax.adam(learning_rate)

    def adam_step(carry, _):
        params, state = carry
        grad = jax.grad(nll)(params)
        updates, state = opt.update(grad, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(adam_step, (params0, opt.init(params0)), None, length=steps)
    params, iters, gnorm = _lbfgs(nll, params, lbfgs_steps, tol)
    ll, filt, pred = _hamilton_filter(params, z)
    mu, var, trans = _unpack(params)
    return mu, var, trans, ll, filt, _kim_smoother(trans, filt, pred), iters, gnorm


def fit_hamilton(
    dy: ArrayLike,
    n_regimes: int = 2,
    steps: int = 300,
    seed: int = 0,
    *,
    lbfgs_steps: int = 300,
    learning_rate: float = 0.05,
    tol: float | None = None,
) -> dict:
    """Markov-switching model with regime-dependent mean and variance: dy[t] ~ N(mean[s_t], var[s_t]).

    The chain has transition matrix P[i, j] = Pr(s_t = j | s_{t-1} = i) and starts from its ergodic distribution
    (as statsmodels' MarkovRegression does). The likelihood (Hamilton filter, normalised each step) is maximised
    over unconstrained parameters (means, log variances, off-diagonal logits of row-softmax P) with `steps`
    Adam steps and then L-BFGS to a small gradient. Data are standardised inside; results are in dy's units.
    Regimes are returned ordered by variance (low volatility first). `seed` jitters the starting point.

    Returns numpy/float: means, variances, transition, loglik, smoothed_probs [T, n] (Kim smoother),
    filtered_probs, expected_durations (1 / (1 - P[i, i]), in observations), lbfgs_iters, grad_norm.
    """
    y = jnp.asarray(dy)
    if y.ndim != 1 or y.shape[0] < 10 * n_regimes:
        raise ValueError(f"fit_hamilton needs a 1-d series of at least {10 * n_regimes} points; got {y.shape}")
    if n_regimes < 2:
        raise ValueError("fit_hamilton needs n_regimes >= 2")
    if not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError("fit_hamilton: the series has NaN or infinite values")
    center, scale = jnp.mean(y), jnp.std(y)
    if not float(scale) > 0.0:
        raise ValueError(f"fit_hamilton: the series is constant (every value is {float(y[0]):g}): it has no variance "
                         "to split into regimes; give a series that moves")
    z = (y - center) / scale
    key_mu, key_var = jax.random.split(jax.random.PRNGKey(seed))
    dtype = z.dtype
    params0 = {
        "mu": 0.05 * jax.random.normal(key_mu, (n_regimes,), dtype),
        "log_var": jnp.log(jnp.geomspace(0.4, 2.5, n_regimes).astype(dtype))
        + 0.1 * jax.random.normal(key_var, (n_regimes,), dtype),
        "offdiag": jnp.full((n_regimes, n_regimes - 1), -3.0, dtype),
    }
    if tol is None:
        tol = 1e-9 if dtype == jnp.float64 else 1e-5
    mu, var, trans, ll, filt, smooth, iters, gnorm = _fit_hamilton_jit(
        params0, z, steps, lbfgs_steps, learning_rate, tol)
    order = np.argsort(np.asarray(var))
    mu, var = np.asarray(mu)[order], np.asarray(var)[order]
    trans = np.asarray(trans)[np.ix_(order, order)]
    sc, ce = float(scale), float(center)
    return dict(
        means=ce + sc * mu,
        variances=sc * sc * var,
        transition=trans,
        loglik=float(ll) - y.shape[0] * math.log(sc),
        smoothed_probs=np.asarray(smooth)[:, order],
        filtered_probs=np.asarray(filt)[:, order],
        expected_durations=1.0 / (1.0 - np.diag(trans)),
        lbfgs_iters=int(iters),
        grad_norm=float(gnorm),
    )


def generator_from_transition(trans: ArrayLike, dt: float = DT_DAY) -> np.ndarray:
    """Annual generator Q with expm(Q dt) ~ P: the principal matrix log of P over dt, clipped to a valid
    generator (negative off-diagonals set to 0, diagonal = minus the off-diagonal row sum)."""
    import scipy.linalg

    p = np.asarray(trans, dtype=np.float64)
    q = np.real(scipy.linalg.logm(p)) / dt
    off = ~np.eye(p.shape[0], dtype=bool)
    q = np.where(off, np.maximum(q, 0.0), 0.0)
    return q - np.diag(q.sum(axis=1))


# ----------------------------------------------------------------------------------------------------------------
# Everything on one window
# ----------------------------------------------------------------------------------------------------------------


def _iso(d) -> str:
    return str(np.datetime64(d, "D"))


def _refuse_constant(series: Mapping[str, np.ndarray], where: str) -> None:
    """DataError naming the series (percent) that do not move over the window: a constant series has no dynamics
    to fit (its OU regression divides 0 by 0, its daily changes have no variance for the regimes)."""
    flat = [c for c, v in series.items() if not np.any(v != v[0])]
    if not flat:
        return
    files = _data.history_columns()
    levels = ", ".join(f"{c} {float(series[c][0]):g}%" for c in flat)
    by_file = ", ".join(dict.fromkeys(files.get(c, _data.CMT_FILE) for c in flat))
    raise DataError(f"{', '.join(flat)} ({by_file}) {'does' if len(flat) == 1 else 'do'} not move over {where} "
                    f"(constant: {levels}): a series that does not move has no dynamics to fit (mean reversion, "
                    "volatility, regimes of its daily changes); choose a longer or another window (--start, --end), "
                    "or check the data file")


def calibrate_history(
    start,
    end,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    hamilton_steps: int = 300,
    curve_weights: Mapping[str, float] | None = None,
    dt: float = DT_DAY,
) -> dict:
    """Calibrate the real-world dynamics on the daily history in [start, end] (runs in float64).

    Returns a dict with `window`, `curve` (k, kc, mu, RMSE by maturity, `notes`: `curve_notes`), `ou` (one fit
    per driver: r, pi, tau, r_star, p, each with the moment estimates beside it), `hamilton` (2 regimes of daily
    10y changes in bp, transition matrix and annual generator), `config` (dotted scenario key -> {"value",
    "source"}) and `series` (numpy arrays: dates, r_star, p, smoothed regime probabilities and their dates) for
    plots.
    """
    with jax.enable_x64(True):
        return _calibrate_history(start, end, data_dir, seed, hamilton_steps, curve_weights, dt)


def _calibrate_history(start, end, data_dir, seed, hamilton_steps, curve_weights, dt):
    dates, hist = _data.aligned_history(start, end, data_dir)
    first, last = _iso(dates[0]), _iso(dates[-1])
    span = f"{first}..{last}"
    n_days = len(dates)
    files = _data.history_columns()
    _refuse_constant({c: v * 100.0 for c, v in hist.items()}, f"the {n_days} days of {span} that have every series")

    fit = fit_curve(hist, weights=curve_weights)
    rmse = fit.rmse_by_maturity()
    rmse_txt = ", ".join(f"{m:g}y {e:.1f}" for m, e in rmse.items())
    curve_src = (f"fit_curve: least squares of model par yields on DGS1..DGS30 ({_data.CMT_FILE}), r=DGS3MO, "
                 f"pi=T10YIE ({_data.BREAKEVEN_FILE}), tau=ACMTP10 ({_data.TERM_PREMIUM_FILE}), {n_days} days "
                 f"{span}; RMSE bp {rmse_txt}")

    paths = {
        "r": (hist[_data.SHORT_RATE_COLUMN], f"DGS3MO ({files['DGS3MO']})"),
        "pi": (hist["T10YIE"], f"T10YIE ({files['T10YIE']})"),
        "tau": (hist["ACMTP10"], f"ACMTP10 ({files['ACMTP10']})"),
        "r_star": (np.asarray(fit.r_star), "latent r_star filtered by fit_curve"),
        "p": (np.asarray(fit.p), "latent p filtered by fit_curve"),
    }
    ou = {}
    ou_src = {}
    for name, (x, what) in paths.items():
        res = fit_ou(x, dt)
        res["moments"] = moment_estimates(x, dt)
        ou[name] = res
        hl = "no mean reversion" if not math.isfinite(res["half_life"]) else f"half-life {res['half_life']:.2f}y"
        ou_src[name] = (f"exact OU (AR(1)) MLE on {what}, {n_days} days {span}, dt=1/{round(1 / dt)}; {hl}, "
                        f"k={res['k']:.3g}+-{res['se_k']:.2g}")

    # Volatility regimes of daily 10y changes (bp), on the 10y's own business days in the window.
    d10, y10 = _data.load_series(_data.CMT_FILE, "DGS10", start, end, data_dir, min_rows=_data.MIN_HISTORY_ROWS)
    ok = ~np.isnan(y10)
    d10, y10 = d10[ok], y10[ok]
    dy_bp = np.diff(y10) * 100.0
    _refuse_constant({"DGS10": y10}, f"the {len(y10)} days of DGS10 in {_iso(d10[0])}..{_iso(d10[-1])}")
    ham = fit_hamilton(dy_bp, 2, hamilton_steps, seed)
    gen = generator_from_transition(ham["transition"], dt)
    vol_annual = np.sqrt(ham["variances"] * round(1 / dt)) * BP
    ham_span = f"{_iso(d10[1])}..{_iso(d10[-1])}"
    ham_src = (f"fit_hamilton: 2-regime switching mean/variance of daily DGS10 changes ({_data.CMT_FILE}), "
               f"{len(dy_bp)} changes {ham_span}; generator = logm(P)/dt, dt=1/{round(1 / dt)}")
    hamilton = dict(
        series=f"daily change of DGS10, bp ({_data.CMT_FILE})",
        window=ham_span,
        n=len(dy_bp),
        means_bp=ham["means"].tolist(),
        variances_bp2=ham["variances"].tolist(),
        vol_annual=vol_annual.tolist(),
        vol_multiplier=(vol_annual / vol_annual[0]).tolist(),
        transition=ham["transition"].tolist(),
        generator=gen.tolist(),
        expected_durations_days=ham["expected_durations"].tolist(),
        loglik=ham["loglik"],
        seed=seed,
    )

    def c(value, source):
        return {"value": float(value) if np.ndim(value) == 0 else np.asarray(value).tolist(), "source": source}

    last_src = f"last date of the window, {last}"
    config = {
        "curve.k": c(fit.k, curve_src),
        "curve.kc": c(fit.kc, curve_src),
        "curve.mu": c(fit.mu, curve_src),
        "short_rate.k": c(ou["r"]["k"], ou_src["r"] + " (OU proxy for pull toward the reaction-function target)"),
        "short_rate.sigma": c(ou["r"]["sigma"], ou_src["r"]),
        "inflation.k": c(ou["pi"]["k"], ou_src["pi"]),
        "inflation.mean": c(ou["pi"]["mean"], ou_src["pi"]),
        "inflation.sigma": c(ou["pi"]["sigma"], ou_src["pi"]),
        "term_premium.k": c(ou["tau"]["k"], ou_src["tau"]),
        "term_premium.mean": c(ou["tau"]["mean"], ou_src["tau"]),
        "term_premium.sigma": c(ou["tau"]["sigma"], ou_src["tau"]),
        "neutral_rate.k": c(ou["r_star"]["k"], ou_src["r_star"]),
        "neutral_rate.mean": c(ou["r_star"]["mean"], ou_src["r_star"]),
        "neutral_rate.sigma": c(ou["r_star"]["sigma"], ou_src["r_star"]),
        "policy_path.k": c(ou["p"]["k"], ou_src["p"]),
        "policy_path.sigma": c(ou["p"]["sigma"], ou_src["p"]),
        "initial.r": c(hist[_data.SHORT_RATE_COLUMN][-1], f"DGS3MO, {last_src}"),
        "initial.pi": c(hist["T10YIE"][-1], f"T10YIE, {last_src}"),
        "initial.tau": c(hist["ACMTP10"][-1], f"ACMTP10, {last_src}"),
        "initial.r_star": c(fit.r_star[-1], f"fit_curve latent r_star, {last_src}"),
        "initial.p": c(fit.p[-1], f"fit_curve latent p, {last_src}"),
        "regimes.names": {"value": ["calm", "volatile"], "source": "Hamilton regimes ordered by variance"},
        "regimes.generator": c(gen, ham_src),
    }
    return dict(
        window=dict(start=_iso(np.datetime64(start, "D")), end=_iso(np.datetime64(end, "D")), first=first,
                    last=last, n_days=n_days),
        curve=dict(k=float(fit.k), kc=float(fit.kc), mu=float(fit.mu),
                   rmse_bp={f"{m:g}y": e for m, e in rmse.items()}, weights=dict(zip(
                       [f"{m:g}y" for m in fit.maturities], fit.weights)), loss=float(fit.loss),
                   notes=curve_notes(float(fit.k), float(fit.kc), float(fit.mu))),
        ou=ou,
        hamilton=hamilton,
        config=config,
        series=dict(dates=dates, r_star=np.asarray(fit.r_star), p=np.asarray(fit.p),
                    hamilton_dates=d10[1:], smoothed_probs=ham["smoothed_probs"]),
    )
