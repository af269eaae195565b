"""The sweep spec: flags or a YAML sweep file -> the cartesian product of jobs.

A sweep file uses the same names as the flags (`models`, `windows`, `input_lengths`, `results`, ...;
the JobSpec field names work too) with one value or a list each. Values go through the very
parsers the flags use, so a file and a command line accept and reject the same things, and a
mistake is one line naming the field. Precedence: command line, then sweep file, then defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from hybench.engine.bounded_input import InputLimitError, load_yaml
from hybench.orchestrator.flags import FLAGS, add_sweep_flags, scalar_type, with_flag_names
from hybench.workers.job_spec import JobSpec

# The no-argument sweep: the one preset trained to recall, every config, the window it was trained for
# (shorter than every input, so the three configs differ), few prompts and short outputs, and three
# measured iterations per cell (the fewest that give each figure an interval), one in each of three runs
# of its job (--repeats, a run option below), so that the interval holds what varies between jobs; with
# the default model, recall jobs run beside the throughput jobs (DEMO_TASKS). It ends within a minute
# on a CPU.
SWEEP_DEFAULTS: dict[str, tuple] = {
    "model": ("tiny-recall",),
    "config": ("full", "sliding", "hybrid"),
    "window": (32,),
    "input_len": (128, 256, 512, 1024),
    "num_prompts": (4,),
    "output_len": (16,),
    "num_warmup_iters": (1,),
    "num_benchmark_iters": (1,),
}


# Tasks of a sweep that names no model (flags or file) and no tasks: the first report shows what each
# layout costs and what it keeps, on a model that can recall. A model of the user's runs throughput
# only unless --tasks says otherwise (recall on dummy weights would measure nothing).
DEMO_TASKS = ("throughput", "recall")
SWEEP_HELP_NOTES = {"task": "; without --models: throughput,recall"}


class SweepError(ValueError):
    """A sweep that cannot run as asked (bad file, field or value); the message names the field."""


@dataclass(frozen=True)
class RunOption:
    """A sweep setting that is not part of a job: where and how the jobs run."""

    name: str  # also the YAML key; the flag is --name-with-dashes
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("repeats", int, 3, "times each job runs, as separate jobs in rounds (every job once, then every "
              "job again, ...), so that a cell's 95%% interval holds the variation between jobs (machine load, "
              "process state), not only between the iterations of one job; 1 = one job per cell, whose interval "
              "comes from its iterations alone (quality jobs score fixed sequences and run once)", "N"),
    RunOption("results", str, "results", "results store every worker writes to: a folder (shared by all "
              "nodes of a cluster) or a pyarrow filesystem URI such as s3://bucket/path", "DIR_OR_URI"),
    RunOption("address", str, None, "Ray cluster to run on: auto (the cluster this machine is part of, or the "
              "one `ray job submit` runs in), HOST:PORT or ray://HOST:10001; default: a private Ray on "
              "127.0.0.1", "ADDRESS"),
    RunOption("sweep_id", str, None, "label stored with every row; default: sweep-<hash of the job ids>, "
              "the same on every re-run of the sweep", "ID"),
    RunOption("workers", int, None, "Ray actors to start; default: one per GPU of the cluster (GPUs / "
              "--gpus-per-worker), or one CPU worker where the cluster has no GPU", "N"),
    RunOption("gpus_per_worker", float, None, "GPUs per actor; 0 runs CPU actors; default: 1 where the "
              "cluster has GPUs, else 0", "G"),
    RunOption("cpus_per_worker", int, None, "CPUs per actor, also its torch threads; default: 1 for GPU "
              "actors, the largest node's CPUs for CPU actors", "C"),
    RunOption("max_retries", int, 2, "times a job is re-run after its actor was lost (crash, node lost, "
              "timeout) before it is recorded as a failed job"),
    RunOption("job_timeout", float, None, "seconds a job may run once its model is loaded (the load is not "
              "counted) before its actor is restarted and the attempt counts as failed; default: no limit",
              "SECONDS"),
)
JOB_FIELDS = tuple(f.spec_field for f in FLAGS)
SETTINGS = JOB_FIELDS + tuple(o.name for o in RUN_OPTIONS)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Every bench flag as a list (flags.py, with the sweep's defaults) and the run options."""
    add_sweep_flags(parser, SWEEP_DEFAULTS, SWEEP_HELP_NOTES)
    for option in RUN_OPTIONS:
        parser.add_argument(option.flag, dest=option.name, type=scalar_type(option.parse), default=option.default,
                            metavar=option.metavar,
                            help=option.help + ("" if option.default is None else f" (default: {option.default})"))


def _field_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_sweep_arguments(parser)
    return parser


