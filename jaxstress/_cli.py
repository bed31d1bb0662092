"""The `jaxstress` command line.

Every verb validates its input first; a bad config, an unknown name or a missing file prints one line
(`jaxstress: error: <file>, key '<key>': <what is expected>`) and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxstress")
    except PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= low, else one error line naming it as `what`."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "a non-negative integer")


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2^32), got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _devices(text: str) -> str | int:
    return "all" if text.strip().lower() == "all" else _positive_int(text)


def _add_scenario_args(p: argparse.ArgumentParser):
    p.add_argument("scenario", nargs="?", default="april_2025",
                   help="shipped scenario name or path to a TOML file (default: april_2025)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set holders.japan.sell_rate=0.2 (repeatable); an inline "
                        "table, e.g. holders.japan={sell_rate=0.2, fima_share=0.1}, sets the keys it gives")
    p.add_argument("--portfolio", help="shipped portfolio name or path to a portfolio TOML")
    p.add_argument("--horizon", type=_positive_float,
                   help="horizon in years (default: the scenario's simulation.horizon)")
    p.add_argument("--steps-per-year", type=_positive_int,
                   help="time steps per year (default: the scenario's simulation.steps_per_year, 252 in the shipped "
                        "ones)")
    p.add_argument("--float64", action="store_true", help="simulate in float64 (default float32)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxstress", description="Monte Carlo stress engine for the US Treasury market")
    parser.add_argument("--version", action="version", version=f"jaxstress {_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="simulate a scenario and write summary.json, quantiles.csv, paths.npz")
    _add_scenario_args(run)
    run.add_argument("--paths", type=_positive_int, default=100_000, help="Monte Carlo paths (default 100000)")
    run.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    run.add_argument("--out", default="runs/latest", help="output directory (default runs/latest)")
    run.add_argument("--chunk-size", type=_positive_int,
                     help="the most paths a chunk holds; chunks are evened out (100000 paths run as 7 of 14336) "
                          "(default: 16384 on CPU, fastest in its caches; on a GPU the largest power of two up to "
                          "4194304 that fits 30%% of its memory)")
    run.add_argument("--paths-npz-limit", type=_nonneg_int, default=100_000,
                     help="write paths.npz only for runs of at most this many paths (default 100000)")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG charts (report.html is still written)")
    run.add_argument("--devices", type=_devices, metavar="all|N",
                     help="shard each chunk's paths over the local devices (GPUs): 'all' or a count (default: one)")
    run.add_argument("--distributed", action="store_true",
                     help="multi-host run (jax.distributed): each process runs its share of the chunks, process 0 "
                          "merges and writes; set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or "
                          "run under SLURM / Open MPI")

    sens = sub.add_parser("sensitivities",
                          help="d(metric)/d(driver) for every driver by autodiff, with a tornado chart")
    _add_scenario_args(sens)
    sens.add_argument("--metric", default="y10_change_bp_mean",
                      help="metric to differentiate, e.g. y10_change_bp_mean, y10_change_bp_q99, "
                           "prob_y10_above_5pct, portfolio_loss_es_99 (default y10_change_bp_mean)")
    sens.add_argument("--paths", type=_positive_int, default=16384,
                      help="Monte Carlo paths, rounded up to whole chunks of whole 256-path blocks, at least two "
                           "chunks (default 16384)")
    sens.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    sens.add_argument("--out", default="runs/sensitivities", help="output directory (default runs/sensitivities)")
    sens.add_argument("--drivers", help="comma-separated dotted config keys (default: every driver)")
    sens.add_argument("--chunk-size", type=_positive_int,
                      help="paths per gradient chunk (default: 16384 on CPU, sized to a GPU's memory there)")
    sens.add_argument("--width", type=_positive_float, default=0.05,
                      help="smoothing width of probability metrics (prob_y10_...), in percentage points of the "
                           "10y yield (default 0.05)")
    sens.add_argument("--top", type=_positive_int, default=25, help="drivers printed and charted (default 25)")
    sens.add_argument("--devices", type=_devices, metavar="all|N",
                      help="spread the gradient's chunks over the local devices (GPUs), a chunk a device at a time: "
                           "'all' or a count (default: one); the same chunks and results as on one device")
    sens.add_argument("--distributed", action="store_true",
                      help="multi-host (jax.distributed): each process computes its share of the chunks, process 0 "
                           "merges and writes; set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or "
                           "run under SLURM / Open MPI")
    sens.add_argument("--quiet", action="store_true", help="print nothing but errors")

    bn = sub.add_parser("bench", help="forward throughput, gradient/forward time ratio, compile time, peak memory")
    bn.add_argument("scenario", nargs="?", default="april_2025", help="scenario (default april_2025)")
    bn.add_argument("--paths", type=_positive_int, default=65536, help="paths (default 65536)")
    bn.add_argument("--steps", type=_positive_int, help="time steps (default: the scenario's, its horizon x "
                    "steps per year)")
    bn.add_argument("--chunk-size", type=_positive_int,
                    help="forward chunk (default: 16384 on CPU, sized to a GPU's memory there)")
    bn.add_argument("--grad-chunk-size", type=_positive_int,
                    help="gradient chunk (default: 16384 on CPU, sized to a GPU's memory there)")
    bn.add_argument("--no-grad", action="store_true", help="forward only")
    bn.add_argument("--retain", type=_nonneg_int, default=200_000,
                    help="as in a run (default 200000, run's default): every path of a chunk that holds any of "
                         "the first RETAIN paths is observed at the reporting dates, the other chunks at the horizon "
                         "only")
    bn.add_argument("--repeats", type=_positive_int, default=5,
                    help="timed runs of the forward and the gradient, alternated; the best of each is reported "
                         "(default 5)")
    bn.add_argument("--float64", action="store_true", help="benchmark float64")
    bn.add_argument("--devices", type=_devices, metavar="all|N",
                    help="run on the local devices as run and sensitivities do with --devices: the forward's "
                         "chunks sharded over them (--chunk-size the whole chunk), the gradient's a chunk a device "
                         "(--grad-chunk-size per device); 'all' or a count (default: one)")
    bn.add_argument("--json", action="store_true", help="print one JSON object")

    from ._calibrate_cli import add_parsers

    parser.verb_handlers = add_parsers(sub)

    sc = sub.add_parser("scenarios", help="list the shipped scenarios")
    sc.add_argument("--show", metavar="NAME", help="print a shipped scenario file with its comments")

    cmp = sub.add_parser("compare", help="print the key metrics of several runs side by side, write compare.png")
    cmp.add_argument("runs", nargs="+", metavar="DIR", help="output directories of `jaxstress run`")
    cmp.add_argument("--out", default="compare", help="directory for compare.png (default ./compare)")

    val = sub.add_parser("validate", help="check a scenario config without running it")
    val.add_argument("scenario", help="shipped scenario name or path to a TOML file")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value (repeatable)")
    val.add_argument("--portfolio", help="shipped portfolio name or path to a portfolio TOML")
    val.set_defaults(horizon=None, steps_per_year=None)
    return parser


def _load(args):
    from ._config import load_scenario

    return load_scenario(args.scenario, overrides=args.overrides, portfolio=args.portfolio, horizon=args.horizon,
                         steps_per_year=args.steps_per_year)


KEY_METRICS = (
    "y2_change_bp_mean", "y10_change_bp_mean", "y10_change_bp_q99", "y30_change_bp_mean", "y30_change_bp_q99",
    "y10_max_rise_bp_q99", "breakeven_10y_change_bp_mean", "term_premium_10y_change_bp_mean", "prob_y10_above_5pct",
    "prob_y10_max_above_5pct", "portfolio_loss_mean", "portfolio_loss_var_99", "portfolio_loss_es_99",
    "foreign_sales_bn_mean", "forced_sales_bn_mean", "vol_fund_sales_bn_mean", "fed_purchases_bn_mean",
    "interest_cost_change_bn_mean", "mortgage_rate_change_bp_mean", "equity_return_pct_mean",
    "dollar_change_pct_mean",
)


def format_table(summary: dict) -> str:
    from ._metrics import interval_text

    m, units = summary["metrics"], summary["units"]
    rate = f"{summary['path_steps_per_s'] / 1e6:.2f} M path-steps/s"
    rest_paths = summary["paths"] - summary.get("chunk_size", summary["paths"])
    rest_s = summary["wall_time_s"] - summary.get("first_chunk_s", 0.0)
    if summary.get("processes", 1) == 1 and rest_paths > 0 and rest_s > 0:  # the first chunk includes the compile
        rate += f"; {rest_paths * summary['steps'] / rest_s / 1e6:.2f} M after the first chunk"
    lines = [f"{summary['scenario']}: {summary['paths']:,} paths x {summary['steps']} steps, seed {summary['seed']}, "
             f"{summary['wall_time_s']:.1f} s ({rate}, {summary['backend']})",
             f"{'metric':34s} {'value':>12s} {'stderr':>10s}  unit"]
    for k in KEY_METRICS:
        if k in m:
            val, se = m[k]["value"], m[k]["stderr"]
            val_text = f"{val:12.4g}" if val is not None else f"{'n/a':>12s}"
            se_text = f"{se:10.2g}" if se is not None else f"{'n/a':>10s}"
            lines.append(f"{k:34s} {val_text} {se_text}  {units.get(k, '')}{interval_text(m[k])}")
    pf = summary["portfolio"]
    lines.append(f"portfolio {pf['name']}: PV {pf['pv_bn']:.4g} $bn, DV01 {pf['dv01_bn'] * 1e3:.4g} $mm/bp")
    return "\n".join(lines)


def _write_charts_and_report(res, args, out_dir) -> None:
    """Draw the charts and report.html into the run's (temporary, atomic) output directory."""
    import json

    from ._report import scenario_source_text, write_report

    summary = json.loads((out_dir / "summary.json").read_text())
    pngs = []
    if not args.no_plots:
        from ._plots import draw_all

        pngs = draw_all(res, summary, out_dir)
    write_report(out_dir, summary, pngs, scenario_source_text(res.scenario.file, args.overrides))


