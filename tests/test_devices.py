"""Several devices and several processes give the single-device results.

Sharded runs use the 4 fake CPU devices of the test session (conftest.py). Comparisons are in float64: sharding
compiles a different (SPMD) program, whose float32 rounding differs from the one-device program's in the last
bits (a change of chunk size runs the same per-path program and changes nothing); in float64 that is far below
the 1e-6 relative tolerance. The runs use `april_2025` over a quarter in chunks of 1024 paths, the shape
test_engine compiles.

The multi-process test launches two `python -m jaxstress run --distributed` processes on 127.0.0.1 (gloo
collectives on CPU) and a one-process reference run beside them; the outputs must be identical.
"""

import csv
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _same import assert_same_results
from jax.sharding import NamedSharding, PartitionSpec

from jaxstress import ConfigError, load_scenario, simulate
from jaxstress._cli import main
from jaxstress._metrics import summarize
from jaxstress._simulate import BLOCK, METRIC_NAMES, PATHS_AXIS, PRNG_IMPL, paths_mesh, report_steps, simulate_blocks

SCENARIO = "april_2025"
HORIZON = 0.25
CHUNK = 1024
PATHS = 2000  # not a whole number of blocks: the last block is cut
SEED = 7
N_DEV = 4


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(SCENARIO, horizon=HORIZON)


@pytest.fixture(scope="module")
def one_device(x64, scenario):
    return simulate(scenario, PATHS, seed=SEED, chunk_size=CHUNK, dtype=jnp.float64)


def test_session_has_fake_devices():
    assert jax.local_device_count() == N_DEV, "tests/conftest.py should fake 4 CPU devices"


def test_sharded_run_equals_one_device(x64, scenario, one_device):
    # chunk 256 is rounded up to 4 devices x 1 block, then to the 1024 of the reference: the same compiled shape
    res = simulate(scenario, PATHS, seed=SEED, chunk_size=256, dtype=jnp.float64, devices=N_DEV)
    assert res.chunk_size == N_DEV * BLOCK == one_device.chunk_size
    assert_same_results(res, one_device)


