"""Time `hybench report`, the shipped queries and the sweep's done-check over a synthetic store of N jobs
(one requests file of 10 requests and one jobs row each, written by ResultStore.write_result as workers
write them), with each command's wall time and peak memory (ru_maxrss of its process).

    .venv/bin/python docs/benchmarks/store_scale.py --jobs 10000 --store /tmp/scale-store
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from hybench.workers.records import result_tables
from hybench.workers.store import ResultStore

CONFIGS = ("full", "sliding", "hybrid")


def build(root: str, jobs: int) -> None:
    store = ResultStore(root)
    for index in range(jobs):
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
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.store, "jobs")):
        began = time.monotonic()
        build(args.store, args.jobs)
        print(f"built {args.jobs} jobs in {time.monotonic() - began:.0f} s: {args.store}")
    hybench = [sys.executable, "-m", "hybench.orchestrator.cli"]
    done_check = [sys.executable, "-c", "import sys; from hybench.workers.store import ResultStore; "
                  "print(len(ResultStore(sys.argv[1]).completed_job_ids()))", args.store]
    commands = {"done-check": done_check,
                "query --name latency": [*hybench, "query", "--results-dir", args.store, "--name", "latency"],
                "query --name throughput": [*hybench, "query", "--results-dir", args.store, "--name", "throughput"],
                "report": [*hybench, "report", "--results-dir", args.store, "--output-dir",
                           os.path.join(args.store, "..", "scale-plots"), "--format", "svg"]}
    for name, argv in commands.items():
        seconds, gib = timed(argv)
        print(f"{name:26s} {seconds:7.1f} s  peak {gib:5.2f} GiB")


if __name__ == "__main__":
    main()
