"""Loaders for the shipped history CSVs (yields, breakevens, term premium, holdings) into numpy arrays.

Plain `csv` parsing, no pandas. Every file has a first column `date` (ISO `YYYY-MM-DD`) or `month` (`YYYY-MM`,
read as the last day of that month: TIC holdings are month-end). Missing values are empty fields, FRED's `.`
marker or TIC's `n.a.`; all read as NaN. Anything else that is not a finite number, a value outside the plausible
range of its series (`value_bounds`), a row whose number of fields differs from the header's (a truncated file), a
missing column, dates out of order or repeated, or too few rows in the requested window raise one `DataError`
naming the file (and the column, line and value).
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._errors import DataError

DATA_DIR = Path(__file__).resolve().parent / "data"

CMT_FILE = "ust_cmt_yields_daily_fred.csv"
BREAKEVEN_FILE = "us_inflation_breakevens_daily_fred.csv"
TERM_PREMIUM_FILE = "acm_tp10_daily_nyfed.csv"
TIC_FILE = "tic_mfh_selected_countries_monthly_wide.csv"

SHORT_RATE_COLUMN = "DGS3MO"
# Constant-maturity par yields used to fit the curve, with their maturities in years.
PAR_COLUMNS: dict[str, float] = {
    "DGS1": 1.0,
    "DGS2": 2.0,
    "DGS3": 3.0,
    "DGS5": 5.0,
    "DGS7": 7.0,
    "DGS10": 10.0,
    "DGS20": 20.0,
    "DGS30": 30.0,
}
# Series of `aligned_history`: column -> file.
HISTORY_COLUMNS: dict[str, str] = {
    SHORT_RATE_COLUMN: CMT_FILE,
    **{c: CMT_FILE for c in PAR_COLUMNS},
    "T10YIE": BREAKEVEN_FILE,
    "ACMTP10": TERM_PREMIUM_FILE,
}
MIN_HISTORY_ROWS = 250
_MISSING = ("", ".", "n.a.")

# Plausible range of each kind of series, in the file's units. A value outside it is a typo, a unit error (basis
# points or decimals where percent is expected) or a corrupted cell, not a market move: the ranges are wide on
# purpose, several times the history's extremes, so that no real value, however stressed, is refused.
# - Treasury yields (DGS1MO .. DGS30), percent: [-20, 100]. US yields ranged 0 to about 16% since 1962 (the
#   shipped 1990-2026 copy: 0 to 9.2%); the most negative government yields anywhere were about -1%.
# - inflation breakevens (T10YIE, T5YIE, T5YIFR), percent: [-20, 100] (history: -2.2% in December 2008 to 3.6%).
# - term premium (ACMTP10 and the other ACM maturities), percent: [-20, 20] (history: about -1.7% to 5%).
# - TIC holdings (any column of the TIC file), USD billions: [0, 100000]; a holding is not negative, and all
#   foreign holdings together are about 9,000.
# Columns of other names (a user's own file) are only checked to be finite.
_COLUMN_BOUNDS: tuple[tuple[re.Pattern, float, float, str], ...] = (
    (re.compile(r"DGS\d+(MO)?"), -20.0, 100.0, "a Treasury yield in percent"),
    (re.compile(r"T\d+YI(E|FR)"), -20.0, 100.0, "an inflation breakeven in percent"),
    (re.compile(r"ACMTP\d+"), -20.0, 20.0, "a term premium in percent"),
)
_FILE_BOUNDS: dict[str, tuple[float, float, str]] = {TIC_FILE: (0.0, 1e5, "a holding in USD billions")}

DateLike = str | np.datetime64 | _dt.date | None


def _to_day(value: DateLike, what: str) -> np.datetime64 | None:
    if value is None:
        return None
    try:
        return np.datetime64(value, "D")
    except (ValueError, TypeError) as err:
        raise DataError(f"{what} {value!r} is not a date; expected ISO 'YYYY-MM-DD'") from err


def _parse_date(text: str, path: Path, line: int) -> np.datetime64:
    text = text.strip()
    try:
        if len(text) == 7:  # YYYY-MM: month-end
            return (np.datetime64(text, "M") + 1).astype("datetime64[D]") - 1
        if len(text) == 10:
            return np.datetime64(text, "D")
    except ValueError:
        pass
    raise DataError(f"line {line}: date {text!r} is not ISO 'YYYY-MM-DD' or 'YYYY-MM'", file=str(path))


def value_bounds(file: str, column: str) -> tuple[float, float, str] | None:
    """(low, high, what) of the plausible values of a column of a data file (see `_COLUMN_BOUNDS`), or None."""
    for pattern, lo, hi, what in _COLUMN_BOUNDS:
        if pattern.fullmatch(column):
            return lo, hi, what
    return _FILE_BOUNDS.get(Path(file).name)


def _resolve(name: str, data_dir: str | Path | None) -> Path:
    directory = Path(data_dir) if data_dir is not None else DATA_DIR
    file = name if name.endswith(".csv") else name + ".csv"
    path = directory / file
    if not path.is_file():
        have = sorted(p.name for p in directory.glob("*.csv")) if directory.is_dir() else []
        hint = f"; CSV files there: {', '.join(have)}" if have else ("; the folder does not exist"
                                                                    if not directory.is_dir() else "")
        raise DataError(f"data file not found (looked in {directory}){hint}", file=file)
    return path


def load_series(
    name: str,
    columns: str | Sequence[str],
    start: DateLike = None,
    end: DateLike = None,
    data_dir: str | Path | None = None,
    *,
    min_rows: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Read columns of a data CSV between start and end (inclusive).

    Args:
        name: file name in the data folder, with or without `.csv` (e.g. "ust_cmt_yields_daily_fred").
        columns: one column name (values come back 1-d) or a sequence of names (values are `[rows, columns]`).
        start, end: window bounds (ISO strings, `datetime.date` or `numpy.datetime64`); None = open.
        data_dir: folder holding the CSVs; default the package's `data/` folder.
        min_rows: fewest rows the window must keep, else `DataError`.

    Returns:
        dates (`datetime64[D]`, strictly increasing) and values (float64, NaN where missing, in the file's units).
        Rows where every requested column is missing are dropped, as FRED drops holidays.
    """
    single = isinstance(columns, str)
    cols = [columns] if single else list(columns)
    if not cols:
        raise ValueError("columns must name at least one column")
    lo, hi = _to_day(start, "start"), _to_day(end, "end")
    if lo is not None and hi is not None and hi < lo:
        raise DataError(f"window end {hi} is before its start {lo}")
    path = _resolve(name, data_dir)

    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise DataError("file is empty (no header row)", file=str(path))
        header = [h.strip() for h in header]
        if header[0] not in ("date", "month"):
            raise DataError(f"first column is {header[0]!r}; expected 'date' or 'month'", file=str(path))
        idx = []
        for c in cols:
            if c not in header:
                raise DataError(f"column not found; the file has: {', '.join(header[1:])}", file=str(path), key=c)
            idx.append(header.index(c))
        bounds = [value_bounds(path.name, c) for c in cols]
        dates: list[np.datetime64] = []
        rows: list[list[float]] = []
        prev = None
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise DataError(f"line {line}: {len(fields)} field(s) where the header has {len(header)}: the row is "
                                "cut short (a truncated file?) or has extra fields; every row needs one field per "
                                "column (an empty field or '.' for a missing value)", file=str(path))
            day = _parse_date(fields[0], path, line)
            if prev is not None and day <= prev:
                what = "repeated" if day == prev else f"out of order (after {prev})"
                raise DataError(f"line {line}: date {day} is {what}; dates must increase strictly",
                                file=str(path))
            prev = day
            if (lo is not None and day < lo) or (hi is not None and day > hi):
                continue
            vals = []
            for c, i, b in zip(cols, idx, bounds):
                text = fields[i].strip()
                if text in _MISSING:
                    vals.append(np.nan)
                    continue
                try:
                    v = float(text)
                except ValueError:
                    raise DataError(f"line {line}: value {text!r} is not a number (use an empty field or '.' "
                                    "for missing)", file=str(path), key=c) from None
                if not math.isfinite(v):
                    raise DataError(f"line {line} ({day}): value {text!r} is not a finite number; fix it, or leave "
                                    "the field empty (or '.') if the value is missing", file=str(path), key=c)
                if b is not None and not b[0] <= v <= b[1]:
                    raise DataError(f"line {line} ({day}): value {text!r} is outside [{b[0]:g}, {b[1]:g}], the "
                                    f"plausible range of {b[2]}: fix it (a typo, or other units?), or leave the "
                                    "field empty (or '.') if the value is missing", file=str(path), key=c)
                vals.append(v)
            if all(np.isnan(v) for v in vals):
                continue
            dates.append(day)
            rows.append(vals)

    if len(dates) < min_rows:
        window = f"{lo if lo is not None else 'start'} .. {hi if hi is not None else 'end'}"
        raise DataError(f"only {len(dates)} rows with data in {window}; need at least {min_rows}",
                        file=str(path), key=", ".join(cols))
    d = np.asarray(dates, dtype="datetime64[D]")
    v = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(cols))
    return d, (v[:, 0] if single else v)


