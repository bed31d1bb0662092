"""A run that cannot fit in the host's memory is refused before it starts, naming the paths that fit."""

import pytest

from jaxstress._errors import ConfigError
from jaxstress._resources import SUMMARY_BYTES, available_memory, host_memory_error, run_bytes


def _files(tmp_path, meminfo_kb=None, v2=None, v1=None):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 99 kB\n" + (f"MemAvailable:   {meminfo_kb} kB\n" if meminfo_kb else ""))
    cg = tmp_path / "cgroup"
    (cg / "memory").mkdir(parents=True)
    if v2:
        (cg / "memory.max").write_text(f"{v2[0]}\n")
        (cg / "memory.current").write_text(f"{v2[1]}\n")
    if v1:
        (cg / "memory" / "memory.limit_in_bytes").write_text(f"{v1[0]}\n")
        (cg / "memory" / "memory.usage_in_bytes").write_text(f"{v1[1]}\n")
    return meminfo, cg


@pytest.mark.parametrize("meminfo_kb, v2, v1, expected", [
    (1000, None, None, 1024_000),  # MemAvailable alone
    (1000, ("max", 5), None, 1024_000),  # cgroup v2 without a limit
    (1000, (600_000, 100_000), None, 500_000),  # a container's limit below what the host has free
    (1000, None, (9223372036854771712, 5), 1024_000),  # cgroup v1 "no limit"
    (1000, None, (300_000, 100_000), 200_000),
    (None, None, (300_000, 100_000), 200_000),  # no MemAvailable line
    (None, None, None, None),  # nothing known: nothing checked
])
def test_available_memory_reads_meminfo_and_the_cgroup_limit(tmp_path, meminfo_kb, v2, v1, expected):
    meminfo, cg = _files(tmp_path, meminfo_kb, v2, v1)
    assert available_memory(meminfo, cg) == expected


def test_available_memory_of_this_machine_is_positive_or_unknown():
    avail = available_memory()
    assert avail is None or avail > 0


def test_a_run_too_large_for_the_memory_is_refused_with_the_paths_that_fit():
    n_metrics, n_values = 20, 7 * 47
    need = run_bytes(10**8, n_metrics, 200_000, n_values, 4)
    assert need == 10**8 * (20 * 4 + SUMMARY_BYTES) + 200_000 * n_values * 4
    assert host_memory_error(10**8, n_metrics, 200_000, n_values, 4, available=need) is None  # fits
    e = host_memory_error(10**8, n_metrics, 200_000, n_values, 4, available=need // 2)
    assert isinstance(e, ConfigError)
    msg = str(e)
    assert e.key == "--paths" and msg.startswith("key '--paths': 100,000,000 paths need at least 10.7 GiB")
    most = int(msg.split("run at most about ")[1].split(" paths")[0].replace(",", ""))
    assert run_bytes(most, n_metrics, 200_000, n_values, 4) <= need // 2 < run_bytes(10**8, n_metrics, 200_000,
                                                                                       n_values, 4)
    assert "--float64" not in msg
    assert "or in float32, without --float64" in str(host_memory_error(10**8, n_metrics, 200_000, n_values, 8,
                                                                       available=need))


def test_simulate_refuses_before_any_work(monkeypatch):
    """simulate checks before it compiles or allocates: with 1 MB available, 10^6 paths are refused at once."""
    from jaxstress import _resources, load_scenario, simulate

    monkeypatch.setattr(_resources, "available_memory", lambda: 1 << 20)
    with pytest.raises(ConfigError, match=r"1,000,000 paths need at least 0\.\d GiB of host memory .* run at most "
                                          r"about 0 paths here"):
        simulate(load_scenario("baseline"), 10**6)


def test_a_process_short_of_memory_stops_the_whole_distributed_run(monkeypatch):
    """In a --distributed run every process gathers the whole result: each passes its verdict to the processes'
    agreement check (`check_same`, which then fails on every process instead of leaving the others waiting in a
    collective), and the process short of memory reports its own reason."""
    import jax

    from jaxstress import _distributed, _resources, load_scenario, simulate

    seen = {}

    def check_same(what, values):
        seen.update(values)
        raise ConfigError("the processes disagree (a test)")

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(_distributed, "check_same", check_same)
    monkeypatch.setattr(_resources, "available_memory", lambda: 1 << 20)
    with pytest.raises(ConfigError, match="1,000,000 paths need at least"):
        simulate(load_scenario("baseline"), 10**6, distributed=True)
    assert seen["host_memory_ok"] == 0
    monkeypatch.setattr(_resources, "available_memory", lambda: None)
    with pytest.raises(ConfigError, match="disagree \\(a test\\)"):
        simulate(load_scenario("baseline"), 10**6, distributed=True)
    assert seen["host_memory_ok"] == 1
