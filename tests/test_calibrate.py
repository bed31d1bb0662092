"""History calibration: data loaders, curve fit, OU MLE, Hamilton filter (vs statsmodels and brute force)."""

from __future__ import annotations

import itertools
import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.linalg  # noqa: E402

from jaxstress import _calibrate as cal  # noqa: E402
from jaxstress._curve import par_yield_from_zero, zero_yields  # noqa: E402
from jaxstress._data import (  # noqa: E402
    BREAKEVEN_FILE,
    CMT_FILE,
    PAR_COLUMNS,
    TERM_PREMIUM_FILE,
    aligned_history,
    load_series,
)
from jaxstress._errors import DataError  # noqa: E402

WINDOW = ("2019-01-01", "2025-12-31")
MATURITIES = tuple(PAR_COLUMNS.values())


@pytest.fixture(scope="module")
def history():
    return aligned_history(*WINDOW)


@pytest.fixture(scope="module")
def curve(history):
    return cal.fit_curve(history)


@pytest.fixture(scope="module")
def calibration():
    return cal.calibrate_history(*WINDOW)


# ------------------------------------------------------------------------------------------------ data


def test_aligned_history_shapes_and_units(history):
    dates, h = history
    assert dates.dtype == np.dtype("datetime64[D]")
    assert np.all(np.diff(dates).astype(int) > 0)
    assert str(dates[0]) == "2019-01-02" and str(dates[-1]) == "2025-12-31"
    assert set(h) == {"DGS3MO", *PAR_COLUMNS, "T10YIE", "ACMTP10"}
    for v in h.values():
        assert v.shape == dates.shape and np.all(np.isfinite(v))
    # Decimals, spot-checked against the shared README: 10y on 2025-04-11 was 4.48%.
    i = np.searchsorted(dates, np.datetime64("2025-04-11"))
    assert h["DGS10"][i] == pytest.approx(0.0448)
    assert h["T10YIE"][i] == pytest.approx(0.0220)


def _write(path, text):
    path.write_text(text)
    return path


def test_missing_file_names_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=rf"{CMT_FILE}.*not found.*{tmp_path.name}"):
        aligned_history(*WINDOW, data_dir=tmp_path)


def test_missing_column(tmp_path):
    _write(tmp_path / "x.csv", "date,A,B\n2020-01-02,1,2\n")
    with pytest.raises(DataError, match=r"x\.csv.*key 'C'.*column not found; the file has: A, B"):
        load_series("x", ["A", "C"], data_dir=tmp_path)


@pytest.mark.parametrize(
    "rows, what",
    [("2020-01-03,1\n2020-01-02,2\n", "line 3: date 2020-01-02 is out of order"),
     ("2020-01-02,1\n2020-01-02,2\n", "line 3: date 2020-01-02 is repeated")],
)
def test_dates_must_increase(tmp_path, rows, what):
    _write(tmp_path / "x.csv", "date,A\n" + rows)
    with pytest.raises(DataError, match=what):
        load_series("x", "A", data_dir=tmp_path)


def test_bad_number_names_line_and_column(tmp_path):
    _write(tmp_path / "x.csv", "date,A\n2020-01-02,1\n2020-01-03,n/a\n")
    with pytest.raises(DataError, match=r"key 'A'.*line 3: value 'n/a' is not a number"):
        load_series("x", "A", data_dir=tmp_path)


def test_fred_dot_is_missing_and_dropped(tmp_path):
    _write(tmp_path / "x.csv", "date,A,B\n2020-01-02,1.5,.\n2020-01-03,.,.\n2020-01-06,2.5,3\n")
    d, v = load_series("x", ["A", "B"], data_dir=tmp_path)
    assert d.tolist() == [np.datetime64("2020-01-02"), np.datetime64("2020-01-06")]  # all-missing row dropped
    np.testing.assert_array_equal(v, [[1.5, np.nan], [2.5, 3.0]])


