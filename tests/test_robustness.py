"""Robustness: random configs and argument lists never crash the CLI, failed or interrupted runs lose nothing.

Every path through `jaxstress._cli.main` must end in status 0, or in status 2 with exactly one line on stderr
(`jaxstress: error: ...`, or `jaxstress <verb>: error: ...` from argparse) -- never a traceback. Runs use one
shape (256 paths, horizon 0.02, the april_2025 regimes, holders and grids) so JAX compiles once per process;
configs that change a static size (regimes, holders, maturities, portfolio) are only validated.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jaxstress._cli import main
from jaxstress._config import load_scenario, to_toml
from jaxstress._output import atomic_dir
from jaxstress._schema import DYNAMIC_TABLES, SECTIONS

SCENARIO = "april_2025"
BASE = load_scenario(SCENARIO).config  # the resolved config: a plain nested dict
SMALL = ["--paths", "256", "--horizon", "0.02"]  # one compiled shape for every run in this file
ERROR_LINE = re.compile(r"^jaxstress(?: [a-z0-9_]+)?: error: \S")
FUZZ = settings(max_examples=int(os.environ.get("JAXSTRESS_FUZZ_EXAMPLES", "30")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _static(cfg: dict) -> tuple:
    """What fixes the compiled shapes: runs are only attempted when this equals the base config's."""
    reg = cfg["regimes"]
    return (tuple(reg["names"]), reg["initial"], tuple(cfg["holders"]), tuple(cfg["curve"]["maturities"]),
            tuple(cfg["debt"]["maturities"]), tuple(cfg["simulation"]["report_days"]),
            cfg["simulation"]["steps_per_year"], cfg["scenario"]["portfolio"])


BASE_STATIC = _static(BASE)


def call(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: (status, stdout, stderr); argparse's SystemExit counts as its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = 0 if e.code is None else e.code
    return rc, out.getvalue(), err.getvalue()


def assert_clean(rc, err: str, argv, strict_prefix: bool = False) -> None:
    assert rc in (0, 2), f"status {rc!r} for {argv}: {err}"
    assert "Traceback" not in err, f"{argv}: {err}"
    if rc == 2:
        lines = err.splitlines()
        # `validate` lists every independent problem, one line each; every other verb reports one line
        if not (argv and argv[0] == "validate"):
            assert len(lines) == 1, f"{argv}: expected one line on stderr, got {lines}"
        assert lines, f"{argv}: exit 2 without a message"
        for line in lines:
            if strict_prefix:
                assert line.startswith("jaxstress: error: "), line
            assert ERROR_LINE.match(line), line


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def make_earlier_output(d: Path) -> dict[str, bytes]:
    """An earlier run's output directory (names that a run writes: an existing directory holding other files is
    not replaced, `test_out_holding_other_files_is_refused`)."""
    d.mkdir(parents=True)
    (d / "quantiles.csv").write_text("earlier output")
    (d / "summary.json").write_text('{"metrics": {}}')
    (d / "paths.npz").write_bytes(bytes(range(256)))
    return snapshot(d)


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def finite_summary(path: Path) -> dict:
    def bad(c):
        raise AssertionError(f"{path} contains {c}")

    summary = json.loads(path.read_text(), parse_constant=bad)
    assert all(math.isfinite(m["value"]) for m in summary["metrics"].values())
    return summary


# ----------------------------------------------------------------------------------------------------------------
# 1. config fuzz

_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 3.5e38, 1e30, -0.0, 5e-324, -1e-12, 0.5, 2.0, 1e6]
_INTS = [0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**40, 10**400]
scalars = st.one_of(
    st.text(max_size=8), st.booleans(), st.integers(-10**6, 10**6), st.sampled_from(_INTS),
    st.floats(), st.sampled_from(_FLOATS),
)
lists = st.recursive(st.lists(scalars, max_size=4), lambda ch: st.lists(st.one_of(scalars, ch), max_size=4),
                     max_leaves=12)
list_safe = st.one_of(scalars, lists)  # TOML arrays here hold no tables (to_toml writes none)
keys = st.one_of(st.text(max_size=8), st.sampled_from(["k", "names", "holdings", "extends", "correlation", ""]))
tables = st.recursive(st.dictionaries(keys, list_safe, max_size=3),
                      lambda ch: st.dictionaries(keys, st.one_of(list_safe, ch), max_size=3), max_leaves=8)
values = st.one_of(list_safe, tables)


def _all_paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _all_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _all_paths(v, prefix + (i,))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def mutate(cfg: dict, data, valid: bool = False) -> None:
    """Apply one random mutation to cfg in place (skipped where an earlier mutation removed its target); with
    valid=True only an in-range change of a number."""
    op = "perturb" if valid else data.draw(st.sampled_from(
        ["delete", "set", "set", "rename", "add", "regimes", "generator", "correlation", "holders", "section",
         "perturb"]))
    with contextlib.suppress(LookupError, TypeError, AttributeError, ValueError):
        _mutate(cfg, data, op)


def _pick(data, items):
    items = list(items)
    if not items:
        raise LookupError("nothing to mutate")
    return data.draw(st.sampled_from(items))


def _numeric_fields(cfg: dict):
    """(path, Field) of every differentiable number: perturbing these keeps the compiled shapes."""
    for sec, fields in SECTIONS.items():
        for key, f in fields.items():
            if f.kind == "float" and not f.static:
                yield (sec, key), f
    for table, fields in DYNAMIC_TABLES.items():
        for name, tab in cfg[table].items():
            if isinstance(tab, dict):
                yield from (((table, name, key), f) for key, f in fields.items() if f.kind == "float")


