"""Portfolios: positions in Treasury bonds, bond ETFs, Treasury futures, an equity index and cash, revalued on a curve.

Amounts are $bn. Maturities are in years from the start of the run, coupons are decimals paid semiannually, and
curves are given as functions `zero_fn(maturities) -> zero yields` (continuously compounded, batched on the
leading axes), so the same code prices on the initial curve, on one simulated path or on a batch of paths.

- bond: remaining cash flows discounted on the curve at time t (roll-down), plus coupons and principal already
  received as cash (not reinvested). Payment dates are counted back from maturity in half years.
- etf: a constant-maturity bond index, notional * P_t / P_0 plus distributions notional * coupon * t.
- future: P&L of a CTD-proxy bond, notional * (C_t(maturity - t) - C_0(maturity)) / C_0(maturity), with C the
  clean price (the price less the accrued coupon), so that the P&L does not jump when the proxy pays a coupon; 0
  at t = 0.
- equity: notional * S_t / S_0. cash: notional * exp(integral of the short rate).
"""

from __future__ import annotations

import importlib.resources
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import ConfigError, did_you_mean

KINDS = ("bond", "etf", "future", "equity", "cash")
MAX_PAYMENTS = 60  # semiannual payments per bond: maturities up to 30 years
MAX_MATURITY = MAX_PAYMENTS / 2.0
FUTURE_COUPON = 0.06  # the 6% notional coupon of CBOT Treasury futures
MAX_COUPON = 0.3  # coupons are decimals: above 30% a coupon is most likely written in percent (as debt.coupons)

ZeroFn = Callable[[Float[Array, " m"]], Float[Array, "*batch m"]]

_REQUIRED = {
    "bond": ("notional", "coupon", "maturity"),
    "etf": ("notional", "coupon", "maturity"),
    "future": ("notional", "maturity"),
    "equity": ("notional",),
    "cash": ("notional",),
}
_OPTIONAL = {"bond": (), "etf": (), "future": ("coupon",), "equity": (), "cash": ()}


class Portfolio(eqx.Module):
    """Positions of a book. Numeric fields are leaves (differentiable); coupon and maturity are 0 where unused."""

    name: str = eqx.field(static=True)
    kinds: tuple[str, ...] = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)
    notional: Float[Array, " positions"]
    coupon: Float[Array, " positions"]
    maturity: Float[Array, " positions"]
    description: str = eqx.field(static=True, default="")

    def __check_init__(self):
        """A book built in code is checked as a file is (`portfolio_from_dict`): one number a position for each
        field, and, where the numbers are concrete (not traced), coupons in [0, MAX_COUPON] and maturities in
        (0, MAX_MATURITY] for the kinds that have one."""
        if len(self.kinds) != len(self.names):
            raise ValueError(f"Portfolio {self.name!r}: {len(self.kinds)} kinds but {len(self.names)} names")
        bad = sorted(set(self.kinds) - set(KINDS))
        if bad:
            raise ValueError(f"Portfolio {self.name!r}: unknown kinds {bad}; allowed: {', '.join(KINDS)}")
        n = len(self.kinds)
        for field in ("notional", "coupon", "maturity"):
            value = getattr(self, field)
            if not hasattr(value, "shape") or value.shape != (n,):
                raise ValueError(f"Portfolio {self.name!r}: {field} must be an array of one number a position, "
                                 f"shape ({n},), got {type(value).__name__} of shape {np.shape(value)}")
        if any(isinstance(getattr(self, f), jax.core.Tracer) for f in ("notional", "coupon", "maturity")):
            return
        notional, coupon, maturity = (np.asarray(getattr(self, f), np.float64) for f in ("notional", "coupon",
                                                                                         "maturity"))
        for i, kind in enumerate(self.kinds):
            at = f"Portfolio {self.name!r}, position {i} ({self.names[i]})"
            if not np.isfinite(notional[i]):
                raise ValueError(f"{at}: notional must be finite, got {notional[i]}")
            if not 0.0 <= coupon[i] <= MAX_COUPON:
                raise ValueError(f"{at}: coupon must be in [0, {MAX_COUPON:g}] (a decimal, 0.04 for 4%), got "
                                 f"{coupon[i]:g}")
            if "maturity" in _REQUIRED[kind] and not 0.0 < maturity[i] <= MAX_MATURITY:
                raise ValueError(f"{at}: maturity must be in (0, {MAX_MATURITY:g}] years, got {maturity[i]:g}")


