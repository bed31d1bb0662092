"""Where the time of one chunk goes: the compiled kernels (XLA fusions) ranked by their total time.

    python scripts/profile_run.py [--paths 16384] [--steps 252] [--grad] [--top 25] [--hlo FILE]

Compiles one chunk of `april_2025` (the forward, or with --grad the full gradient over every driver), runs it
once to warm up, then once under `jax.profiler.trace`, and reads the trace back (`jax.profiler.ProfileData`):
every event that names an HLO instruction is summed by name, on the CPU's worker threads or the GPU's streams.
Prints the top kernels with their share of the total, calls per step and time per call; --hlo writes the
optimized HLO text of the program (fusion bodies with the source lines of their operations) to look the names
up in. Then the time by part of the model (random numbers, regime draw and tables, step, curve, portfolio,
report dates, loops and copies), each kernel's time split by the source functions of its instructions (the stack
frames kept in the optimized HLO); and by block of the step (its named scopes, which the reverse mode keeps where
the stack frames point into JAX) and phase: the forward pass and, for --grad, the backward pass's rerun of the
segments, the step recomputed for its reverse mode and the step transposed. On a GPU set
XLA_FLAGS=--xla_gpu_enable_command_buffer= to see the kernels that a CUDA graph would otherwise hide under one name.
"""

import argparse
import collections
import glob
import re
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


# Parts of the model, by the innermost jaxstress function that an HLO instruction was traced from (the stack
# frames that XLA keeps in the optimized HLO's metadata); checked in this order.
PARTS = (
    ("random numbers", "_simulate.py", ("threefry2x32", "philox2x32", "counter_bits", "_normal_icdf32", "_value",
                                        "packed", "unpack", "__call__")),
    ("regime draw", "_model.py", ("_transition", "next_regime")),
    ("regime draw", "_regimes.py", None),
    ("regime tables", "_model.py", ("pick", "lookup", "_lookup_bwd", "_regime_tables")),
    ("curve", "_curve.py", None),
    ("portfolio", "_portfolio.py", None),
    ("report dates", "_simulate.py", ("observe", "observe_columns", "_observe_initial", "path_metrics")),
    ("step", "_model.py", None),
)


def _tables(hlo: str) -> dict:
    """The optimized HLO's source tables: stack frame id -> [(file, function), ...] from innermost out."""
    sections: dict[str, dict[int, str]] = {}
    current = None
    for line in hlo.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = sections.setdefault(line, {})
        elif current is not None and line[:1].isdigit():
            key, _, rest = line.partition(" ")
            current[int(key)] = rest
        elif not line.strip():
            current = None
    ids = lambda text, name: int(re.search(rf"{name}=(\d+)", text).group(1))  # noqa: E731
    files = {k: v.strip('"') for k, v in sections.get("FileNames", {}).items()}
    funcs = {k: v.strip('"') for k, v in sections.get("FunctionNames", {}).items()}
    locs = {k: (files.get(ids(v, "file_name_id"), "?"), funcs.get(ids(v, "function_name_id"), "?"))
            for k, v in sections.get("FileLocations", {}).items()}
    frames = {k: (ids(v, "file_location_id"), ids(v, "parent_frame_id")) for k, v in
              sections.get("StackFrames", {}).items()}

    def chain(frame: int) -> list:
        out, seen = [], set()
        while frame in frames and frame not in seen:
            seen.add(frame)
            loc, parent = frames[frame]
            out.append(locs.get(loc, ("?", "?")))
            frame = parent
        return out

    return {k: chain(k) for k in frames}


def part_of(chain: list) -> str:
    for file, func in chain:
        if "jaxstress" not in file:
            continue
        func = func.rsplit(".", 1)[-1]  # "_BlockDraws._value" -> "_value"
        for part, where, names in PARTS:
            if file.endswith(where) and (names is None or func in names):
                return part
    return "loops, copies, other"


# instructions that do no per-element work of their own (parameters, constants, broadcasts, bitcasts) or only
# scalar work: left out of the counts
_FREE = re.compile(r"= \w+\[\] |\s(?:parameter|constant|broadcast|bitcast|get-tuple-element|tuple)\(")


def _kernel_shares(hlo: str, key_of) -> dict:
    """{kernel (HLO instruction) name: {key: share}}: a fusion's instructions counted by key_of(instruction line,
    part it was traced from) (a kernel's time is split in those proportions); any other instruction wholly to its
    own key."""
    chains = _tables(hlo)
    comps: dict[str, list] = {}
    insts: dict[str, tuple] = {}
    name = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) ", line)
        if head and line.rstrip().endswith("{"):
            name = head.group(1)
            comps[name] = []
            continue
        m = re.match(r"^\s+(?:ROOT )?%(\S+) = .*?(?:calls=%(\S+?)[,} ].*)?$", line)
        if m and name is not None:
            frame = re.search(r"stack_frame_id=(\d+)", line)
            key = key_of(line, part_of(chains.get(int(frame.group(1)), [])) if frame else "loops, copies, other")
            insts[m.group(1)] = (m.group(2), key)
            if not _FREE.search(line):
                comps[name].append(key)
    out = {}
    for inst, (called, key) in insts.items():
        counts = collections.Counter((comps.get(called, []) if called else []) or [key])
        out[inst] = {k: c / sum(counts.values()) for k, c in counts.items()}
    return out


