"""`hybench sweep` (a sweep from flags or a YAML file, run by the Ray driver, then the report) and
`hybench submit` (the same sweep as a Ray job on a cluster started with `ray up cluster.yaml`)."""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time

from hybench.orchestrator.sweep import (RUN_OPTIONS, SETTINGS, SweepError, add_sweep_arguments, expand, resolve,
                                       window_notes)
from hybench.orchestrator.output_paths import check_output_folder
from hybench.queries.formats import PLOT_FORMATS
from hybench.workers.store import ResultStore


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sweep", help="run model x config x window x input length (x engine x task) on Ray actors, one per GPU",
        description="Expand the sweep into jobs (the cartesian product of every list; --tasks adds quality jobs, "
        "perplexity and recall, beside throughput ones), skip the jobs whose ok result is already in the store, run the rest on Ray actors (one per GPU, or CPU actors where there is "
        "no GPU), then write the report. With no arguments: a quick sweep of the tiny-recall preset on this machine, throughput and recall jobs side by side.",
    )
    parser.add_argument("sweep_file", nargs="?", metavar="SWEEP_FILE",
                        help="YAML file with the flags' names as keys (models, configs, windows, input_lengths, "
                        "tasks, eval_text, history_weights, results, ...) and a value or a list each; flags given here override it")
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
    options = DriverOptions(**{o.name: settings[o.name] for o in RUN_OPTIONS if o.name not in ("sweep_id", "repeats")},
                            progress=args.progress)
    store = ResultStore(options.results)
    check_output_folder("--results", options.results)
    report_dir = args.report_dir or (os.path.join(store.root, "plots") if store.is_local else "plots")
    if args.report:
        check_output_folder("--report-dir", report_dir)
    for note in window_notes(specs):
        print(f"hybench sweep: {note}", file=sys.stderr)
    began = time.monotonic()
    summary = run_sweep(specs, options)
    ran = summary.statuses
    print(f"sweep {specs[0].sweep_id}: {summary.jobs} jobs, {summary.skipped} already done, ran {sum(ran.values())} "
          f"({ran['ok']} ok, {ran['oom']} oom, {ran['error']} failed) in {time.monotonic() - began:.0f} s; "
          f"results: {store.display(store.root)}")
    if args.report:
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


def ray_executable() -> str:
    """The `ray` command on PATH, else the one installed beside this Python (a venv not activated)."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return shutil.which("ray") or (beside if os.access(beside, os.X_OK) else "ray")


def submit_command(args: argparse.Namespace) -> list[str]:
    command = [ray_executable(), "job", "submit", "--working-dir", "."]
    if args.ray_address:
        command += ["--address", args.ray_address]
    if args.no_wait:
        command.append("--no-wait")
    sweep_args = args.sweep_args[1:] if args.sweep_args[:1] == ["--"] else args.sweep_args
    # The job runs in the environment of the head's `ray start`, whose PATH may lack the venv (started
    # as .venv/bin/ray): this Python's folder is searched after PATH, so a cluster's own hybench wins.
    here = os.path.dirname(sys.executable)
    entrypoint = ["sh", "-c", f'PATH="$PATH:{here}" exec hybench sweep "$@"', "hybench"]
    return command + ["--", *entrypoint, "--address", "auto", *sweep_args]


def submit_env() -> dict[str, str]:
    """This environment, with Ray's token authentication on where a token is at hand and RAY_AUTH_MODE
    is unset: `ray start --head` turns it on when it finds a token (~/.ray/auth_token, which any local
    `hybench sweep` creates), but `ray job submit` sends it only when told, and is then refused."""
    env = dict(os.environ)
    token_path = env.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if "RAY_AUTH_MODE" not in env and (env.get("RAY_AUTH_TOKEN") or os.path.isfile(token_path)):
        env["RAY_AUTH_MODE"] = "token"
    return env


def run_submit_command(args: argparse.Namespace) -> int:
    command = submit_command(args)
    print("+ " + shlex.join(command), file=sys.stderr)
    try:
        return subprocess.call(command, env=submit_env())
    except FileNotFoundError:
        raise SweepError("the `ray` command is neither on PATH nor beside this Python (it comes with pip install 'ray[default]')") from None