def _local_devices(arg: str | int | None) -> int | None:
    """--devices as a count of this process's devices (None: one); more than it has is an error."""
    import jax

    from ._errors import ConfigError

    n_local = jax.local_device_count()
    devices = n_local if arg == "all" else arg
    if devices is not None and devices > n_local:
        raise ConfigError(f"--devices {devices}: this process has {n_local} {jax.default_backend()} device(s)")
    return devices


def cmd_run(args) -> int:
    import functools

    from ._output import check_output, used_devices, write_outputs
    from ._progress import Progress
    from ._simulate import simulate

    if args.distributed:  # before any JAX computation
        from ._distributed import initialize

        initialize(announce=not args.quiet)
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    scenario = _load(args)
    lead = jax.process_index() == 0  # only process 0 prints and writes
    if lead:
        check_output(args.out)  # before the simulation, not after it
    devices = _local_devices(args.devices)
    t0 = time.perf_counter()
    with Progress(quiet=args.quiet or not lead) as progress:
        progress.start(args.paths)
        res = simulate(scenario, args.paths, seed=args.seed, chunk_size=args.chunk_size, progress=progress,
                       devices=devices, distributed=args.distributed)
    if not lead:
        return 0
    summary = write_outputs(res, args.out, _version(), paths_limit=args.paths_npz_limit,
                            extra={"processes": jax.process_count(), "devices_per_process": devices or 1,
                                   "devices": used_devices(devices)},
                            extra_writer=functools.partial(_write_charts_and_report, res, args))
    if summary["note"]:
        print(f"jaxstress: warning: {summary['note']}", file=sys.stderr)
    if not args.quiet:
        print(format_table(summary))
        npz = ", paths.npz" if args.paths <= args.paths_npz_limit else ""
        print(f"wrote {args.out}/summary.json, quantiles.csv{npz}{'' if args.no_plots else ', charts'}, report.html"
              f" in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_sensitivities(args) -> int:
    import json

    from ._errors import ConfigError
    from ._output import atomic_dir, check_output
    from ._plots import tornado_chart
    from ._progress import Progress
    from ._sensitivities import parse_metric, sensitivities

    if args.distributed:  # before any JAX computation
        from ._distributed import initialize

        initialize(announce=not args.quiet)
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    parse_metric(args.metric)
    scenario = _load(args)
    devices = _local_devices(args.devices)
    drivers = None if args.drivers is None else [d.strip() for d in args.drivers.split(",") if d.strip()]
    if drivers == []:
        raise ConfigError("give at least one driver name (comma-separated), or leave --drivers out for every "
                          "driver", key="--drivers")
    lead = jax.process_index() == 0  # only process 0 prints and writes
    if lead:
        check_output(args.out)  # before the gradients, not after them
    with Progress(quiet=args.quiet or not lead) as progress:
        progress.start(args.paths)
        res = sensitivities(scenario, args.metric, args.paths, seed=args.seed, chunk_size=args.chunk_size,
                            drivers=drivers, width=args.width, progress=progress, devices=devices,
                            distributed=args.distributed)
    if not lead:
        return 0
    ranked = sorted(res.gradients.items(), key=lambda kv: -abs(kv[1]["scaled"]))
    doc = {"metric": res.metric, "value": res.value, "stderr": res.stderr, "surrogate": res.surrogate,
           **({"width": res.width} if res.width is not None else {}), "scenario": scenario.name,
           "config_hash": scenario.hash(), "seed": args.seed, "paths": res.n_paths, "chunks": res.n_chunks,
           "forward_s": round(res.forward_s, 3), "gradient_s": round(res.gradient_s, 3),
           "processes": jax.process_count(), "devices_per_process": devices or 1,
           "version": _version(), "note": res.note, "gradients": dict(ranked)}
    with atomic_dir(args.out) as tmp:
        (tmp / "sensitivities.json").write_text(json.dumps(doc, indent=2, allow_nan=False))
        tornado_chart({k: v["scaled"] for k, v in ranked[: args.top]}, tmp / "sensitivities.png",
                      f"{scenario.name}: d {res.metric} per natural unit of each driver")
    if not args.quiet:
        print(f"{scenario.name}: {res.metric} = {res.value:.6g} +/- {res.stderr:.2g} ({res.n_paths:,} paths, "
              f"gradient {res.gradient_s:.1f} s)")
        print(f"{'driver':44s} {'at':>10s} {'d metric/d driver':>18s} {'stderr':>9s} {'scale':>8s} {'scaled':>10s}")
        for name, g in ranked[: args.top]:
            print(f"{name:44s} {g['at']:10.4g} {g['value']:18.4g} {g['stderr']:9.2g} {g['scale']:8.3g} "
                  f"{g['scaled']:10.4g}")
        for name, g in ranked:  # every driver's, shown or not
            if g["note"]:
                print(f"note: {name}: {g['note']}")
        print(f"wrote {args.out}/sensitivities.json, sensitivities.png")
    if res.note:
        print(f"jaxstress: warning: {res.metric}: {res.note}", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    import json

    from ._bench import bench, format_bench
    from ._config import load_scenario

    if args.float64:
        import jax

        jax.config.update("jax_enable_x64", True)
    probe = load_scenario(args.scenario)
    spy = probe.config["simulation"]["steps_per_year"]
    scenario = load_scenario(args.scenario, horizon=args.steps / spy) if args.steps else probe
    r = bench(scenario, args.paths, chunk_size=args.chunk_size, grad_chunk_size=args.grad_chunk_size,
              grad=not args.no_grad, retain=args.retain, repeats=args.repeats, devices=_local_devices(args.devices))
    print(json.dumps(r) if args.json else format_bench(r))
    return 0


def cmd_scenarios(args) -> int:
    from ._config import resolve_path, shipped_scenarios
    from ._errors import ConfigError

    if args.show:
        path = resolve_path(args.show)
        try:
            print(path.read_text(encoding="utf-8"), end="")
        except UnicodeDecodeError:
            raise ConfigError("not UTF-8 text; TOML files must be UTF-8", file=str(path)) from None
        return 0
    items = shipped_scenarios()
    width = max(len(k) for k in items)
    for name, desc in items.items():
        print(f"{name:{width}s}  {desc}")
    return 0


def _read_summary(run_dir: str) -> dict:
    import json
    import pathlib

    from ._errors import ConfigError

    path = pathlib.Path(run_dir) / "summary.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("no summary.json here; give output directories of `jaxstress run`", file=run_dir) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", file=str(path)) from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"malformed JSON: {e}", file=str(path)) from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("value"), int | float) for m in metrics.values()):
        raise ConfigError("not a jaxstress summary: expected 'metrics' mapping names to {value, stderr}",
                          file=str(path), key="metrics")
    data.setdefault("units", {})
    return data