def _in_range(f):
    """A value the schema allows, often an end of the range: extreme but valid parameters for the engine."""
    lo = -1e6 if f.lo is None else f.lo
    hi = 1e6 if f.hi is None else f.hi
    ends = [hi] if f.lo_open else [lo, hi]
    return st.one_of(st.sampled_from(ends), st.floats(lo, hi, exclude_min=f.lo_open))


def _mutate(cfg: dict, data, op: str) -> None:
    if op == "perturb":
        path, f = _pick(data, list(_numeric_fields(cfg)))
        _get(cfg, path[:-1])[path[-1]] = data.draw(_in_range(f))
        return
    paths = list(_all_paths(cfg))
    if op in ("delete", "set", "rename"):
        path = _pick(data, paths)
        parent, last = _get(cfg, path[:-1]), path[-1]
        if op == "delete":
            del parent[last]
        elif op == "set":
            parent[last] = data.draw(list_safe if isinstance(parent, list) else values)
        elif isinstance(parent, dict):  # rename a key
            new = data.draw(st.one_of(st.sampled_from([f"{last}x", str(last).upper(), f"{last}_", ""]), keys))
            if new not in parent:
                parent[new] = parent.pop(last)
    elif op == "add":
        tabs = [()] + [p for p in paths if isinstance(_get(cfg, p), dict)]
        tab = _get(cfg, data.draw(st.sampled_from(tabs)))
        tab[data.draw(keys)] = data.draw(values)
    elif op == "regimes":
        reg, names = cfg["regimes"], cfg["regimes"]["names"]
        how = data.draw(st.sampled_from(["drop", "append", "rename", "rename_both", "dup", "initial", "empty",
                                         "reserved"]))
        if how == "drop":
            names.pop()
        elif how == "append":
            names.append(data.draw(st.text(max_size=6)))
        elif how == "rename":
            names[data.draw(st.integers(0, len(names) - 1))] = data.draw(st.text(max_size=6))
        elif how == "rename_both":  # the name and its table: a consistent rename
            i, new = data.draw(st.integers(0, len(names) - 1)), data.draw(st.text(max_size=6))
            if new not in reg:
                reg[new] = reg.pop(names[i])
                names[i] = new
        elif how == "dup":
            names.append(names[0])
        elif how == "initial":
            reg["initial"] = data.draw(st.one_of(st.text(max_size=6), st.sampled_from(names)))
        elif how == "empty":
            reg["names"] = []
        else:
            names[-1] = data.draw(st.sampled_from(["names", "initial", "generator"]))
    elif op == "generator":
        g = cfg["regimes"]["generator"]
        how = data.draw(st.sampled_from(["add_row", "drop_row", "drop_col", "ragged", "row_sum", "negative",
                                         "huge", "transpose"]))
        if how == "add_row":
            g.append([0.0] * len(g[0]))
        elif how == "drop_row":
            g.pop()
        elif how == "drop_col":
            for row in g:
                row.pop()
        elif how == "ragged":
            g[0].append(0.0)
        elif how == "row_sum":
            g[0][0] += data.draw(st.one_of(st.floats(1e-3, 10), st.floats(-10, -1e-3)))
        elif how == "negative":
            g[0][1], g[0][0] = -1.0, g[0][0] + g[0][1] + 1.0
        elif how == "huge":
            x = data.draw(st.sampled_from([1e30, 3e38, 1e300, 10**50]))
            g[0][0], g[0][1] = -x, x
        else:
            cfg["regimes"]["generator"] = [list(r) for r in zip(*g)]
    elif op == "correlation":
        name = _pick(data, cfg["regimes"]["names"])
        c = cfg["regimes"][name]["correlation"]
        i, j = data.draw(st.sampled_from([(0, 1), (1, 2), (2, 4), (3, 0)]))
        how = data.draw(st.sampled_from(["asym", "diag", "not_pd", "shape", "big"]))
        if how == "asym":
            c[i][j] += 0.1
        elif how == "diag":
            c[i][i] = 0.9
        elif how == "not_pd":
            for a in range(len(c)):
                for b in range(len(c)):
                    c[a][b] = 1.0 if a == b else 0.99 * (-1) ** (a + b)
        elif how == "shape":
            cfg["regimes"][name]["correlation"] = [row[:4] for row in c[:4]]
        else:
            c[i][j] = c[j][i] = data.draw(st.sampled_from([1.5, -3.0, 1e300]))
    elif op == "holders":
        holders = cfg["holders"]
        name = _pick(data, holders)
        how = data.draw(st.sampled_from(["negative", "drop", "drop_all", "new", "not_table"]))
        if how == "negative":
            holders[name]["holdings"] = data.draw(st.sampled_from([-1.0, -1e-9, -1e6, -math.inf, -5]))
        elif how == "drop":
            del holders[name]
        elif how == "drop_all":
            cfg["holders"] = {}
        elif how == "new":
            holders[data.draw(st.text(max_size=6))] = data.draw(tables)
        else:
            holders[name] = data.draw(list_safe)
    else:  # a whole section replaced
        sec = _pick(data, cfg)
        cfg[sec] = data.draw(values)