def _tiny_dataset(tmp_path, n=6, dot_row=2):
    days = np.busday_offset("2024-01-02", np.arange(n), roll="forward")
    cmt = ["date,DGS3MO,DGS1,DGS2,DGS3,DGS5,DGS7,DGS10,DGS20,DGS30"]
    for i, d in enumerate(days):
        ten = "." if i == dot_row else "4.10"
        cmt.append(f"{d},5.2,4.9,4.4,4.2,4.0,4.05,{ten},4.4,4.3")
    _write(tmp_path / CMT_FILE, "\n".join(cmt) + "\n")
    _write(tmp_path / BREAKEVEN_FILE, "date,T10YIE\n" + "".join(f"{d},2.2\n" for d in days))
    _write(tmp_path / TERM_PREMIUM_FILE, "date,ACMTP10\n" + "".join(f"{d},0.1\n" for d in days))
    return days


def test_aligned_history_drops_dot_days(tmp_path):
    days = _tiny_dataset(tmp_path)
    dates, h = aligned_history("2024-01-01", "2024-12-31", tmp_path, min_rows=1)
    np.testing.assert_array_equal(dates, np.delete(days, 2))
    assert h["DGS10"] == pytest.approx(np.full(5, 0.041))


def test_too_short_window(tmp_path):
    _tiny_dataset(tmp_path)
    with pytest.raises(DataError, match=r"only 5 dates in 2024-01-01 \.\. 2024-12-31 .*need at least 250"):
        aligned_history("2024-01-01", "2024-12-31", tmp_path)
    with pytest.raises(DataError, match=r"only \d+ dates .*need at least 250"):
        aligned_history("2025-12-01", "2025-12-31")  # real data: about 20 days
    with pytest.raises(DataError, match=r"only 0 rows .*need at least 1"):
        load_series(CMT_FILE, "DGS10", "1980-01-01", "1980-12-31")


# ------------------------------------------------------------------------------------------------ curve


def test_model_par_matches_curve_module():
    @jax.jit
    def reference(r, pi, tau, rs, p, k, kc, mu):
        return jnp.stack([par_yield_from_zero(lambda t: zero_yields(t, r, pi, tau, rs, p, k, kc, mu), m)
                          for m in MATURITIES])

    rng = np.random.default_rng(0)
    for _ in range(3):
        r, pi, tau, rs, p = rng.normal([0.03, 0.022, 0.005, 0.01, -0.01], 0.01)
        theta = jnp.log(jnp.asarray(rng.uniform([0.05, 0.1, 0.5], [1.0, 2.0, 5.0])))
        got = cal._model_par(jnp.asarray([rs, p]), theta, r, pi, tau, MATURITIES)
        np.testing.assert_allclose(got, reference(r, pi, tau, rs, p, *jnp.exp(theta)), rtol=0, atol=1e-15)
    # Flat zero curve z: par yield with semiannual coupons is 2 (exp(z / 2) - 1) at every maturity.
    z = 0.04
    got = cal._model_par(jnp.asarray([0.0, 0.0]), jnp.log(jnp.asarray([0.3, 0.5, 2.0])), z, z, 0.0, MATURITIES)
    np.testing.assert_allclose(got, 2 * np.expm1(z / 2), rtol=0, atol=1e-15)


def test_curve_fit_meets_rmse_targets(curve, history):
    dates, _ = history
    rmse = curve.rmse_by_maturity()
    print("curve fit 2019-2025: k={:.4f} kc={:.4f} mu={:.4f} RMSE bp {}".format(
        curve.k, curve.kc, curve.mu, {f"{m:g}y": round(e, 1) for m, e in rmse.items()}))
    assert rmse[1.0] <= 20.0
    assert all(rmse[m] <= 12.0 for m in MATURITIES if m >= 2.0)
    # Same basin as the reference fit (k ~ 0.21, kc ~ 0.48, mu ~ 2.2); a second basin near k ~ 0.9 fits worse.
    assert 0.15 < float(curve.k) < 0.3 and 0.35 < float(curve.kc) < 0.6 and 1.5 < float(curve.mu) < 3.0
    n = len(dates)
    assert curve.r_star.shape == (n,) and curve.p.shape == (n,) and curve.fitted.shape == (n, len(MATURITIES))
    assert np.all(np.isfinite(curve.r_star)) and np.all(np.isfinite(curve.p))


