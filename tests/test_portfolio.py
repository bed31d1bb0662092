"""Portfolio valuation against closed forms on flat curves, autodiff DV01s, shipped books and config errors."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxstress._curve import par_yield_from_zero, zero_yields  # noqa: E402
from jaxstress._errors import ConfigError  # noqa: E402
from jaxstress._portfolio import (  # noqa: E402
    Portfolio,
    load_portfolio,
    portfolio_from_dict,
    portfolio_value,
    price_bond,
    risk_report,
    shipped_portfolios,
)

value = jax.jit(portfolio_value, static_argnums=(2, 3))  # curve functions are static (hashable callables)
price = jax.jit(price_bond, static_argnums=2)
KEYS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)


def flat(y, batch=()):
    """Zero curve flat at y (broadcast to a batch)."""
    return lambda m: jnp.broadcast_to(jnp.asarray(y), batch + (1,)) + 0.0 * m


def curve(m):
    """An upward-sloping curve from the structural formula."""
    return zero_yields(m, r=0.043, pi=0.024, tau=0.006, r_star=0.008, p=-0.004, k=0.35, kc=0.5, mu=6.0)


def np_flows(coupon, maturity):
    """Independent cash-flow schedule: dates counted back from maturity every half year, all > 0."""
    times = np.arange(maturity, 0.0, -0.5)
    times = times[times > 1e-12]
    amounts = np.full(times.shape, coupon / 2.0)
    amounts[0] += 1.0
    return times, amounts


def np_price(coupon, maturity, y):
    times, amounts = np_flows(coupon, maturity)
    return float(np.sum(amounts * np.exp(-y * times)))


def book(*positions, name="test"):
    return portfolio_from_dict({"name": name, "positions": [dict(p) for p in positions]})


@pytest.mark.parametrize("coupon,maturity", [(0.04, 10.0), (0.025, 7.3), (0.0, 2.0), (0.05, 30.0), (0.03, 0.2)])
def test_price_flat_curve_matches_numpy(coupon, maturity):
    y = 0.045
    got = price(coupon, maturity, flat(y))
    assert got.shape == ()
    np.testing.assert_allclose(float(got), np_price(coupon, maturity, y), rtol=1e-13)


def test_price_vectorised_and_batched():
    c, m = jnp.array([0.02, 0.04, 0.05]), jnp.array([1.5, 9.75, 25.0])
    ys = jnp.array([0.01, 0.03, 0.05, 0.07])
    got = price(c, m, flat(ys[:, None], batch=(4,)))
    assert got.shape == (4, 3)
    want = [[np_price(ci, mi, yi) for ci, mi in zip([0.02, 0.04, 0.05], [1.5, 9.75, 25.0])] for yi in ys.tolist()]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-13)


@pytest.mark.parametrize("maturity", [2.0, 10.0, 30.0])
def test_par_bond_prices_at_one(maturity):
    c = par_yield_from_zero(curve, maturity)
    np.testing.assert_allclose(float(price(c, maturity, curve)), 1.0, rtol=1e-12)


def test_dv01_autodiff_fd_and_closed_form():
    y, c, m = 0.04, 0.035, 12.25
    port = book({"kind": "bond", "notional": 2.0, "coupon": c, "maturity": m})
    rep = risk_report(port, flat(y), KEYS)
    times, amounts = np_flows(c, m)
    closed = 2.0 * np.sum(times * amounts * np.exp(-y * times)) * 1e-4
    h = 1e-5
    fd = -(np_price(c, m, y + h) - np_price(c, m, y - h)) / (2 * h) * 2.0 * 1e-4
    np.testing.assert_allclose(rep["pv"], 2.0 * np_price(c, m, y), rtol=1e-13)
    np.testing.assert_allclose(rep["dv01"], closed, rtol=1e-12)
    np.testing.assert_allclose(rep["dv01"], fd, rtol=1e-8)
    assert set(rep["key_rate_dv01"]) == set(KEYS)
    np.testing.assert_allclose(sum(rep["key_rate_dv01"].values()), rep["dv01"], rtol=1e-12)
    # the cash flows sit between the 10y and 20y keys (and below): nothing on 30y, most on 10y
    assert rep["key_rate_dv01"][30.0] == 0.0
    assert rep["key_rate_dv01"][10.0] == max(rep["key_rate_dv01"].values())


def test_future_and_etf_dv01_from_duration():
    # both are price returns of a bond: DV01 = notional * (price DV01 / price) = notional * duration * 1e-4
    y = 0.04
    fut = book({"kind": "future", "notional": -3.0, "maturity": 9.0})  # 6% CTD-proxy coupon by default
    etf = book({"kind": "etf", "notional": 3.0, "coupon": 0.03, "maturity": 8.0})
    for port, notional, c, m in ((fut, -3.0, 0.06, 9.0), (etf, 3.0, 0.03, 8.0)):
        times, amounts = np_flows(c, m)
        dur = np.sum(times * amounts * np.exp(-y * times)) / np.sum(amounts * np.exp(-y * times))
        rep = risk_report(port, flat(y), KEYS)
        np.testing.assert_allclose(rep["dv01"], notional * dur * 1e-4, rtol=1e-12)
    assert risk_report(fut, flat(y), KEYS)["pv"] == 0.0


def test_future_pnl_does_not_jump_when_its_proxy_pays_a_coupon():
    """A short future on an unchanged curve across its CTD proxy's coupon date (maturity 9.25: a payment at
    t = 0.25): the proxy's price drops by the 3% coupon there, its clean price does not, so the P&L moves by what a
    day's pull to par makes, not by 3 / 1.2 of the notional; and it is the clean-price return of a closed form."""
    fut = book({"kind": "future", "notional": -10.0, "maturity": 9.25})
    y, eps = 0.04, 1e-6
    before, after = (float(value(fut, t, flat(y), flat(y), 1.0, 1.0)) for t in (0.25 - eps, 0.25 + eps))
    assert abs(after - before) < 1e-4  # the jump was 10 x 0.03 / 1.15 = 0.26
    assert float(price(0.06, 9.0 - eps, flat(y))) - float(price(0.06, 9.0 + eps, flat(y))) < -0.029  # the price drops

    def clean(m):  # closed form: the price less the coupon accrued since the last date counted back from m
        first = np_flows(0.06, m)[0][-1]
        return np_price(0.06, m, y) - 0.03 * (1.0 - 2.0 * first)

    for t in (0.1, 0.25 + eps, 0.6):
        want = -10.0 * (clean(9.25 - t) - clean(9.25)) / clean(9.25)
        np.testing.assert_allclose(float(value(fut, t, flat(y), flat(y), 1.0, 1.0)), want, rtol=1e-11)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.75])