def kernel_parts(hlo: str) -> dict:
    """{kernel (HLO instruction) name: {part: share}}: a fusion's instructions counted by the part each was traced
    from (a kernel's time is split in those proportions); any other instruction wholly to its own part."""
    return _kernel_shares(hlo, lambda line, part: part)


# The step's blocks: each is a `jax.named_scope` in `_model.step`, kept in the op_name of every instruction traced
# from it, reverse mode included (where the stack frames point into JAX's transposition rules instead).
BLOCKS = ("regime", "jumps", "macro", "holders", "vol_funds", "basis_funds", "flows", "curve", "equity_dollar",
          "debt", "state", "draws", "regime_lookup")
# scopes outside the step: the counter-based draws (`_BlockDraws.packed`) and the regime tables looked up for the
# reverse mode (`next_regime`, `lookup`'s transpose)
_OUTSIDE = {"draws": "random numbers", "regime_lookup": "regime tables (reverse mode)"}
PHASES = ("forward", "backward: segments run again, other", "backward: step recomputed", "backward: step transposed")
_BLOCK_RE = re.compile(r"[(/](" + "|".join(BLOCKS) + r")[)/]")


def phase_block(op_name: str, part: str) -> tuple[str, str]:
    """(phase, block) of an instruction from its op_name: the forward pass, or in the gradient's backward pass
    (under the outer `transpose(jvp())`) the segments' rerun, the step recomputed for its reverse mode (an inner
    `jvp(`) or the step transposed (an inner `transpose(`); the step's block by its named scope, else the part of
    the model from the stack frames (`part_of`)."""
    _, sep, inner = op_name.partition("transpose(jvp())/")
    if not sep and "transpose(" not in op_name:
        phase = PHASES[0]
    elif "transpose(" in inner:
        phase = PHASES[3]
    elif "jvp(" in inner:
        phase = PHASES[2]
    else:
        phase = PHASES[1]
    blocks = _BLOCK_RE.findall(op_name)
    if not blocks:
        return phase, part
    return phase, _OUTSIDE.get(blocks[-1], "step: " + blocks[-1])


def kernel_blocks(hlo: str) -> dict:
    """{kernel name: {(phase, block): share}}, as `kernel_parts` but by `phase_block` of each op_name."""
    def key_of(line, part):
        op = re.search(r'op_name="([^"]*)"', line)
        return phase_block(op.group(1) if op else "", part)

    return _kernel_shares(hlo, key_of)


def print_blocks(times: dict, hlo: str, total: float) -> None:
    """The kernel time by block of the model (rows) and phase (columns), as shares of the total."""
    table: dict[tuple, float] = collections.defaultdict(float)
    blocks = kernel_blocks(hlo)
    for name, (t, _) in times.items():
        for key, share in blocks.get(name, {(PHASES[0], "unmatched kernels"): 1.0}).items():
            table[key] += t * share
    phases = [p for p in PHASES if any(k[0] == p for k in table)]
    rows = sorted({k[1] for k in table}, key=lambda b: -sum(table[p, b] for p in phases))
    short = {p: p.replace("backward: ", "").split(",")[0] for p in phases}
    print("\nby block of the step (named scopes) or part of the model, and phase (shares of the kernel time):")
    print(f"  {'':36s}" + "".join(f"{short[p]:>20s}" for p in phases) + f"{'all':>8s}")
    for b in rows:
        cells = "".join(f"{table[p, b] / total:20.1%}" for p in phases)
        print(f"  {b[:36]:36s}{cells}{sum(table[p, b] for p in phases) / total:8.1%}")
    print(f"  {'all':36s}" + "".join(f"{sum(table[p, b] for b in rows) / total:20.1%}" for p in phases))


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
                 *(jnp.asarray(x, dt) for x in (0.0, 0.0, 0.0, 1.0, 0.05, 1.0)))
        fn, fargs = chunk_gradient, (params, key, first, nb, *extra)
    else:
        fn, fargs = simulate_chunk, (params, key, first, nb, report_steps(sc.config, params.n_steps))
    hlo = fn.lower(*fargs).compile().compiled.as_text()
    if args.hlo:
        with open(args.hlo, "w") as f:
            f.write(hlo)
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
    parts = kernel_parts(hlo)
    by_part: dict[str, float] = collections.defaultdict(float)
    for name, (t, _) in times.items():
        for part, share in parts.get(name, {"unmatched kernels": 1.0}).items():
            by_part[part] += t * share
    print("\nby part of the model (a kernel's time split by the parts its instructions were traced from):")
    for part, t in sorted(by_part.items(), key=lambda kv: -kv[1]):
        print(f"  {part:40s} {t / total:6.1%}")
    print_blocks(times, hlo, total)
    unmatched = sorted((n for n in times if n not in parts), key=lambda n: -times[n][0])
    if unmatched:
        print("  unmatched (not an instruction of the optimized HLO):", ", ".join(unmatched[:8]))


if __name__ == "__main__":
    main()