def test_curve_fit_is_stationary(curve, history):
    """At the optimum the gradient of the loss in (log k, log kc, log mu, every day's r_star and p) vanishes."""
    _, h = history
    r, pi, tau = (jnp.asarray(h[c]) for c in ("DGS3MO", "T10YIE", "ACMTP10"))
    y = jnp.stack([h[c] for c in PAR_COLUMNS], axis=-1)
    theta = jnp.log(jnp.asarray([curve.k, curve.kc, curve.mu]))
    xs = jnp.stack([curve.r_star, curve.p], axis=-1)
    g_theta, g_x = jax.grad(cal._curve_loss, argnums=(0, 1))(theta, xs, r, pi, tau, y, jnp.ones(8), MATURITIES)
    loss = float(curve.loss)
    assert float(jnp.max(jnp.abs(g_theta))) < 1e-5 * loss
    assert float(jnp.max(jnp.abs(g_x))) * len(xs) < 1e-6 * loss / cal.BP  # per-day gradient in bp units


# ------------------------------------------------------------------------------------------------ OU


def _simulate_ou(k, mean, sigma, dt, n, seed):
    rng = np.random.default_rng(seed)
    b = math.exp(-k * dt)
    sd = sigma * math.sqrt((1 - b * b) / (2 * k))
    x = np.empty(n)
    x[0] = mean + sigma / math.sqrt(2 * k) * rng.standard_normal()
    eps = rng.standard_normal(n - 1) * sd
    for t in range(n - 1):
        x[t + 1] = mean + b * (x[t] - mean) + eps[t]
    return x


def test_ou_recovers_known_parameters():
    k, mean, sigma, dt = 1.5, 0.02, 0.01, 1 / 252
    n = 252 * 200  # T = 200 years
    x = _simulate_ou(k, mean, sigma, dt, n, seed=7)
    fit = cal.fit_ou(x, dt)
    # Asymptotic standard errors of the exact-discretisation MLE, with T = n dt:
    #   se(k) = sqrt(1 - b^2) / (b dt sqrt(n)) ~ sqrt(2 k / T) = 0.12,
    #   se(mean) = sigma / (k sqrt(T)) = 4.7e-4,
    #   se(sigma) = sigma / sqrt(2 n) = 3.2e-5 (quadratic variation; the k-dependence is O(k dt)).
    T = n * dt
    se_k, se_mean, se_sigma = math.sqrt(2 * k / T), sigma / (k * math.sqrt(T)), sigma / math.sqrt(2 * n)
    # The reported (plug-in) standard errors use the estimates, so they match only to the estimates' precision.
    assert fit["se_k"] == pytest.approx(se_k, rel=0.25)
    assert fit["se_mean"] == pytest.approx(se_mean, rel=0.25)
    assert fit["se_sigma"] == pytest.approx(se_sigma, rel=0.05)
    assert abs(fit["k"] - k) < 4 * se_k
    assert abs(fit["mean"] - mean) < 4 * se_mean
    assert abs(fit["sigma"] - sigma) < 4 * se_sigma
    assert fit["half_life"] == pytest.approx(math.log(2) / fit["k"])
    # The log-likelihood is the exact Gaussian transition density at the MLE.
    b, v = fit["b"], fit["v"]
    resid = x[1:] - fit["a"] - b * x[:-1]
    ll = np.sum(-0.5 * np.log(2 * np.pi * v) - resid**2 / (2 * v))
    assert fit["loglik"] == pytest.approx(ll, rel=1e-10)