def _cash_flows(
    coupon: Float[Array, "*s"], maturity: Float[Array, "*s"]
) -> tuple[Float[Array, "*s k"], Float[Array, "*s k"]]:
    """Payment times (counted back from maturity in half years) and amounts per unit face, padded to MAX_PAYMENTS."""
    k = jnp.arange(MAX_PAYMENTS)
    times = maturity[..., None] - 0.5 * k
    amounts = coupon[..., None] / 2.0 + jnp.where(k == 0, 1.0, 0.0)
    return times, amounts


def price_bond(
    coupon: Float[ArrayLike, "*s"], maturity: Float[ArrayLike, "*s"], zero_fn: ZeroFn
) -> Float[Array, "*batch *s"]:
    """Price per unit face (dirty: accrued interest included) of semiannual bonds with `maturity` years left.

    Cash flows at maturity and every half year before it, down to time 0 (exclusive), are discounted with
    exp(-y(t_i) t_i), y = zero_fn(t_i). A bond with maturity <= 0 has price 0. Maturities above 30 years lose
    the payments beyond the 60-payment grid.
    """
    coupon, maturity = jnp.broadcast_arrays(jnp.asarray(coupon), jnp.asarray(maturity))
    times, amounts = _cash_flows(coupon, maturity)
    live = times > 0.0
    safe = jnp.where(live, times, 1.0)  # keep masked entries away from t <= 0 (finite values and gradients)
    y = zero_fn(safe.reshape(-1))
    disc = jnp.exp(-y * safe.reshape(-1))
    # each bond's sum over its payments as one einsum with the live amounts (zero for payments already made, whose
    # discount factors at the placeholder time 1 are finite): on CPU 1.7x faster than a masked sum along the
    # short last axis of (paths, bonds, payments)
    s, k = coupon.size, MAX_PAYMENTS
    weights = jnp.where(live, amounts, 0.0).reshape(s, k)
    disc = disc.reshape(disc.shape[:-1] + (s, k))
    price = jnp.einsum("...sk,sk->...s", disc, weights, precision=jax.lax.Precision.HIGHEST)
    return price.reshape(price.shape[:-1] + coupon.shape)


def _received(coupon: Float[Array, " n"], maturity: Float[Array, " n"], t: Float[Array, ""]) -> Float[Array, " n"]:
    """Coupons and principal per unit face paid at dates in (0, t], held as cash without reinvestment."""
    times, amounts = _cash_flows(coupon, maturity)
    return jnp.sum(jnp.where((times > 0.0) & (times <= t), amounts, 0.0), axis=-1)


def accrued(coupon: Float[ArrayLike, "*s"], maturity: Float[ArrayLike, "*s"]) -> Float[Array, "*s"]:
    """Coupon accrued per unit face since the last payment date (payments every half year counted back from
    maturity, as `price_bond`'s): c/2 times the share of the current half year gone; 0 for a matured bond. The
    price less it is the clean price, continuous across payment dates where the price drops by the coupon."""
    coupon, maturity = jnp.broadcast_arrays(jnp.asarray(coupon), jnp.asarray(maturity))
    times, _ = _cash_flows(coupon, maturity)
    nxt = jnp.min(jnp.where(times > 0.0, times, jnp.inf), axis=-1)  # time to the next payment (inf: none left)
    return coupon / 2.0 * jnp.clip(1.0 - 2.0 * nxt, 0.0, 1.0)


def position_values(
    port: Portfolio,
    t: Float[ArrayLike, ""],
    zero_fn: ZeroFn,
    zero_fn0: ZeroFn,
    equity_ratio: Float[ArrayLike, "*batch"],
    cash_factor: Float[ArrayLike, "*batch"],
) -> Float[Array, "*batch positions"]:
    """Value of each position ($bn) at time t; see `portfolio_value` for the arguments."""
    kinds = np.asarray(port.kinds)
    is_bond, is_etf, is_future = kinds == "bond", kinds == "etf", kinds == "future"
    priced = is_bond | is_etf | is_future
    t = jnp.asarray(t)
    n, c, m = port.notional, port.coupon, port.maturity
    m0 = jnp.where(priced, m, 1.0)  # dummy maturity for equity and cash, masked out below
    mt = jnp.where(is_etf, m0, m0 - t)  # ETFs keep a constant maturity; bonds and CTD proxies roll down
    p_t = price_bond(c, mt, zero_fn)
    p_0 = price_bond(c, m0, zero_fn0)
    er = jnp.asarray(equity_ratio)[..., None]
    cf = jnp.asarray(cash_factor)[..., None]
    bond = n * (p_t + _received(c, m, t))
    etf = n * (p_t / p_0 + c * t)
    clean_0 = p_0 - accrued(c, m0)
    future = n * (p_t - accrued(c, mt) - clean_0) / clean_0  # clean prices: no jump at the proxy's coupon dates
    other = jnp.where(kinds == "equity", n * er, n * cf)
    return jnp.where(is_bond, bond, jnp.where(is_etf, etf, jnp.where(is_future, future, other)))


