"""End-to-end: the CLI writes complete, consistent outputs; bad input exits 2 with one clear line."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from jaxstress._cli import main


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "a"
    rc = main(["run", "april_2025", "--paths", "512", "--seed", "3", "--out", str(out), "--horizon", "0.1",
               "--quiet"])
    assert rc == 0
    return out


def test_run_table_prints_a_probability_with_its_interval(small_run):
    from jaxstress._cli import format_table

    summary = json.loads((small_run / "summary.json").read_text())
    p = summary["metrics"]["prob_y10_above_5pct"]
    line = next(x for x in format_table(summary).splitlines() if x.startswith("prob_y10_above_5pct "))
    assert line.endswith(f"probability, 95% [{p['interval'][0]:.3g}, {p['interval'][1]:.3g}]")
    mean = next(x for x in format_table(summary).splitlines() if x.startswith("y10_change_bp_mean "))
    assert mean.endswith(" bp")


def test_range_note_counts_the_paths_past_the_models_range():
    """A run whose 10y leaves -10% to 50% (at the horizon, or its running maximum above 50%) says so: the config's
    bounds allow price impacts that take the 10y from -108% to 197% (`impact.lambda0=1`), which ran without a word."""
    from jaxstress._simulate import range_note

    level = np.array([4.0, 4.5, -12.0, 60.0, 3.0])
    peak = np.array([4.2, 51.0, 5.0, 61.0, 3.5])
    note = range_note({"y10_level_pct": level, "y10_max_level_pct": peak})
    assert note.startswith("3 of 5 paths take the 10y outside -10% to 50% (at the horizon -12% to 60%, its running "
                           "maximum up to 61%)"), note
    assert range_note({"y10_level_pct": level[[0, 1, 4]], "y10_max_level_pct": peak[[0, 0, 4]]}) is None


def test_run_writes_summary_and_quantiles(small_run):
    summary = json.loads((small_run / "summary.json").read_text())
    for key in ("scenario", "seed", "paths", "steps", "dt", "version", "config_hash", "wall_time_s", "backend",
                "initial_curve", "portfolio", "metrics"):
        assert key in summary
    assert summary["paths"] == 512 and summary["seed"] == 3 and summary["steps"] == 25
    assert summary["note"] is None  # the 10y stayed within the range the model is built for
    m = summary["metrics"]
    for name in ("y10_change_bp_mean", "y30_change_bp_q99", "prob_y10_above_5pct", "portfolio_loss_var_99",
                 "portfolio_loss_es_99", "foreign_sales_bn_mean", "forced_sales_bn_mean", "fed_purchases_bn_mean",
                 "interest_cost_change_bn_mean"):
        extra = {"interval"} if name.startswith("prob_") else set()
        assert set(m[name]) == {"value", "stderr"} | extra and np.isfinite(m[name]["value"])
    assert m["portfolio_loss_es_99"]["value"] >= m["portfolio_loss_var_99"]["value"]
    holders = [k for k in m
               if k.startswith("foreign_sales_") and k.endswith("_bn_mean") and k != "foreign_sales_bn_mean"]
    assert len(holders) == 5  # one per holder of the scenario
    total = m["foreign_sales_bn_mean"]["value"]
    assert sum(m[k]["value"] for k in holders) == pytest.approx(total, rel=1e-4, abs=1e-6)
    with open(small_run / "quantiles.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["business_days", "t_years", "variable", "quantile", "value"]
    y10_0 = [r for r in rows if r["business_days"] == "0" and r["variable"] == "yield_10y"]
    assert len(y10_0) == 7 and len({r["value"] for r in y10_0}) == 1  # initial state: all quantiles equal
    assert float(y10_0[0]["value"]) == pytest.approx(summary["initial_curve"]["10"], abs=1e-4)
    assert {"0", "5", "10", "21", "25"} <= {r["business_days"] for r in rows}
    assert (small_run / "paths.npz").exists()


def test_options_without_a_verb_are_the_runs(small_run, tmp_path):
    """`jaxstress --paths 512 ...` is `jaxstress run --paths 512 ...` (the default scenario): the same metrics as
    the explicit run with the same seed."""
    out = tmp_path / "b"
    assert main(["--paths", "512", "--seed", "3", "--out", str(out), "--horizon", "0.1", "--quiet"]) == 0
    a = json.loads((small_run / "summary.json").read_text())["metrics"]
    b = json.loads((out / "summary.json").read_text())["metrics"]
    assert a == b


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxstress", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("extends = 'baseline'\n[curve\n", "malformed TOML"),
        ("extends = 'baseline'\n[curve]\nkk = 1.0\n", "curve.kk"),
        ("extends = 'baseline'\n[curve]\nk = 'fast'\n", "curve.k"),
        ("extends = 'baseline'\n[regimes]\ngenerator = [[-1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]\n",
         "regimes.generator[3]"),
        ("extends = 'baseline'\n[holders.japan]\nholdings = -5.0\n", "holders.japan.holdings"),
        ("extends = 'baseline'\n[regimes.calm]\ncorrelation = [[1, 0.99, 0.99, 0, 0], [0.99, 1, -0.99, 0, 0],"
         " [0.99, -0.99, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]\n", "positive definite"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, content, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output")
    r = main(["run", str(cfg), "--paths", "10", "--out", str(out), "--quiet"])
    assert r == 2
    assert (out / "keep.txt").read_text() == "earlier output"


def test_bad_input_messages_via_subprocess(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("extends = 'baseline'\n[curve]\nkk = 1.0\n")
    r = _cli("run", str(cfg), "--paths", "10", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "curve.kk" in r.stderr and "bad.toml" in r.stderr
    r = _cli("run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "missing.toml" in r.stderr and "Traceback" not in r.stderr
    r = _cli("run", "no_such_scenario", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no_such_scenario" in r.stderr
    r = _cli("run", "--paths", "-3")
    assert r.returncode == 2 and "--paths" in r.stderr
    assert not (tmp_path / "o").exists()


def test_scenarios_lists_shipped():
    r = _cli("scenarios")
    assert r.returncode == 0
    assert "april_2025" in r.stdout and "baseline" in r.stdout


def test_validate_lists_every_problem(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("extends = 'baseline'\n[curve]\nk = 'fast'\nkk = 1.0\n[holders.japan]\nholdings = -5.0\n"
                   "[fed]\nthreshold = -1.0\n")
    assert main(["validate", str(cfg)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    for key in ("curve.k", "curve.kk", "fed.threshold", "holders.japan.holdings"):
        assert sum(f"'{key}'" in line for line in lines) == 1, key
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 more problems" in err[0]


def test_bench_json(capsys):
    """`jaxstress bench --json` prints one JSON object with the figures the README names: 2 chunks of 256 paths,
    the first keeping its reporting dates (--retain 256), the second none (both shapes warmed up first). In 32-bit
    mode, as a command without --float64 runs (test modules turn x64 on at import, for the whole worker): its
    gradient is then the float32 program of test_robustness' and test_sensitivities' 32-bit gradients."""
    import jax

    argv = ["bench", "april_2025", "--paths", "400", "--steps", "5", "--chunk-size", "256", "--grad-chunk-size",
            "256", "--retain", "256", "--repeats", "2", "--json"]
    with jax.enable_x64(False):
        assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["paths"], r["steps"], r["chunk_size"], r["snapshot_paths"], r["grad_paths"], r["repeats"]) == \
        (512, 5, 256, 256, 512, 2)
    assert r["backend"] == "cpu" and r["device"] and r["dtype"] == "float32"
    for key in ("path_steps_per_s", "grad_over_forward", "compile_s", "peak_rss_gb", "forward_s", "gradient_s"):
        assert np.isfinite(r[key]) and r[key] > 0, key
    assert r["path_steps_per_s"] == pytest.approx(512 * 5 / r["forward_s"])
    # the best of the rounds is what is reported; each round's ratio pairs a forward and a gradient timed together
    assert len(r["forward_s_rounds"]) == len(r["grad_over_forward_rounds"]) == 2
    assert r["forward_s"] == min(r["forward_s_rounds"])
    assert all(np.isfinite(x) and x > 0 for x in r["grad_over_forward_rounds"])
    from jaxstress._bench import format_bench

    table = format_bench(r)  # the table form of the same figures
    assert f"{r['grad_over_forward']:.2f} x" in table
    assert ", ".join(f"{x:.2f}" for x in r["grad_over_forward_rounds"]) in table


def test_bench_json_on_devices(capsys):
    """`bench --devices 4 --float64` on the session's four CPU devices: forward chunks of 4 blocks sharded one a
    device (--chunk-size 256 rounded up to a block a device), the first chunk keeping the dates of 100 paths, the
    second none; gradient chunks of 512 paths a device, 3 chunks in one group of 4 (the last chunk repeated, and
    the repeat counts in the paths computed). The gradient is the program of test_devices' sensitivities over
    four devices (april_2025 over 25 steps, float64, 512 paths a device): the session's cache serves it to
    whichever test comes second."""
    import jax

    argv = ["bench", "april_2025", "--paths", "1500", "--steps", "25", "--chunk-size", "256", "--grad-chunk-size",
            "512", "--retain", "100", "--repeats", "1", "--float64", "--devices", "4", "--json"]
    x64 = jax.config.jax_enable_x64
    try:
        assert main(argv) == 0
    finally:
        jax.config.update("jax_enable_x64", x64)  # --float64 sets it for the process: not for the next tests
    r = json.loads(capsys.readouterr().out)
    assert (r["n_devices"], r["local_devices"], r["paths"], r["chunk_size"], r["snapshot_paths"]) == \
        (4, 4, 2048, 1024, 100)
    assert (r["grad_paths"], r["grad_chunk_size"], r["dtype"]) == (2048, 512, "float64")
    for key in ("path_steps_per_s", "grad_over_forward", "compile_s", "grad_compile_s"):
        assert np.isfinite(r[key]) and r[key] > 0, key
    from jaxstress._bench import format_bench

    assert f"on 4 devices ({r['device']}, ...)" in format_bench(r)
    assert main(argv[:-4] + ["--devices", "5", "--json"]) == 2
    assert "--devices 5: this process has 4 cpu device(s)" in capsys.readouterr().err