def write_config(path: Path, cfg: dict, data, broken: bool = True) -> None:
    """The config as TOML (to_toml), or for some examples (if broken) as broken TOML text or bytes."""
    text = to_toml(cfg)
    how = data.draw(st.sampled_from(["toml"] * 10 + ["truncate", "insert", "duplicate", "bytes", "bigint"])) \
        if broken else "toml"
    if how == "toml":
        path.write_text(text, encoding="utf-8")
    elif how == "truncate":
        path.write_text(text[: data.draw(st.integers(0, len(text)))], encoding="utf-8")
    elif how == "insert":
        at = data.draw(st.integers(0, len(text)))
        junk = data.draw(st.sampled_from(["[", "]]", "=", '"', "\n[curve]\n", "k = = 1", "\x00", "\ufeff", "{a=1}"]))
        path.write_text(text[:at] + junk + text[at:], encoding="utf-8")
    elif how == "duplicate":
        path.write_text(text + "\n[curve]\nk = 0.3\n", encoding="utf-8")
    elif how == "bytes":
        b = bytearray(text.encode())
        b[data.draw(st.integers(0, len(b) - 1))] = 0xFF  # not UTF-8
        path.write_bytes(bytes(b))
    else:  # an integer literal over Python's 4300-digit conversion limit
        path.write_text(re.sub(r"^k = .*$", "k = " + "9" * 5000, text, count=1, flags=re.M), encoding="utf-8")


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_config_fuzz_validate_and_run(data):
    cfg = copy.deepcopy(BASE)
    valid = data.draw(st.integers(0, 2)) == 0  # a third of the examples: extreme but allowed numbers, then a run
    for _ in range(data.draw(st.integers(1, 4 if valid else 3))):
        mutate(cfg, data, valid)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f = tmp / "fuzz.toml"
        write_config(f, cfg, data, broken=not valid)
        argv = ["validate", str(f)]
        rc, out, err = call(argv)
        event(f"validate -> {rc}")
        assert_clean(rc, err, argv, strict_prefix=True)
        if rc == 0:
            assert out.startswith("ok: ") and not err
        if rc != 0 or _static(load_scenario(str(f)).config) != BASE_STATIC or not data.draw(st.booleans()):
            return
        out_dir = tmp / "out"
        before = make_earlier_output(out_dir) if data.draw(st.booleans()) else None
        argv = ["run", str(f), *SMALL, "--out", str(out_dir), "--quiet", "--no-plots"]
        rc, _, err = call(argv)
        event(f"run -> {rc}")
        assert_clean(rc, err, argv, strict_prefix=True)
        if rc == 0:
            finite_summary(out_dir / "summary.json")
        elif before is None:
            assert not out_dir.exists()
        else:
            assert snapshot(out_dir) == before
        assert leftovers(tmp, "out") == []


@pytest.mark.parametrize("text", [
    "extends = 'baseline'\n[curve]\nk = " + "9" * 400 + "\n",  # OverflowError converting to float
    "extends = 'baseline'\n[simulation]\nsteps_per_year = " + "9" * 400 + "\n",
    "extends = 'baseline'\n[curve]\nk = " + "9" * 5000 + "\n",  # ValueError from tomllib (4300-digit limit)
    "extends = 'baseline'\n[scenario]\nname = 0x" + "f" * 5000 + "\n",  # repr of the bad value raises
    "extends = 'baseline'\n[regimes]\ngenerator = [[1e308, 1e308, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]\n",
    "extends = 'baseline'\n[regimes]\ngenerator = [[-1, " + "9" * 400 + ", 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], "
    "[0, 0, 0, 0]]\n",
    "extends = 'baseline'\n[debt]\namounts = [1e39, 4500.0, 5500.0, 7500.0, 4900.0]\n",  # inf in float32
    "extends = 'baseline'\n[regimes]\nnames = ['calm', 'names']\ngenerator = [[-1.0, 1.0], [1.0, -1.0]]\n"
    "[regimes.tariff_shock]\n[regimes.escalation]\n[regimes.pause]\n",
    'extends = "baseline"\n[curve]\n"a\\nb" = 1\n',  # a quoted key with a newline
    'extends = "baseline"\n[holders."x\\u2028y"]\nholdings = -1.0\n',  # a line separator in a name
    'extends = "a\\nb"\n',
])
def test_config_regressions_one_line(tmp_path, text):
    """Inputs that crashed `validate` or printed several lines before the fixes in _config.py."""
    f = tmp_path / "c.toml"
    f.write_text(text)
    argv = ["validate", str(f)]
    rc, _, err = call(argv)
    assert rc == 2
    assert_clean(rc, err, argv, strict_prefix=True)


def test_non_utf8_config_is_one_line(tmp_path):
    f = tmp_path / "c.toml"
    f.write_bytes(b"extends = 'baseline'\n# caf\xe9\n")
    rc, _, err = call(["validate", str(f)])
    assert rc == 2 and "UTF-8" in err
    assert_clean(rc, err, ["validate", f])


def test_regime_named_like_a_regimes_key_is_rejected(tmp_path):
    """A regime called 'initial' used to replace regimes.initial in the resolved config: validate said ok, run
    crashed with `tuple.index(x): x not in tuple`."""
    cfg = copy.deepcopy(BASE)
    for name in ("tariff_shock", "escalation", "pause"):
        del cfg["regimes"][name]
    cfg["regimes"].update(names=["calm", "initial"], initial="calm", generator=[[-1.0, 1.0], [1.0, -1.0]])
    f = tmp_path / "c.toml"
    f.write_text(to_toml(cfg))
    for verb in (["validate", str(f)], ["run", str(f), *SMALL, "--out", str(tmp_path / "o"), "--quiet"]):
        rc, _, err = call(verb)
        assert rc == 2 and "regimes.names" in err, err
        assert_clean(rc, err, verb)