def portfolio_value(
    port: Portfolio,
    t: Float[ArrayLike, ""],
    zero_fn: ZeroFn,
    zero_fn0: ZeroFn,
    equity_ratio: Float[ArrayLike, "*batch"],
    cash_factor: Float[ArrayLike, "*batch"],
) -> Float[Array, "*batch"]:
    """Value of the portfolio ($bn) at time t (years since the start; may be traced).

    `zero_fn` gives the zero yields of the curve at time t (batched on the leading axes), `zero_fn0` those of the
    initial curve (unbatched or with the same batch), `equity_ratio` S_t / S_0 of the equity index and
    `cash_factor` exp(integral of the short rate from 0 to t). At t = 0 with zero_fn = zero_fn0 and unit ratios
    this is the initial value (futures contribute 0).
    """
    return jnp.sum(position_values(port, t, zero_fn, zero_fn0, equity_ratio, cash_factor), axis=-1)


def _tent_weights(m: Float[Array, " m"], keys: Float[Array, " k"]) -> Float[Array, "m k"]:
    """Triangular weights of maturities m on the key maturities, flat beyond the ends; each row sums to 1."""
    eye = jnp.eye(keys.shape[0], dtype=m.dtype)
    return jax.vmap(lambda row: jnp.interp(m, keys, row), out_axes=-1)(eye)


def risk_report(port: Portfolio, zero_fn0: ZeroFn, key_maturities: Sequence[float]) -> dict[str, Any]:
    """PV ($bn), parallel DV01 and key-rate DV01s ($bn per bp, positive when a fall in yields gains) at t = 0.

    Only the current curve is bumped; the initial curve of ETF and future returns stays as the reference, so
    ETFs and futures carry their duration. Key-rate bumps are tents centred on the sorted `key_maturities`
    (flat beyond the ends), so they add up to the parallel bump and the key-rate DV01s sum to the DV01. All
    derivatives are from one `jax.grad` each. Returns plain floats; `zero_fn0` must be unbatched.
    """
    keys_list = sorted(float(k) for k in key_maturities)
    if not keys_list:
        raise ValueError("risk_report: key_maturities is empty")
    keys = jnp.asarray(keys_list, dtype=port.notional.dtype)

    def value(shift: Float[Array, ""], bumps: Float[Array, " k"]) -> Float[Array, ""]:
        def bumped(m):
            return zero_fn0(m) + shift + _tent_weights(m, keys) @ bumps

        return portfolio_value(port, 0.0, bumped, zero_fn0, 1.0, 1.0)

    zero = jnp.zeros((), port.notional.dtype)
    pv, (d_shift, d_bumps) = jax.jit(jax.value_and_grad(value, argnums=(0, 1)))(zero, jnp.zeros_like(keys))
    return {
        "pv": float(pv),
        "dv01": float(-d_shift * 1e-4) + 0.0,  # + 0.0 turns -0.0 into 0.0
        "key_rate_dv01": {k: float(-d * 1e-4) + 0.0 for k, d in zip(keys_list, d_bumps)},
    }


# --- loading ---------------------------------------------------------------------------------------------


def _shipped_dir():
    return importlib.resources.files("jaxstress") / "configs" / "portfolios"


