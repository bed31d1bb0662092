"""Scenario files: TOML in, validated frozen parameters out.

A scenario is resolved in three steps: read the TOML (following `extends = "<shipped name or path>"`), apply
`--set dotted.key=value` overrides, then validate every key against `_schema`. The result, `Scenario`, holds
the fully resolved config (a plain nested dict that round-trips through `to_toml`) and `Params`, the frozen
parameter pytree whose numeric leaves are the drivers.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import importlib.resources
import json
import math
import os
import pathlib
import re
import tomllib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import ConfigError, did_you_mean
from ._portfolio import Portfolio, is_portfolio_path, load_portfolio
from ._schema import CORRELATED_SHOCKS, DYNAMIC_TABLES, MAX_INTENSITY, NEW_ENTRY_FIELDS, SECTIONS, Field

DEFAULT_SCENARIO = "april_2025"


def configs_dir() -> pathlib.Path:
    return pathlib.Path(str(importlib.resources.files("jaxstress") / "configs"))


def shipped_scenarios() -> dict[str, str]:
    """Shipped scenario names and their one-line descriptions."""
    out = {}
    for path in sorted(configs_dir().glob("*.toml")):
        try:
            raw = _read_toml(path)
            desc = raw.get("scenario", {}).get("description", "")
        except ConfigError as e:  # pragma: no cover - shipped files are tested
            desc = f"(invalid: {e})"
        out[path.stem] = desc
    return out


def resolve_path(name_or_path: str) -> pathlib.Path:
    """A path to a TOML file, or the name of a shipped scenario."""
    p = pathlib.Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or "/" in name_or_path:
        if not p.is_file():
            what = "a directory, not a file" if p.is_dir() else "no such file"
            raise ConfigError(f"{what}; give a path to a scenario TOML or one of the shipped names: "
                              f"{', '.join(shipped_scenarios())}", file=name_or_path)
        return p
    shipped = configs_dir() / f"{name_or_path}.toml"
    if not shipped.is_file():
        hint = did_you_mean(name_or_path, shipped_scenarios())
        raise ConfigError(f"unknown scenario '{name_or_path}'{hint}; shipped scenarios: "
                          f"{', '.join(shipped_scenarios())}, or give a path to a .toml file")
    return shipped


def _read_toml(path: pathlib.Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", file=str(path)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start}); TOML files must be UTF-8", file=str(path)) from None
    try:
        return tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer literal over Python's 4300-digit limit
        raise ConfigError(f"malformed TOML: {e}", file=str(path)) from None


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_scenario_dict(name_or_path: str, _seen: tuple = ()) -> tuple[dict, str]:
    """The raw dict of a scenario with `extends` resolved (not yet validated), and its file."""
    layers = _read_layers(name_or_path, _seen)
    return _merge_layers(layers), layers[-1][1]


def _read_layers(name_or_path: str, _seen: tuple = ()) -> list[tuple[dict, str, str | None]]:
    """The files of a scenario, base first: (raw dict without `extends`, its path, the `extends` it gives)."""
    path = resolve_path(name_or_path)
    if str(path.resolve()) in _seen:
        raise ConfigError("circular 'extends'", file=str(path), key="extends")
    raw = _read_toml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return [(raw, str(path), None)]
    if not isinstance(parent, str):
        raise ConfigError("expected a string: a shipped scenario name or a path", file=str(path), key="extends")
    target = parent
    if parent.endswith(".toml") and not pathlib.Path(parent).is_absolute():
        target = str(path.parent / parent)
    return _read_layers(target, _seen + (str(path.resolve()),)) + [(raw, str(path), parent)]


def _merge_layers(layers: list[tuple[dict, str, str | None]]) -> dict:
    merged: dict = {}
    for raw, path, parent in layers:
        _check_new_entries(merged, raw, path, parent)
        merged = _merge(merged, raw)
    return merged


# ----------------------------------------------------------------------------------------------------------------
# entries of the named tables ([holders.NAME], [regimes.NAME]): a new one must mean something, a typo is an error

_NOUN = {"regimes": "regime", "holders": "holder"}


def _entry_names(raw: dict, table: str) -> list[str]:
    """The entries of a named table in a raw scenario dict: the regimes of regimes.names, the [holders.*] tables."""
    tab = raw.get(table)
    if not isinstance(tab, dict):
        return []
    if table == "regimes":
        names = tab.get("names")
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
    return [k for k, v in tab.items() if isinstance(v, dict)]


def _closest(name: str, names: list[str], table: str) -> str:
    """' (did you mean 'x'?)', or the list of the entries when none is close."""
    return did_you_mean(name, names) or (f" (its {table}: {', '.join(names)})" if names else f" (it has no {table})")


def _field_hint(table: str, fields) -> str:
    """'holdings = <$bn> (Treasury holdings at t=0)' for the fields a new entry of the table must give."""
    return " and ".join(f"{f} = <{DYNAMIC_TABLES[table][f].unit or 'value'}> ({DYNAMIC_TABLES[table][f].doc})"
                        for f in fields)


def _check_new_entries(base: dict, raw: dict, file: str, parent: str | None) -> None:
    """A table of a file naming an entry its base lacks must give the fields that make a new entry meaningful."""
    for table, required in NEW_ENTRY_FIELDS.items():
        given = raw.get(table)
        if not required or not isinstance(given, dict):
            continue
        have = _entry_names(base, table)
        for name, tab in given.items():
            if not isinstance(tab, dict) or name in have:
                continue
            missing = [f for f in required if f not in tab]
            if not missing:
                continue
            noun = _NOUN[table]
            if parent is None:
                msg = (f"new {noun} '{name}' gives no {' or '.join(missing)}; give {_field_hint(table, missing)}: "
                       f"without it the {noun} is empty")
            else:
                msg = (f"{noun} '{name}' is not in the base scenario '{parent}'{_closest(name, have, table)}; "
                       f"if a new {noun} is meant, give its {_field_hint(table, missing)}")
            raise ConfigError(msg, file=file, key=f"{table}.{name}")


def _entry_override(parts: list) -> tuple[str, str] | None:
    """(table, name) when an override's key names an entry of a named table: holders.NAME..., regimes.NAME..."""
    if len(parts) < 2 or parts[0] not in DYNAMIC_TABLES or not isinstance(parts[1], str):
        return None
    if parts[1] in SECTIONS.get(parts[0], {}):
        return None  # regimes.names, regimes.generator, ...
    return parts[0], parts[1]