def cmd_compare(args) -> int:
    import pathlib

    from ._errors import ConfigError
    from ._output import atomic_file, check_output

    summaries = [_read_summary(d) for d in args.runs]
    out = pathlib.Path(args.out)
    check_output(out / "compare.png", kind="file")  # before the table is printed, not after it
    labels = [pathlib.Path(d).name or str(d) for d in args.runs]
    if len(set(labels)) < len(labels):
        labels = [str(d) for d in args.runs]
    keys = [k for k in KEY_METRICS if any(k in s["metrics"] for s in summaries)]
    units = {k: next((s["units"].get(k) for s in summaries if s["units"].get(k)), "") for k in keys}

    from ._metrics import interval_text

    def cell(s, k):
        m = s["metrics"].get(k)
        if m is None:
            return "-"
        se = m.get("stderr")
        if interval_text(m):  # a probability: its interval says more than its plug-in error, which is 0 at 0
            return f"{m['value']:.3g} [{m['interval'][0]:.2g}, {m['interval'][1]:.2g}]"
        return f"{m['value']:.4g} \u00b1 {se:.2g}" if isinstance(se, int | float) else f"{m['value']:.4g}"

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, int | float) else "?"

    width = max([22] + [len(lab) for lab in labels])
    books = [s["portfolio"].get("name", "?") if isinstance(s.get("portfolio"), dict) else "?" for s in summaries]
    for lab, s, book in zip(labels, summaries, books):
        print(f"{lab}: {s.get('scenario', '?')}, {num(s.get('paths'), ',')} paths, seed {s.get('seed', '?')}, "
              f"horizon {num(s.get('horizon_years'), '.3g')} y, portfolio {book}")
    if len(set(books)) > 1:
        print("note: the runs value different portfolios, so their portfolio_loss_* metrics are not of one book")
    for lab, s in zip(labels, summaries):  # the 10y left the model's range (`_simulate.range_note`)
        if isinstance(s.get("note"), str):
            print(f"note: {lab}: {s['note']}")
    print(f"{'metric':34s} " + " ".join(f"{lab:>{width}s}" for lab in labels) + "  unit")
    for k in keys:
        print(f"{k:34s} " + " ".join(f"{cell(s, k):>{width}s}" for s in summaries) + f"  {units[k]}")
    from ._plots import compare_chart

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the output directory: {e.strerror}", file=str(out)) from None
    with atomic_file(out / "compare.png", suffix=".png") as tmp:
        compare_chart(summaries, labels, tmp)
    print(f"wrote {out / 'compare.png'}")
    return 0


