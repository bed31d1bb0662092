"""Summary statistics and their standard errors against direct numpy formulas, and for finite values near the float
maximum (an unstable run that stays finite), where squares and fourth powers would overflow."""

import warnings

import numpy as np
import pytest

from jaxstress._metrics import es_se, mean_se, quantile_se, sd_se, summarize, summary_workers
from jaxstress._simulate import METRIC_NAMES

N = 20_000


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(3).standard_normal(N) * 2.0 + 1.0


def test_moments_match_numpy(x):
    m, se = mean_se(x)
    assert m == pytest.approx(np.mean(x), rel=1e-12)
    assert se == pytest.approx(np.std(x, ddof=1) / np.sqrt(N), rel=1e-12)
    s, se_s = sd_se(x)
    assert s == pytest.approx(np.std(x, ddof=1), rel=1e-12)
    # normal data: m4 = 3 s^4, so the standard error of s is s / sqrt(2 n); the sample fourth moment has a relative
    # standard error of about sqrt(96 / 9 / n) = 2.3% at n = 20,000, so 10% is over four of them
    assert se_s == pytest.approx(s / np.sqrt(2 * N), rel=0.10)
    q = 0.95
    var = np.quantile(x, q)
    es, se_es = es_se(x, q)
    assert es == pytest.approx(var + np.mean(np.maximum(x - var, 0.0)) / (1 - q), rel=1e-12)
    assert se_es == pytest.approx(np.std(np.maximum(x - var, 0.0), ddof=1) / ((1 - q) * np.sqrt(N)), rel=1e-12)


def test_statistics_of_huge_finite_values_are_finite_and_scale(x):
    scale = 1e300  # x * scale squares to inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow RuntimeWarnings
        for f in (mean_se, sd_se, lambda v: es_se(v, 0.99), lambda v: quantile_se(v, 0.05)):
            small, big = f(x), f(x * scale)
            assert np.all(np.isfinite(big))
            np.testing.assert_allclose(np.asarray(big) / scale, small, rtol=1e-12)
        per_path = {name: x * scale for name in METRIC_NAMES}
        out = summarize(per_path)
    assert all(np.isfinite(v["value"]) and np.isfinite(v["stderr"]) for v in out.values())


def test_float32_paths_summarize_as_their_float64_values(x):
    """A float32 run keeps its per-path metrics in float32 (half the host memory); the summary is computed in
    float64 and equals, exactly, the summary of the same values held in float64."""
    per_path = {name: (x * (i + 1)).astype(np.float32) for i, name in enumerate(METRIC_NAMES)}
    wide = {name: v.astype(np.float64) for name, v in per_path.items()}
    assert summarize(per_path, level=1.3) == summarize(wide, level=1.3)


def test_summaries_in_threads_equal_one_thread(x):
    per_path = {name: x * (i + 1) for i, name in enumerate(METRIC_NAMES)}
    one = summarize(per_path, workers=1)
    assert list(summarize(per_path, workers=4)) == list(one)  # same statistics in the same order
    assert summarize(per_path, workers=4) == one
    assert summary_workers(N) >= 1


def test_units_are_the_readmes():
    """summary.json's `units` (`unit_of`) say what the README's table of per-path metrics says, for every metric
    and its statistics (the interest bill's change was "$bn" where the README says "$bn/year")."""
    import re
    from pathlib import Path

    from jaxstress._metrics import unit_of
    from jaxstress._simulate import METRIC_NAMES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = {}
    for names, unit in re.findall(r"^\| (`[a-z0-9_]+`(?:, `[a-z0-9_]+`)*) \| ([^|]*?) \|", readme, flags=re.M):
        table.update(dict.fromkeys(re.findall(r"`([a-z0-9_]+)`", names), unit))
    for name in METRIC_NAMES:
        if name == "regime_logp":
            continue
        want = table[name].strip()
        for stat in ("", "_mean", "_q99", "_es99"):
            assert unit_of(name + stat) == want, (name + stat, unit_of(name + stat), want)


@pytest.mark.parametrize("k,n", [(0, 1), (0, 200), (1, 200), (7, 200), (100, 200), (199, 200), (200, 200),
                                 (3, 100_000), (0, 10_000_000)])
