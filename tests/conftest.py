"""Test settings: fake several CPU devices (so sharding code paths run), warnings are errors (pyproject), and one
compilation cache on disk for the session: not the CLI's (off, `JAXSTRESS_CACHE_DIR`; tests/test_compile_cache.py
turns it on where it tests it) but JAX's own in a temporary folder that the test processes share, so that a
program that several tests compile (the same scenario shapes in different modules, on either worker) is compiled
once. Tests that count compilations turn it off around what they count."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAXSTRESS_CACHE_DIR", "off")  # the CLI's compilation cache
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set once, by the first process: the workers inherit it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxstress-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import pytest  # noqa: E402


def pytest_configure(config):
    # JAX writes a cache entry in place (not by rename), so a worker may read an entry that the other is writing;
    # the truncated entry fails to decompress, JAX warns and compiles the program instead: not an error here
    for what in ("reading", "writing"):
        config.addinivalue_line("filterwarnings",
                                f"ignore:Error {what} persistent compilation cache entry:UserWarning")


@pytest.fixture
def data_copy(tmp_path):
    """A copy of the shipped data folder (jaxstress/data/*.csv) in tmp_path/data, to edit."""
    from jaxstress._data import DATA_DIR

    d = tmp_path / "data"
    d.mkdir()
    for f in DATA_DIR.glob("*.csv"):
        shutil.copy(f, d / f.name)
    return d