def cmd_validate(args) -> int:
    from ._config import ConfigErrors

    try:
        scenario = _load(args)
    except ConfigErrors as e:
        for problem in e.problems:
            print(f"jaxstress: error: {problem}", file=sys.stderr)
        return 2
    cfg = scenario.config
    n_holders = sum(isinstance(v, dict) for v in cfg["holders"].values())
    print(f"ok: {scenario.name} ({len(cfg['regimes']['names'])} regimes, {n_holders} holders, "
          f"portfolio {scenario.portfolio.name})")
    return 0


# verbs that compile nothing, or (bench) that report the compile time and so must not load it from disk
NO_CACHE = ("bench", "scenarios", "compare", "validate")


def main(argv=None) -> int:
    from ._errors import ConfigError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run", *argv]  # options without a verb are the run's: `jaxstress --paths 1000`
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *argv])
    if args.command not in NO_CACHE and not getattr(args, "distributed", False):
        # (not in multi-process runs: their processes would write the same entries at the same moment)
        from ._compile_cache import enable

        enable()
    handlers = {"run": cmd_run, "scenarios": cmd_scenarios, "compare": cmd_compare, "validate": cmd_validate,
                "sensitivities": cmd_sensitivities, "bench": cmd_bench, **parser.verb_handlers}
    try:
        return handlers[args.command](args)
    except ConfigError as e:
        print(f"jaxstress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxstress: interrupted; no output was written", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # exit at once: interpreter shutdown with XLA threads mid-computation can crash after an interrupt
        os._exit(130)
    except BrokenPipeError:  # pragma: no cover
        os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