@pytest.mark.parametrize("assignment", ["extends=march_2020", "extends.x=1"])
def test_override_of_extends_is_refused(assignment):
    """`--set extends=...` used to be accepted and silently ignored (extends is resolved when the file is read)."""
    argv = ["validate", SCENARIO, "--set", assignment]
    rc, _, err = call(argv)
    assert rc == 2 and "key 'extends'" in err, err
    assert_clean(rc, err, argv, strict_prefix=True)


# ----------------------------------------------------------------------------------------------------------------
# 2. CLI argument fuzz

BAD_SETS = ["a.b", "=1", "x=", "regimes.generator[9][9]=1", "curve.k=[1,2]", "curve.k=", "curve.k=nan",
            "curve.k=1e999", "curve..k=1", "curve.k[0]=1", "curve.k.x=1", "regimes.names[0].x=1", "holders=1",
            "curve.k=\"fast\"", "curve.k=0x" + "f" * 300, "curve.k=" + "9" * 5000, "[x]=1", "curve.k=1 2",
            "regimes.generator[0][0][0]=1", "nosuch.key=1", "impact.lambda0=2", "simulation.horizon=100",
            "regimes.initial=nowhere", "scenario.portfolio=no_such_portfolio", "holders.japan.holdings=-1",
            "extends=march_2020", "extends.x=1"]
GOOD_SETS = ["curve.k=0.3", "holders.japan.sell_rate=0.2", "impact.lambda0=0.05", "fed.backstop=false",
             "regimes.tariff_shock.risk=1.4"]
SCENARIOS = [SCENARIO, "april2025", "nonexistent", "", "/nonexistent/x.toml", "x.toml", ".", "a/b"]
BAD_POS_INT = ["0", "-1", "abc", "", "1e3", "2.5", "nan"]
BAD_POS_FLOAT = ["0", "-1", "nan", "inf", "-inf", "x", ""]


def _opt(flag, vals):
    return st.sampled_from(vals).map(lambda v: [flag, v])


COMMON = [
    st.sampled_from(BAD_SETS + GOOD_SETS).map(lambda v: ["--set", v]),
    _opt("--portfolio", ["long_duration", "no_such", "x.toml", "/nonexistent/p.toml"]),
    st.sampled_from([["--bogus"], ["-x"], ["--pa", "3"], ["--set"], ["--portfolio"], ["--", "extra"], ["--help"]]),
]
# Valid run options that keep the compiled shape (<= 256 paths is one block). Not 1 or 2 paths: those crash
# (test_one_or_two_paths_is_not_a_traceback below).
VALID_RUN_TOKENS = [
    _opt("--paths", ["3", "100", "256"]),
    st.integers(0, 2**32 - 1).map(lambda v: ["--seed", str(v)]),
    _opt("--chunk-size", ["256", "65536"]),
    st.integers(-5, 300).map(lambda v: ["--paths-npz-limit", str(v)]),
    _opt("--devices", ["1"]),
    st.sampled_from(GOOD_SETS).map(lambda v: ["--set", v]),
    _opt("--portfolio", ["long_duration"]),
    _opt("--steps-per-year", ["252"]),
    st.sampled_from([["--quiet"], ["--no-plots"]]),
]
RUN_TOKENS = COMMON + VALID_RUN_TOKENS + [
    _opt("--paths", BAD_POS_INT),
    _opt("--horizon", BAD_POS_FLOAT + ["1e-9", "31", "0.02"]),  # any other valid horizon would recompile
    _opt("--steps-per-year", BAD_POS_INT + ["252", "1000000"]),
    st.one_of(st.integers(-2**70, 2**70).map(str), st.sampled_from(["x", "1.5", ""])).map(lambda v: ["--seed", v]),
    _opt("--chunk-size", BAD_POS_INT + ["256", "65536"]),
    _opt("--paths-npz-limit", ["-1", "0", "x", "100"]),
    _opt("--devices", ["0", "-1", "x", "99", "1"]),
    st.sampled_from([["--quiet"], ["--no-plots"], ["--paths"], ["--seed"], ["--out"]]),
]
VALIDATE_TOKENS = COMMON + [st.sampled_from([["--paths", "10"], ["--float64"], ["--horizon", "1"], ["--quiet"]])]
SENS_ERRORS = [["--metric", "bogus"], ["--metric", "y10_change_bp_q999x"], ["--paths", "0"], ["--width", "nan"],
               ["--top", "x"], ["--chunk-size", "-1"], ["--drivers"], ["--bogus"]]
