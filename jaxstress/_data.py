"""Loaders for the shipped history CSVs (yields, breakevens, term premium, holdings) into numpy arrays.

Plain `csv` parsing, no pandas. Every file has a first column `date` (ISO `YYYY-MM-DD`) or `month` (`YYYY-MM`,
read as the last day of that month: TIC holdings are month-end). Missing values are empty fields or FRED's `.`
marker; both read as NaN. Anything else that is not a number, a missing column, dates out of order or repeated,
or too few rows in the requested window raise one `DataError` naming the file (and the column or line).
"""

from __future__ import annotations

import csv
import datetime as _dt
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
_MISSING = ("", ".")

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
        dates: list[np.datetime64] = []
        rows: list[list[float]] = []
        prev = None
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            day = _parse_date(fields[0], path, line)
            if prev is not None and day <= prev:
                what = "repeated" if day == prev else f"out of order (after {prev})"
                raise DataError(f"line {line}: date {day} is {what}; dates must increase strictly",
                                file=str(path))
            prev = day
            if (lo is not None and day < lo) or (hi is not None and day > hi):
                continue
            vals = []
            for c, i in zip(cols, idx):
                text = fields[i].strip() if i < len(fields) else ""
                if text in _MISSING:
                    vals.append(np.nan)
                    continue
                try:
                    vals.append(float(text))
                except ValueError:
                    raise DataError(f"line {line}: value {text!r} is not a number (use an empty field or '.' "
                                    "for missing)", file=str(path), key=c) from None
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
        d, v = load_series(file, cols, start, end, data_dir, min_rows=1)
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
            f"least {min_rows} (shortest series: {short}, {len(loaded[short][0])} rows)",
            file=HISTORY_COLUMNS[short], key=short)
    out = {}
    for c, (d, v) in loaded.items():
        pos = np.searchsorted(d, common)
        out[c] = v[pos] / 100.0
    return common, out


def history_columns() -> Mapping[str, str]:
    """Column -> file of the series in `aligned_history` (for citing sources)."""
    return dict(HISTORY_COLUMNS)
