"""Where the time of one chunk goes: the compiled kernels (XLA fusions) ranked by their total time.

    python scripts/profile_run.py [--paths 16384] [--steps 252] [--grad] [--top 25] [--hlo FILE]

Compiles one chunk of `april_2025` (the forward, or with --grad the full gradient over every driver), runs it
once to warm up, then once under `jax.profiler.trace`, and reads the trace back (`jax.profiler.ProfileData`):
every event that names an HLO instruction is summed by name, on the CPU's worker threads or the GPU's streams.
Prints the top kernels with their share of the total, calls per step and time per call; --hlo writes the
optimized HLO text of the program (fusion bodies with the source lines of their operations) to look the names
up in. On a GPU set XLA_FLAGS=--xla_gpu_enable_command_buffer= to see the kernels that a CUDA graph would
otherwise hide under one name.
"""

import argparse
import collections
import glob
import tempfile
import warnings

import jax
import jax.numpy as jnp

from jaxstress import load_scenario
from jaxstress._sensitivities import KINDS, chunk_gradient
from jaxstress._simulate import BLOCK, METRIC_NAMES, PRNG_IMPL, report_steps, simulate_chunk


def kernel_times(trace_dir: str) -> tuple[dict, str]:
    """{hlo op name: [total ns, calls]} and the plane they came from: the GPU's "XLA Ops" line (or its streams'
    kernels, by their hlo_op), else the CPU's worker threads."""
    from jax.profiler import ProfileData

    files = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    if not files:
        raise SystemExit(f"no trace written under {trace_dir}")
    warnings.filterwarnings("ignore", "builtin type event_stats", DeprecationWarning)  # jaxlib's stats type
    data = ProfileData.from_file(files[0])
    gpu = [p for p in data.planes if p.name.startswith("/device:")]
    times: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for plane in gpu or [p for p in data.planes if p.name == "/host:CPU"]:
        lines = list(plane.lines)
        ops = [ln for ln in lines if ln.name == "XLA Ops"]
        for line in ops or [ln for ln in lines if ln.name not in ("XLA Modules", "Steps", "XLA TraceMe")]:
            for e in line.events:
                name = dict(e.stats).get("hlo_op") or (e.name if ops else None)
                if name is None:
                    continue
                times[name][0] += e.duration_ns
                times[name][1] += 1
    return times, (gpu[0].name if gpu else "/host:CPU")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=252)
    ap.add_argument("--grad", action="store_true", help="profile the full gradient instead of the forward")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--hlo", help="write the optimized HLO text here")
    args = ap.parse_args()
    sc = load_scenario("april_2025", horizon=args.steps / 252)
    params = sc.params()
    key = jax.random.key(0, impl=PRNG_IMPL)
    nb = max(1, args.paths // BLOCK)
    first = jnp.asarray(0, jnp.uint32)
    if args.grad:
        dt = params.values["curve.k"].dtype
        extra = (jnp.asarray(KINDS.index("mean"), jnp.int32), jnp.asarray(METRIC_NAMES.index("y10_change_bp"),
                                                                          jnp.int32),
                 *(jnp.asarray(x, dt) for x in (0.0, 0.0, 0.0, 1.0, 0.05)))
        fn, fargs = chunk_gradient, (params, key, first, nb, *extra)
    else:
        fn, fargs = simulate_chunk, (params, key, first, nb, report_steps(sc.config, params.n_steps))
    if args.hlo:
        with open(args.hlo, "w") as f:
            f.write(fn.lower(*fargs).compile().compiled.as_text())
    jax.block_until_ready(fn(*fargs))
    trace_dir = tempfile.mkdtemp(prefix="jaxstress-trace-")
    with jax.profiler.trace(trace_dir):
        jax.block_until_ready(fn(*fargs))
    times, where = kernel_times(trace_dir)
    total = sum(t for t, _ in times.values())
    steps = params.n_steps
    print(f"{'gradient' if args.grad else 'forward'} of {nb * BLOCK:,} paths x {steps} steps on {jax.devices()[0]}: "
          f"{len(times)} kernels, {sum(c for _, c in times.values()) / steps:.1f} launches a step, "
          f"{total / 1e6:.1f} ms of kernel time ({where}; on CPU, summed over worker threads), "
          f"{total / (nb * BLOCK * steps):.2f} ns a path-step")
    print(f"{'kernel':48s} {'share':>6s} {'calls/step':>10s} {'us/call':>9s}")
    for name, (t, c) in sorted(times.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{name[:48]:48s} {t / total:6.1%} {c / steps:10.2f} {t / c / 1e3:9.1f}")


if __name__ == "__main__":
    main()
