"""`hybench report` and `hybench query`: their flags and handlers. The work lives in report.py,
store_views.py and output.py, imported only when a command runs (matplotlib is slow to load)."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack

from hybench.queries import catalog
from hybench.queries.errors import QueryError
from hybench.queries.formats import PLOT_FORMATS, QUERY_FORMATS

_VIEWS_HELP = ("Views: requests (one row per request, warmup included: filter on warmup), iterations (one row "
               "per iteration), jobs (one row per job: task, status, memory, MBU/MFU, versions), quality (quality "
               "jobs: NLL sums, tokens and top-1 hits per request and position bucket or recall distance) and cells "
               "(every throughput metric per model x engine x window x output length x config x input length, "
               "warmup and failed jobs' requests left out). Quote the column \"window\": it is an SQL keyword.")


def _add_selection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", default="results", metavar="DIR_OR_URI",
                        help="results store: a folder or a pyarrow filesystem URI (s3://, gs://) (default: results)")
    parser.add_argument("--sweep", metavar="ID[,ID...]", help="only these sweeps")
    parser.add_argument("--model", metavar="MODEL[,MODEL...]", help="only these models")
    parser.add_argument("--config", metavar="CONFIG[,CONFIG...]",
                        help="only these attention configs (full, sliding, hybrid)")
    parser.add_argument("--where", metavar="SQL", help="SQL predicate over the job columns both tables share "
                        '(job_id, sweep_id, model, config, "window", engine, input_len, output_len), '
                        "e.g. \"input_len >= 2048\"")
    parser.add_argument("--compare", metavar="DIR_OR_URI", help="a second results store shown beside the first, "
                        "as B against A (another GPU, another code version)")
    parser.add_argument("--compare-sweep", metavar="ID[,ID...]",
                        help="the sweeps side B shows, from --compare's store or else from --results-dir")


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report", help="figures and summary.md of a results store",
        description="Write memory_comparison, throughput_comparison, latency_percentiles, "
        "latency_vs_input_length and memory_efficiency figures and summary.md (findings, then a table per "
        "query) for a results store, or for two side by side with --compare.")
    _add_selection_flags(parser)
    parser.add_argument("--output-dir", metavar="DIR", help="where figures and summary.md go "
                        "(default: <results-dir>/plots for a local store)")
    parser.add_argument("--format", choices=PLOT_FORMATS, default="png", help="figure format (default: png)")
    parser.set_defaults(func=_report)


def add_query_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "query", help="run SQL over the results store",
        description="Run an SQL query, or a shipped one (--name), over the results store with DuckDB. "
        + _VIEWS_HELP)
    parser.add_argument("sql", nargs="?", help="the SQL query, e.g. \"SELECT config, count(*) FROM requests "
                        "GROUP BY config\"")
    parser.add_argument("--name", help="run a shipped query instead (see --list)")
    parser.add_argument("--list", action="store_true", help="list the shipped queries, one line each")
    _add_selection_flags(parser)
    parser.add_argument("--format", choices=QUERY_FORMATS, default="table",
                        help="table (aligned, first rows), csv, json (one object a line) or parquet (default: table)")
    parser.add_argument("--output", metavar="FILE", help="write here instead of the terminal (needed for parquet)")
    parser.set_defaults(func=_query)


def _report(args: argparse.Namespace) -> int:
    from hybench.orchestrator.output_paths import check_output_folder
    from hybench.queries.report import write_report

    output_dir = args.output_dir
    if output_dir is None:
        if "://" in args.results_dir:
            raise QueryError("--output-dir is needed when --results-dir is a URI")
        output_dir = os.path.join(args.results_dir, "plots")
    check_output_folder("--output-dir", output_dir)
    print(write_report(args.results_dir, output_dir, args.format, sweep=args.sweep, model=args.model,
                       config=args.config, where=args.where, compare=args.compare,
                       compare_sweep=args.compare_sweep))
    return 0


def _query(args: argparse.Namespace) -> int:
    if args.list:
        described = catalog.describe()
        width = max(len(name) for name, _ in described)
        for name, text in described:
            print(f"{name.ljust(width)}  {text}")
        return 0
    if (args.sql is None) == (args.name is None):
        raise QueryError("give either an SQL query or --name NAME (or --list)")
    if args.format == "parquet" and args.output is None:
        raise QueryError("--format parquet writes a file: add --output FILE")
    sql = catalog.load(args.name) if args.name else args.sql

    from hybench.queries.output import check_output, write_result
    from hybench.queries.store_views import Selection, open_views, print_skipped, sides

    selection = Selection.of(args.results_dir, args.sweep, args.model, args.config, args.where)
    if args.output is not None:
        check_output(args.output, [args.results_dir, *([args.compare] if args.compare else [])])
    with ExitStack() as stack:
        opened = [(side, stack.enter_context(open_views(side.selection)))
                  for side in sides(selection, args.compare, args.compare_sweep)]
        parts = [(side.name, views.reader(sql)) for side, views in opened]
        for side, views in opened:  # once the query is known to run, so an error stays one line
            print_skipped(views.skipped)
            if side.name:
                print(f"side {side.label}", file=sys.stderr)
        write_result(parts, args.format, args.output)
    return 0
