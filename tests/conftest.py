"""Test settings: fake several CPU devices (so sharding code paths run), no compilation cache on disk (the CLI's;
tests/test_compile_cache.py turns it on where it tests it), warnings are errors (pyproject)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAXSTRESS_CACHE_DIR", "off")  # the CLI's compilation cache: tests compile afresh