def test_roll_down_and_coupons_on_unchanged_curve(t):
    y, c, m = 0.042, 0.05, 3.2
    port = book({"kind": "bond", "notional": 1.5, "coupon": c, "maturity": m})
    times, amounts = np_flows(c, m)
    left = times > t
    want = 1.5 * (np.sum(amounts[left] * np.exp(-y * (times[left] - t))) + np.sum(amounts[~left]))
    got = value(port, t, flat(y), flat(y), 1.0, 1.0)
    np.testing.assert_allclose(float(got), want, rtol=1e-13)


def test_matured_bond_is_all_cash():
    port = book({"kind": "bond", "notional": 1.0, "coupon": 0.04, "maturity": 1.0})
    np.testing.assert_allclose(float(value(port, 1.5, flat(0.05), flat(0.03), 1.0, 1.0)), 1.04)


def test_cash_equity_etf_future_rules_batched():
    port = book(
        {"kind": "cash", "notional": 2.0},
        {"kind": "equity", "notional": 3.0},
        {"kind": "etf", "notional": 1.0, "coupon": 0.03, "maturity": 8.0},
        {"kind": "future", "notional": -4.0, "coupon": 0.05, "maturity": 6.0},
    )
    ys = jnp.array([0.03, 0.05])
    t, y0 = 0.5, 0.04
    er, cf = jnp.array([0.8, 1.1]), jnp.array([1.02, 1.021])
    got = value(port, t, flat(ys[:, None], (2,)), flat(y0), er, cf)
    assert got.shape == (2,)
    for i, y in enumerate(ys.tolist()):
        etf = np_price(0.03, 8.0, y) / np_price(0.03, 8.0, y0) + 0.03 * t
        fut = -4.0 * (np_price(0.05, 5.5, y) - np_price(0.05, 6.0, y0)) / np_price(0.05, 6.0, y0)
        want = 2.0 * float(cf[i]) + 3.0 * float(er[i]) + etf + fut
        np.testing.assert_allclose(float(got[i]), want, rtol=1e-13)
    # at t = 0 on the initial curve a future is worth nothing and the ETF its notional
    np.testing.assert_allclose(float(value(port, 0.0, curve, curve, 1.0, 1.0)), 6.0, rtol=1e-13)


