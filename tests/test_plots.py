"""What a desk sees: run charts, report.html, `compare`, `validate`, the progress bar and the history overlay."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from jaxstress._cli import main
from jaxstress._plots import CHARTS, observed_cmt, tornado_chart
from jaxstress._progress import Progress
from jaxstress._report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN = ["april_2025", "--paths", "512", "--horizon", "0.1", "--quiet"]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), len(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    a, b = base / "seed0", base / "seed1"
    assert main(["run", *RUN, "--seed", "0", "--out", str(a)]) == 0
    assert main(["run", *RUN, "--seed", "1", "--out", str(b)]) == 0  # same shapes: the jitted chunk is reused
    return a, b


def test_run_draws_every_chart(runs):
    a, _ = runs
    for name in CHARTS:
        w, h, size = _png_size(a / name)
        assert w >= 800 and h >= 400 and size > 20_000, (name, w, h, size)
    assert not list(a.glob(".*tmp*")), "temporary files left in the output directory"


def test_report_is_self_contained_with_metrics_and_charts(runs):
    a, _ = runs
    summary = json.loads((a / "summary.json").read_text())
    page = (a / "report.html").read_text()
    assert 'id="metrics"' in page and 'id="portfolio"' in page and 'id="key-rate-dv01"' in page
    imgs = re.findall(r'<img src="([^"]*)"[^>]*data-chart="([^"]+)"', page)
    assert [name for _, name in imgs] == list(CHARTS)
    for src, name in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (a / name).read_bytes()
    assert not re.search(r'(src|href)="(?!data:)', page), "the page must not load anything from outside"
    assert "<script" not in page
    # scenario name, description and the file's source comments in a collapsible block
    assert summary["scenario"] in page and "Tariff shock of 2 April 2025" in page
    details = page[page.index("<details>"):page.index("</details>")]
    assert "TIC" in details and "ACM" in details and "extends" in details
    # the metrics table carries value, standard error and unit of the summary
    table = page[page.index('<table id="metrics">'):]
    table = table[:table.index("</table>")]
    row = table[table.index("y10_change_bp_mean"):]
    row = row[:row.index("</tr>")]
    cells = re.findall(r"<td class=num>([^<]*)</td>", row)
    m = summary["metrics"]["y10_change_bp_mean"]
    assert float(cells[0].replace(",", "")) == pytest.approx(m["value"], rel=1e-3)
    assert float(cells[1].replace(",", "")) == pytest.approx(m["stderr"], rel=0.05)
    assert "<td>bp</td>" in row
    assert "Sensitivities" not in page


def test_report_and_compare_carry_the_range_note(runs, tmp_path, capsys):
    """A run whose 10y left the model's range (summary.json's `note`) says so at the top of its report and in
    `compare`, not only in the terminal it ran in."""
    from jaxstress._cli import main
    from jaxstress._report import render_report

    a, b = runs
    summary = json.loads((a / "summary.json").read_text())
    assert summary["note"] is None and "class=warn" not in (a / "report.html").read_text()
    note = "3 of 512 paths take the 10y outside -10% to 50% (...)"
    page = render_report({**summary, "note": note}, [], "")
    assert f"<p class=warn><strong>Warning:</strong> {note}</p>" in page.replace("&#x27;", "'")
    noted = tmp_path / "noted"
    noted.mkdir()
    (noted / "summary.json").write_text(json.dumps({**summary, "note": note}))
    assert main(["compare", str(noted), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert f"note: noted: {note}" in out and out.count("note: ") == 1


def test_report_embeds_tornado_when_sensitivities_exist(runs, tmp_path):
    a, _ = runs
    summary = json.loads((a / "summary.json").read_text())
    grads = {"term_premium.sigma": 0.031, "basis_funds.leverage": -0.012, "impact.lambda0": 0.02,
             "fed.threshold": float("nan")}
    tornado_chart(grads, tmp_path / "sensitivities.png", "april_2025: d ES 99 / d driver")
    assert _png_size(tmp_path / "sensitivities.png")[2] > 5_000
    sens = {k: {"value": v, "stderr": 0.001} for k, v in grads.items()}
    page = write_report(tmp_path, summary, [a / "loss_hist.png"], "name = 'x'", sens).read_text()
    assert 'data-chart="sensitivities.png"' in page and 'data-chart="loss_hist.png"' in page
    rows = re.findall(r"<tr><td><code>([^<]+)</code>", page[page.index('id="sensitivities"'):])
    assert rows[:3] == ["term_premium.sigma", "impact.lambda0", "basis_funds.leverage"]  # ranked by |value|


def test_run_writes_only_names_that_output_dirs_may_hold(runs):
    """An existing --out is replaced only when it holds nothing but these names (`_output.OUTPUT_NAMES`): a run's
    outputs, charts included, must all be among them, or a second run into the same directory would be refused."""
    from jaxstress._output import OUTPUT_NAMES

    a, _ = runs
    assert set(CHARTS) <= OUTPUT_NAMES
    assert {p.name for p in a.iterdir()} <= OUTPUT_NAMES


def test_summary_names_the_devices_used(runs):
    """A run without --devices uses one device: summary.json says which, not every device JAX sees (the tests see
    4 fake CPU devices)."""
    import jax

    a, _ = runs
    assert json.loads((a / "summary.json").read_text())["devices"] == [str(jax.local_devices()[0])]


def test_no_plots_still_writes_report(tmp_path, runs):
    out = tmp_path / "np"
    assert main(["run", *RUN, "--out", str(out), "--no-plots"]) == 0
    assert not list(out.glob("*.png"))
    page = (out / "report.html").read_text()
    assert 'id="metrics"' in page and "<img" not in page


def test_compare_prints_runs_side_by_side_and_draws(runs, tmp_path, capsys):
    a, b = runs
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("metric"))
    assert "seed0" in header and "seed1" in header
    row = next(line for line in text.splitlines() if line.startswith("y10_change_bp_mean "))
    sa = json.loads((a / "summary.json").read_text())["metrics"]["y10_change_bp_mean"]
    sb = json.loads((b / "summary.json").read_text())["metrics"]["y10_change_bp_mean"]
    assert row.count("\u00b1") == 2 and f"{sa['value']:.4g}" in row and f"{sb['value']:.4g}" in row
    assert sa["value"] != sb["value"]  # two seeds, two columns
    # a probability shows its Wilson interval in place of the plug-in error; a summary without one (written before
    # intervals were reported) shows its error
    pa = json.loads((a / "summary.json").read_text())["metrics"]["prob_y10_max_above_5pct"]
    lo, hi = pa["interval"]
    assert lo <= pa["value"] <= hi and lo < hi
    prow = next(line for line in text.splitlines() if line.startswith("prob_y10_max_above_5pct "))
    assert f"{pa['value']:.3g} [{lo:.2g}, {hi:.2g}]" in prow and "\u00b1" not in prow
    w, h, size = _png_size(out / "compare.png")
    assert w >= 800 and size > 20_000
    from jaxstress._output import OUTPUT_NAMES

    assert {p.name for p in out.iterdir()} <= OUTPUT_NAMES  # a run's directory holding it may still be replaced
    book = json.loads((a / "summary.json").read_text())["portfolio"]["name"]
    assert text.count(f"portfolio {book}") == 2 and "different portfolios" not in text  # one book: no note
    # a run of another book (its summary edited: the note is about the names only) is flagged
    other = tmp_path / "other"
    other.mkdir()
    s = json.loads((b / "summary.json").read_text())
    s["portfolio"]["name"] = "another_book"
    (other / "summary.json").write_text(json.dumps(s))
    del s["metrics"]["prob_y10_max_above_5pct"]["interval"]
    (other / "summary.json").write_text(json.dumps(s))
    assert main(["compare", str(a), str(other), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "value different portfolios" in text
    prow = next(line for line in text.splitlines() if line.startswith("prob_y10_max_above_5pct "))
    assert prow.count("[") == 1 and prow.count("\u00b1") == 1


def test_compare_rejects_missing_or_malformed_summary(runs, tmp_path, capsys):
    a, _ = runs
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    notsummary = tmp_path / "other"
    notsummary.mkdir()
    (notsummary / "summary.json").write_text(json.dumps({"metrics": {"x": 3}}))
    for other, needle in ((tmp_path / "missing", "no summary.json"), (bad, "malformed JSON"),
                          (notsummary, "not a jaxstress summary")):
        capsys.readouterr()
        assert main(["compare", str(a), str(other), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err and str(other) in err
    assert not (tmp_path / "o" / "compare.png").exists()
    # an --out that is a file is refused before the table is printed (it used to print it, then fail)
    afile = tmp_path / "afile"
    afile.write_text("")
    capsys.readouterr()
    assert main(["compare", str(a), "--out", str(afile)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "is a file, not a directory" in err, err


def test_validate(tmp_path, capsys):
    assert main(["validate", "april_2025"]) == 0
    assert capsys.readouterr().out.strip() == "ok: april_2025 (4 regimes, 5 holders, portfolio long_duration)"
    assert main(["validate", "baseline", "--portfolio", "treasury_ladder"]) == 0
    assert "portfolio treasury_ladder" in capsys.readouterr().out
    cfg = tmp_path / "bad.toml"
    cfg.write_text("extends = 'baseline'\n[curve]\nkk = 1.0\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "curve.kk" in err and "bad.toml" in err
    assert main(["validate", "april_2025", "--set", "holders.japan.holdings=-5"]) == 2
    assert "holders.japan.holdings" in capsys.readouterr().err
    assert main(["validate", str(tmp_path)]) == 2  # it said "no such file"
    assert "a directory, not a file; give a path to a scenario TOML" in capsys.readouterr().err


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_tty_only():
    clock = iter([0.0, 10.0, 11.0, 12.0, 13.0]).__next__  # first chunk compiles for 10 s, then 1 s each
    tty = _Tty()
    p = Progress(stream=tty, clock=clock, min_interval=0.0)
    p.start(4000)
    for done in (1000, 2000, 3000, 4000):
        p(done, 4000)
    p.close()
    lines = tty.getvalue().split("\r")
    assert "compiling" in lines[1]
    assert "chunk 2/4" in lines[3] and "2,000/4,000 paths" in lines[3]
    assert "1,000 paths/s" in lines[3] and "ETA 0:02" in lines[3]  # speed without the compilation
    assert "100%" in lines[-1] and "done in 0:13" in lines[-1] and tty.getvalue().endswith("\n")
    for stream, quiet in ((io.StringIO(), False), (_Tty(), True)):
        q = Progress(stream=stream, quiet=quiet)
        q.start(10)
        q(10, 10)
        q.close()
        assert stream.getvalue() == ""


def test_observed_history_overlay_matches_the_data(tmp_path):
    obs = observed_cmt(np.datetime64("2025-04-02"), 7)
    assert obs is not None and len(obs["dates"]) == 8
    assert str(obs["dates"][0]) == "2025-04-02" and str(obs["dates"][-1]) == "2025-04-11"  # business days
    assert obs["DGS10"][0] == pytest.approx(4.20) and obs["DGS10"][-1] == pytest.approx(4.48)  # DESIGN facts
    assert obs["DGS30"][0] == pytest.approx(4.54) and obs["DGS30"][-1] == pytest.approx(4.85)
    assert observed_cmt(np.datetime64("2025-04-02"), 7, path=tmp_path / "none.csv") is None
    assert observed_cmt(np.datetime64("2200-01-01"), 7) is None


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless check needs `chromium` on PATH "
                    "(Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    a, _ = runs
    page = (a / "report.html").read_text()
    # a copy with a probe that records, after load, how many images decoded (naturalWidth > 0)
    probe = ("<script>window.addEventListener('load',function(){var i=Array.from(document.images);"
             "var p=document.createElement('pre');p.id='probe';p.textContent='images '+i.length+' loaded '+"
             "i.filter(function(x){return x.complete&&x.naturalWidth>0;}).length+' tables '+"
             "document.querySelectorAll('table#metrics tr').length;document.body.appendChild(p);});</script>")
    copy = tmp_path / "report_probe.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                        "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'<pre id="probe">images (\d+) loaded (\d+) tables (\d+)</pre>', r.stdout)
    assert m, r.stdout[-2000:]
    n_img, n_loaded, n_rows = map(int, m.groups())
    assert n_img == len(CHARTS) and n_loaded == n_img and n_rows > 10
