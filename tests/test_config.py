"""Scenario configs: shipped files round-trip, `--set` overrides, and validation errors that name the key."""

import copy
import json
import math
import re
import tomllib

import numpy as np
import pytest

from jaxstress import ConfigError, load_scenario, shipped_scenarios
from jaxstress._cli import main
from jaxstress._config import apply_override, configs_dir, read_scenario_dict, to_toml, validate
from jaxstress._schema import DYNAMIC_TABLES, SECTIONS


def baseline_raw() -> dict:
    raw, _ = read_scenario_dict("baseline")
    return raw


# ----------------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("name", sorted(shipped_scenarios()))
def test_shipped_scenario_round_trips(name, tmp_path):
    s = load_scenario(name)
    assert validate(tomllib.loads(to_toml(s.config))) == s.config
    assert validate(copy.deepcopy(s.config)) == s.config  # a resolved config is a fixed point of validation
    f = tmp_path / f"{name}.toml"
    f.write_text(s.to_toml())
    again = load_scenario(str(f))
    assert again.config == s.config
    assert again.hash() == s.hash()


def test_run_writes_a_scenario_toml_that_reloads_to_the_same_hash(tmp_path, monkeypatch):
    out = tmp_path / "run"
    # april_2025 over a quarter in chunks of 1024: the shape test_engine compiles, so a combined run reuses it
    rc = main(["run", "april_2025", "--paths", "1024", "--chunk-size", "1024", "--horizon", "0.25", "--seed", "1",
               "--set", "holders.japan.sell_rate=0.3", "--set", "regimes.generator[1][3]=26.0",
               "--set", "regimes.generator[1][1]=-34.0", "--out", str(out), "--quiet", "--no-plots"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    monkeypatch.chdir(tmp_path)  # reloading does not depend on where the run was started
    again = load_scenario(str(out / "scenario.toml"))
    assert again.hash() == summary["config_hash"]
    assert again.config["holders"]["japan"]["sell_rate"] == 0.3
    assert again.config["regimes"]["generator"][1] == [2.0, -34.0, 6.0, 26.0]
    assert again.config["simulation"]["horizon"] == 0.25
    # the overrides are part of the identity of the run
    assert summary["config_hash"] != load_scenario("april_2025", horizon=0.25).hash()


def test_config_hash_tracks_values_and_portfolio():
    a = load_scenario("baseline")
    assert load_scenario("baseline").hash() == a.hash()
    assert load_scenario("baseline", overrides=["short_rate.k=2.0000001"]).hash() != a.hash()
    assert load_scenario("baseline", portfolio="bank_afs").hash() != a.hash()


def test_extends_merges_table_by_table():
    base, april = load_scenario("baseline").config, load_scenario("april_2025_prior").config
    assert april["regimes"]["initial"] == "tariff_shock" and base["regimes"]["initial"] == "calm"
    assert april["regimes"]["generator"] != base["regimes"]["generator"]
    assert april["regimes"]["names"] == base["regimes"]["names"]
    for name in base["regimes"]["names"]:
        assert april["regimes"][name] == base["regimes"][name]
    for sec in ("curve", "initial", "holders", "basis_funds", "fed", "debt"):
        assert april[sec] == base[sec], sec


def test_params_hold_every_numeric_value():
    s = load_scenario("april_2025", horizon=0.1)
    cfg, p = s.config, s.params()
    for sec, fields in SECTIONS.items():
        for key, f in fields.items():
            dotted = f"{sec}.{key}"
            if f.kind == "bool":
                assert float(p[dotted]) == float(cfg[sec][key]), dotted
            elif f.kind in ("float", "floats", "matrix") and not f.static:
                np.testing.assert_allclose(np.asarray(p[dotted]), np.asarray(cfg[sec][key]), rtol=1e-7,
                                           err_msg=dotted)
            else:
                assert dotted not in p.values, dotted
    for table, fields in DYNAMIC_TABLES.items():
        for name, tab in cfg[table].items():
            if isinstance(tab, dict):
                for key in fields:
                    np.testing.assert_allclose(np.asarray(p[f"{table}.{name}.{key}"]), np.asarray(tab[key]),
                                               rtol=1e-7)
    assert p.regime_names == tuple(cfg["regimes"]["names"]) and p.initial_regime == 1
    assert p.holder_names == tuple(cfg["holders"]) and p.maturities == tuple(cfg["curve"]["maturities"])
    assert p.n_steps == 25 and p.dt == 1 / 252  # 0.1 * 252 = 25.2 steps, rounded


# ----------------------------------------------------------------------------------------------------------------
# --set overrides


def test_set_scalars_lists_and_named_tables():
    s = load_scenario("baseline", overrides=["short_rate.k=3", "holders.japan.sell_rate=0.25", "fed.backstop=false",
                                             "curve.maturities=[1.0, 2.0, 10.0, 30.0]", "holders.korea.holdings=120.5",
                                             "inflation.sigma=0.001", "inflation.sigma=0.002"])
    cfg, p = s.config, s.params()
    assert cfg["short_rate"]["k"] == 3.0 and isinstance(cfg["short_rate"]["k"], float)
    assert cfg["holders"]["japan"]["sell_rate"] == 0.25
    assert cfg["holders"]["japan"]["holdings"] == 1130.8  # the rest of the table is kept
    assert cfg["fed"]["backstop"] is False
    assert cfg["inflation"]["sigma"] == 0.002  # the later override wins
    # a new named table gets the neutral defaults
    assert cfg["holders"]["korea"] == {**{k: f.default for k, f in DYNAMIC_TABLES["holders"].items()},
                                       "holdings": 120.5}
    assert float(p["short_rate.k"]) == 3.0 and float(p["holders.japan.sell_rate"]) == 0.25
    assert float(p["fed.backstop"]) == 0.0 and float(p["holders.korea.holdings"]) == 120.5
    assert p.maturities == (1.0, 2.0, 10.0, 30.0) and p.holder_names[-1] == "korea"
    # nothing leaks into the next load
    assert load_scenario("baseline").config["short_rate"]["k"] == 2.0


def test_set_matrix_element_with_matching_diagonal():
    base = load_scenario("baseline").config["regimes"]["generator"]
    s = load_scenario("baseline", overrides=["regimes.generator[1][3]=9.0", "regimes.generator[1][1]=-17.0"])
    g = s.config["regimes"]["generator"]
    assert g[1] == [4.0, -17.0, 4.0, 9.0]
    assert g[0] == base[0] and g[2:] == base[2:]
    np.testing.assert_allclose(np.asarray(s.params()["regimes.generator"]), np.asarray(g))
    # without the diagonal change the diagonal follows the row (rows sum to zero): the same generator
    assert load_scenario("baseline", overrides=["regimes.generator[1][3]=9.0"]).config["regimes"]["generator"] == g
    # a diagonal set that does not match its row is refused
    with pytest.raises(ConfigError, match=re.escape("key 'regimes.generator[1]'")):
        load_scenario("baseline", overrides=["regimes.generator[1][3]=9.0", "regimes.generator[1][1]=-16.0"])


def test_set_bare_and_quoted_strings():
    s = load_scenario("baseline", overrides=["scenario.portfolio=bank_afs", 'scenario.name="my run"'])
    assert s.config["scenario"]["portfolio"] == "bank_afs" and s.portfolio.name == "bank_afs"
    assert s.config["scenario"]["name"] == "my run"


@pytest.mark.parametrize(
    "assignment, needles",
    [
        ("regimes.generator[4][0]=1.0", ["regimes.generator[4][0]", "index 4 out of range"]),
        ("regimes.generator[0][9]=1.0", ["regimes.generator[0][9]", "index 9 out of range"]),
        ("debt.amounts[5]=1.0", ["debt.amounts[5]", "out of range"]),
        ("short_rate.sigmaa=0.1", ["short_rate.sigmaa", "did you mean 'sigma'"]),
        ("holders.japan.sell_rat=0.1", ["holders.japan.sell_rat", "did you mean 'sell_rate'"]),
        ("regimes.calm.tarif=0.1", ["regimes.calm.tarif", "did you mean 'tariff'"]),
        ("shortrate.k=1.0", ["shortrate", "did you mean 'short_rate'"]),
        ("short_rate.k=1.2.3", ["short_rate.k", "cannot parse value"]),
        ("short_rate.k=[1.0,", ["short_rate.k", "cannot parse value"]),
        ("short_rate.k=fast", ["short_rate.k", "expected a number"]),
        ("short_rate.k=nan", ["short_rate.k", "finite"]),
        ("short_rate.k=-inf", ["short_rate.k", "finite"]),
        ("short_rate.k=-1.0", ["short_rate.k", "out of range"]),
        ("fed.backstop=1", ["fed.backstop", "true or false"]),
        ("regimes.generator[0]=[1.0]", ["regimes.generator", "matrix"]),
        ("regimes.generator=[[0.0, 0.0], [0.0, 0.0]]", ["regimes.generator", "4x4"]),
        ("regimes.initial=panic", ["regimes.initial", "panic"]),
        ("holders.japan=5.0", ["holders.japan", "expected a table"]),
        ("short_rate..k=1.0", ["short_rate..k", "malformed key"]),
        ("short_rate.k", ["dotted.key=value"]),
    ],
)
def test_bad_overrides_name_the_key(assignment, needles):
    with pytest.raises(ConfigError) as e:
        load_scenario("baseline", overrides=[assignment])
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


@pytest.mark.parametrize("assignment", ["short_rate.k.x.y=1.0", "scenario.name.x.y=1.0"])
def test_override_through_a_scalar_names_the_key(assignment):
    with pytest.raises(ConfigError, match=re.escape(assignment.split("=")[0])):
        apply_override(baseline_raw(), assignment)


# ----------------------------------------------------------------------------------------------------------------
# validation


def _at(*path):
    """A mutator that sets raw[path[0]][path[1]]... = value (a list index is an int)."""

    def setter(value):
        def mutate(raw):
            node = raw
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = value

        return mutate

    return setter


def _delete(sec, key):
    def mutate(raw):
        del raw[sec][key]

    return mutate


def _rename_table(table, old, new):
    def mutate(raw):
        raw[table][new] = raw[table].pop(old)
        if table == "regimes":
            raw["regimes"]["names"] = [new if n == old else n for n in raw["regimes"]["names"]]

    return mutate


NOT_PD = [[1.0, 0.99, 0.99, 0.0, 0.0], [0.99, 1.0, -0.99, 0.0, 0.0], [0.99, -0.99, 1.0, 0.0, 0.0],
          [0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]
EYE5 = np.eye(5).tolist()

VALIDATION_CASES = [
    # (mutation, key named, words of the message)
    (_at("regimes", "generator", 2, 0)(2.5), "regimes.generator[2]", "sum to zero"),
    (_at("regimes", "generator", 1)([4.0, -8.0, -4.0, 8.0]), "regimes.generator[1][2]", ">= 0"),
    (_at("regimes", "generator")([[0.0, 0.0], [0.0, 0.0]]), "regimes.generator", "4x4"),
    (_at("regimes", "generator")([[0.0, 0.0], [0.0]]), "regimes.generator", "matrix"),
    (_at("regimes", "generator", 0, 1)(math.nan), "regimes.generator[0][1]", "finite"),
    (_at("regimes", "calm", "correlation")(NOT_PD), "regimes.calm.correlation", "positive definite"),
    (_at("regimes", "tariff_shock", "correlation", 0, 1)(0.5), "regimes.tariff_shock.correlation", "symmetric"),
    (_at("regimes", "pause", "correlation")([[2.0 if i == j else 0.0 for j in range(5)] for i in range(5)]),
     "regimes.pause.correlation", "ones on the diagonal"),
    (_at("regimes", "pause", "correlation")(np.eye(4).tolist()), "regimes.pause.correlation", "5x5"),
    (_at("regimes", "calm", "correlation", 3, 4)(math.inf), "regimes.calm.correlation[3][4]", "finite"),
    (_at("regimes", "panic")({"tariff": 0.5}), "regimes.panic", "not listed in regimes.names"),
    (_at("regimes", "initial")("panic"), "regimes.initial", "not one of regimes.names"),
    (_at("regimes", "names")(["calm", "calm", "escalation", "pause"]), "regimes.names", "unique"),
    (_at("regimes", "names")("calm"), "regimes.names", "list"),
    (_at("regimes", "calm", "risk")(-1.0), "regimes.calm.risk", "out of range"),
    (_at("regimes", "calm", "tarif")(0.1), "regimes.calm.tarif", "did you mean 'tariff'"),
    (_at("holders", "japan", "holdings")(-5.0), "holders.japan.holdings", "out of range"),
    (_at("holders", "china", "fima_share")(1.5), "holders.china.fima_share", "out of range"),
    (_at("holders", "uk", "holdings")(math.nan), "holders.uk.holdings", "finite"),
    (_at("holders", "japan")(5.0), "holders.japan", "expected a table"),
    (_at("curve", "k")("fast"), "curve.k", "expected a number"),
    (_at("inflation", "k")(True), "inflation.k", "expected a number"),
    (_at("fed", "backstop")(1), "fed.backstop", "true or false"),
    (_at("simulation", "steps_per_year")(52.5), "simulation.steps_per_year", "integer"),
    (_at("scenario", "name")(5), "scenario.name", "string"),
    (_at("curve", "maturities")([]), "curve.maturities", "non-empty list"),
    (_at("curve", "maturities")([10.0, 2.0]), "curve.maturities", "increasing"),
    (_at("curve", "maturities")([2.0, 30.0]), "curve.maturities", "30y changes are metrics); add 10"),
    (_at("curve", "maturities")([1.0, 10.0]), "curve.maturities", "must contain 2, 10 and 30 (the 10y drives"),
    (_at("curve", "maturities")([1.0, 10.0, 20.0]), "curve.maturities", "are metrics); add 2, 30"),
    (_at("curve", "k")(1e-3), "curve.k", "out of range"),  # open lower bound
    (_at("simulation", "horizon")(31.0), "simulation.horizon", "out of range"),
    (_at("basis_funds", "leverage")(0.5), "basis_funds.leverage", "out of range"),
    (_at("initial", "vol_10y")(0.0), "initial.vol_10y", "out of range"),
    (_at("curve", "k")(math.nan), "curve.k", "finite"),
    (_at("issuance", "deficit")(math.inf), "issuance.deficit", "finite"),
    (_at("debt", "amounts", 0)(-math.inf), "debt.amounts[0]", "finite"),
    (_at("debt", "coupons", 2)(0.5), "debt.coupons[2]", "out of range"),
    (_at("debt", "amounts")([1.0, 2.0]), "debt", "same length"),
    (_delete("curve", "kc"), "curve.kc", "missing key"),
    (_delete("regimes", "initial"), "regimes.initial", "missing key"),
    (_at("curve", "kk")(1.0), "curve.kk", "did you mean 'k'"),
    (_at("curv")({}), "curv", "did you mean 'curve'"),
    (_at("curve")(5.0), "curve", "expected a table"),
]


@pytest.mark.parametrize("mutate, key, words", VALIDATION_CASES,
                         ids=[f"{i:02d}-{c[1]}" for i, c in enumerate(VALIDATION_CASES)])
def test_validation_error_names_the_key(mutate, key, words):
    raw = baseline_raw()
    validate(copy.deepcopy(raw), file="s.toml")  # the unmodified config is valid: the mutation is the error
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        validate(raw, file="s.toml")
    assert e.value.key == key
    msg = str(e.value)
    assert msg.startswith(f"s.toml, key '{key}': ") and words in msg, msg


@pytest.mark.parametrize(
    "text, key",
    [
        ("[curve]\nk = nan\n", "curve.k"),
        ("[issuance]\ndeficit = inf\n", "issuance.deficit"),
        ("[fed]\nthreshold = -inf\n", "fed.threshold"),
        ("[debt]\namounts = [6200.0, nan, 5500.0, 7500.0, 4900.0]\n", "debt.amounts[1]"),
        ("[holders.japan]\nholdings = nan\n", "holders.japan.holdings"),
        ("[regimes.escalation]\njump_intensity = inf\n", "regimes.escalation.jump_intensity"),
        ("[regimes]\ngenerator = [[-0.5, 0.3, 0.1, 0.1], [4.0, -16.0, 4.0, 8.0], [2.0, 2.0, -10.0, 6.0],"
         " [3.0, nan, 0.5, -4.0]]\n", "regimes.generator[3][1]"),
    ],
)
def test_toml_nan_and_inf_are_rejected(tmp_path, text, key):
    f = tmp_path / "bad.toml"
    f.write_text('extends = "baseline"\n' + text)
    with pytest.raises(ConfigError) as e:
        load_scenario(str(f))
    assert e.value.key == key
    assert "finite" in str(e.value) and str(f) in str(e.value)


def test_file_without_extends_needs_every_section(tmp_path):
    text = (configs_dir() / "baseline.toml").read_text()
    full = tmp_path / "full.toml"
    full.write_text(text)
    assert load_scenario(str(full)).config == load_scenario("baseline").config
    cut = tmp_path / "no_dealers.toml"
    cut.write_text(text[:text.index("[dealers]")] + text[text.index("[issuance]"):])
    with pytest.raises(ConfigError) as e:
        load_scenario(str(cut))
    assert e.value.key == "dealers" and "missing section [dealers]" in str(e.value) and str(cut) in str(e.value)
    lone = tmp_path / "lone.toml"
    lone.write_text('[scenario]\nname = "x"\ndescription = "x"\nportfolio = "long_duration"\n'
                    'start_date = "2025-04-02"\n')
    with pytest.raises(ConfigError) as e:
        load_scenario(str(lone))
    assert e.value.key == "simulation" and "extends" in str(e.value)


def test_extends_errors(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="circular"):
        load_scenario(str(tmp_path / "a.toml"))
    (tmp_path / "c.toml").write_text('extends = "baselin"\n')
    with pytest.raises(ConfigError, match="did you mean 'baseline'"):
        load_scenario(str(tmp_path / "c.toml"))
    (tmp_path / "d.toml").write_text("extends = 3\n")
    with pytest.raises(ConfigError, match="key 'extends'"):
        load_scenario(str(tmp_path / "d.toml"))


# ----------------------------------------------------------------------------------------------------------------
# regressions: each of these was a bug once


@pytest.mark.parametrize("mutate", [_rename_table("holders", "cayman", "cayman islands"),
                                    _rename_table("regimes", "pause", "tariff pause"),
                                    _at("scenario", "description")("calm markets \U0001f642")],
                         ids=["holder-with-space", "regime-with-space", "emoji-description"])
def test_any_valid_config_round_trips(mutate):
    raw = baseline_raw()
    mutate(raw)
    resolved = validate(raw)
    assert validate(tomllib.loads(to_toml(resolved))) == resolved


def test_scenario_toml_with_a_relative_portfolio_reloads(tmp_path, monkeypatch):
    desk = tmp_path / "desk"
    desk.mkdir()
    (desk / "book.toml").write_text((configs_dir() / "portfolios" / "bank_afs.toml").read_text())
    (desk / "s.toml").write_text('extends = "baseline"\n[scenario]\nportfolio = "book.toml"\n')
    s = load_scenario(str(desk / "s.toml"))
    assert s.portfolio.name == "bank_afs"
    out = tmp_path / "run"
    out.mkdir()
    (out / "scenario.toml").write_text(s.to_toml())  # what `jaxstress run` writes (write_outputs)
    monkeypatch.chdir(tmp_path)
    assert load_scenario(str(out / "scenario.toml")).hash() == s.hash()
