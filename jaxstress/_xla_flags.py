"""XLA compiler defaults set when jaxstress is imported (before the first computation starts the backend).

XLA's CPU compiler, by default, copies loop-carried arrays at the top of each `lax.scan` iteration when a new
value is computed while the old one is still read; copy insertion by region analysis avoids most of these copies
(the reverse-mode loops of the gradient run 5-10% faster, the differentiable forward loop 30%), with the same
results. The flag is added unless XLA_FLAGS already names it; it has no effect on GPUs, or when the backend was
started before jaxstress was imported.
"""

import os

REGION_ANALYSIS = "--xla_cpu_copy_insertion_use_region_analysis"


def set_defaults() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if REGION_ANALYSIS not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {REGION_ANALYSIS}=true".strip()


set_defaults()