def _check_override_entries(raw: dict, parsed: list, before: dict[str, list[str]], scenario: str) -> None:
    """After all overrides: each entry an override created must be meaningful (as in a file), else an error."""
    for label, parts in parsed:
        hit = _entry_override(parts)
        if hit is None or hit[1] in before[hit[0]]:
            continue
        table, name = hit
        noun = _NOUN[table]
        key = _key_str(parts)
        if table == "regimes":
            if name in _entry_names(raw, table):
                continue  # listed in regimes.names by another override: validated as any regime
            raise _override_error(
                label, key, f"no regime '{name}' in regimes.names{_closest(name, before[table], table)}; to add a "
                f"new regime, write a TOML file with extends = \"{scenario}\" that lists it in regimes.names, "
                f"gives regimes.generator a row and a column for it and sets its fields in a [regimes.{name}] table")
        entry = raw.get(table, {}).get(name) if isinstance(raw.get(table), dict) else None
        if not isinstance(entry, dict):
            continue  # not a table: validation says so
        missing = [f for f in NEW_ENTRY_FIELDS[table] if f not in entry]
        if missing:
            sets = " ".join(f"--set {table}.{name}.{f}=<{DYNAMIC_TABLES[table][f].unit or 'value'}>"
                            for f in missing)
            raise _override_error(
                label, key, f"no {noun} '{name}' in the scenario{_closest(name, before[table], table)}; to add a "
                f"new {noun}, give its {' and '.join(missing)} too ({sets}), or write a [{table}.{name}] table "
                f"with {_field_hint(table, missing)} in a TOML file with extends = \"{scenario}\"")


# ----------------------------------------------------------------------------------------------------------------
# --set overrides

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_KEY_RE = re.compile(r"^([A-Za-z_][\w-]*)((?:\[\d+\])*)$")


def parse_key(key: str) -> list[str | int]:
    """'regimes.generator[0][1]' -> ['regimes', 'generator', 0, 1]."""
    parts: list[str | int] = []
    for piece in key.split("."):
        m = _KEY_RE.match(piece)
        if not m:
            raise ConfigError(f"malformed key '{key}': expected dotted names with optional [index], "
                              "e.g. holders.japan.sell_rate or regimes.generator[0][1]", key=key)
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts


def parse_value(text: str, key: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except ValueError:  # TOMLDecodeError, or an integer literal over Python's 4300-digit limit
        if _ISO_DATE.match(text):  # a TOML date literal that is no calendar date, e.g. 2025-02-30
            raise ConfigError(f"'{text}' is not a calendar date: expected an ISO date YYYY-MM-DD such as 2025-04-02",
                              key=key) from None
        # bare words are strings: --set scenario.portfolio=bank_afs
        if re.fullmatch(r"[\w./-]+", text) and not re.fullmatch(r"[-+]?[\d.eE+-]+", text):
            return text
        raise ConfigError(f"cannot parse value '{text}': give a TOML value (number, true/false, "
                          "\"string\", [list])", key=key) from None


def apply_override(raw: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set expects dotted.key=value, got '{assignment}'")
    key, text = assignment.split("=", 1)
    key = key.strip()
    parts = parse_key(key)
    value = parse_value(text.strip(), key)
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"index {part} out of range", key=key)
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"'{parts[i - 1]}' is a value, not a table: cannot set a key inside it", key=key)
        if part not in node:
            if isinstance(nxt, int):
                raise ConfigError("no such list to index", key=key)
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"index {last} out of range", key=key)
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError("cannot set a key inside a non-table value", key=key)
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            # an inline table sets the keys it gives and leaves the others, as a file that extends another does
            # (it used to replace the table: --set holders.japan={sell_rate=0.1} reset Japan's holdings to 0)
            node[last] = _merge(node[last], value)
        else:
            node[last] = value


