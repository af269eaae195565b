"""`hybench sweep` (a sweep from flags or a YAML file, run by the Ray driver, then the report) and
`hybench submit` (the same sweep as a Ray job on a cluster started with `ray up cluster.yaml`)."""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

from hybench.orchestrator.sweep import RUN_OPTIONS, SETTINGS, SweepError, add_sweep_arguments, expand, resolve
from hybench.queries.formats import PLOT_FORMATS
from hybench.workers.store import ResultStore


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sweep", help="run model x config x window x input length (x engine) on Ray actors, one per GPU",
        description="Expand the sweep into jobs (the cartesian product of every list), skip the jobs whose ok "
        "result is already in the store, run the rest on Ray actors (one per GPU, or CPU actors where there is "
        "no GPU), then write the report. With no arguments: a quick sweep of the tiny preset on this machine.",
    )
    parser.add_argument("sweep_file", nargs="?", metavar="SWEEP_FILE",
                        help="YAML file with the flags' names as keys (models, configs, windows, input_lengths, "
                        "results, ...) and a value or a list each; flags given here override it")
    add_sweep_arguments(parser)
    # Unset flags read as None so that a sweep file can fill them in; help still shows the defaults.
    parser.set_defaults(**dict.fromkeys(SETTINGS))
    parser.add_argument("--report-dir", default=None, metavar="DIR", help="where the report goes (default: "
                        "plots/ in a local results folder, else ./plots)")
    parser.add_argument("--format", dest="report_format", choices=PLOT_FORMATS, default="png",
                        help="figure format of the report (default: png)")
    parser.add_argument("--no-report", dest="report", action="store_false", help="skip the report")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="hide the progress bar (shown on a terminal by default)")
    parser.set_defaults(func=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    from hybench.orchestrator.driver import DriverOptions, run_sweep  # imports Ray: only when a sweep runs

    settings = resolve({name: getattr(args, name) for name in SETTINGS}, args.sweep_file)
    specs = expand(settings)
    options = DriverOptions(**{o.name: settings[o.name] for o in RUN_OPTIONS if o.name != "sweep_id"},
                            progress=args.progress)
    began = time.monotonic()
    summary = run_sweep(specs, options)
    ran = summary.statuses
    store = ResultStore(options.results)
    print(f"sweep {specs[0].sweep_id}: {summary.jobs} jobs, {summary.skipped} already done, ran {sum(ran.values())} "
          f"({ran['ok']} ok, {ran['oom']} oom, {ran['error']} failed) in {time.monotonic() - began:.0f} s; "
          f"results: {store.display(store.root)}")
    if args.report:
        report_dir = args.report_dir or (os.path.join(store.root, "plots") if store.is_local else "plots")
        write_sweep_report(options.results, report_dir, args.report_format)
    return 1 if ran["error"] else 0


def write_sweep_report(results: str, report_dir: str, fmt: str) -> None:
    """The report after the jobs: one that fails (a stranger's file in the store, a full disk) is one
    line on stderr, and the sweep's exit code still says how its jobs ended."""
    from hybench.queries import write_report
    from hybench.queries.errors import QueryError
    from hybench.workers.store import StoreError

    try:
        path = write_report(results, report_dir, fmt)
    except (QueryError, StoreError) as exc:
        print(f"hybench sweep: the report failed ({exc}); the results are stored, run `hybench report` "
              "to try again", file=sys.stderr)
        return
    print(f"report: {path}")


def add_submit_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "submit", help="run a sweep as a Ray job on a cluster (ray job submit --working-dir . -- hybench sweep)",
        description="Submit `hybench sweep --address auto SWEEP_ARGS` to a Ray cluster with `ray job submit "
        "--working-dir .`, from the project folder: hybench submit [--ray-address URL] -- SWEEP_ARGS. Give the "
        "sweep a results store every node reaches (s3://...).",
    )
    parser.add_argument("--ray-address", default=None, metavar="URL",
                        help="the cluster's dashboard, e.g. http://127.0.0.1:8265 after `ray dashboard "
                        "cluster.yaml` (default: RAY_ADDRESS, as for ray job submit)")
    parser.add_argument("--no-wait", action="store_true", help="return once submitted instead of following the logs")
    parser.add_argument("sweep_args", nargs=argparse.REMAINDER, metavar="-- SWEEP_ARGS",
                        help="hybench sweep's arguments")
    parser.set_defaults(func=run_submit_command)


def submit_command(args: argparse.Namespace) -> list[str]:
    command = ["ray", "job", "submit", "--working-dir", "."]
    if args.ray_address:
        command += ["--address", args.ray_address]
    if args.no_wait:
        command.append("--no-wait")
    sweep_args = args.sweep_args[1:] if args.sweep_args[:1] == ["--"] else args.sweep_args
    return command + ["--", "hybench", "sweep", "--address", "auto", *sweep_args]


def run_submit_command(args: argparse.Namespace) -> int:
    command = submit_command(args)
    print("+ " + shlex.join(command), file=sys.stderr)
    try:
        return subprocess.call(command)
    except FileNotFoundError:
        raise SweepError("the `ray` command is not on PATH (it comes with pip install ray)") from None
