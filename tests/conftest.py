"""Test settings: fake several CPU devices (so sharding code paths run), no compilation cache on disk (the CLI's;
tests/test_compile_cache.py turns it on where it tests it), warnings are errors (pyproject)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAXSTRESS_CACHE_DIR", "off")  # the CLI's compilation cache: tests compile afresh


import shutil  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def data_copy(tmp_path):
    """A copy of the shipped data folder (jaxstress/data/*.csv) in tmp_path/data, to edit."""
    from jaxstress._data import DATA_DIR

    d = tmp_path / "data"
    d.mkdir()
    for f in DATA_DIR.glob("*.csv"):
        shutil.copy(f, d / f.name)
    return d