BENCH_ERRORS = [["nonexistent"], ["--paths", "0"], ["--steps", "x"], ["--steps", "100000000"],
                ["--grad-chunk-size", "0"], ["--bogus"], ["--json", "nonexistent"]]


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """Inputs for `compare`: one real run, and directories that are not runs."""
    root = tmp_path_factory.mktemp("compare_inputs")
    rc, _, err = call(["run", SCENARIO, *SMALL, "--out", str(root / "real"), "--quiet", "--no-plots"])
    assert rc == 0, err
    (root / "empty").mkdir()
    for name, text in [("bad_json", "{"), ("no_metrics", '{"scenario": "x"}'), ("null", "null"),
                       ("bad_value", '{"metrics": {"a": {"value": "x"}}}'), ("list", "[1, 2]")]:
        (root / name).mkdir()
        (root / name / "summary.json").write_text(text)
    (root / "a_file").write_text("x")
    good = root / "good.toml"
    good.write_text(to_toml(BASE))
    return root


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_cli_argument_fuzz(run_dirs, data):
    verb = data.draw(st.sampled_from(["run", "run", "validate", "validate", "scenarios", "compare",
                                      "sensitivities", "bench", "bogus", None]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "out"
        before = make_earlier_output(out) if data.draw(st.booleans()) else None
        scen = [data.draw(st.sampled_from(SCENARIOS + [str(run_dirs / "good.toml")]))]
        if verb == "run":
            pool = VALID_RUN_TOKENS if data.draw(st.booleans()) else RUN_TOKENS
            toks = data.draw(st.lists(st.one_of(pool), max_size=4))
            argv = ["run", *scen, *SMALL, "--out", str(out), "--quiet", "--no-plots", *sum(toks, [])]
        elif verb == "validate":
            toks = data.draw(st.lists(st.one_of(VALIDATE_TOKENS), max_size=3))
            argv = ["validate", *data.draw(st.sampled_from([scen, []])), *sum(toks, [])]
        elif verb == "scenarios":
            argv = ["scenarios", *data.draw(st.sampled_from([[], ["--show", SCENARIO], ["--show", "nonexistent"],
                                                             ["--show"], ["--show", str(run_dirs)], ["extra"]]))]
        elif verb == "compare":
            dirs = data.draw(st.lists(st.sampled_from(["real", "empty", "bad_json", "no_metrics", "null",
                                                       "bad_value", "list", "a_file", "missing"]), max_size=3))
            argv = ["compare", *[str(run_dirs / d) for d in dirs],
                    "--out", str(data.draw(st.sampled_from([tmp / "cmp", run_dirs / "a_file"])))]
        elif verb == "sensitivities":  # argument errors only: a real one is too slow here
            toks = data.draw(st.lists(st.one_of(COMMON), max_size=2))
            argv = ["sensitivities", *scen, *sum(toks, []), *data.draw(st.sampled_from(SENS_ERRORS)),
                    "--out", str(out), "--quiet"]
        elif verb == "bench":
            argv = ["bench", *data.draw(st.sampled_from(BENCH_ERRORS))]
        elif verb == "bogus":
            argv = ["bogus", *scen]
        else:  # no verb: errors only, even if the default-verb fallback worked (it would run 100,000 paths)
            argv = data.draw(st.sampled_from([["--bogus"], ["--paths", "0"], ["nonexistent"], ["--horizon", "nan"]]))
        rc, _, err = call(argv)
        event(f"{verb} -> {rc}")
        assert_clean(rc, err, argv)
        if "--help" in argv or "-h" in argv:
            return
        if verb == "run":
            if rc == 0:
                finite_summary(out / "summary.json")
            elif before is not None:
                assert snapshot(out) == before
            else:
                assert not out.exists()
            assert leftovers(tmp, "out") == []
        elif verb in ("sensitivities", "bench", "bogus", None):
            assert rc == 2


@pytest.mark.parametrize("argv", [
    ["run", SCENARIO, *SMALL, "--set", "curve.k=\"a\nb\""],
    ["validate", SCENARIO, "--set", "cur\nve.k=1"],
    ["validate", "no\nsuch"],
])
def test_newlines_in_arguments_stay_on_one_line(tmp_path, argv):
    rc, _, err = call([*argv, *(["--out", str(tmp_path / "o"), "--quiet"] if argv[0] == "run" else [])])
    assert rc == 2
    assert_clean(rc, err, argv)


# ----------------------------------------------------------------------------------------------------------------
# 3. atomic outputs

EXPLOSIVE = [
    ["impact.lambda0=1.0", "basis_funds.impact_bp_per_100bn=1000", "basis_funds.leverage=1000",
     "impact.convexity=100", "dealers.capacity=1.001"],
    ["impact.lambda0=1.0", "impact.convexity=100", "dealers.capacity=1.001", "impact.depth=1",
     "holders.other.sell_rate=100", "regimes.tariff_shock.foreign_selling=100"],
]


def _sets(assignments):
    return [a for s in assignments for a in ("--set", s)]


def test_failed_runs_leave_earlier_output_intact(tmp_path):
    out = tmp_path / "out"
    before = make_earlier_output(out)
    bad = tmp_path / "bad.toml"
    bad.write_text("extends = 'baseline'\n[curve]\nk = 'fast'\n")
    for how, needle in (([str(bad)], "curve.k"),  # a bad config
                        ([SCENARIO, *_sets(EXPLOSIVE[0])], "non-finite"),  # SimulationError after the simulation
                        ([SCENARIO, "--set", "impact.lambda0=2"], "impact.lambda0")):  # out of range
        argv = ["run", *how, *SMALL, "--out", str(out), "--quiet", "--no-plots"]
        rc, _, err = call(argv)
        assert rc == 2 and needle in err, err
        assert_clean(rc, err, argv, strict_prefix=True)
        assert snapshot(out) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "out"]
    # and a successful run does replace it, leaving nothing beside it
    rc, _, err = call(["run", SCENARIO, *SMALL, "--out", str(out), "--quiet", "--no-plots"])
    assert rc == 0, err
    assert (out / "quantiles.csv").read_text() != "earlier output" and finite_summary(out / "summary.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "out"]


@pytest.mark.parametrize("verb", ["run", "sensitivities", "reverse"])
def test_out_holding_other_files_is_refused(tmp_path, monkeypatch, verb):
    """An existing --out is replaced as a whole: a directory holding files that jaxstress did not write (a user's
    folder given by mistake) is refused before any work, and so is the current directory (which cannot be renamed
    away: it used to fail after the run with an OSError, leaving the results in a hidden directory)."""
    mine = tmp_path / "mine"
    make_earlier_output(mine)
    (mine / "notes.txt").write_text("precious")
    (mine / "data").mkdir()
    before = snapshot(mine)
    tail = {"run": ["--no-plots"], "sensitivities": ["--drivers", "fed.threshold"],
            "reverse": ["--target", "y10_change_bp_mean=30", "--drivers", "fed.threshold"]}[verb]
    for out, cwd, needle in ((mine, tmp_path, r"holds files that jaxstress did not write \(data/, notes.txt\)"),
                             (Path("."), mine, "is the current directory or holds it"),
                             (tmp_path, mine, "is the current directory or holds it")):
        monkeypatch.chdir(cwd)
        argv = [verb, SCENARIO, *SMALL, "--out", str(out), "--quiet", *tail]
        rc, _, err = call(argv)
        assert rc == 2 and re.search(needle, err) and "--out" in err, err
        assert_clean(rc, err, argv, strict_prefix=True)
        assert snapshot(mine) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_atomic_dir_interrupted_inside(tmp_path, exc):
    out = tmp_path / "out"
    before = make_earlier_output(out)
    with pytest.raises(exc), atomic_dir(out) as tmp:
        (tmp / "summary.json").write_text("half")
        raise exc
    assert snapshot(out) == before
    assert leftovers(tmp_path, "out") == []


# ----------------------------------------------------------------------------------------------------------------
# 4. interrupts


def _start_big_run(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jaxstress", "run", SCENARIO, "--paths", "200000", "--out",
                             str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=out.parent)


def _stop(proc: subprocess.Popen, sig: signal.Signals) -> str:
    """Send sig; resend it every 3 s while the run goes on (a SIGINT that lands in JAX's gc callback is
    swallowed: "Exception ignored in: <function _xla_gc_callback>"), as a user presses Ctrl-C again."""
    for _ in range(20):
        proc.send_signal(sig)
        try:
            return proc.communicate(timeout=3)[1]
        except subprocess.TimeoutExpired:
            continue
    proc.kill()  # pragma: no cover
    proc.communicate()
    pytest.fail(f"run did not stop within 60 s of {sig.name}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_keeps_earlier_output(tmp_path, sig):
    out = tmp_path / "out"
    before = make_earlier_output(out)
    proc = _start_big_run(out)
    time.sleep(3.0)
    assert proc.poll() is None, f"the 200,000-path run ended within 3 s: {proc.communicate()}"
    err = _stop(proc, sig)
    # Not asserted, reported instead: after SIGINT the status is 130 (main's one line), -SIGINT with a traceback
    # when the signal lands while `python -m jaxstress` is still importing, or -SIGSEGV when the interpreter
    # crashes at exit after main returned 130 with a JAX computation in flight.
    assert proc.returncode != 0, err
    assert snapshot(out) == before, err
    if sig == signal.SIGINT:
        assert leftovers(tmp_path, "out") == []
    else:
        assert proc.returncode == -signal.SIGKILL
        # a kill while writing could leave a temporary directory: a later run must ignore it and succeed
        stale = tmp_path / ".out.tmp-stale"
        stale.mkdir(exist_ok=True)
        (stale / "summary.json").write_text("half")
        rc, _, err = call(["run", SCENARIO, *SMALL, "--out", str(out), "--quiet", "--no-plots"])
        assert rc == 0, err
        finite_summary(out / "summary.json")
        assert (out / "quantiles.csv").read_text() != "earlier output"
        assert (stale / "summary.json").read_text() == "half"  # ignored, not cleaned up


def test_same_seed_same_metrics(tmp_path):
    metrics = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        rc, _, err = call(["run", SCENARIO, *SMALL, "--seed", seed, "--out", str(tmp_path / name), "--quiet",
                           "--no-plots"])
        assert rc == 0, err
        metrics.append(finite_summary(tmp_path / name / "summary.json")["metrics"])
    assert metrics[0] == metrics[1]
    assert metrics[0] != metrics[2]  # the seed matters, so the equality above is not vacuous


# ----------------------------------------------------------------------------------------------------------------
# 5. NaN-producing parameters


@pytest.mark.parametrize("assignments", EXPLOSIVE)
def test_explosive_parameters_are_rejected_not_written(tmp_path, assignments):
    out = tmp_path / "out"
    argv = ["run", SCENARIO, *SMALL, "--out", str(out), "--quiet", "--no-plots", *_sets(assignments)]
    rc, _, err = call(argv)
    assert rc == 2
    assert_clean(rc, err, argv, strict_prefix=True)
    assert re.search(r"first in (metric )?'\w[\w.]*'", err), err  # names the variable
    assert "non-finite" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("verb", ["sensitivities", "reverse"])
def test_explosive_parameters_in_gradients_are_one_error(tmp_path, verb):
    """`sensitivities` used to fail writing its JSON (a ValueError traceback on the NaN value), and `reverse`
    named an internal function and printed numpy reprs: now both give run's one SimulationError line, with the
    causes and fixes, and write nothing."""
    out = tmp_path / "out"
    # the shapes of gradient programs that other tests compile (the session's cache then serves them): the
    # float32 gradient of test_a_jump_every_step_has_a_finite_gradient (and of test_sensitivities' 32-bit CLI run
    # and test_cli's bench), and the float64 reverse solve of test_event_reverse's
    # test_reverse_reaches_the_target_on_fresh_paths (x64 is on in the test workers: modules turn it on at import)
    tail = {"sensitivities": [SCENARIO, "--paths", "512", "--horizon", "0.02", "--chunk-size", "256",
                              "--drivers", "fed.threshold"],
            "reverse": ["april_2025_prior", "--paths", "2048", "--horizon", repr(7 / 252),
                        "--target", "y10_change_bp_mean=30", "--drivers", "regimes.tariff_shock.jump_tau_mean"]}[verb]
    argv = [verb, *tail, "--out", str(out), "--quiet", *_sets(EXPLOSIVE[0])]
    # sensitivities in 32-bit mode, as a command without --float64 runs; reverse as the workers run (x64 on)
    with jax.enable_x64(False) if verb == "sensitivities" else contextlib.nullcontext():
        rc, _, err = call(argv)
    assert rc == 2
    assert_clean(rc, err, argv, strict_prefix=True)
    assert {"sensitivities": "the gradients of y10_change_bp_mean with respect to fed.threshold are not finite, "
                             "although its values are",
            "reverse": "or its gradient is not finite at regimes.tariff_shock.jump_tau_mean = 0.0008 on the paths of "
                       "seed 0"}[verb] in err, err
    assert "simulation.steps_per_year" in err and "np.float64" not in err and "finite_block_draws" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_jump_every_step_has_a_finite_gradient(tmp_path):
    """At 10^4 jumps a year (the bound) a step's jump probability 1 - exp(-40) rounds to 1 in float32, and the
    no-jump log-probability log1p(-p) was -inf: its gradient, NaN on every path, failed `sensitivities` with
    "the parameters make the dynamics explode" though the run was finite. It is -intensity dt now."""
    out = tmp_path / "out"
    argv = ["sensitivities", SCENARIO, "--paths", "512", "--horizon", "0.02", "--out", str(out), "--quiet",
            "--drivers", "regimes.calm.jump_intensity", "--chunk-size", "256",
            "--set", "regimes.calm.jump_intensity=10000"]
    with jax.enable_x64(False):  # float32, where the probability rounded to 1 (test modules turn x64 on at import)
        rc, _, err = call(argv)
    assert rc == 0, err
    grads = json.loads((out / "sensitivities.json").read_text())["gradients"]
    assert grads and all(math.isfinite(g["value"]) for g in grads.values()), grads


@pytest.mark.parametrize("kwargs, needle", [
    ({"n_paths": 0}, "n_paths must be an integer >= 1, got 0"),
    ({"n_paths": 2.5}, "n_paths must be an integer >= 1, got float 2.5"),
    ({"n_paths": 256, "chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),  # it ran in chunks of 256
    ({"n_paths": 256, "retain": -1}, "retain must be an integer >= 0, got -1"),  # numpy's "negative dimensions"
    ({"n_paths": 256, "devices": 0}, "devices must be an integer >= 1, got 0"),
])
def test_simulate_checks_its_counts(kwargs, needle):
    """The Python API names a bad count before any work (the CLI checks its options itself)."""
    from jaxstress import simulate

    with pytest.raises(ValueError, match=re.escape(needle)):
        simulate(load_scenario(SCENARIO), **kwargs)


def test_non_finite_sensitivity_values_name_the_paths():
    from jaxstress._errors import SimulationError
    from jaxstress._sensitivities import check_finite_result

    grads = {"fed.threshold": {"value": 1.0}, "impact.depth": {"value": float("nan")}}
    with pytest.raises(SimulationError, match=r"scenario 's': 2 of 4 paths produced non-finite values of m; the "):
        check_finite_result("s", "m", np.array([0.0, np.inf, np.nan, 1.0]), grads)
    with pytest.raises(SimulationError, match=r"gradients of m with respect to impact.depth are not finite, although"):
        check_finite_result("s", "m", np.zeros(4), grads)
    check_finite_result("s", "m", np.zeros(4), {"fed.threshold": {"value": 1.0}})


@pytest.mark.parametrize("assignment, key", [
    ("impact.lambda0=1e30", "impact.lambda0"),
    ("basis_funds.leverage=inf", "basis_funds.leverage"),
    ("short_rate.sigma=nan", "short_rate.sigma"),
    ("regimes.generator[0][1]=1e300", "regimes.generator[0][1]"),
    ("debt.amounts[0]=1e39", "debt.amounts[0]"),
    ("regimes.tariff_shock.tau_vol_mult=1e9", "regimes.tariff_shock.tau_vol_mult"),
])
def test_out_of_range_parameters_name_the_key(tmp_path, assignment, key):
    argv = ["run", SCENARIO, *SMALL, "--out", str(tmp_path / "out"), "--quiet", "--set", assignment]
    rc, _, err = call(argv)
    assert rc == 2
    assert_clean(rc, err, argv, strict_prefix=True)
    assert f"key '{key}'" in err, err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# bugs outside _config.py, recorded so they are seen (strict: a fix makes these fail until the marker goes)


@pytest.mark.parametrize("seed", [str(2**70), str(2**63), str(2**32), "-1"])
def test_seed_out_of_range_is_a_clean_error(tmp_path, seed):
    """jax.random.key raised OverflowError for seeds >= 2**63 (fixed in _cli by 7e68c67); seeds are now below 2**32
    (the 32-bit key of the draws' Philox generator)."""
    argv = ["run", SCENARIO, *SMALL, "--seed", seed, "--out", str(tmp_path / "o"), "--quiet", "--no-plots"]
    rc, _, err = call(argv)
    assert rc == 2 and "--seed" in err
    assert_clean(rc, err, argv)


def test_out_below_a_file_is_a_clean_error(tmp_path):
    (tmp_path / "f").write_text("x")
    argv = ["run", SCENARIO, *SMALL, "--out", str(tmp_path / "f" / "o"), "--quiet", "--no-plots"]
    rc, _, err = call(argv)
    assert_clean(rc, err, argv)


def test_out_naming_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("precious")
    rc, _, err = call(["run", SCENARIO, *SMALL, "--out", str(tmp_path / "f"), "--quiet", "--no-plots"])
    assert rc == 2 and (tmp_path / "f").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["f"]


@pytest.mark.parametrize("verb, module, fn", [("run", "jaxstress._simulate", "simulate"),
                                              ("sensitivities", "jaxstress._sensitivities", "sensitivities")])
@pytest.mark.parametrize("where", ["unwritable", "a file"])
def test_unusable_out_fails_before_the_work(tmp_path, monkeypatch, verb, module, fn, where):
    """An --out that cannot be written (a place where nothing can be created, or an existing file) is one clear
    error before the simulation or the gradients, not a traceback (or an error) after all the work is done."""
    import importlib

    monkeypatch.setattr(importlib.import_module(module), fn,
                        lambda *a, **k: pytest.fail(f"{verb} did the work before checking --out"))
    if where == "a file":
        (tmp_path / "f").write_text("precious")
    out = "/proc/jaxstress-out/o" if where == "unwritable" else str(tmp_path / "f")
    argv = [verb, SCENARIO, *SMALL, "--out", out, "--quiet"]
    rc, _, err = call(argv)
    assert rc == 2 and "choose another --out" in err, err
    assert_clean(rc, err, argv)
    assert where == "unwritable" or (tmp_path / "f").read_text() == "precious"


def test_unwritable_output_file_is_a_clean_error(tmp_path):
    """atomic_file (the fitted .toml files, the comparison chart) in a place where nothing can be created: a
    ConfigError naming the file, not an OSError."""
    from jaxstress._errors import ConfigError
    from jaxstress._output import atomic_file, check_output

    with pytest.raises(ConfigError, match="/proc/x.toml.*cannot write"):
        with atomic_file("/proc/x.toml", suffix=".toml"):
            pytest.fail("reached the body")
    with pytest.raises(ConfigError, match="is a directory, not a file: choose another --out"):
        check_output(tmp_path, kind="file")
    deep = tmp_path / "new" / "deeper" / "fit.toml"
    assert check_output(deep, kind="file") == deep
    # a parent that cannot be searched makes stat itself raise (PermissionError): still one ConfigError
    import pathlib

    def denied(self):
        raise PermissionError(13, "Permission denied")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pathlib.Path, "exists", denied)
        for kind in ("dir", "file"):
            with pytest.raises(ConfigError, match=r"cannot write in .*\(Permission denied\): choose another --out"):
                check_output(deep, kind=kind)
    assert sorted(os.listdir(tmp_path)) == []  # the check creates nothing


def test_show_non_utf8_file_is_a_clean_error(tmp_path):
    f = tmp_path / "x.toml"
    f.write_bytes(b"\xff\xfe")
    argv = ["scenarios", "--show", str(f)]
    rc, _, err = call(argv)
    assert_clean(rc, err, argv)


def test_non_utf8_portfolio_is_a_clean_error(tmp_path):
    f = tmp_path / "p.toml"
    f.write_bytes(b"name = '\xff'\n")
    argv = ["validate", SCENARIO, "--portfolio", str(f)]
    rc, _, err = call(argv)
    assert_clean(rc, err, argv)


def test_newline_in_numeric_argument_is_one_line(tmp_path):
    argv = ["run", SCENARIO, "--paths", "1\n2", "--out", str(tmp_path / "o")]
    rc, _, err = call(argv)
    assert_clean(rc, err, argv)


@pytest.mark.parametrize("paths", ["1", "2"])
def test_one_or_two_paths_is_not_a_traceback(tmp_path, paths):
    argv = ["run", SCENARIO, "--paths", paths, "--horizon", "0.02", "--out", str(tmp_path / "o"), "--quiet",
            "--no-plots"]
    rc, _, err = call(argv)
    assert_clean(rc, err, argv)


def test_non_finite_snapshot_with_finite_metrics_is_refused():
    import numpy as np

    from jaxstress._errors import SimulationError
    from jaxstress._simulate import METRIC_NAMES, check_finite

    metrics = np.zeros((len(METRIC_NAMES), 4))
    snaps = np.zeros((3, 2, 4), np.float32)
    snaps[1, 1, 2] = np.inf  # e.g. equity_index overflowing float32 at step 5, finite again at the horizon
    with pytest.raises(SimulationError, match="equity_index"):
        check_finite(metrics, snaps, ("yield_10y", "equity_index"), (0, 5, 10), "x")
