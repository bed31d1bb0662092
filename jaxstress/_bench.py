"""Benchmarks: forward throughput, gradient-to-forward time ratio, compile time and peak memory.

Every figure is measured after a warm-up call (compile time is reported separately), with
`block_until_ready`, on the same paths for forward and gradient.
"""

from __future__ import annotations

import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ._config import Scenario
from ._simulate import (
    BLOCK,
    METRIC_NAMES,
    PATHS_AXIS,
    PRNG_IMPL,
    default_chunk_size,
    device_snapshot_paths,
    observed_paths,
    paths_mesh,
    replicate,
    report_steps,
    simulate_blocks,
    simulate_chunk,
)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024**3 if sys.platform == "darwin" else 1024**2)


def peak_device_gb(devices=None) -> float | None:
    """Peak memory in use on the most loaded of `devices` (default: the first device), GiB; None where the
    devices do not report it (CPU)."""
    peaks = []
    for d in devices or jax.devices()[:1]:
        try:
            stats = d.memory_stats() or {}
        except Exception:  # noqa: BLE001 - CPU devices may not report
            return None
        if stats.get("peak_bytes_in_use") is None:
            return None
        peaks.append(stats["peak_bytes_in_use"])
    return max(peaks) / 1024**3


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def bench(scenario: Scenario, paths: int, chunk_size: int | None = None, grad_chunk_size: int | None = None,
          grad: bool = True, dtype=None, retain: int = 200_000, repeats: int = 5, devices: int | None = None) -> dict:
    """Forward: `paths` paths over the scenario's horizon, keeping the reporting dates of the first `retain` paths
    as `simulate` does (its default); gradient: the full gradient of y10_change_bp_mean over every driver, on the
    same paths, accumulated over chunks of `grad_chunk_size`. Chunk sizes None: 16,384 (forward and
    gradient) on CPU, sized to an accelerator's memory (`default_chunk_size`). Every compiled shape is warmed up
    before the timed runs. The forward and the gradient are timed `repeats` times, alternately, and the best time
    of each is reported: on a shared machine the speed drifts by 10-30% within a minute, and alternating keeps
    both figures of the ratio from the same stretch of it.

    devices: run on this many local devices as `run` and `sensitivities` do with `--devices` (None or 1: one):
    the forward's chunks sharded over them (`chunk_size` is then the whole chunk, by default a device's default
    times the devices, rounded up to whole blocks a device), the gradient's chunks a chunk a device at a time
    (`grad_chunk_size` per device; a last group short of chunks repeats its last one, and the repeats count in
    `grad_paths`, the paths computed)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    from ._sensitivities import KINDS, chunk_gradient, chunk_gradients_on_devices

    params = scenario.params(dtype)
    steps = params.n_steps
    reports = report_steps(scenario.config, steps)
    n_dev = devices or 1
    if chunk_size is None:
        chunk_size = default_chunk_size(params, "forward", n_reports=len(reports)) * n_dev
    if grad_chunk_size is None:
        grad_chunk_size = default_chunk_size(params, "gradient")
    key = jax.random.key(0, impl=PRNG_IMPL)
    blocks = -(-paths // BLOCK)
    fwd_blocks = max(1, min(blocks, chunk_size // BLOCK))
    fwd_blocks = -(-fwd_blocks // n_dev) * n_dev
    n_fwd = -(-blocks // fwd_blocks)

    done = n_fwd * fwd_blocks * BLOCK
    snaps = [observed_paths(c, fwd_blocks * BLOCK, done, retain) for c in range(n_fwd)]  # as `simulate` runs them
    if n_dev > 1:
        mesh = paths_mesh(n_dev)
        params_m, key_m = replicate(mesh, params, key)
        on_paths = NamedSharding(mesh, PartitionSpec(PATHS_AXIS))
        # the chunks' block numbers placed on the devices beforehand, so that the timed loop does not copy them
        ids = [jax.device_put(np.arange(c * fwd_blocks, (c + 1) * fwd_blocks, dtype=np.uint32), on_paths)
               for c in range(n_fwd)]

        def forward_chunk(c: int, k: int):
            return simulate_blocks(params_m, key_m, ids[c], reports, mesh,
                                   device_snapshot_paths(k, fwd_blocks * BLOCK, n_dev))
    else:
        def forward_chunk(c: int, k: int):
            return simulate_chunk(params, key, jnp.asarray(c * fwd_blocks, jnp.uint32), fwd_blocks, reports, k)

    def forward_all():
        out = None
        for c in range(n_fwd):
            out = forward_chunk(c, snaps[c])
        return out

    _, compile_s = _timed(forward_chunk, 0, snaps[0])
    for k in sorted(set(snaps[1:]) - {snaps[0]}):  # the other chunks' shapes (fewer or no snapshots)
        _timed(forward_chunk, 0, k)
    timed = [forward_all]
    result = {
        "scenario": scenario.name,
        "paths": done,
        "steps": steps,
        "chunk_size": fwd_blocks * BLOCK,
        "snapshot_paths": sum(snaps),  # paths observed at the reporting dates: those kept, and the rest of a chunk
        "dtype": str(params.values["curve.k"].dtype),
        "device": str(jax.local_devices()[0]),
        "backend": jax.default_backend(),
        "n_devices": n_dev,  # the local devices used
        "local_devices": jax.local_device_count(),
        "compile_s": compile_s,
        "repeats": repeats,
    }
    if grad:
        gb = max(1, min(blocks, grad_chunk_size // BLOCK))
        n_g = -(-blocks // gb)
        dt = params.values["curve.k"].dtype
        args = (jnp.asarray(KINDS.index("mean"), jnp.int32),
                jnp.asarray(METRIC_NAMES.index("y10_change_bp"), jnp.int32),
                *(jnp.asarray(x, dt) for x in (0.0, 0.0, 0.0, 1.0, 0.05, 1.0)))
        if n_dev > 1:  # groups of n_dev chunks, one a device; the last group filled up with its last chunk
            groups = [list(range(g, min(g + n_dev, n_g))) for g in range(0, n_g, n_dev)]
            firsts = [jax.device_put(np.asarray([c * gb for c in g + g[-1:] * (n_dev - len(g))], np.uint32),
                                     on_paths) for g in groups]

            def grad_group(g: int):
                return chunk_gradients_on_devices(params_m, key_m, firsts[g], gb, *args, mesh)

            n_g = len(groups) * n_dev  # chunks computed, repeats included
        else:
            groups = list(range(n_g))

            def grad_group(g: int):
                return chunk_gradient(params, key, jnp.asarray(g * gb, jnp.uint32), gb, *args)

        def grad_all():
            out = None
            for g in range(len(groups)):
                out = grad_group(g)
            return out

        _, gcompile = _timed(grad_group, 0)
        timed.append(grad_all)
    rounds = [[_timed(fn)[1] for fn in timed] for _ in range(repeats)]  # forward, gradient, forward, ...
    best = [min(ts) for ts in zip(*rounds)]
    fwd_s = best[0]
    result.update({"forward_s": fwd_s, "path_steps_per_s": done * steps / fwd_s,
                   "forward_s_rounds": [r[0] for r in rounds]})
    if grad:
        grad_s, grad_paths = best[1], n_g * gb * BLOCK
        result.update({
            "grad_compile_s": gcompile,
            "grad_paths": grad_paths,
            "grad_chunk_size": gb * BLOCK,
            "gradient_s": grad_s,
            # per path, so a different rounding of the two path counts does not bias the ratio
            "grad_over_forward": (grad_s / grad_paths) / (fwd_s / done),
            # each round's own ratio (its forward and gradient timed back to back): their spread shows how much
            # the machine drifted during the measurement
            "grad_over_forward_rounds": [(g / grad_paths) / (f / done) for f, g in rounds],
        })
    result["peak_rss_gb"] = peak_rss_gb()
    result["peak_device_gb"] = peak_device_gb(jax.local_devices()[:n_dev])
    return result


def format_bench(r: dict) -> str:
    on = r["device"] if r.get("n_devices", 1) == 1 else f"{r['n_devices']} devices ({r['device']}, ...)"
    lines = [f"{r['scenario']}: {r['paths']:,} paths x {r['steps']} steps on {on} ({r['dtype']})",
             f"  forward            {r['path_steps_per_s'] / 1e6:10.2f} M path-steps/s  ({r['forward_s']:.2f} s, "
             f"chunk {r['chunk_size']:,}; reporting dates of {r['snapshot_paths']:,} paths; best of {r['repeats']})",
             f"  compile (forward)  {r['compile_s']:10.2f} s (first chunk, includes its run)"]
    if "grad_over_forward" in r:
        lines += [f"  gradient           {r['gradient_s']:10.2f} s for {r['grad_paths']:,} paths "
                  f"(chunk {r['grad_chunk_size']:,}); compile {r['grad_compile_s']:.1f} s",
                  f"  grad / forward     {r['grad_over_forward']:10.2f} x (per path; by round: "
                  f"{', '.join(f'{x:.2f}' for x in r['grad_over_forward_rounds'])})"]
    lines.append(f"  peak host memory   {r['peak_rss_gb']:10.2f} GiB")
    if r.get("peak_device_gb") is not None:
        lines.append(f"  peak device memory {r['peak_device_gb']:10.2f} GiB"
                     + (" (the most of any device)" if r.get("n_devices", 1) > 1 else ""))
    return "\n".join(lines)
