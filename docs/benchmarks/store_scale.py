"""Time `hybench index`, the sweep's done-check, the shipped queries and `hybench report` over a synthetic
store of N jobs (one requests file of 10 requests and one jobs row each, written by ResultStore.write_result
as workers write them), with each command's wall time and peak memory (ru_maxrss of its process).

The store is built without an index, as an older hybench or killed sweeps leave it: the first
`hybench index` reads every file once; the commands after it read the index. Then `--add` more jobs
are written and indexed, as a sweep's end does for the jobs it ran, and the done-check timed again.
With `--no-index` the index is deleted first and never built: every command reads every file.

    .venv/bin/python docs/benchmarks/store_scale.py --jobs 10000 --store /tmp/scale-store
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from hybench.workers.records import result_tables
from hybench.workers.store import ResultStore
from hybench.workers.store_index import INDEX_DIR

CONFIGS = ("full", "sliding", "hybrid")


def build(root: str, jobs: int, first: int = 0) -> None:
    store = ResultStore(root)
    for index in range(first, first + jobs):
        config, input_len = CONFIGS[index % 3], 256 * (1 + index // 3 % 16)
        job_id = f"job{index:06d}"
        key = dict(job_id=job_id, sweep_id=f"s{index // 480}", model="org/model", config=config, window=512,
                   engine="hybrid", input_len=input_len, output_len=64)
        requests = [dict(key, iteration=1, request_id=r, warmup=False, ttft_ms=10.0 + r, tpot_ms=1.0 + r / 10,
                         e2e_ms=80.0 + r, prompt_tokens=input_len, output_tokens=64) for r in range(10)]
        row = dict(key, status="ok", num_prompts=10, elapsed_s=1.0 + index % 7 / 10, throughput_tok_s=1000.0,
                   kv_used_gib=0.1, device_name="cpu", hostname="node")
        iterations = [dict(key, iteration=1, warmup=False, requests=10, elapsed_s=row["elapsed_s"],
                           throughput_tok_s=1000.0)]
        store.write_result({"model": "org/model", "config": config, "input_len": input_len}, job_id,
                           result_tables(requests, iterations, [row]))


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak GiB (its own ru_maxrss) of one command in a child process."""
    began = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"{' '.join(argv)} failed: {err.read().decode()[-500:]}")
    return time.monotonic() - began, usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000, help="jobs in the synthetic store (when it is built)")
    parser.add_argument("--store", default="/tmp/hybench-scale-store", help="built here unless it holds results")
    parser.add_argument("--add", type=int, default=30, help="jobs written after the first index, then indexed")
    parser.add_argument("--no-index", action="store_true", help="delete the store's index and time without one")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.store, "jobs")):
        began = time.monotonic()
        build(args.store, args.jobs)
        print(f"built {args.jobs} jobs in {time.monotonic() - began:.0f} s: {args.store}")
    shutil.rmtree(os.path.join(args.store, INDEX_DIR), ignore_errors=True)
    hybench = [sys.executable, "-m", "hybench.orchestrator.cli"]
    index = [*hybench, "index", "--results-dir", args.store, "--no-progress"]
    done_check = [sys.executable, "-c", "import sys; from hybench.workers.store import ResultStore; "
                  "print(len(ResultStore(sys.argv[1]).completed_job_ids()))", args.store]
    commands = {"index (every file)": index, "done-check": done_check,
                "query --name latency": [*hybench, "query", "--results-dir", args.store, "--name", "latency"],
                "query --name throughput": [*hybench, "query", "--results-dir", args.store, "--name", "throughput"],
                "report": [*hybench, "report", "--results-dir", args.store, "--output-dir",
                           os.path.join(args.store, "..", "scale-plots"), "--format", "svg"]}
    if args.no_index:
        del commands["index (every file)"]
    for name, argv in commands.items():
        seconds, gib = timed(argv)
        print(f"{name:26s} {seconds:7.1f} s  peak {gib:5.2f} GiB")
    if args.no_index or not args.add:
        return
    build(args.store, args.add, first=len(ResultStore(args.store).files("jobs")))
    for name, argv in {f"index (+{args.add} jobs)": index, "done-check again": done_check}.items():
        seconds, gib = timed(argv)
        print(f"{name:26s} {seconds:7.1f} s  peak {gib:5.2f} GiB")


if __name__ == "__main__":
    main()
