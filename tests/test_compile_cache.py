"""The command line's persistent compilation cache: where it goes, when it is off, and that a second process
loads the first one's programs and gives the same numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxstress._compile_cache import ENV, cache_dir, machine_tag

ROOT = Path(__file__).resolve().parents[1]


def _cpuinfo(tmp_path, name, flags):
    p = tmp_path / name
    p.write_text(f"processor\t: 0\nmodel name\t: some cpu\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return str(p)


def test_machine_tag_follows_the_instruction_set(tmp_path):
    a = machine_tag(_cpuinfo(tmp_path, "a", "fpu sse2 avx2 avx512f"))
    assert a == machine_tag(_cpuinfo(tmp_path, "b", "avx512f fpu avx2 sse2"))  # the set, not the order
    assert a != machine_tag(_cpuinfo(tmp_path, "c", "fpu sse2 avx2"))
    assert machine_tag(str(tmp_path / "missing")).endswith("-nocpuinfo")


@pytest.mark.parametrize("value", ["off", "0", "none", "", " OFF "])
def test_switched_off(value):
    assert cache_dir({ENV: value}) is None


def test_where_it_goes(tmp_path):
    tag = machine_tag()
    assert cache_dir({ENV: str(tmp_path)}) == tmp_path / tag
    assert cache_dir({"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}) is None  # JAX's own setting is left to JAX
    assert cache_dir({ENV: str(tmp_path), "JAX_COMPILATION_CACHE_DIR": "/elsewhere"}) == tmp_path / tag
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "jaxstress" / "xla" / tag


RUN = """
import sys
import jax
events = {"hits": 0, "misses": 0}
def count(name, **kw):
    for k in events:
        if name == "/jax/compilation_cache/cache_" + k:
            events[k] += 1
jax.monitoring.register_event_listener(count)
from jaxstress._cli import main
assert main(["run", "april_2025", "--paths", "256", "--horizon", "0.05", "--no-plots", "--quiet", "--out",
             sys.argv[1]]) == 0
print(events["hits"], events["misses"])
"""


def test_second_process_loads_the_programs(tmp_path):
    env = {**os.environ, ENV: str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    counts = []
    for name in ("a", "b"):
        r = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / name)], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        counts.append(tuple(int(x) for x in r.stdout.split()[-2:]))
    (hits_a, misses_a), (hits_b, misses_b) = counts
    # JAX writes (and counts as a miss) only programs that took over a second to compile, so on a loaded machine
    # process b may write a small program that process a compiled in under a second: b must load every program a
    # wrote, whatever it writes itself
    assert hits_a == 0 and misses_a >= 1
    assert hits_b >= misses_a, (counts, "the second process compiled a program the first had written")
    assert (tmp_path / "cache" / machine_tag()).stat().st_mode & 0o077 == 0  # its owner's only
    metrics = [json.loads((tmp_path / n / "summary.json").read_text())["metrics"] for n in ("a", "b")]
    assert metrics[0] == metrics[1]
