"""Bad data for the calibration verbs gets one clear DataError naming the file, column, line and value, before any fit.

Regressions of a user audit: a non-finite or absurd yield in the window ended in fit_ou's ValueError traceback; a
window where every yield is constant ended in 'math domain error' in fit_hamilton; a truncated CSV row was read
silently (as missing values); a window before the data said 'need at least 1' row. Reader and history checks
only: every error here comes before the curve fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxstress import _calibrate as cal
from jaxstress._data import (
    BREAKEVEN_FILE,
    CMT_FILE,
    DATA_DIR,
    TERM_PREMIUM_FILE,
    TIC_FILE,
    aligned_history,
    load_series,
)
from jaxstress._errors import DataError

WINDOW = ("2024-01-01", "2025-06-30")


@pytest.fixture
def data(data_copy):
    """A copy of the shipped data folder, to edit (conftest)."""
    return data_copy


def set_cell(folder, file: str, date: str, column: str, value: str) -> int:
    """Set one cell of a data CSV (no quoted fields); returns its line number (1-based, header = 1)."""
    path = folder / file
    lines = path.read_text().split("\n")
    j = lines[0].split(",").index(column)
    for n, line in enumerate(lines):
        fields = line.split(",")
        if fields[0] == date:
            fields[j] = value
            lines[n] = ",".join(fields)
            path.write_text("\n".join(lines))
            return n + 1
    raise AssertionError(f"no row {date} in {file}")


def one_line_exit_2(argv, capsys) -> str:
    from jaxstress._cli import main  # the real entry point: ConfigError -> one line, exit 2

    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("jaxstress: error: "), err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------------------ 1. values


@pytest.mark.parametrize("value, why", [
    ("inf", "is not a finite number"), ("nan", "is not a finite number"), ("-inf", "is not a finite number"),
    ("1e30", r"is outside \[-20, 100\], the plausible range of a Treasury yield in percent"),
    ("-25", r"is outside \[-20, 100\]"),
])
def test_non_finite_or_absurd_yield_names_file_column_line_date_and_value(data, value, why):
    line = set_cell(data, CMT_FILE, "2024-06-03", "DGS10", value)
    with pytest.raises(DataError, match=rf"{CMT_FILE}, key 'DGS10': line {line} \(2024-06-03\): value "
                                        rf"'{value}' {why}"):
        aligned_history(*WINDOW, data)


@pytest.mark.parametrize("file, column, value, what", [
    (BREAKEVEN_FILE, "T10YIE", "150", r"\[-20, 100\], the plausible range of an inflation breakeven in percent"),
    (TERM_PREMIUM_FILE, "ACMTP10", "25", r"\[-20, 20\], the plausible range of a term premium in percent"),
])
def test_plausible_range_of_each_kind_of_series(data, file, column, value, what):
    set_cell(data, file, "2024-06-03", column, value)
    with pytest.raises(DataError, match=rf"key '{column}': line \d+ \(2024-06-03\): value '{value}' is outside {what}"):
        load_series(file, column, *WINDOW, data)
    load_series(file, column, "2025-01-01", "2025-06-30", data)  # a value outside the window is not read


def test_tic_holdings_are_not_negative(tmp_path):
    (tmp_path / TIC_FILE).write_text("month,Japan\n2020-01,1100.5\n2020-02,-3\n")
    with pytest.raises(DataError, match=r"key 'Japan': line 3 \(2020-02-29\): value '-3' is outside \[0, 100000\]"):
        load_series(TIC_FILE, "Japan", data_dir=tmp_path)


def test_every_shipped_column_still_loads():
    """The ranges refuse no real value, and the shipped missing markers (empty, FRED's '.', TIC's 'n.a.') read as
    missing."""
    import csv

    for path in sorted(DATA_DIR.glob("*.csv")):
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh))
        d, v = load_series(path.name, header[1:])
        assert len(d) > 100 and np.isfinite(v).any(axis=0).all(), path.name
    _, v = load_series(TIC_FILE, ["Japan", "Luxembourg"], "2002-01-01", "2002-01-31")
    assert v[0, 0] == 310.6 and np.isnan(v[0, 1])  # 'n.a.' in the file


def test_cli_history_with_an_infinite_yield_is_one_line(data, tmp_path, capsys):
    set_cell(data, CMT_FILE, "2024-06-03", "DGS10", "inf")
    out = tmp_path / "x.toml"
    err = one_line_exit_2(["calibrate", "history", "--data", str(data), "--start", WINDOW[0], "--end", WINDOW[1],
                           "--out", str(out)], capsys)
    assert "key 'DGS10'" in err and "(2024-06-03): value 'inf'" in err and "fit_ou" not in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ 2. constant window


def test_cli_history_on_a_window_where_every_yield_is_constant(data, tmp_path, capsys):
    path = data / CMT_FILE
    lines = path.read_text().split("\n")
    for n, line in enumerate(lines[1:], 1):
        f = line.split(",")
        if WINDOW[0] <= f[0] <= WINDOW[1]:
            lines[n] = ",".join([f[0]] + ["4.00" if x not in ("", ".") else x for x in f[1:]])
    path.write_text("\n".join(lines))
    out = tmp_path / "x.toml"
    err = one_line_exit_2(["calibrate", "history", "--data", str(data), "--start", WINDOW[0], "--end", WINDOW[1],
                           "--hamilton-steps", "10", "--out", str(out)], capsys)
    assert "DGS3MO, DGS1, DGS2, DGS3, DGS5, DGS7, DGS10, DGS20, DGS30 (ust_cmt_yields_daily_fred.csv) do not move" \
        in err and "2024-01-02..2025-06-30" in err and "DGS10 4%" in err, err
    assert "choose a longer or another window (--start, --end)" in err and "math domain" not in err, err
    assert not out.exists() and not (tmp_path / "x_regimes.png").exists()


def test_fits_of_a_constant_series_say_so():
    with pytest.raises(ValueError, match=r"fit_hamilton: the series is constant \(every value is 0\)"):
        cal.fit_hamilton(np.zeros(40))
    with pytest.raises(ValueError, match=r"fit_ou: the path is constant \(every value is 0.04\)"):
        cal.fit_ou(np.full(30, 0.04))


# ------------------------------------------------------------------------------------------------ 3. field counts


@pytest.mark.parametrize("rows, line, n", [
    ("2020-01-02,1,2\n2020-01-03,1.5", 3, 2),  # cut in the middle of its last row
    ("2020-01-02,1\n2020-01-03,1.5,2\n", 2, 2),  # a row with fewer fields in the middle
    ("2020-01-02,1,2,3\n", 2, 4),  # extra fields
])
def test_row_with_another_number_of_fields_names_file_and_line(tmp_path, rows, line, n):
    (tmp_path / "x.csv").write_text("date,A,B\n" + rows)
    with pytest.raises(DataError, match=rf"x\.csv: line {line}: {n} field\(s\) where the header has 3: the row is "
                                        r"cut short \(a truncated file\?\)"):
        load_series("x", "A", data_dir=tmp_path)


def test_truncated_shipped_file_names_its_last_line(data):
    path = data / CMT_FILE
    text = path.read_text().rstrip("\n")
    path.write_text(text[: text.rindex(",") - 3])  # cut inside the last row (a half-written copy)
    n = text.count("\n") + 1
    with pytest.raises(DataError, match=rf"{CMT_FILE}: line {n}: 11 field\(s\) where the header has 12"):
        aligned_history(*WINDOW, data)


def test_missing_values_as_the_shipped_files_encode_them_still_read(tmp_path):
    (tmp_path / "x.csv").write_text("date,A,B\n2020-01-02,,1\n2020-01-03,.,2\n2020-01-06,n.a.,3\n\n")
    d, v = load_series("x", ["A", "B"], data_dir=tmp_path)
    assert len(d) == 3 and np.isnan(v[:, 0]).all() and v[:, 1].tolist() == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------------------------------------ 7. window


def test_cli_history_before_the_data_gives_the_minimum_and_the_data_range(tmp_path, capsys):
    err = one_line_exit_2(["calibrate", "history", "--start", "1970-01-01", "--end", "1980-01-01", "--out",
                           str(tmp_path / "x.toml")], capsys)
    assert "only 0 dates in 1970-01-01 .. 1980-01-01" in err and "need at least 250" in err, err
    assert "the data have every series from 2003-01-02 to 2026-06-24" in err and "--start" in err, err
    assert "need at least 1 " not in err and "need at least 1)" not in err