# ----------------------------------------------------------------------------------------------------------------
# validation


def _unknown(key: str, choices, file):
    hint = did_you_mean(key.split(".")[-1], choices, "; did you mean '{}'?") or f"; known keys: {', '.join(choices)}"
    return ConfigError(f"unknown key{hint}", file=file, key=key)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Every number must fit the default float32 simulation: larger ones become inf when the parameters are cast.
_MAX_ABS = float(np.finfo(np.float32).max)


def _finite(v) -> bool:
    """Whether a TOML number is finite and fits float32 (huge integers do not raise OverflowError here)."""
    try:
        return math.isfinite(v) and abs(float(v)) <= _MAX_ABS
    except OverflowError:
        return False


def _show(v) -> str:
    """A short repr of a bad value for an error message (never raises on integers over 4300 digits)."""
    try:
        s = repr(v)
    except ValueError:  # an integer over 4300 digits, maybe inside a list
        return f"an integer of about {v.bit_length() * 0.30103:.0f} digits" if isinstance(v, int) else "a huge value"
    return s if len(s) <= 80 else s[:76] + " ..."


def _one_line(s: str) -> str:
    """Control characters and line separators (e.g. from quoted TOML keys) escaped, so a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def _check(field: Field, value, key: str, file):
    def bounds(x, k=key):
        if not _finite(x):
            raise ConfigError(f"expected a finite number of magnitude at most {_MAX_ABS:.4g}, got {_show(x)}",
                              file=file, key=k)
        lo_bad = field.lo is not None and (x <= field.lo if field.lo_open else x < field.lo)
        if lo_bad or (field.hi is not None and x > field.hi):
            lo = "-inf" if field.lo is None else field.lo
            hi = "inf" if field.hi is None else field.hi
            br = "(" if field.lo_open else "["
            unit = f" ({field.unit})" if field.unit else ""
            raise ConfigError(f"value {x} out of range: expected a number in {br}{lo}, {hi}]{unit}", file=file, key=k)

    kind = field.kind
    if kind == "str" and field.date:
        return _check_date(value, key, file)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {_show(value)}", file=file, key=key)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {_show(value)}", file=file, key=key)
        return value
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"expected an integer, got {_show(value)}", file=file, key=key)
        bounds(value)
        return value
    if kind == "float":
        if not _is_num(value):
            raise ConfigError(f"expected a number, got {_show(value)}", file=file, key=key)
        bounds(value)
        return float(value)
    if kind in ("floats", "ints", "strs"):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"expected a non-empty list, got {_show(value)}", file=file, key=key)
        out = []
        for i, v in enumerate(value):
            sub = Field({"floats": "float", "ints": "int", "strs": "str"}[kind], field.unit, lo=field.lo, hi=field.hi,
                        lo_open=field.lo_open)
            out.append(_check(sub, v, f"{key}[{i}]", file))
        return out
    if kind == "matrix":
        if (not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value)
                or len({len(r) for r in value}) != 1):
            raise ConfigError("expected a list of equal-length lists of numbers (a matrix)", file=file, key=key)
        for i, row in enumerate(value):
            for j, v in enumerate(row):
                if not _is_num(v) or not _finite(v):
                    raise ConfigError(f"expected a finite number of magnitude at most {_MAX_ABS:.4g}, got {_show(v)}",
                                      file=file, key=f"{key}[{i}][{j}]")
        return [[float(v) for v in row] for row in value]
    raise AssertionError(kind)  # pragma: no cover


def _check_date(value, key: str, file) -> str:
    """A calendar date: a TOML date (normalized to its ISO string) or a "YYYY-MM-DD" string ("" for none)."""
    expected = "expected an ISO date YYYY-MM-DD such as 2025-04-02 (a TOML date or a string; \"\" for none)"
    if isinstance(value, datetime.datetime):  # a TOML date-time: a datetime.date too, so tested first
        raise ConfigError(f"{expected}, got {value.isoformat()}: give the date without a time of day", file=file,
                          key=key)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str):
        if value == "":
            return value
        if _ISO_DATE.match(value):
            try:
                return datetime.date.fromisoformat(value).isoformat()
            except ValueError:
                raise ConfigError(f"{_show(value)} is not a calendar date: {expected}", file=file, key=key) from None
    raise ConfigError(f"{expected}, got {_show(value)}", file=file, key=key)


def validate(raw: dict, file: str | None = None, *, _edited: frozenset = frozenset()) -> dict:
    """Check a raw scenario dict against the schema; return the resolved dict with defaults filled in.

    `_edited`: the keys set element by element by `--set` (e.g. 'regimes.calm.correlation[0][1]'), so that an
    error can say which other element to set.
    """
    if not isinstance(raw, dict):
        raise ConfigError("expected a TOML table", file=file)
    known = set(SECTIONS) | set(DYNAMIC_TABLES) | {"extends"}
    for sec in raw:
        if sec not in known:
            raise _unknown(sec, sorted(known - {"extends"}), file)
    out: dict = {}
    problems: list[ConfigError] = []  # independent problems of single keys are all collected, then reported
    for sec, fields in SECTIONS.items():
        given = raw.get(sec)
        if given is None:
            problems.append(ConfigError(f"missing section [{sec}]; add it or `extends = \"baseline\"`", file=file,
                                        key=sec))
            continue
        if not isinstance(given, dict):
            problems.append(ConfigError("expected a table", file=file, key=sec))
            continue
        dyn = DYNAMIC_TABLES.get(sec, {})
        out[sec] = {}
        for key, val in given.items():
            try:
                if key in fields:
                    out[sec][key] = _check(fields[key], val, f"{sec}.{key}", file)
                elif dyn and isinstance(val, dict):
                    continue  # a named table, checked below
                else:
                    raise _unknown(f"{sec}.{key}", list(fields), file)
            except ConfigError as e:
                problems.append(e)
                out[sec][key] = None
        for key in fields:
            if key not in out[sec]:
                problems.append(ConfigError(f"missing key; expected {fields[key].doc or fields[key].kind}",
                                            file=file, key=f"{sec}.{key}"))
    holders_raw = raw.get("holders", {})
    if isinstance(holders_raw, dict):
        for name, tab in holders_raw.items():
            if isinstance(tab, dict):
                try:
                    _named_table(tab, DYNAMIC_TABLES["holders"], f"holders.{name}", file)
                except ConfigError as e:
                    problems.append(e)
    if problems:
        raise ConfigErrors(problems)
    # named tables
    names = out["regimes"]["names"]
    if len(set(names)) != len(names):
        raise ConfigError("regime names must be unique", file=file, key="regimes.names")
    clash = sorted(set(names) & set(SECTIONS["regimes"]))
    if clash:
        raise ConfigError(f"'{clash[0]}' cannot name a regime: it is a key of [regimes] "
                          f"({', '.join(SECTIONS['regimes'])})", file=file, key="regimes.names")
    reg_tables = {k: v for k, v in raw["regimes"].items() if isinstance(v, dict)}
    for name in reg_tables:
        if name not in names:
            hint = did_you_mean(name, names)  # the names are in the message already
            raise ConfigError(f"table [regimes.{name}] is not listed in regimes.names {names}{hint}; to add a "
                              "regime, list it in regimes.names and give regimes.generator a row and a column for it",
                              file=file, key=f"regimes.{name}")
    if out["regimes"]["initial"] not in names:
        raise ConfigError(f"'{out['regimes']['initial']}' is not one of regimes.names {names}", file=file,
                          key="regimes.initial")
    n = len(CORRELATED_SHOCKS)
    for name in names:
        out["regimes"][name] = _named_table(reg_tables.get(name, {}), DYNAMIC_TABLES["regimes"], f"regimes.{name}",
                                            file)
        corr = out["regimes"][name]["correlation"]
        if corr is None:
            out["regimes"][name]["correlation"] = np.eye(n).tolist()
        else:
            _check_correlation(corr, f"regimes.{name}.correlation", file, _edited)
    holders = raw.get("holders", {})
    if not isinstance(holders, dict):
        raise ConfigError("expected a table of holders, e.g. [holders.japan]", file=file, key="holders")
    out["holders"] = {}
    for name, tab in holders.items():
        if not isinstance(tab, dict):
            raise ConfigError("expected a table like [holders.japan] with holdings = ...", file=file,
                              key=f"holders.{name}")
        out["holders"][name] = _named_table(tab, DYNAMIC_TABLES["holders"], f"holders.{name}", file)
    _check_generator(out["regimes"]["generator"], len(names), file)
    debt = out["debt"]
    if not (len(debt["amounts"]) == len(debt["maturities"]) == len(debt["coupons"])):
        raise ConfigError("debt.amounts, debt.maturities and debt.coupons must have the same length", file=file,
                          key="debt")
    if sum(debt["amounts"]) <= 0:
        raise ConfigError("the debt buckets must hold a positive total", file=file, key="debt.amounts")
    sim = out["simulation"]
    if sim["horizon"] * sim["steps_per_year"] < 0.5:  # it would run one whole step, over twice what was asked
        raise ConfigError(f"a horizon of {sim['horizon']:g} years is shorter than half a step at steps_per_year "
                          f"{sim['steps_per_year']}; lengthen it to at least {0.5 / sim['steps_per_year']:g} years or "
                          f"raise simulation.steps_per_year", file=file, key="simulation.horizon")
    # reporting dates past the horizon: see _check_report_days (dropped when the horizon was shortened later)
    mats = out["curve"]["maturities"]
    if sorted(mats) != mats or len(set(mats)) != len(mats):
        raise ConfigError("maturities must be strictly increasing", file=file, key="curve.maturities")
    missing = [m for m in (2.0, 10.0, 30.0) if m not in mats]
    if missing:
        raise ConfigError(f"the maturity grid must contain 2, 10 and 30 (the 10y drives the dynamics; the 2y, 10y and "
                          f"30y changes are metrics); add {', '.join(f'{m:g}' for m in missing)}", file=file,
                          key="curve.maturities")
    if not isinstance(raw["scenario"].get("portfolio", ""), str):
        raise ConfigError("expected a portfolio name or path", file=file, key="scenario.portfolio")
    return out


class ConfigErrors(ConfigError):
    """Several independent problems: the message is the first (one line); `problems` holds them all."""

    def __init__(self, problems: list[ConfigError]):
        self.problems = problems
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''}: " \
               "`jaxstress validate` lists them)" if len(problems) > 1 else ""
        ValueError.__init__(self, str(first) + more)
        self.file, self.key = first.file, first.key


def _named_table(tab: dict, fields: dict[str, Field], prefix: str, file) -> dict:
    out = {}
    for key, val in tab.items():
        if key not in fields:
            raise _unknown(f"{prefix}.{key}", list(fields), file)
        out[key] = _check(fields[key], val, f"{prefix}.{key}", file)
    for key, f in fields.items():
        out.setdefault(key, f.default)
    return out


def _check_generator(q: list, n: int, file):
    a = np.asarray(q)
    if a.shape != (n, n):
        raise ConfigError(f"expected a {n}x{n} matrix (one row and column per regime), got shape {a.shape}",
                          file=file, key="regimes.generator")
    for i in range(n):
        for j in range(n):
            if i != j and a[i, j] < 0:
                raise ConfigError("off-diagonal intensities must be >= 0", file=file,
                                  key=f"regimes.generator[{i}][{j}]")
            if i != j and a[i, j] > MAX_INTENSITY:  # past it expm(Q dt) overflows
                raise ConfigError(f"off-diagonal intensities must be <= {MAX_INTENSITY:g} per year (about 40 switches "
                                  f"a business day), got {a[i, j]:.6g}", file=file, key=f"regimes.generator[{i}][{j}]")
        if abs(a[i].sum()) > 1e-6 * max(1.0, np.abs(a[i]).sum()):
            raise ConfigError(f"row {i} sums to {a[i].sum():.6g}; each row of a generator must sum to zero "
                              "(diagonal = minus the sum of the off-diagonal intensities)", file=file,
                              key=f"regimes.generator[{i}]")


def _check_correlation(c: list, key: str, file, edited=frozenset()):
    a = np.asarray(c)
    n = len(CORRELATED_SHOCKS)
    if a.shape != (n, n):
        raise ConfigError(f"expected a {n}x{n} matrix over ({', '.join(CORRELATED_SHOCKS)}), got shape {a.shape}",
                          file=file, key=key)
    if not np.allclose(a, a.T, atol=1e-12):
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if not np.isclose(a[i, j], a[j, i], atol=1e-12)]
        ed = [(i, j) for i, j in pairs if f"{key}[{i}][{j}]" in edited or f"{key}[{j}][{i}]" in edited]
        i, j = (ed or pairs)[0]
        if f"{key}[{j}][{i}]" in edited and f"{key}[{i}][{j}]" not in edited:
            i, j = j, i  # the element set is [j][i]: its mirror [i][j] is the one to set
        vij, vji = float(a[i, j]), float(a[j, i])
        both = f"{key}[{i}][{j}]" in edited and f"{key}[{j}][{i}]" in edited
        fix = ("the two --set give them different values; make them equal" if both
               else f"set the mirrored element too: --set {key}[{j}][{i}]={vij!r}" if f"{key}[{i}][{j}]" in edited
               else f"make them equal, e.g. {key}[{j}][{i}] = {vij!r}")
        raise ConfigError(f"correlation matrix must be symmetric: [{i}][{j}] is {vij!r} but [{j}][{i}] is {vji!r}; "
                          f"{fix}", file=file, key=key)
    if not np.allclose(np.diag(a), 1.0, atol=1e-12):
        raise ConfigError("correlation matrix must have ones on the diagonal", file=file, key=key)
    if np.linalg.eigvalsh(a).min() <= 1e-10:
        raise ConfigError("correlation matrix is not positive definite; reduce the off-diagonal entries",
                          file=file, key=key)


def n_steps(resolved: dict) -> int:
    sim = resolved["simulation"]
    return max(1, int(round(sim["horizon"] * sim["steps_per_year"])))


# ----------------------------------------------------------------------------------------------------------------
# parameters


class Params(eqx.Module):
    """Frozen parameters of one scenario. `values` maps dotted config keys to array leaves (the drivers)."""

    values: dict[str, jax.Array]
    portfolio: Portfolio
    regime_names: tuple[str, ...] = eqx.field(static=True)
    holder_names: tuple[str, ...] = eqx.field(static=True)
    maturities: tuple[float, ...] = eqx.field(static=True)
    debt_maturities: tuple[float, ...] = eqx.field(static=True)
    steps_per_year: int = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    initial_regime: int = eqx.field(static=True)

    def __getitem__(self, key: str) -> jax.Array:
        return self.values[key]

    @property
    def dt(self) -> float:
        return 1.0 / self.steps_per_year


def _leaves(resolved: dict) -> dict[str, np.ndarray]:
    out = {}
    for sec, fields in SECTIONS.items():
        for key, f in fields.items():
            v = resolved[sec][key]
            if f.kind == "bool":
                out[f"{sec}.{key}"] = np.asarray(float(v))
            elif f.kind in ("float", "floats", "matrix") and not f.static:
                out[f"{sec}.{key}"] = np.asarray(v, dtype=np.float64)
    for table, fields in DYNAMIC_TABLES.items():
        for name, tab in resolved[table].items():
            if not isinstance(tab, dict):
                continue
            for key, f in fields.items():
                out[f"{table}.{name}.{key}"] = np.asarray(tab[key], dtype=np.float64)
    return out


def make_params(resolved: dict, portfolio: Portfolio, dtype=None) -> Params:
    dtype = dtype or jnp.result_type(float)
    values = {k: jnp.asarray(v, dtype=dtype) for k, v in _leaves(resolved).items()}
    portfolio = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=dtype), portfolio)
    names = tuple(resolved["regimes"]["names"])
    return Params(
        values=values,
        portfolio=portfolio,
        regime_names=names,
        holder_names=tuple(resolved["holders"]),
        maturities=tuple(resolved["curve"]["maturities"]),
        debt_maturities=tuple(resolved["debt"]["maturities"]),
        steps_per_year=resolved["simulation"]["steps_per_year"],
        n_steps=n_steps(resolved),
        initial_regime=names.index(resolved["regimes"]["initial"]),
    )


class Scenario:
    """A validated scenario: the resolved config, its portfolio and its parameters."""

    def __init__(self, resolved: dict, file: str | None, portfolio: Portfolio, portfolio_file: str):
        self.config = resolved
        self.file = file
        self.portfolio = portfolio
        self.portfolio_file = portfolio_file

    @property
    def name(self) -> str:
        return self.config["scenario"]["name"]

    def params(self, dtype=None) -> Params:
        """The parameters as arrays of `dtype`: None (JAX's default float: float32, or float64 with x64 enabled),
        float32 or float64."""
        if dtype is not None and np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be None, float32 or float64, got {np.dtype(dtype)}")
        x64 = jax.dtypes.canonicalize_dtype(np.float64) == np.float64  # (jax.enable_x64 scopes count)
        if dtype is not None and np.dtype(dtype) == np.float64 and not x64:  # JAX would make float32 without a word
            raise ValueError("dtype float64 needs JAX's 64-bit mode: jax.config.update('jax_enable_x64', True) "
                             "before any computation")
        return make_params(self.config, self.portfolio, dtype)

    def hash(self) -> str:
        """A digest of the resolved config and the portfolio's numbers; a portfolio file counts by its name and
        contents, not by where it lies (processes of one `--distributed` job may resolve it to different paths)."""
        config = self.config
        pname = config["scenario"]["portfolio"]
        if is_portfolio_path(pname):
            config = {**config, "scenario": {**config["scenario"], "portfolio": pathlib.Path(pname).name}}
        blob = json.dumps({"config": config, "portfolio": jax.tree_util.tree_map(
            lambda x: np.asarray(x).tolist(), eqx.filter(self.portfolio, eqx.is_array)).__repr__()},
            sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        return to_toml(self.config)


def load_scenario(name_or_path: str = DEFAULT_SCENARIO, overrides=(), portfolio: str | None = None,
                  horizon: float | None = None, steps_per_year: int | None = None) -> Scenario:
    """Read, override and validate a scenario; load its portfolio.

    name_or_path: a shipped scenario's name (`shipped_scenarios()`) or a TOML file's path.
    overrides: `--set` assignments, a sequence of "dotted.key=value" strings applied in order (TOML values:
        "holders.japan.sell_rate=0.2", "regimes.generator[1][3]=30", 'scenario.name="x"').
    portfolio: a shipped portfolio's name or a portfolio file's path, in place of the scenario's.
    horizon, steps_per_year: in place of simulation.horizon (years) and simulation.steps_per_year.
    Returns a validated Scenario (`.config`: the resolved dict; `.params()`: the differentiable parameters).
    Raises ConfigError naming the file or override, the key, and what is expected."""
    if isinstance(overrides, str | dict):
        raise ConfigError(f"expected a sequence of \"dotted.key=value\" strings, got a "
                          f"{type(overrides).__name__}", key="overrides")
    name_or_path = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else name_or_path
    portfolio = os.fspath(portfolio) if isinstance(portfolio, os.PathLike) else portfolio
    for what, value in (("name_or_path", name_or_path), ("portfolio", portfolio)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"expected a shipped name or a path, got {type(value).__name__} {value!r}", key=what)
    # numpy numbers are taken as Python's
    horizon = float(horizon) if isinstance(horizon, np.integer | np.floating) else horizon
    steps_per_year = int(steps_per_year) if isinstance(steps_per_year, np.integer) else steps_per_year
    try:
        return _load_scenario(name_or_path, overrides, portfolio, horizon, steps_per_year)
    except ConfigError as e:  # names and keys come from the user: keep each message on one line
        if str(e).isprintable():
            raise
        raise _escaped(e) from None


def _escaped(e: ConfigError) -> ConfigError:
    if isinstance(e, ConfigErrors):
        return ConfigErrors([_escaped(p) for p in e.problems])
    err = ConfigError.__new__(type(e))
    ValueError.__init__(err, _one_line(str(e)))
    err.file, err.key = e.file, e.key
    return err


def _key_str(parts: list) -> str:
    """['regimes', 'generator', 0, 1] -> 'regimes.generator[0][1]' (the inverse of parse_key)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _override_error(label: str, key: str | None, message: str) -> ConfigError:
    """An error caused by a command-line override: it names the override ('--set k=v: key 'k': ...'), no file."""
    err = ConfigError.__new__(ConfigError)
    ValueError.__init__(err, f"{label}: " + (f"key '{key}': " if key else "") + message)
    err.file, err.key = None, key
    return err


def _bare(e: ConfigError) -> str:
    """The message of an error without its 'file, key ...: ' prefix."""
    prefix, text = str(ConfigError("", file=e.file, key=e.key)), str(e)
    return text[len(prefix):] if text.startswith(prefix) else text


def _covers(parts: list, where: list) -> bool:
    """Whether the key `parts` is `where` or holds it (an override of `parts` sets `where`)."""
    return where[:len(parts)] == parts


def _attribute(e: ConfigError, parsed: list, file_ok: bool) -> ConfigError:
    """An error about a key that an override set (or a key inside a table it set) names the override. An error
    about a table or matrix of which an override set one element (a row sum, a symmetry) names it only where the
    file alone has no error (`file_ok`): else the problem may be the file's."""
    if isinstance(e, ConfigErrors):
        return ConfigErrors([_attribute(p, parsed, file_ok) for p in e.problems])
    if e.key is None:
        return e
    try:
        where = parse_key(e.key)
    except ConfigError:  # a quoted TOML key no override can name
        return e
    for label, parts in reversed(parsed):  # the last override of a key is the one in effect
        if _covers(parts, where) or (file_ok and _covers(where, parts)):
            return _override_error(label, e.key, _bare(e))
    return e


def _sets(parts: list, key: str) -> bool:
    """Whether an override of `parts` sets (part of) the dotted key `key`."""
    k = key.split(".")
    return _covers(parts, k) or _covers(k, parts)


def _check_report_days(resolved: dict, layers: list, parsed: list, file) -> None:
    """A reporting day past the horizon is an error where it was written against that horizon.

    Days written for a longer horizon that was shortened later (by --horizon, --steps-per-year, --set
    simulation.horizon, or a file extending the one that gave the days) are dropped, here from the resolved config,
    the horizon itself is always reported: so a scenario's reporting dates need not be rewritten to run it over a
    shorter horizon.
    """
    steps = n_steps(resolved)
    sim = resolved["simulation"]
    late = [d for d in sim["report_days"] if d > steps]
    if not late:
        return
    key = "simulation.report_days"
    days_ov = [parts for _, parts in parsed if _sets(parts, key)]
    span_ov = [parts for _, parts in parsed
               if _sets(parts, "simulation.horizon") or _sets(parts, "simulation.steps_per_year")]

    def last_layer(field):
        return max((i for i, (raw, _, _) in enumerate(layers)
                    if isinstance(raw.get("simulation"), dict) and field in raw["simulation"]), default=-1)

    def message(bad):
        days = f"day{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} {'are' if len(bad) > 1 else 'is'}"
        return (f"{days} past the horizon of {steps} steps (simulation.horizon {sim['horizon']:g} years x "
                f"steps_per_year {sim['steps_per_year']}); give reporting days in [0, {steps}] (the horizon is always "
                "reported) or lengthen simulation.horizon")

    # days given on the command line are checked against the final horizon (_attribute names the --set)
    if any(len(p) <= 2 for p in days_ov):
        raise ConfigError(message(late), file=file, key=key)
    given = sorted({p[2] for p in days_ov if isinstance(p[2], int)})  # --set simulation.report_days[i]=...
    bad = [sim["report_days"][i] for i in given if i < len(sim["report_days"]) and sim["report_days"][i] > steps]
    if bad:
        raise ConfigError(message(bad), file=file, key=f"{key}[{given[0]}]" if len(given) == 1 else key)
    at = last_layer("report_days")
    if not span_ov and at >= max(last_layer("horizon"), last_layer("steps_per_year")):
        raise ConfigError(message(late), file=layers[at][1] if at >= 0 else file, key=key)
    # the horizon was shortened after the days were written: drop the days past it from the resolved config too,
    # so that it says what is reported and the scenario.toml a run writes reloads
    sim["report_days"] = [d for d in sim["report_days"] if d <= steps] or [0]


def _rebalance_generator(raw: dict, keys: list[list]) -> None:
    """After `--set regimes.generator[i][j]=x` (i != j), the diagonal [i][i] follows its row (rows of a generator
    sum to zero, as everywhere the diagonal is derived: sensitivities, reverse stress tests), unless a later
    override sets that diagonal, the row or the whole matrix: the last override touching a row decides."""
    gen = raw.get("regimes", {}).get("generator") if isinstance(raw.get("regimes"), dict) else None
    if not isinstance(gen, list):
        return
    last: dict[int, str] = {}  # row -> "element" (an off-diagonal entry) or "given" (its diagonal, itself, all)
    for k in keys:
        if k[:2] != ["regimes", "generator"]:
            continue
        idx = k[2:]
        if not idx:
            last = {i: "given" for i in range(len(gen))}
        elif isinstance(idx[0], int):
            last[idx[0]] = "element" if len(idx) == 2 and idx[0] != idx[1] else "given"
    for i, how in last.items():
        row = gen[i] if how == "element" and 0 <= i < len(gen) else None
        if isinstance(row, list) and i < len(row) and all(_is_num(v) for v in row):
            total = sum(float(v) for j, v in enumerate(row) if j != i)
            if _finite(total):  # else the entry set is refused as it is, by name
                row[i] = -total


def _load_scenario(name_or_path, overrides, portfolio, horizon, steps_per_year) -> Scenario:
    layers = _read_layers(name_or_path)
    raw, file = _merge_layers(layers), layers[-1][1]
    before = {table: _entry_names(raw, table) for table in DYNAMIC_TABLES}
    parsed: list[tuple[str, list]] = []  # (how to name it in an error, its key's parts), in order
    for ov in overrides:
        try:
            apply_override(raw, ov)
        except ConfigError as e:
            raise ConfigError(f"--set {ov}: {e}") from None
        if "extends" in raw:  # resolved when the file was read: an override of it would be silently ignored
            raise ConfigError(f"--set {ov}: 'extends' cannot be overridden; give the scenario to extend as the "
                              "file, or write a TOML file with extends = ...", key="extends")
        parsed.append((f"--set {ov}", parse_key(ov.split("=", 1)[0].strip())))
    _check_override_entries(raw, parsed, before, name_or_path)
    _rebalance_generator(raw, [parts for _, parts in parsed])
    if horizon is not None:
        raw.setdefault("simulation", {})["horizon"] = horizon
        parsed.append((f"--horizon {horizon}", ["simulation", "horizon"]))
    if steps_per_year is not None:
        raw.setdefault("simulation", {})["steps_per_year"] = steps_per_year
        parsed.append((f"--steps-per-year {steps_per_year}", ["simulation", "steps_per_year"]))
    if portfolio is not None:
        raw.setdefault("scenario", {})["portfolio"] = portfolio
        parsed.append((f"--portfolio {portfolio}", ["scenario", "portfolio"]))
    edited = frozenset(_key_str(parts) for _, parts in parsed)
    try:
        resolved = validate(raw, file, _edited=edited)
        _check_report_days(resolved, layers, parsed, file)
    except ConfigError as e:
        try:  # the file alone (its layers merged afresh: _merge copies, so the overrides left them as read)
            _check_report_days(validate(_merge_layers(layers), file), layers, [], file)
            file_ok = True
        except ConfigError:
            file_ok = False
        raise _attribute(e, parsed, file_ok) from None
    pname = resolved["scenario"]["portfolio"]
    if is_portfolio_path(pname) and not pathlib.Path(pname).is_absolute():
        # a path given on the command line is relative to the working directory, one in a file to that file
        on_cli = any(_sets(parts, "scenario.portfolio") for _, parts in parsed)
        cand = (pathlib.Path(file).parent if file and not on_cli else pathlib.Path.cwd()) / pname
        if cand.is_file():
            pname = str(cand.resolve())
            resolved["scenario"]["portfolio"] = pname  # so the resolved config (scenario.toml) reloads from anywhere
    port = load_portfolio(pname)
    return Scenario(resolved, file, port, pname)


# ----------------------------------------------------------------------------------------------------------------
# TOML writer (the resolved config round-trips: load(to_toml(c)) == c)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, datetime.date):  # a TOML date given to --set (scenario.start_date), written as the string
        return _toml_string(v.isoformat())  # that validation normalizes it to
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    raise TypeError(type(v))


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_string(v: str) -> str:
    out = []
    for ch in v:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(k: str) -> str:
    return k if _BARE.match(k) else _toml_string(k)


def to_toml(d: dict, prefix: str = "") -> str:
    lines = []
    scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in d.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"[{prefix}]")
    for k, v in scalars.items():
        if v is not None:
            lines.append(f"{_toml_key(k)} = {_fmt(v)}")
    if scalars:
        lines.append("")
    for k, v in tables.items():
        lines.append(to_toml(v, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)))
    return "\n".join(lines)