@pytest.mark.parametrize("retain", [100, 1500])
def test_sharded_run_observes_the_kept_paths_only(x64, scenario, one_device, retain, monkeypatch):
    """With fewer kept paths than a device's share of a chunk (retain 100 of 256 a device), each device observes
    the reporting dates of only that many paths, and chunks past them the horizon only; with more (1500: a whole
    chunk, then 476 of the next) every path of a chunk is observed. Either way the result is the one-device
    run's, its snapshots those of the first `retain` paths."""
    from jaxstress import _simulate

    observed = []  # each chunk's paths observed at the reporting dates, per device

    def spy(*args):
        observed.append(args[5])
        return simulate_blocks(*args)

    monkeypatch.setattr(_simulate, "simulate_blocks", spy)
    res = simulate(scenario, PATHS, seed=SEED, chunk_size=256, dtype=jnp.float64, devices=N_DEV, retain=retain)
    assert observed == ([100, 0] if retain == 100 else [None, None])
    assert res.snapshots.shape[2] == retain
    np.testing.assert_allclose(res.snapshots, one_device.snapshots[:, :, :retain], rtol=1e-6, atol=1e-9)
    for name in METRIC_NAMES:
        np.testing.assert_allclose(res.metrics[name], one_device.metrics[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_device_snapshot_paths_and_their_order():
    """Each device observes as many paths as the first device needs; the chunk's first paths come from the first
    device's block, or from all blocks in order when every path is observed."""
    from jaxstress._simulate import chunk_snapshots, device_snapshot_paths

    assert [device_snapshot_paths(k, 1024, 4) for k in (0, 100, 255, 256, 700, 1024)] == [0, 100, 255, None, None,
                                                                                            None]
    paths = np.arange(1024.0)[None, None, :]  # a chunk's path numbers as its "snapshots"
    first_100 = np.concatenate([paths[:, :, d * 256:d * 256 + 100] for d in range(4)], axis=2)  # device by device
    np.testing.assert_array_equal(chunk_snapshots(first_100, 1024, 4), paths[:, :, :100])
    np.testing.assert_array_equal(chunk_snapshots(paths, 1024, 4), paths)


def test_blocks_are_sharded_along_paths(x64, scenario, one_device):
    """Each device computes its own quarter of the paths (no replicated work), in block order."""
    mesh = paths_mesh(N_DEV)
    replicated = NamedSharding(mesh, PartitionSpec())  # placed as simulate() places them: the compiled shape is reused
    dynamic, static = eqx.partition(scenario.params(jnp.float64), eqx.is_array)
    params = eqx.combine(jax.device_put(dynamic, replicated), static)
    key = jax.device_put(jax.random.key(SEED, impl=PRNG_IMPL), replicated)
    reports = report_steps(scenario.config, params.n_steps)
    ids = jax.device_put(np.arange(N_DEV, dtype=np.uint32), NamedSharding(mesh, PartitionSpec(PATHS_AXIS)))
    metrics, snaps = simulate_blocks(params, key, ids, reports, mesh)
    assert metrics.sharding.spec == PartitionSpec(None, PATHS_AXIS)
    assert snaps.sharding.spec == PartitionSpec(None, None, PATHS_AXIS)
    shards = sorted(metrics.addressable_shards, key=lambda s: s.index[1].start)
    assert len({s.device for s in shards}) == N_DEV
    assert [s.data.shape for s in shards] == [(len(METRIC_NAMES), BLOCK)] * N_DEV
    y10 = METRIC_NAMES.index("y10_change_bp")
    np.testing.assert_allclose(np.asarray(metrics)[y10, :PATHS], one_device.metrics["y10_change_bp"][:N_DEV * BLOCK],
                               rtol=1e-6, atol=1e-9)


def test_devices_out_of_range(scenario):
    with pytest.raises(ValueError, match="devices must be between 1 and 4"):
        simulate(scenario, 256, devices=N_DEV + 1)
    with pytest.raises(ValueError, match="do not split evenly"):
        params = scenario.params()
        simulate_blocks(params, jax.random.key(0, impl=PRNG_IMPL), jnp.arange(3, dtype=jnp.uint32),
                        report_steps(scenario.config, params.n_steps), paths_mesh(2))


def _quantiles(path):
    with open(path) as f:
        return [row for row in csv.reader(f)]


def test_cli_devices_all(tmp_path, one_device):
    out = tmp_path / "run"
    rc = main(["run", SCENARIO, "--paths", str(PATHS), "--horizon", str(HORIZON), "--seed", str(SEED),
               "--chunk-size", str(CHUNK), "--float64", "--devices", "all", "--out", str(out), "--quiet",
               "--no-plots"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["devices_per_process"], summary["processes"], summary["chunk_size"]) == (N_DEV, 1, CHUNK)
    assert summary["devices"] == [str(d) for d in jax.local_devices()[:N_DEV]]  # the devices used
    assert summary["dtype"] == "float64"
    from jaxstress._output import holder_sales

    ref = summarize(one_device.metrics)
    ref.update(holder_sales(one_device))
    assert summary["metrics"].keys() == ref.keys()
    for key, m in summary["metrics"].items():
        assert m["value"] == pytest.approx(ref[key]["value"], rel=1e-6, abs=1e-9), key
    with np.load(out / "paths.npz") as npz:
        np.testing.assert_allclose(npz["snapshots"], one_device.snapshots, rtol=1e-6, atol=1e-9)


def test_cli_device_and_distributed_errors(tmp_path, monkeypatch, capsys):
    rc = main(["run", SCENARIO, "--paths", "256", "--devices", "5", "--out", str(tmp_path / "a"), "--quiet"])
    assert rc == 2 and "--devices 5: this process has 4 cpu device(s)" in capsys.readouterr().err
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    rc = main(["run", SCENARIO, "--paths", "256", "--distributed", "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES not" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# sensitivities: the scenario, chunks and dtype of test_sensitivities (its one-device gradient is compiled once for
# both modules where they run in one process; pytest-xdist keeps a module, not two, on one worker); 10 chunks over
# 4 devices: groups of 4, 4 and 2, the last filled up with repeats of its last chunk
SENS_ARGS = dict(horizon=0.1, overrides=["fed.threshold=1.0"])
SENS_PATHS, SENS_CHUNK = 5120, 512


@pytest.fixture(scope="module")
def sens_one_device(x64):
    from jaxstress._sensitivities import sensitivities

    sc = load_scenario(SCENARIO, **SENS_ARGS)
    return sensitivities(sc, "y10_change_bp_mean", SENS_PATHS, seed=SEED, chunk_size=SENS_CHUNK, dtype=jnp.float64)


def _assert_same_sensitivities(got: dict, want, what: str):
    """got: sensitivities.json's fields (or a SensitivityResult's, as a dict); float64, so the SPMD program's other
    rounding stays far below the tolerance."""
    assert got["value"] == pytest.approx(want.value, rel=1e-12), what
    assert got["stderr"] == pytest.approx(want.stderr, rel=1e-9), what
    assert got["gradients"].keys() == want.gradients.keys()
    for field in ("value", "stderr"):
        a = np.array([got["gradients"][k][field] for k in want.gradients])
        b = np.array([want.gradients[k][field] for k in want.gradients])
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max(), err_msg=f"{what}: {field}")


def test_sensitivities_over_devices_equal_one_device(x64, sens_one_device, monkeypatch):
    """The gradient's chunks spread over 4 devices, a chunk a device (one SPMD program): the chunks of the
    one-device run, the same estimates and standard errors."""
    from jaxstress import _sensitivities

    sc = load_scenario(SCENARIO, **SENS_ARGS)
    firsts = []
    on_devices = _sensitivities.chunk_gradients_on_devices

    def spy(*args):
        firsts.append(np.asarray(args[2]).tolist())
        return on_devices(*args)

    monkeypatch.setattr(_sensitivities, "chunk_gradients_on_devices", spy)
    four = _sensitivities.sensitivities(sc, "y10_change_bp_mean", SENS_PATHS, seed=SEED, chunk_size=SENS_CHUNK,
                                        dtype=jnp.float64, devices=N_DEV)
    assert firsts == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18, 18, 18]]  # chunk c starts at block 2c
    assert (four.n_chunks, four.n_paths) == (sens_one_device.n_chunks, sens_one_device.n_paths) == (10, SENS_PATHS)
    _assert_same_sensitivities(dataclasses.asdict(four), sens_one_device, "devices=4")


def test_cli_sensitivities_devices_all(tmp_path, sens_one_device, capsys):
    out = tmp_path / "sens"
    rc = main(["sensitivities", SCENARIO, "--horizon", "0.1", "--set", "fed.threshold=1.0", "--paths",
               str(SENS_PATHS), "--chunk-size", str(SENS_CHUNK), "--seed", str(SEED), "--float64", "--devices", "all",
               "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads((out / "sensitivities.json").read_text())
    assert (doc["devices_per_process"], doc["processes"], doc["chunks"], doc["paths"]) == (N_DEV, 1, 10, SENS_PATHS)
    _assert_same_sensitivities(doc, sens_one_device, "--devices all")
    rc = main(["sensitivities", SCENARIO, "--paths", "256", "--devices", "5", "--out", str(tmp_path / "b"),
               "--quiet"])
    assert rc == 2 and "--devices 5: this process has 4 cpu device(s)" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("n_proc, n_chunks", [(3, 7), (4, 2), (2, 6)])
def test_gather_chunks_puts_chunks_in_path_order(monkeypatch, n_proc, n_chunks):
    """The merge alone, for several processes emulated in turn: a fake all-gather returns what each process sent
    in the same call (recorded in a first pass). Uneven splits, processes without chunks, several calls."""
    import jax.experimental.multihost_utils as mh

    from jaxstress import _distributed

    shape = (2, 5)
    chunks = [np.full(shape, c, np.float32) + np.arange(10, dtype=np.float32).reshape(shape) / 10
              for c in range(n_chunks)]
    monkeypatch.setattr(_distributed, "GATHER_BYTES", 2 * n_proc * chunks[0].nbytes)  # two rounds per call
    sent: dict[tuple[int, int], np.ndarray] = {}

    def run(rank):
        calls = iter(range(10**6))

        def fake_allgather(x):
            i = next(calls)
            sent[rank, i] = x.copy()
            return np.stack([sent.get((q, i), np.zeros_like(x)) for q in range(n_proc)])

        monkeypatch.setattr(_distributed, "process_info", lambda: (rank, n_proc))
        monkeypatch.setattr(mh, "process_allgather", fake_allgather)
        return _distributed.gather_chunks(chunks[rank::n_proc], n_chunks, shape, np.float32)

    for rank in range(n_proc):  # first pass: record what every process sends
        run(rank)
    for rank in range(n_proc):
        out = run(rank)
        assert len(out) == n_chunks
        for c in range(n_chunks):
            np.testing.assert_array_equal(out[c], chunks[c], err_msg=f"rank {rank}, chunk {c}")
    with pytest.raises(ValueError, match="has 1 chunks, expected"):
        _distributed.gather_chunks(chunks[:1], n_chunks + 2 * n_proc, shape, np.float32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the pieces gloo's C++ writes (one write each) when it logs its peers; threads interleave them
_GLOO_LOG = re.compile(r"\[Gloo\] Rank | is connected to | peer ranks\. Expected number of connected peer ranks is : "
                       r"|\d+|\s")


def _run_processes(args: list[str], dist, single: list[str] | None = None, timeout: float = 240,
                   rank_args: dict[int, list[str]] | None = None, expect_rc: int = 0):
    """`args` as two processes of a `--distributed` job on loopback (working directory `dist`, which must be left
    with their output alone), and `single` (if given) as a one-process run beside them; each must exit 0 and
    print nothing under --quiet but gloo's logs. `rank_args`: arguments added for one process; with `expect_rc`
    the job's processes must exit with that code instead; returns their stderr."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROC"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={N_DEV}")
    popen = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [subprocess.Popen(single, env=env, **popen)] if single else []
    for rank in range(2):
        penv = dict(env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
                    JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(rank))
        procs.append(subprocess.Popen(args + (rank_args or {}).get(rank, []) + ["--distributed"], env=penv, cwd=dist,
                                      **popen))
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    job = procs[len(procs) - 2:]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == (expect_rc if p in job else 0), err[-3000:]
        assert not _GLOO_LOG.sub("", out), out  # --quiet: nothing on stdout but gloo's logs
    return [err for p, (_, err) in zip(procs, outputs) if p in job]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    """Two processes on loopback split 3 chunks (2 + 1, the last one partly padding); process 0 merges and
    writes; the result is bitwise a one-process run's (both run the same chunk shape in float32). Chunks of 512
    paths over 25 days: the program of test_cli's runs, which the session's cache may hold already (then the
    one-process run and process 0 load it)."""
    args = [sys.executable, "-m", "jaxstress", "run", SCENARIO, "--paths", "1280", "--horizon", "0.1",
            "--chunk-size", "512", "--seed", "3", "--quiet", "--no-plots"]
    dist = tmp_path / "dist"
    dist.mkdir()
    _run_processes(args + ["--out", str(dist / "out")], dist, single=args + ["--out", str(tmp_path / "single")])
    assert sorted(x.name for x in dist.iterdir()) == ["out"]  # only process 0 wrote, and nothing else is left
    single, merged = tmp_path / "single", dist / "out"
    a, b = (json.loads((d / "summary.json").read_text()) for d in (single, merged))
    assert (a["processes"], b["processes"], b["chunk_size"], b["paths"]) == (1, 2, 512, 1280)
    # the devices used (one a process), not every device the processes see (4 fake CPU devices each)
    assert len(a["devices"]) == 1 and len(b["devices"]) == 2 and len(set(b["devices"])) == 2, (a, b)
    assert b["metrics"] == a["metrics"]
    assert _quantiles(merged / "quantiles.csv") == _quantiles(single / "quantiles.csv")
    with np.load(single / "paths.npz") as x, np.load(merged / "paths.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            np.testing.assert_array_equal(y[k], x[k], err_msg=k)


def test_check_same_names_what_differs(monkeypatch):
    """check_same's message names the values the processes disagree on, fingerprints in hex; agreeing processes
    pass; a fingerprint is the same for equal parts and differs for others."""
    from jax.experimental import multihost_utils

    from jaxstress._distributed import check_same, fingerprint

    fp = fingerprint("b5e3c753", "float32", "var99_loss", ["a", "b"], 0.05)
    assert fp == fingerprint("b5e3c753", "float32", "var99_loss", ["a", "b"], 0.05) < 2**28
    assert fp != fingerprint("b5e3c753", "float32", "var99_loss", ["a", "b"], 0.5)
    mine = {"paths": 4096, "seed": 3, "scenario": fp}
    other = [4096, 3, fingerprint("other")]
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.stack([x, x]))
    check_same("the run", mine)
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.stack([x, np.asarray(other, np.int32)]))
    with pytest.raises(ConfigError, match=rf"disagree on the run: scenario \(the scenario: .*process 0: paths=4096, "
                                          rf"seed=3, scenario={fp:07x}; process 1: .*scenario={other[2]:07x}\)"):
        check_same("the run", mine)
    other[1] = 4
    with pytest.raises(ConfigError, match=r"disagree on the sensitivities: seed, scenario \("):
        check_same("the sensitivities", mine)
    # a process short of memory (simulate's own process raises its memory error instead, the others this)
    mine = {"paths": 4096, "host_memory_ok": 1}
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.stack([x, np.asarray([4096, 0], np.int32)]))
    with pytest.raises(ConfigError, match=r"disagree on the run: host_memory_ok \(host_memory_ok: whether a process's "
                                          r"machine holds .* fewer paths or larger nodes\) \(process 0: paths=4096, "
                                          r"host_memory_ok=1; process 1: paths=4096, host_memory_ok=0\)"):
        check_same("the run", mine)


@pytest.mark.slow
def test_processes_given_different_scenarios_refuse_to_merge(tmp_path):
    """Two processes of one job whose scenarios differ (here one --set) stop with one line naming what differs,
    before any simulation, instead of merging the chunks of two models; nothing is written."""
    args = [sys.executable, "-m", "jaxstress", "run", SCENARIO, "--paths", "512", "--horizon", "0.1",
            "--chunk-size", "256", "--quiet", "--no-plots", "--out", str(tmp_path / "dist" / "out")]
    dist = tmp_path / "dist"
    dist.mkdir()
    errs = _run_processes(args, dist, rank_args={1: ["--set", "fed.threshold=1.0"]}, expect_rc=2, timeout=120)
    for err in errs:
        (line,) = [ln for ln in err.splitlines() if ln.startswith("jaxstress: error:")]
        assert "the processes disagree on the run: scenario (the scenario: the resolved config" in line, err
        assert "give every process the same scenario" in line
    assert list(dist.iterdir()) == []


@pytest.mark.slow
def test_two_processes_sensitivities_equal_one(tmp_path, sens_one_device):
    """`sensitivities --distributed --devices 4` in two processes on loopback: 10 chunks, process 0 computing
    chunks 0, 2, .., 8 and process 1 chunks 1, 3, .., 9, each in groups of 4 (one a device, the last group filled
    up with repeats); process 0 gathers and writes what one process on one device computes (float64). Process 0's
    program is test_sensitivities_over_devices_equal_one_device's (the same four devices): the session's
    compilation cache has it, and only process 1 compiles."""
    args = [sys.executable, "-m", "jaxstress", "sensitivities", SCENARIO, "--horizon", "0.1", "--set",
            "fed.threshold=1.0", "--paths", str(SENS_PATHS), "--chunk-size", str(SENS_CHUNK), "--seed", str(SEED),
            "--float64", "--quiet", "--devices", "4", "--out", str(tmp_path / "dist" / "out")]
    dist = tmp_path / "dist"
    dist.mkdir()
    _run_processes(args, dist, timeout=300)
    assert sorted(x.name for x in dist.iterdir()) == ["out"]  # only process 0 wrote
    doc = json.loads((dist / "out" / "sensitivities.json").read_text())
    assert (doc["processes"], doc["devices_per_process"], doc["chunks"], doc["paths"]) == (2, 4, 10, SENS_PATHS)
    _assert_same_sensitivities(doc, sens_one_device, "two processes")


def test_distributed_join_is_announced_unless_quiet(monkeypatch, capsys):
    """A process of a job given by the environment says it is waiting for the others before it blocks in
    jax.distributed.initialize (a job whose peer never starts used to wait in silence); --quiet keeps it quiet."""
    from jaxstress import _distributed

    joined = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: joined.append(kw))
    monkeypatch.setattr(_distributed, "process_info", lambda: (1, 2))
    for var, value in (("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1"), ("JAX_NUM_PROCESSES", "2"),
                       ("JAX_PROCESS_ID", "1")):
        monkeypatch.setenv(var, value)
    opt = "jax_cpu_collectives_implementation"
    before = jax.config.values.get(opt)
    try:
        assert _distributed.initialize() == (1, 2)
    finally:
        if opt in jax.config.values:  # initialize sets gloo: leave this process as it was
            jax.config.update(opt, before)
    err = capsys.readouterr().err
    assert err == "jaxstress: process 1 of 2 joining the job at 127.0.0.1:1; waiting for the others (up to 5 minutes)\n"
    assert joined[-1]["process_id"] == 1 and joined[-1]["num_processes"] == 2
    try:
        assert _distributed.initialize(announce=False) == (1, 2) and capsys.readouterr().err == ""
    finally:
        if opt in jax.config.values:
            jax.config.update(opt, before)
