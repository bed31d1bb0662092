"""Several hosts: `jax.distributed` set-up, this process's place in the job, and the merge of per-chunk results.

A multi-process run (`jaxstress run ... --distributed`, or `simulate(..., distributed=True)` after `initialize()`)
splits the path chunks round-robin: process p of P simulates chunks p, p + P, p + 2P, ... on its local devices.
`gather_chunks` then collects every chunk's array on every process, in chunk (hence path) order, with
`jax.experimental.multihost_utils.process_allgather` (an all-gather over all devices of the job; on CPU it runs
over gloo), in groups of rounds of bounded size. Arrays are gathered in the simulation dtype, so the merged result
is bitwise the one the chunks produced.

Environment read by `initialize`:

- `JAX_COORDINATOR_ADDRESS` (`host:port` of process 0, where it serves the coordinator), `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID` (0 .. N-1): set all three for an explicit set-up (cluster auto-detection is then off);
  set none of them and JAX detects the job itself (SLURM, Open MPI, ...).
- Read by JAX itself: `JAX_COORDINATOR_BIND_ADDRESS` (where process 0 listens; default all interfaces on the
  coordinator's port) and `JAX_LOCAL_DEVICE_IDS` (the local accelerators a process uses, e.g. `0,1`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

from ._errors import ConfigError

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
GATHER_BYTES = 256 * 2**20  # at most this much gathered output per all-gather call


def initialize(announce: bool = True) -> tuple[int, int]:
    """Join the job (`jax.distributed.initialize`); call before any JAX computation. Returns (process index,
    process count). Cross-process collectives on CPU use gloo. `announce`: say on stderr that this process is
    waiting for the others (the join blocks until all have started, up to JAX's timeout of 5 minutes), so that a
    job one of whose processes never started does not just hang in silence."""
    import jax

    env = {k: os.environ.get(k, "").strip() for k in ENV_VARS}
    given = [k for k, v in env.items() if v]
    if given and len(given) < len(ENV_VARS):
        missing = ", ".join(k for k in ENV_VARS if k not in given)
        raise ConfigError(f"--distributed: {', '.join(given)} set but {missing} not; set all three or none "
                          "(to let JAX detect SLURM or Open MPI)")
    if "jax_cpu_collectives_implementation" in jax.config.values:  # only the CPU backend uses it
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if given:
        try:
            n, rank = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
        except ValueError:
            raise ConfigError("--distributed: JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                              f"'{env['JAX_NUM_PROCESSES']}' and '{env['JAX_PROCESS_ID']}'") from None
        if not 0 <= rank < n:
            raise ConfigError(f"--distributed: need 0 <= JAX_PROCESS_ID < JAX_NUM_PROCESSES, got {rank} and {n}")
        if announce:
            print(f"jaxstress: process {rank} of {n} joining the job at {env['JAX_COORDINATOR_ADDRESS']}; waiting "
                  "for the others (up to 5 minutes)", file=sys.stderr, flush=True)
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"], num_processes=n,
                                   process_id=rank, cluster_detection_method="deactivate")
    else:
        try:  # under SLURM or Open MPI every process is started by the launcher: no announcement needed
            jax.distributed.initialize()
        except ValueError as e:  # nothing detected: no coordinator address, process count or id
            raise ConfigError(f"--distributed: no cluster detected ({e}); run under SLURM or Open MPI, or set "
                              + ", ".join(ENV_VARS)) from None
    return process_info()


def process_info() -> tuple[int, int]:
    """(this process's index, number of processes); (0, 1) outside a distributed job."""
    import jax

    return jax.process_index(), jax.process_count()


def fingerprint(*parts) -> int:
    """A 28-bit number that two processes compute alike exactly when they pass equal parts (up to a hash
    collision): what `check_same` compares of things that are not numbers, such as the resolved scenario."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:7], 16)


HEX = ("scenario",)  # values of check_same that are fingerprints, shown in hex


def check_same(what: str, values: dict[str, int]) -> None:
    """Raise a ConfigError on every process unless all processes pass the same values, instead of merging
    results of different jobs or hanging in a gather of mismatched shapes: the chunk geometry (which depends on
    the local device count), and the `fingerprint` of the scenario and settings, so that processes given
    different --set, files or precision do not merge their results in silence."""
    from jax.experimental.multihost_utils import process_allgather

    mine = np.asarray([v % 2**31 for v in values.values()], np.int32)
    everyone = np.asarray(process_allgather(mine))  # (processes, len(values))
    if (everyone != mine).any():
        def show(k, v):
            return f"{k}={v:07x}" if k in HEX else f"{k}={v}"

        rows = "; ".join(f"process {p}: " + ", ".join(show(k, v) for k, v in zip(values, row))
                         for p, row in enumerate(everyone.tolist()))
        differ = [k for i, k in enumerate(values) if (everyone[:, i] != mine[i]).any()]
        hint = (" (the scenario: the resolved config and portfolio, its --set and precision, and what is computed)"
                if "scenario" in differ else "")
        if "host_memory_ok" in differ:
            hint += (" (host_memory_ok: whether a process's machine holds the run's per-path results, which every "
                     "process gathers; 0 on a machine short of memory: give the job fewer paths or larger nodes)")
        raise ConfigError(f"the processes disagree on {what}: {', '.join(differ)}{hint} ({rows}); give every "
                          "process the same scenario, arguments and --devices")


def gather_chunks(local: list[np.ndarray], n_chunks: int, shape: tuple[int, ...], dtype) -> list[np.ndarray]:
    """All chunks' arrays, in chunk order, on every process.

    `local` holds this process's arrays for chunks rank, rank + P, ... (those below n_chunks), each of `shape`
    and `dtype`. Round r holds chunks r P .. r P + P - 1; a process without a chunk in a round sends zeros, which
    are dropped. Every process must call this with the same n_chunks, shape and dtype.
    """
    from jax.experimental.multihost_utils import process_allgather

    rank, n_proc = process_info()
    rounds = -(-n_chunks // n_proc)
    expected = len(range(rank, n_chunks, n_proc))
    if len(local) != expected:
        raise ValueError(f"process {rank} has {len(local)} chunks, expected {expected}")
    chunk_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    per_call = max(1, GATHER_BYTES // max(1, chunk_bytes * n_proc))
    out: list[np.ndarray] = []
    for r0 in range(0, rounds, per_call):
        r1 = min(rounds, r0 + per_call)
        mine = np.zeros((r1 - r0, *shape), dtype)
        for r in range(r0, min(r1, len(local))):
            mine[r - r0] = local[r]
        both = np.asarray(process_allgather(mine))  # (processes, rounds, *shape)
        both = np.swapaxes(both, 0, 1).reshape(-1, *shape)  # chunk order: round-major, then process
        out.extend(both[: min(n_chunks - r0 * n_proc, len(both))])
    return out