def aligned_history(
    start: DateLike,
    end: DateLike,
    data_dir: str | Path | None = None,
    *,
    min_rows: int = MIN_HISTORY_ROWS,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Daily history on the dates where every series is present, in decimals (percent / 100).

    Series (dict keys are the source column names): `DGS3MO` (the short rate r), the par yields of
    `PAR_COLUMNS` (DGS1 ... DGS30), `T10YIE` (pi) and `ACMTP10` (tau).

    Raises DataError if a file or column is missing, the dates are malformed, or fewer than `min_rows` common
    dates fall in the window.
    """
    by_file: dict[str, list[str]] = {}
    for col, file in HISTORY_COLUMNS.items():
        by_file.setdefault(file, []).append(col)
    loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for file, cols in by_file.items():
        d, v = load_series(file, cols, start, end, data_dir, min_rows=0)
        for j, c in enumerate(cols):
            ok = ~np.isnan(v[:, j])
            loaded[c] = (d[ok], v[ok, j])
    common = None
    for d, _ in loaded.values():
        common = d if common is None else np.intersect1d(common, d, assume_unique=True)
    if len(common) < min_rows:
        short = min(loaded, key=lambda c: len(loaded[c][0]))
        raise DataError(
            f"only {len(common)} dates in {start} .. {end} have all of {', '.join(HISTORY_COLUMNS)}; need at "
            f"least {min_rows} (shortest series: {short}, {len(loaded[short][0])} rows); "
            f"{_common_range(by_file, data_dir)}: choose a window inside it (--start, --end)",
            file=HISTORY_COLUMNS[short], key=short)
    out = {}
    for c, (d, v) in loaded.items():
        pos = np.searchsorted(d, common)
        out[c] = v[pos] / 100.0
    return common, out


def _common_range(by_file: Mapping[str, Sequence[str]], data_dir) -> str:
    """'the data have every series from FIRST to LAST' over whole files (for a message about a window too short)."""
    first, last = None, None
    for file, cols in by_file.items():
        d, v = load_series(file, cols, None, None, data_dir, min_rows=0)
        for j in range(len(cols)):
            dj = d[~np.isnan(v[:, j])]
            if not len(dj):
                return f"column {cols[j]} of {file} has no data"
            first = dj[0] if first is None else max(first, dj[0])
            last = dj[-1] if last is None else min(last, dj[-1])
    if first > last:
        return "no date has every series in the data"
    return f"the data have every series from {first} to {last}"


def history_columns() -> Mapping[str, str]:
    """Column -> file of the series in `aligned_history` (for citing sources)."""
    return dict(HISTORY_COLUMNS)
