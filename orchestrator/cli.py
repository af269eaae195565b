"""`hybench`: one console script, one subcommand per step of the data flow.

Every user mistake (bad flag, unknown model, unreadable store, bad SQL) ends as one line on stderr
and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from hybench.workers.job_spec import project_version

EXIT_USAGE = 2


def one_line(text: str) -> str:
    """A message that echoes user input, kept to one line: control characters (a newline or carriage
    return in a flag value, say) are written as escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the full usage is one `--help` away)."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{one_line(f'{self.prog}: error: {message}')} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        # argparse drops a value of "--" given as --flag=--, leaving the flag set to an empty list.
        for action in self._actions:
            if action.option_strings and action.nargs is None and getattr(namespace, action.dest, None) == []:
                self.error(f"argument {'/'.join(action.option_strings)}: expected one argument")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    from hybench.orchestrator.bench_cli import add_bench_parser
    from hybench.orchestrator.calibrate_cli import add_calibrate_parser
    from hybench.orchestrator.data_cli import add_data_parser
    from hybench.orchestrator.index_cli import add_index_parser
    from hybench.orchestrator.sweep_cli import add_submit_parser, add_sweep_parser
    from hybench.queries.cli import add_query_parser, add_report_parser

    parser = _Parser(
        prog="hybench",
        description="Measure what a hybrid attention layout buys: full attention vs sliding-window "
        "attention vs sliding window + SSM history branch, on real decoder LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"hybench {project_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_sweep_parser(sub)
    add_bench_parser(sub)
    add_data_parser(sub)
    add_submit_parser(sub)
    add_report_parser(sub)
    add_query_parser(sub)
    add_index_parser(sub)
    add_calibrate_parser(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the user asked for something impossible, not a bug."""
    from hybench.engine.errors import EngineConfigError
    from hybench.orchestrator.bench_cli import BenchInputError
    from hybench.orchestrator.output_paths import OutputPathError
    from hybench.orchestrator.sweep import SweepError
    from hybench.queries.errors import QueryError
    from hybench.workers.datasets import DatasetError
    from hybench.workers.store import StoreError

    return (EngineConfigError, StoreError, BenchInputError, QueryError, SweepError, DatasetError, OutputPathError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        print(one_line(f"hybench {args.command}: error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        kept = "nothing written" if args.command == "query" else "completed jobs are kept, re-run to resume"
        print(f"hybench {args.command}: interrupted; {kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