def test_ou_on_real_data_agrees_with_moments(calibration):
    span_years = calibration["window"]["n_days"] / 252
    for name, fit in calibration["ou"].items():
        mom = fit["moments"]
        assert 0.5 < fit["sigma"] / mom["sigma"] < 2.0, name
        if fit["half_life"] < span_years:
            assert 0.5 < fit["half_life"] / mom["half_life"] < 2.0, name
        else:
            # A half-life longer than the sample is not identified (3m yield: 0 -> 5.3% -> 3.7% in 2019-2025,
            # k = 0.02 +- 0.08); both estimators then only say "slower than the window".
            assert mom["half_life"] > span_years / 2 and fit["k"] < 2 * fit["se_k"], name


def test_calibration_config_keys(calibration):
    keys = ["curve.k", "curve.kc", "curve.mu", "short_rate.k", "short_rate.sigma", "inflation.k", "inflation.mean",
            "inflation.sigma", "term_premium.k", "term_premium.mean", "term_premium.sigma", "neutral_rate.k",
            "neutral_rate.mean", "neutral_rate.sigma", "policy_path.k", "policy_path.sigma", "initial.r",
            "initial.pi", "initial.tau", "initial.r_star", "initial.p"]
    config = calibration["config"]
    for key in keys:
        assert np.isfinite(config[key]["value"]) and config[key]["source"], key
    assert config["initial.r"]["value"] == pytest.approx(0.0367)  # DGS3MO on 2025-12-31
    q = np.asarray(config["regimes.generator"]["value"])
    assert q.shape == (2, 2) and np.all(q - np.diag(np.diag(q)) >= 0) and np.allclose(q.sum(axis=1), 0)


# ------------------------------------------------------------------------------------------------ Hamilton


def test_hamilton_filter_and_smoother_match_brute_force():
    """Enumerate all 2^T regime paths of a short series: exact likelihood and smoothed marginals."""
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1.5, 9)
    params = {"mu": jnp.asarray([0.2, -0.5]), "log_var": jnp.log(jnp.asarray([0.5, 3.0])),
              "offdiag": jnp.asarray([[-2.0], [-1.0]])}
    mu, var, trans = (np.asarray(a) for a in cal._unpack(params))
    evals, evecs = np.linalg.eig(trans.T)
    pi0 = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    pi0 /= pi0.sum()
    dens = np.exp(-0.5 * (y[:, None] - mu) ** 2 / var) / np.sqrt(2 * np.pi * var)
    total, marg = 0.0, np.zeros((len(y), 2))
    for path in itertools.product(range(2), repeat=len(y)):
        w = pi0[path[0]] * np.prod([trans[a, b] for a, b in zip(path[:-1], path[1:])])
        w *= np.prod(dens[np.arange(len(y)), path])
        total += w
        marg[np.arange(len(y)), path] += w
    ll, filt, pred = cal._hamilton_filter(params, jnp.asarray(y))
    smooth = cal._kim_smoother(jnp.asarray(trans), filt, pred)
    assert float(ll) == pytest.approx(math.log(total), rel=1e-12)
    np.testing.assert_allclose(smooth, marg / total, atol=1e-12)


def test_generator_from_transition():
    q = np.array([[-3.0, 2.0, 1.0], [4.0, -6.0, 2.0], [0.5, 0.5, -1.0]])
    p = scipy.linalg.expm(q / 252)
    np.testing.assert_allclose(cal.generator_from_transition(p), q, atol=1e-8)
    # A two-state P whose rows do not mix within a step still gives a valid generator.
    q2 = cal.generator_from_transition(np.array([[0.99, 0.01], [0.0, 1.0]]))
    assert q2[1, 0] == 0.0 and np.allclose(q2.sum(axis=1), 0) and q2[0, 1] > 0


