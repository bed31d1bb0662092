"""Run outputs: summary.json, quantiles.csv, paths.npz, written atomically.

Everything goes to a fresh temporary directory beside the target, which is renamed into place at the end; an
existing directory of the same name is replaced only then, so an interrupted or failed run never leaves a
half-written output and never destroys an earlier one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

import jax
import numpy as np

from ._curve import zero_yields
from ._errors import ConfigError
from ._metrics import QUANTILES, summarize, unit_of
from ._portfolio import risk_report
from ._simulate import PERCENT, SimulationResult

# every name that `run`, `sensitivities` and `reverse` write into their output directory, and `compare`'s chart
# (which may be written into a run's directory); an existing directory that holds anything else is not replaced
# (`check_output`). The charts are `_plots.CHARTS`, written out here (importing `_plots` would import matplotlib);
# tests check that the outputs hold no other names
OUTPUT_NAMES = frozenset({
    "summary.json", "quantiles.csv", "paths.npz", "scenario.toml", "report.html",
    "fan_10y_30y.png", "curve_horizon.png", "regimes.png", "flows.png", "loss_hist.png", "interest_bill.png",
    "sensitivities.json", "sensitivities.png", "reverse.json", "compare.png",
})


def _check_replaceable(target: pathlib.Path, option: str) -> None:
    """An existing output directory is replaced by the new one: refuse, before any work, one that holds files
    jaxstress did not write (a user's folder given as --out by mistake), and the current directory or one that
    holds it (which cannot be renamed away)."""
    here = pathlib.Path.cwd().resolve()
    full = target.resolve()
    if full == here or full in here.parents:
        raise ConfigError(f"the output directory is the current directory or holds it, and an output directory is "
                          f"replaced as a whole: choose a new directory for {option}", file=str(target))
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in target.iterdir() if p.name not in OUTPUT_NAMES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"the output directory exists and holds files that jaxstress did not write ({shown}); "
                          f"it would be replaced as a whole: choose a new or empty directory for {option}, or "
                          "move those files away", file=str(target))


def check_output(target: str | os.PathLike, kind: str = "dir", option: str = "--out") -> pathlib.Path:
    """Check, before any work, that `target` (an output directory, `kind="dir"`, or a file, `kind="file"`) can be
    written: it is not a file where a directory is meant (or the reverse), an existing directory holds only
    jaxstress's outputs (it is replaced) and is not the current directory, and the nearest existing ancestor is a
    directory in which a file can be created (probed with a temporary directory, removed at once). Creates
    nothing; raises one ConfigError naming the path and `option` otherwise, so that a long run does not fail
    only when it writes its results."""
    target = pathlib.Path(target)
    ancestor = target.parent.absolute()
    try:  # stat raises where a parent cannot be searched (PermissionError)
        if kind == "dir" and target.exists() and not target.is_dir():
            raise ConfigError(f"the output path is a file, not a directory: choose another {option}",
                              file=str(target))
        if kind == "dir" and target.is_dir():
            _check_replaceable(target, option)
        if kind == "file" and target.is_dir():
            raise ConfigError(f"the output path is a directory, not a file: choose another {option}",
                              file=str(target))
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"cannot create the output: {ancestor} is a file, not a directory; choose another "
                              f"{option}", file=str(target))
        os.rmdir(tempfile.mkdtemp(prefix=".jaxstress-probe-", dir=ancestor))
    except OSError as e:
        raise ConfigError(f"cannot write in {ancestor} ({e.strerror}): choose another {option}",
                          file=str(target)) from None
    return target


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temporary directory; on success it replaces `target`, on failure it is removed."""
    target = check_output(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise ConfigError(f"cannot create the output directory ({e.strerror}): choose another --out",
                          file=str(target)) from None
    tmp.chmod(0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `target`; on success it replaces `target` (with the umask's permissions),
    on failure it is removed, so `target` is never half-written."""
    target = pathlib.Path(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=suffix)
    except OSError as e:
        raise ConfigError(f"cannot write the output file ({e.strerror}): choose another path",
                          file=str(target)) from None
    os.close(fd)
    tmp = pathlib.Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def initial_curve(res: SimulationResult) -> dict[str, float]:
    v = res.params.values
    mats = np.asarray(res.params.maturities)
    y = zero_yields(mats, v["initial.r"], v["initial.pi"], v["initial.tau"], v["initial.r_star"], v["initial.p"],
                    v["curve.k"], v["curve.kc"], v["curve.mu"])
    return {f"{m:g}": round(float(x) * 100, 6) for m, x in zip(mats, np.asarray(y))}


def portfolio_risk(res: SimulationResult) -> dict:
    v = res.params.values

    def zero_fn0(m):
        return zero_yields(m, v["initial.r"], v["initial.pi"], v["initial.tau"], v["initial.r_star"], v["initial.p"],
                           v["curve.k"], v["curve.kc"], v["curve.mu"])

    rep = risk_report(res.params.portfolio, zero_fn0, res.params.maturities)
    return {
        "name": res.params.portfolio.name,
        "file": res.scenario.portfolio_file,
        "pv_bn": rep["pv"],
        "dv01_bn": rep["dv01"],
        "key_rate_dv01_bn": {f"{float(k):g}": val for k, val in rep["key_rate_dv01"].items()},
    }


def holder_sales(res: SimulationResult) -> dict[str, dict[str, float]]:
    """Each foreign holder's sales over the horizon ($bn), from the retained paths' holdings (initial - final)."""
    from ._metrics import mean_se

    out = {}
    for h in res.params.holder_names:
        i = res.variables.index(f"holdings_{h}")
        sold = (res.snapshots[0, i] - res.snapshots[-1, i]).astype(np.float64)
        value, se = mean_se(sold)
        out[f"foreign_sales_{h}_bn_mean"] = {"value": value, "stderr": se}
    return out


def used_devices(devices: int | None) -> list[str]:
    """The devices a run uses: the first `devices` (None: 1) local devices of each process (`paths_mesh`)."""
    return [str(d) for p in range(jax.process_count()) for d in jax.local_devices(process_index=p)[:devices or 1]]


def summary_dict(res: SimulationResult, version: str, level: float = 5.0) -> dict:
    metrics = summarize(res.metrics, level)
    metrics.update(holder_sales(res))
    for m in metrics.values():  # undefined with too few paths (e.g. the standard deviation of one path): null
        for field in ("value", "stderr"):
            if m[field] is not None and not np.isfinite(m[field]):
                m[field] = None
    cfg = res.scenario.config
    steps = res.params.n_steps
    return {
        "scenario": res.scenario.name,
        "description": cfg["scenario"]["description"],
        "config_file": res.scenario.file,
        "config_hash": res.scenario.hash(),
        "seed": res.seed,
        "paths": res.n_paths,
        "steps": steps,
        "dt": res.params.dt,
        "horizon_years": steps * res.params.dt,
        "chunk_size": res.chunk_size,
        "version": version,
        "backend": jax.default_backend(),
        "devices": used_devices(None),  # a run on several devices gives them (`run --devices`)
        "dtype": str(res.params.values["curve.k"].dtype),
        "wall_time_s": round(res.wall_s, 3),
        "first_chunk_s": round(res.compile_s, 3),
        "path_steps_per_s": res.n_paths * steps / max(res.wall_s, 1e-9),
        "initial_curve": initial_curve(res),
        "portfolio": portfolio_risk(res),
        "metrics": metrics,
        "units": {k: unit_of(k) for k in metrics},
        "note": res.note,
    }


def quantile_rows(res: SimulationResult):
    spy = res.params.steps_per_year
    qs = np.asarray(QUANTILES)
    for j, step in enumerate(res.reports):
        vals = np.quantile(res.snapshots[j].astype(np.float64), qs, axis=1)  # (q, variables)
        days = step * 252 / spy
        for i, var in enumerate(res.variables):
            for qi, q in enumerate(qs):
                yield (f"{days:g}", f"{step / spy:.6g}", var, f"{q:g}", f"{vals[qi, i]:.8g}")


def write_outputs(res: SimulationResult, out_dir, version: str, paths_limit: int = 100_000,
                  extra: dict | None = None, extra_writer: Callable[[pathlib.Path], None] | None = None) -> dict:
    summary = summary_dict(res, version)
    if extra:
        summary.update(extra)
    with atomic_dir(out_dir) as tmp:
        with open(tmp / "quantiles.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["business_days", "t_years", "variable", "quantile", "value"])
            w.writerows(quantile_rows(res))
        if res.n_paths <= paths_limit:
            np.savez_compressed(
                tmp / "paths.npz", report_steps=np.asarray(res.reports), variables=np.asarray(res.variables),
                snapshots=res.snapshots, **{f"metric_{k}": v for k, v in res.metrics.items()})
        (tmp / "scenario.toml").write_text(res.scenario.to_toml())
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
        if extra_writer is not None:
            extra_writer(tmp)  # more files (charts, report) into the same atomic directory
    return summary


def is_percent(var: str) -> bool:
    return var.startswith(PERCENT)