def _file_keys() -> dict[str, tuple[str, str]]:
    """Sweep-file key (underscores) -> (setting, flag): field names, flag names and plural aliases."""
    keys = {}
    for f in FLAGS:
        for name in filter(None, (f.spec_field, f.flag, f.sweep_name)):
            keys[name.lstrip("-").replace("-", "_")] = (f.spec_field, f.sweep_name or f.flag)
    for o in RUN_OPTIONS:
        keys[o.name] = (o.name, o.flag)
    return keys


def load_sweep_file(path: str) -> dict[str, Any]:
    """The settings a YAML sweep file sets, parsed and checked like the flags."""
    try:
        data = load_yaml(path, "sweep")
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SweepError(f"{path}: not UTF-8 text") from None
    except InputLimitError as exc:
        raise SweepError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SweepError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file maps field names to a value or a list, got {type(data).__name__}")
    keys, parser, settings = _file_keys(), _field_parser(), {}
    for key, value in data.items():
        setting, flag = keys.get(str(key).replace("-", "_"), (None, None))
        if setting is None:
            raise SweepError(f"{path}: unknown field {key!r} (known: {', '.join(SETTINGS)})")
        if setting in settings:
            raise SweepError(f"{path}: field {key!r} sets {setting}, which an earlier field already set")
        is_job_field = setting in JOB_FIELDS
        nested = isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value)
        if isinstance(value, dict) or nested or (isinstance(value, list) and not is_job_field):
            raise SweepError(f"{path}: {key}: takes {'a value or a list' if is_job_field else 'one value'}, "
                             f"got {_shown(value)}")
        text = ",".join(_text(v) for v in value) if isinstance(value, list) else _text(value)
        try:
            settings[setting] = getattr(parser.parse_args([flag, text]), setting)
        except argparse.ArgumentError as exc:
            raise SweepError(f"{path}: {key}: {exc.message}") from None
    return settings


def _shown(value: Any) -> str:
    """A value for an error line, cut short (a value may be large)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: Any) -> str:
    """A YAML scalar as the flag would spell it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def resolve(given: dict[str, Any], sweep_file: str | None) -> dict[str, Any]:
    """Every setting: command line (non-None values of `given`) over sweep file over defaults."""
    defaults = vars(_field_parser().parse_args([]))
    chosen = (load_sweep_file(sweep_file) if sweep_file else {}) | {k: v for k, v in given.items() if v is not None}
    if "model" not in chosen:
        defaults["task"] = DEMO_TASKS
    return defaults | chosen


def expand(settings: dict[str, Any]) -> list[JobSpec]:
    """The cartesian product of the job fields, in a stable order, without duplicates; throughput jobs
    `repeats` times (round by round: every job's first run, then every job's second run, ...).

    `full` attends to every token, so the window does not change what it measures: it runs once per
    cell, under the first window listed, instead of once per window (quality jobs of `full` measure
    their position buckets and recall distances in units of that window). The Hugging Face peer runs
    the `full` config's throughput jobs only, so its other combinations are left out.
    """
    fields = {name: settings[name] if isinstance(settings[name], tuple) else (settings[name],)
              for name in JOB_FIELDS}
    repeats = settings.get("repeats") or 1
    if repeats < 1:
        raise SweepError(f"--repeats must be at least 1, got {repeats}")
    specs: dict[str, JobSpec] = {}
    for combo in itertools.product(*fields.values()):
        values = dict(zip(fields, combo))
        if values["engine"] == "hf" and (values["config"] != "full" or values["task"] != "throughput"):
            continue
        if values["config"] == "full":
            values["window"] = fields["window"][0]
        try:
            spec = JobSpec(**values)
        except ValueError as exc:
            raise SweepError(with_flag_names(str(exc), plural=True)) from None
        specs.setdefault(spec.job_id, spec)
    sweep_id = settings["sweep_id"] or "sweep-" + hashlib.sha256(" ".join(sorted(specs)).encode()).hexdigest()[:8]
    # Quality jobs score fixed sequences: a repeat would score the same tokens again, so they run once.
    return [dataclasses.replace(spec, sweep_id=sweep_id, repeat=repeat)
            for repeat in range(repeats) for spec in specs.values() if repeat == 0 or spec.task == "throughput"]


def window_notes(specs: list[JobSpec]) -> list[str]:
    """A note per window W that covers every sequence it runs (input + output tokens <= W): there the
    sliding and hybrid configs attend to everything, so they equal full and measure no difference."""
    longest: dict[int, int] = {}
    for spec in specs:
        if spec.config != "full":
            longest[spec.window] = max(longest.get(spec.window, 0), spec.input_len + spec.output_len)
    return [f"note: window {w} covers every sequence (at most {n} tokens of input + output): sliding and "
            f"hybrid then equal full; use --windows below {n} to see a difference"
            for w, n in sorted(longest.items()) if n <= w]