def test_hamilton_agrees_with_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    _, y10 = load_series(CMT_FILE, "DGS10", "2018-01-01", "2025-12-31")
    dy = np.diff(y10[~np.isnan(y10)]) * 100.0  # daily 10y changes, bp
    ours = cal.fit_hamilton(dy, 2, steps=300, seed=0)
    ref = sm.tsa.MarkovRegression(dy, k_regimes=2, switching_variance=True).fit(disp=False)
    order = np.argsort(ref.params[4:6])
    means, variances = np.asarray(ref.params[2:4])[order], np.asarray(ref.params[4:6])[order]
    trans = np.asarray(ref.regime_transition)[..., 0].T[np.ix_(order, order)]  # sm: [i, j] = Pr(j -> i)
    print("Hamilton dDGS10 2018-2025 (bp): ours means {} var {} P {} ll {:.4f} | statsmodels means {} var {} P {} "
          "ll {:.4f}".format(ours["means"], ours["variances"], ours["transition"].ravel(), ours["loglik"], means,
                       variances, trans.ravel(), ref.llf))
    assert ours["variances"][0] < ours["variances"][1]
    np.testing.assert_allclose(ours["means"], means, rtol=0.05)
    np.testing.assert_allclose(ours["variances"], variances, rtol=0.05)
    np.testing.assert_allclose(ours["transition"], trans, atol=0.02)
    assert ours["loglik"] >= ref.llf - 1e-3
    smoothed = np.asarray(ref.smoothed_marginal_probabilities)[:, order]
    assert np.max(np.abs(ours["smoothed_probs"] - smoothed)) < 0.02
    np.testing.assert_allclose(ours["transition"].sum(axis=1), 1.0)


# ------------------------------------------------------------------------------------------------ messages, comments


def test_event_window_of_one_date_says_it_must_end_after_it_starts():
    from jaxstress._calibrate_cli import parse_window
    from jaxstress._errors import ConfigError

    with pytest.raises(ConfigError, match=r"--window.*starts and ends on 2025-04-02: it must end after it starts "
                                          r"\(a window needs at least two dates") as err:
        parse_window("2025-04-02:2025-04-02")
    assert "before it starts" not in str(err.value)
    with pytest.raises(ConfigError, match=r"ends \(2025-04-01\) before it starts \(2025-04-02\)"):
        parse_window("2025-04-02:2025-04-01")


def test_event_window_outside_the_data_names_the_data_range(tmp_path):
    from jaxstress._event import event_window, observed_changes

    _tiny_dataset(tmp_path)  # business days 2024-01-02..2024-01-09
    with pytest.raises(DataError, match=r"2030-01-01\.\.2030-02-01 has 0 day\(s\) of DGS10 data \(the data cover "
                                        r"2024-01-02\.\.2024-01-09\); an event window needs at least two"):
        event_window("2030-01-01", "2030-02-01", tmp_path)
    window = event_window("2024-01-02", "2024-01-09", tmp_path)
    assert (window.first, window.last, window.n_days) == ("2024-01-02", "2024-01-09", 4)  # the '.' day dropped
    _write(tmp_path / BREAKEVEN_FILE, "date,T10YIE\n2023-01-03,2.2\n2023-01-04,2.3\n")
    with pytest.raises(DataError, match=r"T10YIE.*fewer than two observations in 2024-01-02\.\.2024-01-09 \(the "
                                        r"data cover 2023-01-03\.\.2023-01-04\); drop 'breakeven' from --targets"):
        observed_changes(window, ["y10", "breakeven"], tmp_path)


def test_event_cli_window_outside_the_data_and_params_name_what_the_user_typed(tmp_path, capsys):
    from jaxstress._cli import main  # the real entry point: ConfigError -> one line, exit 2

    base = ["calibrate", "event", "--base", "april_2025_prior", "--out", str(tmp_path / "x.toml"), "--paths", "1",
            "--steps", "0"]
    assert main(base + ["--window", "2030-01-01:2030-02-01"]) == 2
    err = capsys.readouterr().err
    assert "the data cover 1990-01-02.." in err and "only 0 rows" not in err, err
    assert main(base + ["--window", "2025-04-02:2025-04-11", "--params", "fed.backstop"]) == 2
    out, err = capsys.readouterr()
    assert "key '--params'" in err and "'fed.backstop' is a switch" in err and "params_to_fit" not in err, err
    assert out == ""  # checked before the fit starts
    assert not (tmp_path / "x.toml").exists()


