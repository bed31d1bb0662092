"""The command line's persistent compilation cache: compiled programs kept on disk between runs.

A run compiles the chunk's program once per shape (seconds on a CPU, 15 s on a GPU); batch jobs that run the same
scenario shapes again (other seeds, other numbers in the config) load it from disk instead. This is JAX's own
cache (`jax_compilation_cache_dir`): an entry's key is the compiled program, the compile options and the
jax/jaxlib versions, so a change of code or of version compiles afresh.

Where: `JAXSTRESS_CACHE_DIR` if set (`off`, `0`, `none` or empty: no cache); else JAX's own
`JAX_COMPILATION_CACHE_DIR` if set (left to JAX); else `$XDG_CACHE_HOME/jaxstress/xla` (default `~/.cache/...`),
in a folder per machine type (processor architecture and instruction-set flags: XLA's CPU programs are compiled
for the host's features, and a shared home seen from other nodes would otherwise hand them programs they cannot
run). The folder is created readable by its owner only: anyone who can write a cache can make JAX run code.
A cache that cannot be created or written is skipped (JAX warns and compiles as usual). Multi-process runs
(`--distributed`) and `bench` (which reports the compile time) do not use it.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

from ._xla_flags import cpu_flags

ENV = "JAXSTRESS_CACHE_DIR"
OFF = ("", "0", "off", "none", "false")


def machine_tag(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor architecture and a short hash of the instruction-set flags Linux lists (`nocpuinfo` where
    they cannot be read)."""
    flags = cpu_flags(cpuinfo)
    digest = "nocpuinfo" if flags is None else hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{platform.machine() or 'unknown'}-{digest}"


def cache_dir(environ=os.environ) -> Path | None:
    """The folder this process should cache in, or None (switched off, or left to JAX's own setting)."""
    if ENV in environ:
        value = environ[ENV].strip()
        return None if value.lower() in OFF else Path(value).expanduser() / machine_tag()
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    base = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jaxstress" / "xla" / machine_tag()


def enable() -> Path | None:
    """Point JAX's compilation cache at `cache_dir()`; call before the first compilation. Returns the folder, or
    None where no cache is set up here."""
    try:
        path = cache_dir()
        if path is None:
            return None
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (OSError, RuntimeError):  # a folder that cannot be made; no home directory to put it in
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