def test_wilson_interval_matches_statsmodels_and_its_definition(k, n):
    from statsmodels.stats.proportion import proportion_confint

    from jaxstress._metrics import Z95, wilson

    lo, hi = wilson(k, n)
    ref = proportion_confint(k, n, alpha=0.05, method="wilson")
    np.testing.assert_allclose((lo, hi), ref, rtol=1e-9, atol=1e-15)
    p = k / n
    for bound in (lo, hi):  # the interval's ends solve |p - b| = z sqrt(b (1 - b) / n)
        if 0.0 < bound < 1.0:
            assert abs(p - bound) == pytest.approx(Z95 * np.sqrt(bound * (1 - bound) / n), rel=1e-9)
    if k == 0:  # no path crosses: the plug-in error is 0, the interval is not
        assert lo == 0.0 and hi == pytest.approx(Z95**2 / (n + Z95**2), rel=1e-12)


@pytest.mark.parametrize("p", [0.002, 0.01, 0.05, 0.3])
def test_wilson_interval_covers_about_95_percent(p):
    """Exact coverage over the binomial distribution (no simulation): at n = 1,000 the Wilson interval covers p
    with probability near 95% (it oscillates with k; 0.92-0.98 here), while the plug-in interval
    p_hat -/+ 1.96 sqrt(p_hat (1 - p_hat) / n) falls far short for rare events."""
    from scipy.stats import binom

    from jaxstress._metrics import Z95, wilson

    n = 1000
    ks = np.arange(n + 1)
    pmf = binom.pmf(ks, n, p)
    covered = np.array([wilson(int(k), n)[0] <= p <= wilson(int(k), n)[1] for k in ks])
    assert 0.92 <= pmf[covered].sum() <= 0.985
    if p <= 0.002:
        ph = ks / n
        plug = np.abs(ph - p) <= Z95 * np.sqrt(ph * (1 - ph) / n)
        assert pmf[plug].sum() < 0.9


def test_summary_probabilities_have_their_wilson_interval(x):
    from jaxstress._metrics import wilson

    per_path = {"y10_level_pct": x, "y10_max_level_pct": x + 100.0}
    out = summarize(per_path, level=3.0)
    above = out["prob_y10_above_3pct"]
    k = int(np.count_nonzero(x > 3.0))
    assert above["value"] == k / N and above["interval"] == list(wilson(k, N))
    assert above["interval"][0] < above["value"] < above["interval"][1]
    every = out["prob_y10_max_above_3pct"]  # every path above: value 1, stderr 0, the interval's lower end below 1
    assert every["value"] == 1.0 and every["stderr"] == 0.0
    assert every["interval"][1] == 1.0 and every["interval"][0] == pytest.approx(N / (N + 1.959963984540054**2))
    assert all("interval" not in v for name, v in out.items() if not name.startswith("prob_"))


def test_tail_quantile_errors_cover_95_percent():
    """The quantile's error from the 95% order-statistic spacing (q -/+ 1.96 sqrt(q(1-q)/n), over 2 x 1.96), on
    independent normal samples. At 512 paths the 1st and 99th percentiles lie within 1.96 errors of the truth 95%
    of the time (0.95 measured: the error errs on the large side there, the spread of the estimates is 0.8 of it;
    the spacing at q -/+ sqrt(q(1-q)/n) rests on half as many order statistics, is noisier itself, and covered
    0.87 of 2,000 samples). The coverage's own standard error is 0.005, so 0.925 is five below 0.95. At 8,192 paths
    the error is the estimates' spread: their ratio 1 within 0.07 (its standard error at 500 samples is 0.03)."""
    from scipy.stats import norm

    from jaxstress._metrics import quantiles_se

    rng = np.random.default_rng(11)
    qs = (0.01, 0.99)
    truth = norm.ppf(qs)
    for n, r in ((512, 2000), (8192, 500)):
        pairs = np.array([quantiles_se(rng.standard_normal(n), qs) for _ in range(r)])  # (r, 2, (value, error))
        est, se = pairs[..., 0], pairs[..., 1]
        ratio = est.std(axis=0, ddof=1) / se.mean(axis=0)
        if n == 512:
            coverage = np.mean(np.abs(est - truth) <= 1.959963984540054 * se, axis=0)
            assert np.all(coverage > 0.925) and np.all((ratio > 0.7) & (ratio < 1.0)), (coverage, ratio)
        else:
            np.testing.assert_allclose(ratio, 1.0, atol=0.07)
