"""XLA compiler defaults set when jaxstress is imported (before the first computation starts the backend).

- Copy insertion by region analysis: XLA's CPU compiler, by default, copies loop-carried arrays at the top of each
  `lax.scan` iteration when a new value is computed while the old one is still read; region analysis avoids most
  of these copies (the reverse-mode loops of the gradient run 5-10% faster, the differentiable forward loop 30%).
- 512-bit vectors on CPUs with AVX-512: XLA's CPU compiler prefers 256-bit vectors by default; with 512 the
  forward ran 8-12% faster on a 2-core AMD EPYC (26.4-26.8 against 23.5-24.7 M path-steps/s, `jaxstress bench
  april_2025 --paths 200000 --no-grad --repeats 5`, alternated) and the gradient 2-5%.

Both give the same results, bit for bit (tested). A flag is added unless XLA_FLAGS already names it, and only
for jaxlib releases known to have it (XLA aborts on a flag it does not know); neither has an effect on GPUs, or
when the backend was started before jaxstress was imported.
"""

import importlib.metadata
import os

REGION_ANALYSIS = "--xla_cpu_copy_insertion_use_region_analysis"
VECTOR_WIDTH = "--xla_cpu_prefer_vector_width"
KNOWN_FROM = (0, 10)  # the oldest jaxlib release these flags were verified with


def _jaxlib_release() -> tuple[int, int]:
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0, 0)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str] | None:
    """The instruction-set flags Linux lists for the first processor (its `flags` line on x86, `Features` on Arm),
    or None where they cannot be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[-1].split()
    except OSError:
        pass
    return None


def _has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has AVX-512 (its foundation, `avx512f`, in the flags Linux lists; False where they cannot be
    read)."""
    return "avx512f" in (cpu_flags(cpuinfo) or [])


def defaults() -> list[str]:
    """The flags jaxstress adds on this machine, as `--name=value`."""
    if _jaxlib_release() < KNOWN_FROM:
        return []
    flags = [f"{REGION_ANALYSIS}=true"]
    if _has_avx512():
        flags.append(f"{VECTOR_WIDTH}=512")
    return flags


def set_defaults() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    added = [f for f in defaults() if f.split("=")[0] not in flags]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()


set_defaults()