def test_span_years():
    from jaxstress._calibrate_cli import _span_years

    assert _span_years("2019-01-02", "2025-12-31") == "7 years"
    assert _span_years("2024-01-02", "2024-12-31") == "1 year"
    assert _span_years("2023-01-03", "2025-06-30") == "2.5 years"


def test_curve_notes():
    assert cal.curve_notes(0.198, 0.467, 2.29) == []  # 2019-2025: distinct speeds, nothing to say
    (note,) = cal.curve_notes(0.4694275299, 0.4694275299, 2.13)
    assert note.startswith("k = kc = 0.469428/year") and "not a bound or a starting value" in note
    notes = cal.curve_notes(1.8e-6, 0.29, 1.3e8)
    assert len(notes) == 2 and notes[0].startswith("k = 1.8e-06/year") and notes[1].startswith("mu = 1.3e+08")


def test_k_gradient_vanishes_on_the_line_k_equals_kc():
    """Why a short window's fit can end on k = kc exactly: dB/dk = -C(k)/k, so at kc = k the yields move along the
    policy-path loading, which each day's latent p absorbs; the profiled loss's k-derivative is 0 for any k."""
    dates, hist = aligned_history("2024-01-01", "2024-12-31")
    cols = list(cal._data.PAR_COLUMNS)
    mats = tuple(cal._data.PAR_COLUMNS[c] for c in cols)
    y = jnp.stack([jnp.asarray(hist[c]) for c in cols], -1)
    args = (jnp.asarray(hist["DGS3MO"]), jnp.asarray(hist["T10YIE"]), jnp.asarray(hist["ACMTP10"]), y,
            jnp.ones(len(cols)), mats, 4)
    grad = jax.jit(jax.grad(lambda th: cal._profiled(th, *args)[0]))
    for kc in (0.2, 1.0):
        g_on = np.asarray(grad(jnp.log(jnp.array([kc, kc, 2.0]))))
        g_off = np.asarray(grad(jnp.log(jnp.array([0.5 * kc, kc, 2.0]))))
        assert abs(g_on[0]) < 1e-6 * abs(g_on[1]) and abs(g_off[0]) > 1e-2 * abs(g_off[1]), (kc, g_on, g_off)


def test_history_file_of_one_year_says_one_year_and_why_k_equals_kc(tmp_path, capsys):
    import tomllib

    from jaxstress._cli import main

    out = tmp_path / "h1.toml"
    assert main(["calibrate", "history", "--start", "2024-01-01", "--end", "2024-12-31", "--hamilton-steps", "10",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: curve: k = kc = " in err, err  # said, not two identical numbers printed silently
    text = out.read_text()
    curve = tomllib.loads(text)["curve"]
    assert curve["k"] == pytest.approx(curve["kc"], rel=1e-6)  # one year of curves: the fit ends on k = kc
    assert "[curve]\n# k = kc = " in text and "not a bound or a starting value" in text
    nr = text[text.index("[neutral_rate]"):].split("\n[")[0]
    assert "1 year of data cannot pin down" in nr and "7 years cannot" not in nr, nr
    assert (tmp_path / "h1_regimes.png").stat().st_size > 10_000


def test_history_chart_is_not_left_when_the_fitted_file_is_not_written(tmp_path, monkeypatch, capsys):
    """The chart is moved into place only once the fitted file is written (it used to be drawn first, and stay)."""
    from jaxstress import _event
    from jaxstress._cli import main
    from jaxstress._errors import ConfigError

    def refuse(*args, **kwargs):
        raise ConfigError("not written (a test)")

    monkeypatch.setattr(_event, "write_override_toml", refuse)
    out = tmp_path / "h2.toml"
    assert main(["calibrate", "history", "--start", "2024-01-01", "--end", "2024-12-31", "--hamilton-steps", "10",
                 "--out", str(out)]) == 2
    assert "not written (a test)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
