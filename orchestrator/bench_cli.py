"""`hybench bench`: one model and config over a list of input lengths, run here, no Ray.

The original suite's main script: same flags and defaults, one job per input length, results in
the Parquet store (and, with --output-json, the seed's JSON summary), then a short table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os

from hybench.orchestrator.flags import add_bench_flags, spec_fields, with_flag_names
from hybench.orchestrator.output_paths import check_output_file, check_output_folder
from hybench.workers.job import ModelCache, prepare, run_job
from hybench.workers.job_spec import JobSpec
from hybench.workers.store import ResultStore

CONFIG_NAMES = {"full": "Full Attention", "sliding": "Sliding Window", "hybrid": "Hybrid (SSM+SW)"}


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="run one model and attention config over a list of input lengths, on this machine",
        description="Benchmark one model and attention config over a list of input lengths on this machine "
        "(no Ray), writing the requests and jobs Parquet tables to --output-dir.",
    )
    add_bench_flags(parser)
    parser.add_argument("--output-dir", default="results", help="results store: a folder or a pyarrow filesystem "
                        "URI such as s3://bucket/path (default: results)")
    parser.add_argument("--output-json", default=None, metavar="FILE",
                        help="also write the job summaries as JSON (the original suite's output file)")
    parser.add_argument("--sweep-id", default="adhoc", help="label stored with every row (default: adhoc)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    parser.set_defaults(func=run_bench)


def make_specs(args: argparse.Namespace) -> list[JobSpec]:
    fields = spec_fields(args)
    lengths = fields.pop("input_len")
    try:
        return [JobSpec(**fields, input_len=n, sweep_id=args.sweep_id) for n in lengths]
    except ValueError as exc:
        raise BenchInputError(with_flag_names(str(exc))) from None


class BenchInputError(ValueError):
    """Flags that cannot make a valid job."""


def run_bench(args: argparse.Namespace) -> int:
    specs = make_specs(args)
    check_output_folder("--output-dir", args.output_dir)
    if args.output_json:
        check_output_file("--output-json", args.output_json)
    jobs = [prepare(spec) for spec in specs]  # every user error surfaces before anything runs
    store = ResultStore(args.output_dir)
    models = ModelCache()
    rows = []
    for job in jobs:
        row = run_job(job.spec, store, models, progress=args.progress)
        rows.append(row)
    print(format_table(rows))
    print(f"results: {store.display(store.root)} (jobs: {len(rows)}, "
          f"ok: {sum(r['status'] == 'ok' for r in rows)})")
    if args.output_json:
        write_json(args.output_json, specs, rows)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def format_table(rows: list[dict]) -> str:
    header = (f"{'Configuration':<18} {'Input Len':>9} {'Throughput':>14} {'Output':>12} {'Avg Latency':>12} "
              f"{'P99 Latency':>12} {'KV used':>10}  Status")
    lines = [header, "-" * len(header)]
    for r in rows:
        name = CONFIG_NAMES[r["config"]]
        if r["status"] != "ok":
            lines.append(f"{name:<18} {r['input_len']:>9} {r['status'].upper():>14}  {r['error'].splitlines()[0]}")
            continue
        if r.get("task", "throughput") != "throughput":
            lines.append(f"{name:<18} {r['input_len']:>9} {r['scored_tok_s']:>10.1f} tok/s scored ({r['task']}: "
                         f"mean NLL {r['nll_mean']:.3f}, top-1 {r['top1_accuracy']:.1%}; rows in the quality table)  ok")
            continue
        kv_used = r.get("kv_used_gib")  # none for --engine hf: it has no KV pool of ours
        kv = f"{kv_used * 1024:>7.2f} MiB" if kv_used is not None else f"{'-':>11}"
        lines.append(
            f"{name:<18} {r['input_len']:>9} {r['throughput_tok_s']:>10.1f} tok/s {r['output_tok_s']:>6.1f} tok/s "
            f"{r['latency_mean_ms']:>9.1f} ms {r['latency_p99_ms']:>9.1f} ms {kv}  ok")
    return "\n".join(lines)


def write_json(path: str, specs: list[JobSpec], rows: list[dict]) -> None:
    payload = {
        "spec": {k: _json_value(v) for k, v in dataclasses.asdict(specs[0]).items() if k != "input_len"},
        "results": [{k: _json_value(v) for k, v in r.items()} for r in rows],
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, allow_nan=False)
    os.replace(tmp, path)


def _json_value(value):
    """Strict JSON: a timestamp as ISO text, infinity or NaN (a metric with no finite value) as null,
    since `Infinity` is not JSON and JSON.parse or jq reject the file."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value
