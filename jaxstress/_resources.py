"""Host memory a run needs, checked before it starts.

A run keeps every path's metrics on the host (the quantiles, VaR and ES need them all) and the reporting-date
values of the first `retain` paths. A run asking for more than the machine can hold would otherwise be killed by
the kernel after simulating for a long while, with no output and no message; `host_memory_error` refuses it at
once, naming the number of paths that fit.
"""

from __future__ import annotations

from pathlib import Path

from ._errors import ConfigError

# a cgroup v1 limit at or above this means "no limit" (the kernel reports 2^63 rounded down to a page)
_NO_LIMIT = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" where there is no limit


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes of memory this process can still use: the kernel's MemAvailable, and below it the room left under
    the process's cgroup limit (a container's or a batch job's; cgroup v2 `memory.max - memory.current`, or v1
    `memory/memory.limit_in_bytes - memory/memory.usage_in_bytes`). None where neither can be read."""
    known = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                known.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = _read_int(cgroup / limit_file), _read_int(cgroup / usage_file)
        if limit is not None and usage is not None and limit < _NO_LIMIT:
            known.append(max(0, limit - usage))
            break
    return min(known) if known else None


# bytes a path of the float64 copies that one thread of the summary statistics holds (`_metrics.summary_workers`,
# which runs fewer threads where memory is short, down to one)
SUMMARY_BYTES = 32


def run_bytes(n_paths: int, n_metrics: int, retained: int, n_values: int, itemsize: int) -> int:
    """Host bytes a run of n_paths holds at least: the per-path metrics and the retained reporting-date values
    (`n_values` a path: dates x variables) in the simulation's dtype, and one summary thread's float64 copies.
    A lower bound: on the 2-core CPU a run of 10^7 paths peaked 1.37 GB above one of 10^5 (`/usr/bin/time`, max
    RSS; `run april_2025 --no-plots`), where this counts 1.24 GB more (1.56 with the two summary threads it ran)."""
    return n_paths * (n_metrics * itemsize + SUMMARY_BYTES) + retained * n_values * itemsize


def host_memory_error(n_paths: int, n_metrics: int, retain: int, n_values: int, itemsize: int,
                      available: int | None = None) -> ConfigError | None:
    """The ConfigError (key --paths) for a run of n_paths that needs more host memory than is available
    (`available`: bytes, default `available_memory()`; None where that is unknown or the run fits)."""
    avail = available_memory() if available is None else available
    retained = min(n_paths, retain)
    need = run_bytes(n_paths, n_metrics, retained, n_values, itemsize)
    if avail is None or need <= avail:
        return None
    per_path = n_metrics * itemsize + SUMMARY_BYTES
    most = max(0, int(0.9 * (avail - retained * n_values * itemsize)) // per_path)  # 10% for the rest
    gib = 2.0 ** 30
    return ConfigError(
        f"{n_paths:,} paths need at least {need / gib:.1f} GiB of host memory (each path's {n_metrics} metrics, "
        f"kept for the quantiles, and the reporting dates of {retained:,} paths), and {avail / gib:.1f} GiB is "
        f"available: run at most about {most:,} paths here, or on a machine with more memory"
        + (" (or in float32, without --float64)" if itemsize > 4 else ""), key="--paths")
