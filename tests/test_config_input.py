"""Bad scenario input gets one clear error naming the field (or the --set that caused it) and the fix.

Regressions of a user audit: typo'd names of holders and regimes became new, empty entries; start_date took any
string and refused a TOML date; errors of a --set named the shipped file; reporting days past the horizon were
dropped without a word; an asymmetric correlation did not say which element to set. Config loading only.
"""

from __future__ import annotations

import re

import pytest

from jaxstress import ConfigError, load_scenario
from jaxstress._config import configs_dir, shipped_scenarios


def _error(*args, **kwargs) -> ConfigError:
    """The error of loading a scenario; it must be one problem on one line."""
    with pytest.raises(ConfigError) as e:
        load_scenario(*args, **kwargs)
    err = e.value
    assert len(getattr(err, "problems", [err])) == 1, str(err)
    assert "\n" not in str(err), str(err)
    return err


def _toml(tmp_path, text: str, name: str = "mine.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_shipped_scenario_still_loads():
    for name in shipped_scenarios():
        load_scenario(name)


# ----------------------------------------------------------------------------------------------------------------
# 1. typo'd entries of the named tables ([holders.NAME], [regimes.NAME])


def test_set_on_an_unknown_holder_is_an_error_with_did_you_mean():
    err = _error("april_2025", overrides=["holders.japn.sell_rate=0.2"])
    msg = str(err)
    assert msg.startswith("--set holders.japn.sell_rate=0.2: key 'holders.japn.sell_rate': no holder 'japn' "), msg
    assert "did you mean 'japan'?" in msg and "[holders.japn]" in msg and "holdings" in msg, msg
    assert err.key == "holders.japn.sell_rate"


def test_set_of_an_inline_table_for_an_unknown_holder_needs_holdings():
    err = _error("april_2025", overrides=["holders.japn={program_total=500.0}"])
    assert "no holder 'japn'" in str(err) and "did you mean 'japan'?" in str(err), str(err)


@pytest.mark.parametrize("overrides", [["holders.korea.holdings=120.5", "holders.korea.sell_rate=0.1"],
                                       ["holders.korea.sell_rate=0.1", "holders.korea.holdings=120.5"],
                                       ["holders.korea={holdings=120.5, sell_rate=0.1}"]])
def test_set_may_add_a_holder_that_gives_its_holdings(overrides):
    korea = load_scenario("april_2025", overrides=overrides).config["holders"]["korea"]
    assert korea["holdings"] == 120.5 and korea["sell_rate"] == 0.1


def test_set_of_an_inline_table_changes_only_the_keys_it_gives():
    """As a file that extends another: the other keys of the table stay (it used to replace the table, so that
    --set holders.japan={sell_rate=0.1} reset Japan's holdings to 0 and its other rates to their defaults)."""
    before = load_scenario("april_2025").config
    after = load_scenario("april_2025", overrides=["holders.japan={sell_rate=0.1, fima_share=0.2}",
                                                   "regimes={tariff_shock={tau_vol_mult=2.5}}"]).config
    assert after["holders"]["japan"] == {**before["holders"]["japan"], "sell_rate": 0.1, "fima_share": 0.2}
    assert after["holders"]["japan"]["holdings"] == before["holders"]["japan"]["holdings"] > 1000
    assert after["regimes"] == {**before["regimes"],
                                "tariff_shock": {**before["regimes"]["tariff_shock"], "tau_vol_mult": 2.5}}
    assert {k: v for k, v in after.items() if k not in ("holders", "regimes")} == {
        k: v for k, v in before.items() if k not in ("holders", "regimes")}


def test_set_on_an_unknown_regime_is_an_error_with_did_you_mean():
    msg = str(_error("april_2025", overrides=["regimes.calmm.tariff=0.1"]))
    assert msg.startswith("--set regimes.calmm.tariff=0.1: key 'regimes.calmm.tariff': no regime 'calmm' in "
                          "regimes.names (did you mean 'calm'?)"), msg
    assert "regimes.generator" in msg and "[regimes.calmm]" in msg, msg


def test_set_may_add_a_regime_listed_in_names():
    gen = [[-0.5, 0.3, 0.1, 0.1, 0.0], [4.0, -16.0, 4.0, 8.0, 0.0], [2.0, 2.0, -10.0, 6.0, 0.0],
           [3.0, 0.5, 0.5, -4.0, 0.0], [1.0, 0.0, 0.0, 0.0, -1.0]]
    s = load_scenario("baseline", overrides=["regimes.panic.risk=3.0",
                                             'regimes.names=["calm", "tariff_shock", "escalation", "pause", "panic"]',
                                             f"regimes.generator={gen}"])
    assert s.config["regimes"]["panic"]["risk"] == 3.0


def test_toml_new_holder_without_holdings_is_an_error(tmp_path):
    path = _toml(tmp_path, 'extends = "april_2025"\n\n[holders.japn]\nprogram_total = 500.0\n')
    err = _error(path)
    assert str(err) == (f"{path}, key 'holders.japn': holder 'japn' is not in the base scenario 'april_2025' "
                        "(did you mean 'japan'?); if a new holder is meant, give its holdings = <$bn> (Treasury "
                        "holdings at t=0)")


def test_toml_new_holder_with_holdings_is_accepted(tmp_path):
    path = _toml(tmp_path, 'extends = "april_2025"\n\n[holders.korea]\nholdings = 120.5\nsell_rate = 0.1\n')
    assert load_scenario(path).config["holders"]["korea"]["holdings"] == 120.5
    # and an existing holder may be changed field by field
    path = _toml(tmp_path, 'extends = "april_2025"\n\n[holders.japan]\nprogram_total = 500.0\n', "japan.toml")
    assert load_scenario(path).config["holders"]["japan"]["holdings"] == 1130.8


def test_toml_holder_of_a_file_without_extends_needs_holdings(tmp_path):
    text = (configs_dir() / "baseline.toml").read_text() + "\n[holders.korea]\nsell_rate = 0.1\n"
    err = _error(_toml(tmp_path, text))
    assert err.key == "holders.korea" and "new holder 'korea' gives no holdings; give holdings = <$bn>" in str(err)


def test_toml_regime_table_not_in_names_says_did_you_mean(tmp_path):
    err = _error(_toml(tmp_path, 'extends = "april_2025"\n\n[regimes.tarif_shock]\ntariff = 0.3\n'))
    assert err.key == "regimes.tarif_shock"
    assert "not listed in regimes.names" in str(err) and "(did you mean 'tariff_shock'?)" in str(err), str(err)
    assert "to add a regime, list it in regimes.names" in str(err)


# ----------------------------------------------------------------------------------------------------------------
# 2. scenario.start_date


@pytest.mark.parametrize("how", ["set", "toml"])
def test_start_date_accepts_a_toml_date(tmp_path, how):
    if how == "set":
        s = load_scenario("april_2025", overrides=["scenario.start_date=2025-04-10"])
    else:
        s = load_scenario(_toml(tmp_path, 'extends = "april_2025"\n\n[scenario]\nstart_date = 2025-04-10\n'))
    assert s.config["scenario"]["start_date"] == "2025-04-10"  # normalized to the ISO string
    assert 'start_date = "2025-04-10"' in s.to_toml()


@pytest.mark.parametrize("value, words", [
    ('"10/04/2025"', "got '10/04/2025'"),
    ("10/04/2025", "got '10/04/2025'"),
    ('"2025-4-10"', "got '2025-4-10'"),
    ('"2025-02-30"', "'2025-02-30' is not a calendar date"),
    ("2025-02-30", "'2025-02-30' is not a calendar date"),
    ("2025-04-10T09:30:00", "without a time of day"),
    ("20250410", "got 20250410"),
])
def test_start_date_rejects_anything_but_an_iso_date(value, words):
    err = _error("april_2025", overrides=[f"scenario.start_date={value}"])
    msg = str(err)
    assert msg.startswith(f"--set scenario.start_date={value}: key 'scenario.start_date': "), msg
    assert words in msg and "YYYY-MM-DD" in msg, msg


def test_start_date_in_a_toml_file_names_the_file_and_the_form(tmp_path):
    path = _toml(tmp_path, 'extends = "april_2025"\n\n[scenario]\nstart_date = "10/04/2025"\n')
    assert str(_error(path)) == (f"{path}, key 'scenario.start_date': expected an ISO date YYYY-MM-DD such as "
                                 "2025-04-02 (a TOML date or a string; \"\" for none), got '10/04/2025'")


# ----------------------------------------------------------------------------------------------------------------
# 3. errors of a --set name the --set, not the shipped file


@pytest.mark.parametrize("assignment, words", [
    ("holders.japan.sell_rat=0.2", "key 'holders.japan.sell_rat': unknown key; did you mean 'sell_rate'?"),
    ("impact.lambda0=2", "key 'impact.lambda0': value 2 out of range"),
    ("short_rate.k=nan", "key 'short_rate.k': expected a finite number"),
    ("shortrate.k=1.0", "key 'shortrate': unknown key; did you mean 'short_rate'?"),
    ("regimes.generator[1][1]=-5.0", "key 'regimes.generator[1]': row 1 sums to"),  # a diagonal alone
    ("debt.amounts=[1.0]", "key 'debt': debt.amounts, debt.maturities and debt.coupons must have the same length"),
    # past 1e4 a year expm(Q dt) overflows, and every path's regime log-probability was not finite
    ("regimes.generator[0][1]=3e38", "key 'regimes.generator[0][1]': off-diagonal intensities must be <= 10000 per "
                                     "year"),
])
def test_errors_of_an_override_name_the_override(assignment, words):
    err = _error("april_2025", overrides=[assignment])
    msg = str(err)
    assert msg.startswith(f"--set {assignment}: ") and words in msg, msg
    assert str(configs_dir()) not in msg and ".toml" not in msg, msg
    assert err.file is None


def test_a_horizon_short_of_half_a_step_is_an_error():
    """It used to run one whole step (a year at steps_per_year 1) without a word."""
    assert str(_error("april_2025", horizon=0.1, steps_per_year=1)) == (
        "--horizon 0.1: key 'simulation.horizon': a horizon of 0.1 years is shorter than half a step at "
        "steps_per_year 1; lengthen it to at least 0.5 years or raise simulation.steps_per_year")
    assert load_scenario("april_2025", horizon=0.5, steps_per_year=1).params().n_steps == 1  # half a step: one


def test_each_problem_names_its_own_override():
    with pytest.raises(ConfigError) as e:
        load_scenario("april_2025", overrides=["impact.lambda0=2", "holders.japan.sell_rat=0.2"])
    msgs = [str(p) for p in e.value.problems]
    assert any(m.startswith("--set impact.lambda0=2: key 'impact.lambda0': ") for m in msgs), msgs
    assert any(m.startswith("--set holders.japan.sell_rat=0.2: key 'holders.japan.sell_rat': ") for m in msgs), msgs


def test_errors_of_the_file_still_name_the_file(tmp_path):
    path = _toml(tmp_path, 'extends = "april_2025"\n\n[impact]\nlambda0 = 2.0\n')
    err = _error(path, overrides=["holders.japan.sell_rate=0.2"])
    assert str(err).startswith(f"{path}, key 'impact.lambda0': value 2.0 out of range"), str(err)


# ----------------------------------------------------------------------------------------------------------------
# 4. reporting days past the horizon


@pytest.mark.parametrize("assignment", ["simulation.report_days=[0,5,600]", "simulation.report_days[6]=600"])
def test_set_report_day_past_the_horizon_is_an_error(assignment):
    msg = str(_error("april_2025", overrides=[assignment]))
    key = assignment.split("=")[0]
    assert msg == (f"--set {assignment}: key '{key}': day 600 is past the horizon of 252 steps "
                   "(simulation.horizon 1 years x steps_per_year 252); give reporting days in [0, 252] (the horizon "
                   "is always reported) or lengthen simulation.horizon"), msg


def test_toml_report_day_past_its_horizon_is_an_error(tmp_path):
    path = _toml(tmp_path, 'extends = "april_2025"\n\n[simulation]\nreport_days = [0, 21, 300, 400]\n')
    err = _error(path)
    assert err.key == "simulation.report_days"
    assert str(err).startswith(f"{path}, key 'simulation.report_days': days 300, 400 are past the horizon of 252 "
                               "steps"), str(err)


def test_report_days_written_for_a_longer_horizon_are_dropped_when_it_is_shortened(tmp_path):
    """Documented: so --horizon (or a file extending a scenario) can shorten a run without rewriting its days."""
    assert load_scenario("april_2025", horizon=0.25).config["simulation"]["report_days"] == [0, 5, 10, 21, 63]
    assert load_scenario("april_2025", overrides=["simulation.horizon=0.25"]).config["simulation"][
        "report_days"] == [0, 5, 10, 21, 63]
    path = _toml(tmp_path, 'extends = "april_2025"\n\n[simulation]\nhorizon = 0.25\n')
    assert load_scenario(path).config["simulation"]["report_days"] == [0, 5, 10, 21, 63]
    # a day set on the command line is checked against the horizon given with it, the file's others are dropped
    cfg = load_scenario("april_2025", overrides=["simulation.report_days[1]=4"], horizon=0.25).config
    assert cfg["simulation"]["report_days"] == [0, 4, 10, 21, 63]
    msg = str(_error("april_2025", overrides=["simulation.report_days[1]=100"], horizon=0.25))
    assert msg.startswith("--set simulation.report_days[1]=100: key 'simulation.report_days[1]': day 100 is past"), msg
    msg = str(_error("april_2025", overrides=["simulation.report_days=[0,100]"], horizon=0.25))
    assert "--set simulation.report_days=[0,100]" in msg and "day 100 is past the horizon of 63 steps" in msg, msg


# ----------------------------------------------------------------------------------------------------------------
# 5. an asymmetric correlation says which element to set


@pytest.mark.parametrize("i, j", [(0, 1), (1, 0), (2, 4)])
def test_correlation_element_set_alone_says_to_set_its_mirror(i, j):
    assignment = f"regimes.calm.correlation[{i}][{j}]=0.5"
    msg = str(_error("april_2025", overrides=[assignment]))
    assert msg.startswith(f"--set {assignment}: key 'regimes.calm.correlation': correlation matrix must be "
                          f"symmetric: [{i}][{j}] is 0.5 but [{j}][{i}] is "), msg
    assert msg.endswith(f"; set the mirrored element too: --set regimes.calm.correlation[{j}][{i}]=0.5"), msg
    # doing as it says is valid
    s = load_scenario("april_2025", overrides=[assignment, f"regimes.calm.correlation[{j}][{i}]=0.5"])
    assert s.config["regimes"]["calm"]["correlation"][i][j] == 0.5


def test_asymmetric_correlation_in_a_file_names_an_element_to_set(tmp_path):
    rows = [[1.0, 0.5, 0.2, 0.2, 0.3], [0.3, 1.0, 0.1, 0.2, 0.0], [0.2, 0.1, 1.0, 0.2, 0.2],
            [0.2, 0.2, 0.2, 1.0, 0.0], [0.3, 0.0, 0.2, 0.0, 1.0]]
    path = _toml(tmp_path, f'extends = "april_2025"\n\n[regimes.calm]\ncorrelation = {rows}\n')
    assert str(_error(path)) == (f"{path}, key 'regimes.calm.correlation': correlation matrix must be symmetric: "
                                 "[0][1] is 0.5 but [1][0] is 0.3; make them equal, e.g. "
                                 "regimes.calm.correlation[1][0] = 0.5")


def test_messages_have_no_stray_file_of_the_package():
    """The shipped file is named only when the error is in it."""
    for ov in ["holders.japn.sell_rate=0.2", "scenario.start_date=10/04/2025", "simulation.report_days=[0,600]",
               "regimes.calm.correlation[0][1]=0.5", "holders.japan.sell_rat=0.2"]:
        assert not re.search(r"configs/\w+\.toml", str(_error("april_2025", overrides=[ov]))), ov


def test_set_of_a_generator_entry_moves_its_diagonal():
    """The README's example `--set regimes.generator[1][3]=30` failed with 'row 1 sums to 5': the diagonal now
    follows the row, as it does for sensitivities and reverse stress tests; a diagonal (or row) given by the
    overrides themselves is taken as it is and checked."""
    base = load_scenario("april_2025").config["regimes"]["generator"][1]
    row = load_scenario("april_2025", ["regimes.generator[1][3]=30"]).config["regimes"]["generator"][1]
    assert row[3] == 30 and row[1] == -sum(v for j, v in enumerate(row) if j != 1)
    assert [v for j, v in enumerate(row) if j not in (1, 3)] == [v for j, v in enumerate(base) if j not in (1, 3)]
    with pytest.raises(ConfigError, match=r"--set regimes.generator\[1\]\[1\]=-5: .*row 1 sums to"):
        load_scenario("april_2025", ["regimes.generator[1][3]=30", "regimes.generator[1][1]=-5"])
    explicit = [2.0, -40.0, 8.0, 30.0]
    assert load_scenario("april_2025", [f"regimes.generator[1]={explicit}"]).config["regimes"]["generator"][1] == \
        explicit


@pytest.mark.parametrize("overrides", [{"holders.japan.sell_rate": 0.2}, "holders.japan.sell_rate=0.2"])
def test_overrides_must_be_a_sequence_of_assignments(overrides):
    """The Python API's overrides are "key=value" strings: a dict (or one bare string, iterated by character) is
    refused with a message about the argument, not a --set message about its first key or character."""
    with pytest.raises(ConfigError, match="key 'overrides': expected a sequence of \"dotted.key=value\" strings"):
        load_scenario("april_2025", overrides)