def shipped_portfolios() -> dict[str, str]:
    """Names and descriptions of the portfolios shipped in jaxstress/configs/portfolios."""
    out = {}
    for entry in sorted(_shipped_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            out[entry.name[: -len(".toml")]] = str(data.get("description", ""))
    return out


def is_portfolio_path(s: str) -> bool:
    """Whether `scenario.portfolio` / --portfolio names a file (else a shipped portfolio)."""
    return s.endswith(".toml") or "/" in s or "\\" in s


def load_portfolio(path_or_name: str | Path) -> Portfolio:
    """Load a portfolio from a TOML file path, or by the name of a shipped portfolio (e.g. "long_duration")."""
    s = str(path_or_name)
    if isinstance(path_or_name, Path) or is_portfolio_path(s):
        path = Path(s)
        if not path.is_file():
            raise ConfigError(
                f"portfolio file not found; shipped portfolios: {', '.join(shipped_portfolios())}", file=s
            )
        try:
            text, file = path.read_text(encoding="utf-8"), s
        except UnicodeDecodeError:
            raise ConfigError("not UTF-8 text; TOML files must be UTF-8", file=s) from None
    else:
        entry = _shipped_dir() / f"{s}.toml"
        if not entry.is_file():
            hint = did_you_mean(s, shipped_portfolios())
            raise ConfigError(
                f"no shipped portfolio named {s!r}{hint}; shipped portfolios: {', '.join(shipped_portfolios())}; "
                "or give a portfolio file's path, ending in .toml", key="scenario.portfolio")
        text, file = entry.read_text(encoding="utf-8"), str(entry)
    try:
        data = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer over Python's 4300-digit limit
        raise ConfigError(f"invalid TOML: {e}", file=file) from None
    return portfolio_from_dict(data, file=file)


def _number(value: Any, file: str | None, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"expected a number, got {type(value).__name__} {value!r}", file=file, key=key)
    if not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {value!r}", file=file, key=key)
    return float(value)


def _string(value: Any, file: str | None, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {type(value).__name__} {value!r}", file=file, key=key)
    return value


def portfolio_from_dict(data: Mapping[str, Any], *, file: str | None = None) -> Portfolio:
    """Validate a parsed portfolio file (keys `name`, optional `description`, `[[positions]]`) into a Portfolio."""
    extra = sorted(set(data) - {"name", "description", "positions"})
    if extra:
        hint = did_you_mean(extra[0], ["name", "description", "positions"], "did you mean '{}'? ")
        raise ConfigError(f"unknown key; {hint}allowed: name, description, positions", file=file, key=extra[0])
    if "name" not in data:
        raise ConfigError("missing; give the portfolio a name (a string)", file=file, key="name")
    name = _string(data["name"], file, "name")
    description = _string(data.get("description", ""), file, "description")
    positions = data.get("positions")
    if not isinstance(positions, list) or not positions:
        raise ConfigError("expected a non-empty list of [[positions]] tables", file=file, key="positions")
    kinds, names, notional, coupon, maturity = [], [], [], [], []
    for i, pos in enumerate(positions):
        at = f"positions[{i}]"
        if not isinstance(pos, dict):
            raise ConfigError(f"expected a table, got {type(pos).__name__}", file=file, key=at)
        if "kind" not in pos:
            raise ConfigError(f"missing; one of {', '.join(KINDS)}", file=file, key=f"{at}.kind")
        kind = _string(pos["kind"], file, f"{at}.kind")
        if kind not in KINDS:
            raise ConfigError(f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}", file=file, key=f"{at}.kind")
        required, optional = _REQUIRED[kind], _OPTIONAL[kind]
        allowed = ("kind", "name", *required, *optional)
        for key in pos:
            if key not in allowed:
                hint = did_you_mean(key, allowed, "did you mean '{}'? ")
                raise ConfigError(
                    f"not allowed for kind {kind!r}; {hint}allowed: {', '.join(allowed)}", file=file, key=f"{at}.{key}"
                )
        for key in required:
            if key not in pos:
                raise ConfigError(f"missing; kind {kind!r} needs {', '.join(required)}", file=file, key=f"{at}.{key}")
        names.append(_string(pos.get("name", f"{kind} {i}"), file, f"{at}.name"))
        kinds.append(kind)
        notional.append(_number(pos["notional"], file, f"{at}.notional"))
        c = _number(pos.get("coupon", FUTURE_COUPON if kind == "future" else 0.0), file, f"{at}.coupon")
        if not 0.0 <= c <= MAX_COUPON:
            pct = f"; {c:g} reads as {c * 100:g}%: for {c:g}% write {c / 100:g}" if c > MAX_COUPON else ""
            raise ConfigError(f"coupon must be in [0, {MAX_COUPON:g}] (a decimal, 0.04 for 4%), got {c:g}{pct}",
                              file=file, key=f"{at}.coupon")
        m = _number(pos.get("maturity", 0.0), file, f"{at}.maturity")
        if "maturity" in required and not 0.0 < m <= MAX_MATURITY:
            raise ConfigError(
                f"maturity must be in (0, {MAX_MATURITY:g}] years, got {m}", file=file, key=f"{at}.maturity"
            )
        coupon.append(c)
        maturity.append(m)
    return Portfolio(
        name=name,
        kinds=tuple(kinds),
        names=tuple(names),
        notional=jnp.asarray(notional),
        coupon=jnp.asarray(coupon),
        maturity=jnp.asarray(maturity),
        description=description,
    )