def test_traced_time_vmap_and_grad_wrt_notional():
    port = load_portfolio("bank_afs")
    ts = jnp.linspace(0.0, 1.0, 5)
    vals = jax.jit(jax.vmap(lambda t: value(port, t, curve, curve, 1.0, 1.0)))(ts)
    assert vals.shape == (5,) and bool(jnp.all(jnp.isfinite(vals)))
    g = jax.jit(jax.grad(lambda p: portfolio_value(p, 0.0, curve, curve, 1.0, 1.0)))(port)
    assert isinstance(g, Portfolio)
    per_unit = np.asarray(g.notional)
    np.testing.assert_allclose(per_unit[:5], np.asarray(price(port.coupon[:5], port.maturity[:5], curve)))
    assert per_unit[5] == 0.0  # a future adds no value at t = 0


def test_shipped_portfolios_load_and_rank():
    shipped = shipped_portfolios()
    assert set(shipped) == {"treasury_ladder", "long_duration", "bank_afs", "sixty_forty"}
    reps = {}
    for name in shipped:
        port = load_portfolio(name)
        assert port.name == name and shipped[name] == port.description != ""
        reps[name] = rep = risk_report(port, curve, KEYS)
        assert isinstance(rep["pv"], float) and isinstance(rep["dv01"], float)
        assert rep["pv"] > 0.0 and rep["dv01"] > 0.0
        np.testing.assert_allclose(sum(rep["key_rate_dv01"].values()), rep["dv01"], rtol=1e-10)
    face = {"treasury_ladder": 1.0, "long_duration": 1.0, "bank_afs": 100.0, "sixty_forty": 1.0}
    per_dollar = {n: reps[n]["dv01"] / reps[n]["pv"] for n in reps}
    assert per_dollar["long_duration"] > per_dollar["treasury_ladder"] > per_dollar["sixty_forty"]
    assert 12e-4 < per_dollar["long_duration"] < 20e-4  # TLT's effective duration is ~16-17
    np.testing.assert_allclose(reps["sixty_forty"]["pv"], 1.0, rtol=1e-12)
    for n, size in face.items():  # round book sizes: face of bonds plus market value of the rest, futures aside
        port = load_portfolio(n)
        funded = np.array([k != "future" for k in port.kinds])
        np.testing.assert_allclose(float(jnp.sum(port.notional[funded])), size, rtol=1e-12)


def test_load_by_path(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\n[[positions]]\nkind = "cash"\nnotional = 5\n')
    port = load_portfolio(f)
    assert port.kinds == ("cash",) and port.names == ("cash 0",) and float(port.notional[0]) == 5.0
    assert load_portfolio(str(f)).name == "mine"


GOOD = '[[positions]]\nkind = "bond"\nname = "b"\nnotional = 1.0\ncoupon = 0.04\nmaturity = 5.0\n'


@pytest.mark.parametrize(
    "text,key,words",
    [
        ('name = "x"\n' + GOOD + '[[positions]]\nkind = "swap"\nnotional = 1.0\n', "positions[1].kind", "allowed"),
        ('name = "x"\n' + GOOD.replace("maturity = 5.0\n", ""), "positions[0].maturity", "missing"),
        ('name = "x"\n' + GOOD.replace("maturity = 5.0", "maturity = 0.0"), "positions[0].maturity", "(0, 30]"),
        ('name = "x"\n' + GOOD.replace("maturity = 5.0", "maturity = 45.0"), "positions[0].maturity", "(0, 30]"),
        ('name = "x"\n' + GOOD.replace("coupon = 0.04", "coupon = -0.01"), "positions[0].coupon", "[0, 0.3]"),
        ('name = "x"\n' + GOOD.replace("coupon = 0.04", "coupon = 2.75"), "positions[0].coupon",
         "2.75 reads as 275%: for 2.75% write 0.0275"),
        ('name = "x"\n' + GOOD.replace("notional = 1.0", "notionl = 1.0"), "positions[0].notionl",
         "did you mean 'notional'?"),
        ('name = "x"\nnam = "y"\n' + GOOD, "nam", "did you mean 'name'?"),
        ('name = "x"\n' + GOOD.replace("notional = 1.0", 'notional = "1bn"'), "positions[0].notional", "number"),
        ('name = "x"\n' + GOOD.replace("notional = 1.0", "notional = true"), "positions[0].notional", "number"),
        ('name = "x"\n' + GOOD.replace("notional = 1.0", "notional = nan"), "positions[0].notional", "finite"),
        ('name = "x"\n' + GOOD + "currency = 1\n", "positions[0].currency", "not allowed"),
        (
            'name = "x"\n[[positions]]\nkind = "equity"\nnotional = 1.0\ncoupon = 0.01\n',
            "positions[0].coupon",
            "not allowed",
        ),
        ('name = "x"\npositions = []\n', "positions", "non-empty"),
        ('name = "x"\n', "positions", "non-empty"),
        (GOOD, "name", "missing"),
        ('name = "x"\nowner = "me"\n' + GOOD, "owner", "unknown"),
        ("name = 3\n" + GOOD, "name", "string"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, key, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_portfolio(f)
    assert err.value.key == key and err.value.file == str(f)
    assert f"key '{key}'" in str(err.value) and str(f) in str(err.value) and words in str(err.value)


def test_malformed_toml_and_missing_files(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text('name = "x"\n[[positions]\nkind = "bond"\n')
    with pytest.raises(ConfigError, match="invalid TOML") as err:
        load_portfolio(f)
    assert err.value.file == str(f)
    with pytest.raises(ConfigError, match="long_duration") as err:
        load_portfolio(tmp_path / "nope.toml")
    assert "nope.toml" in str(err.value)
    with pytest.raises(ConfigError, match="treasury_ladder"):
        load_portfolio("no_such_book")
    with pytest.raises(ConfigError, match=r"key 'scenario.portfolio': no shipped portfolio named 'long_duraton' "
                                          r"\(did you mean 'long_duration'\?\)"):
        load_portfolio("long_duraton")


def test_portfolio_path_from_the_command_line_reloads_from_anywhere(tmp_path, monkeypatch):
    """--portfolio my_book.toml is relative to the working directory: the resolved config (scenario.toml) keeps
    its absolute path, so that it runs again from any directory (it kept 'my_book.toml', which then failed). The
    scenario's hash counts the book by name and contents, not by where it lies."""
    from jaxstress._config import load_scenario

    work, other = tmp_path / "work", tmp_path / "other"
    for d in (work, other):
        d.mkdir()
        (d / "my_book.toml").write_text('name = "my_book"\n' + GOOD)
    monkeypatch.chdir(work)
    sc = load_scenario("baseline", portfolio="my_book.toml")
    assert sc.config["scenario"]["portfolio"] == str(work / "my_book.toml")
    saved = tmp_path / "scenario.toml"
    saved.write_text(sc.to_toml())
    monkeypatch.chdir(other)
    again = load_scenario(str(saved))
    assert again.portfolio_file == str(work / "my_book.toml") and again.hash() == sc.hash()
    assert load_scenario("baseline", portfolio="my_book.toml").hash() == sc.hash()  # other/my_book.toml
    assert load_scenario("baseline", overrides=["scenario.portfolio=my_book.toml"]).portfolio_file == str(
        other / "my_book.toml")
