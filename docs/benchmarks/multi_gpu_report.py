"""The tables of docs/benchmarks/multi_gpu_sweep.sh: speed-up of the N-GPU sweep over the 1-GPU one,
where the N-GPU sweep's actors ran (CUDA_VISIBLE_DEVICES, jobs rows, nvidia-smi samples), and the
per-job output throughput of the two runs. pyarrow only (no duckdb needed).

    python3 docs/benchmarks/multi_gpu_report.py WORK OUT [--config C --window W --input-len L --output-len O]

WORK holds gpus.csv (nvidia-smi index, uuid, name) and one folder per model with runs.tsv (n, wall_s,
rc), the result stores n1/ and n<N>/, sweep_n<N>.log and smi.csv (epoch s, pid, MiB, uuid, process).
Writes OUT/multi_gpu_results.md, OUT/jobs_<model>.parquet (both runs' jobs rows, column `gpus`) and
OUT/nvidia_smi_samples.csv.
"""
from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import re
import statistics
import sys
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

from hybench.queries.store_tables import read_store
from hybench.workers.store import ResultStore

WORKER_UP = re.compile(r"worker up: pid (\d+) on (\S+), GPU (\S+) \(CUDA_VISIBLE_DEVICES=([^)]*)\)")


def norm_uuid(uuid: str | None) -> str | None:
    """nvidia-smi says GPU-<hex>, torch may leave the prefix out."""
    if not uuid:
        return None
    uuid = uuid.strip().lower()
    return uuid[4:] if uuid.startswith(("gpu-", "mig-")) else uuid


def read_jobs(store: str) -> pa.Table | None:
    """The store's jobs rows, as hybench reads them (partition columns from the paths, old and new layouts)."""
    jobs = read_store(ResultStore(store)).tables["jobs"]
    return jobs if jobs.num_rows else None


def fmt(x, spec=".1f", none="-"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def span_s(rows: list[dict]) -> float | None:
    ok = [r for r in rows if r["started_at"] and r["finished_at"]]
    if not ok:
        return None
    return (max(r["finished_at"] for r in ok) - min(r["started_at"] for r in ok)).total_seconds()


def cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 and statistics.mean(values) else None


def model_section(tag: str, folder: str, gpus: dict[str, tuple[str, str]], out: str) -> tuple[list[str], list[str]]:
    """The markdown of one model, and the verdict lines for the summary."""
    lines = [f"## {tag}", ""]
    if os.path.exists(os.path.join(folder, "skipped")):
        note = open(os.path.join(folder, "skipped")).read().strip()
        return lines + [f"Not run ({note}).", ""], [f"{tag}: not run ({note})"]
    runs = {}
    if os.path.exists(os.path.join(folder, "runs.tsv")):
        with open(os.path.join(folder, "runs.tsv")) as fh:
            for r in csv.DictReader(fh, delimiter="\t"):
                runs[int(r["n"])] = (float(r["wall_s"]), int(r["rc"]))
    if 1 not in runs or len(runs) < 2:
        return lines + ["The 1-GPU and N-GPU sweeps did not both run: see the log.", ""], [f"{tag}: incomplete"]
    n = max(runs)
    rows = {}
    tables = []
    for k in (1, n):
        table = read_jobs(os.path.join(folder, f"n{k}"))
        rows[k] = table.to_pylist() if table is not None else []
        if table is not None:
            tables.append(table.append_column("gpus", pa.array([k] * table.num_rows, pa.int64())))
    if tables:
        pq.write_table(pa.concat_tables(tables, promote_options="default"), os.path.join(out, f"jobs_{tag}.parquet"))
    ok = {k: [r for r in rows[k] if r["status"] == "ok"] for k in rows}
    any_row = next((r for k in rows for r in rows[k] if r["status"] == "ok"), None)
    if any_row:
        lines += [f"{len(rows[1])} jobs per run: {any_row['config']} W={any_row['window']}, "
                  f"input {any_row['input_len']}, "
                  f"{any_row['num_prompts']} prompts x output {any_row['output_len']}, {any_row['num_warmup_iters']} "
                  f"warmup + {any_row['num_benchmark_iters']} measured iterations, seeds "
                  f"{','.join(str(s) for s in sorted(r['seed'] for r in rows[1]))} (one job each); "
                  f"{any_row['device_name']}, attention {any_row['attn_backend']}, SSM {any_row['ssm_backend']}, "
                  f"{any_row['load_format']} weights, {any_row['dtype']}.", ""]

    # -- scaling ---------------------------------------------------------------------------------
    verdicts = []
    wall1 = runs[1][0]
    span1 = span_s(ok[1])
    lines += ["### Wall time", "",
              "| GPUs | exit | jobs ok | whole sweep s | speed-up | target >= 0.85 x N | jobs span s | span speed-up |",
              "|---|---|---|---|---|---|---|---|"]
    for k in (1, n):
        wall, rc = runs[k]
        span = span_s(ok[k])
        speed = wall1 / wall if wall else None
        met = speed is not None and speed >= 0.85 * k and len(ok[k]) == len(ok[1])
        target = "-" if k == 1 else f"{0.85 * k:.2f}: " + ("met" if met else "MISSED")
        lines.append(f"| {k} | {rc} | {len(ok[k])}/{len(rows[k])} | {wall:.1f} | {fmt(speed, '.2f')} | {target} | "
                     f"{fmt(span)} | {fmt(span1 / span if span and span1 else None, '.2f')} |")
    speed = wall1 / runs[n][0]
    verdicts.append(f"{tag}: {n} GPUs {speed:.2f}x the 1-GPU wall time (target {0.85 * n:.2f}x: "
                    f"{'met' if speed >= 0.85 * n and len(ok[n]) == len(ok[1]) else 'MISSED'})")
    lines += ["", "Whole sweep: the `hybench sweep` command, Ray start to exit (no report). Jobs span: first job "
              "start to last job end, from the jobs rows (leaves out Ray start, actor start, and shutdown).", ""]

    # -- placement -------------------------------------------------------------------------------
    log = os.path.join(folder, f"sweep_n{n}.log")
    up = WORKER_UP.findall(open(log).read()) if os.path.exists(log) else []
    actors = {int(pid): cvd for pid, _, _, cvd in up}
    by_pid = defaultdict(list)
    for r in rows[n]:
        if r.get("worker_pid") is not None:
            by_pid[r["worker_pid"]].append(r)
    smi = defaultdict(lambda: defaultdict(float))  # pid -> uuid -> peak MiB
    samples = 0
    smi_file = os.path.join(folder, "smi.csv")
    if os.path.exists(smi_file):
        with open(smi_file) as fh:
            for line in fh:
                parts = [p.strip() for p in line.split(",", 4)]
                if len(parts) < 4 or not parts[1].isdigit():
                    continue
                samples += 1
                mib = float(parts[2]) if re.fullmatch(r"[\d.]+", parts[2]) else 0.0
                uuid = norm_uuid(parts[3])
                smi[int(parts[1])][uuid] = max(smi[int(parts[1])][uuid], mib)
    index_of = {norm_uuid(u): i for i, (u, _) in gpus.items()}

    def gpu_name(uuid: str | None) -> str:
        return "none" if uuid in (None, "none") else f"{index_of.get(uuid, '?')}: {uuid[:8]}"

    def holder(pid: int, mib: float) -> str:
        return f"{pid}{'' if pid in actors else ' (not an actor)'}: {mib:.0f}"
    lines += [f"### Placement, {n}-GPU sweep", "",
              "| actor pid | CUDA_VISIBLE_DEVICES | GPU of its jobs (torch uuid) | jobs | seeds "
              "| GPUs holding its memory (nvidia-smi) | peak MiB |",
              "|---|---|---|---|---|---|---|"]
    for pid in sorted(set(actors) | set(by_pid)):
        jobs = by_pid.get(pid, [])
        job_gpus = sorted({norm_uuid(r.get("gpu_uuid")) or "none" for r in jobs})
        seen = smi.get(pid, {})
        lines.append(f"| {pid} | {actors.get(pid, ','.join(sorted({str(r['cuda_visible_devices']) for r in jobs})))} | "
                     f"{', '.join(gpu_name(u) for u in job_gpus)} | "
                     f"{len(jobs)} | {','.join(str(r['seed']) for r in sorted(jobs, key=lambda r: r['seed']))} | "
                     f"{', '.join(gpu_name(u) for u in sorted(seen, key=str)) or '-'} | "
                     f"{fmt(max(seen.values()) if seen else None, '.0f')} |")
    cvds = sorted(actors.values())
    pinned = len(actors) == n and cvds == [str(i) for i in range(n)]
    spread = len(by_pid) == n and all(by_pid.values())
    lines += ["", f"Actors: {len(actors)} for {n} GPUs, CUDA_VISIBLE_DEVICES {', '.join(cvds) or '-'}: "
              f"{'one actor per GPU, each pinned to its own' if pinned else 'NOT one pinned actor per GPU'}. "
              f"Jobs per actor: {', '.join(str(len(by_pid[p])) for p in sorted(by_pid)) or '-'} "
              f"({'spread over every actor' if spread else 'NOT spread over every actor'})."]
    verdicts.append(f"{tag}: {len(actors)} actors on {n} GPUs, CUDA_VISIBLE_DEVICES {','.join(cvds)}; jobs per actor "
                    f"{'/'.join(str(len(by_pid[p])) for p in sorted(by_pid))}")
    if samples:
        per_gpu = defaultdict(dict)
        for pid, seen in smi.items():
            for uuid, mib in seen.items():
                per_gpu[uuid][pid] = mib
        lines += ["", f"nvidia-smi --query-compute-apps, {samples} process samples at 1 s while the sweep ran:", "",
                  "| GPU | uuid | processes with memory on it (pid: peak MiB) |", "|---|---|---|"]
        for uuid in sorted(set(per_gpu) | set(index_of), key=lambda u: index_of.get(u, 99)):
            procs = per_gpu.get(uuid, {})
            lines.append(f"| {index_of.get(uuid, '?')} | {uuid} | "
                         f"{', '.join(holder(p, m) for p, m in sorted(procs.items())) or 'none'} |")
        exclusive = (len(per_gpu) == n and all(len(p) == 1 and set(p) <= set(actors) for p in per_gpu.values())
                     and all(len(smi.get(pid, {})) == 1 for pid in actors))
        recorded = [(pid, norm_uuid(r["gpu_uuid"])) for pid, rs in by_pid.items() for r in rs if r.get("gpu_uuid")]
        jobs_match = all(uuid in smi.get(pid, {}) for pid, uuid in recorded)
        where = ("each actor's jobs ran on the GPU holding its memory" if recorded else
                 "the jobs rows record no GPU (they ran on CPU)")
        text = (f"each GPU's memory used by exactly one actor process; {where}" if exclusive and jobs_match else
                f"NOT exclusive (one actor process per GPU: {exclusive}; jobs on the actor's GPU: {jobs_match})")
        lines += ["", f"Verdict: {text}."]
        verdicts.append(f"{tag}: {text}")
    else:
        lines += ["", "No nvidia-smi samples (no GPU, or no process seen): GPU memory per process not checked."]
        verdicts.append(f"{tag}: GPU memory per process not sampled")
    lines.append("")

    # -- per job -----------------------------------------------------------------------------------
    one = {r["seed"]: r for r in ok[1]}
    many = {r["seed"]: r for r in ok[n]}
    seeds = sorted(set(one) & set(many))
    lines += ["### Per job: output throughput, 1 GPU vs " + f"{n} GPUs", "",
              f"| seed | 1 GPU tok/s | {n} GPUs tok/s | rel. diff | {n}-GPU run on GPU | same job id |",
              "|---|---|---|---|---|---|"]
    diffs = []
    for s in seeds:
        a, b = one[s]["output_tok_s"], many[s]["output_tok_s"]
        d = b / a - 1
        diffs.append(d)
        lines.append(f"| {s} | {a:.0f} | {b:.0f} | {d:+.1%} | {many[s]['cuda_visible_devices']} | "
                     f"{'yes' if one[s]['job_id'] == many[s]['job_id'] else 'no'} |")
    if diffs:
        cv1, cvn = cv([one[s]["output_tok_s"] for s in seeds]), cv([many[s]["output_tok_s"] for s in seeds])
        tol = max(3 * math.sqrt(2) * (cv1 or 0), 0.01)
        mean, worst, mean_tol, match = compare(diffs, tol)
        lines += ["", f"Mean relative difference {mean:+.1%}, largest {worst:.1%}. Run-to-run noise: "
                  f"the {len(seeds)} equal jobs spread by {fmt(cv1 and cv1 * 100, '.1f')}% (1 GPU) and "
                  f"{fmt(cvn and cvn * 100, '.1f')}% ({n} GPUs) (coefficient of variation). Tolerances: one job's "
                  f"difference within 3 x sqrt(2) x the 1-GPU spread, at least 1% ({tol:.1%}); the mean difference "
                  f"within 2 standard errors of the paired differences, at least 2% ({mean_tol:.1%}). "
                  "Verdict: " + ("per-job results match the 1-GPU run within run-to-run noise" if match
                                 else "per-job results DIFFER beyond run-to-run noise") + ".", ""]
        verdict = (f"{tag}: per-job output tok/s {n} GPUs vs 1: mean {mean:+.1%} (tolerance {mean_tol:.1%}), "
                   f"largest {worst:.1%} (tolerance {tol:.1%}): {'match' if match else 'DIFFER'}")
        # The 1-GPU run's spread says nothing of how two cards differ: the jobs that ran on the same card
        # in both runs tell what running N at once does, the others add the card-to-card difference.
        cards = {norm_uuid(one[s].get("gpu_uuid")) for s in seeds}
        on_card = [norm_uuid(many[s].get("gpu_uuid")) in cards for s in seeds]
        same = [d for d, on in zip(diffs, on_card) if on]
        other = [d for d, on in zip(diffs, on_card) if not on]
        if len(cards) == 1 and None not in cards and same and other:
            s_mean, s_worst, s_tol, s_match = compare(same, tol)
            lines += [f"Same card: the {len(same)} jobs the {n}-GPU run ran on the 1-GPU run's card "
                      f"({next(iter(cards))[:8]}) differ by {s_mean:+.1%} on average (tolerance {s_tol:.1%}), "
                      f"largest {s_worst:.1%} (tolerance {tol:.1%}): "
                      f"{'match' if s_match else 'DIFFER'}; the {len(other)} on the other cards by "
                      f"{statistics.mean(other):+.1%} on average, which adds the difference between cards "
                      "(their SM clocks below).", ""]
            verdict += (f"; same card only: mean {s_mean:+.1%}, largest {s_worst:.1%}: "
                        f"{'match' if s_match else 'DIFFER'}; other cards: mean {statistics.mean(other):+.1%}")
        verdicts.append(verdict)
    lines += clock_table(folder, (1, n))
    return lines, verdicts


def compare(diffs: list[float], tol: float) -> tuple[float, float, float, bool]:
    """Mean and largest of paired relative differences, the mean's tolerance (2 standard errors, at
    least 2%), and whether both are within tolerance (`tol` for the largest)."""
    mean, worst = statistics.mean(diffs), max(abs(d) for d in diffs)
    mean_tol = max(2 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0, 0.02)
    return mean, worst, mean_tol, worst <= tol and abs(mean) <= mean_tol


def clock_table(folder: str, runs: tuple[int, ...]) -> list[str]:
    """Median SM clock, power and utilisation of each GPU while each sweep ran (clocks_n<k>.csv), so a
    per-job difference between the runs can be laid next to the state the GPUs were in."""
    rows = []
    for k in runs:
        path = os.path.join(folder, f"clocks_n{k}.csv")
        if not os.path.exists(path):
            continue
        by_gpu = defaultdict(lambda: ([], [], []))
        for line in open(path).read().splitlines():
            parts = [p.strip() for p in line.split(",")]
            try:
                values = [float(x) for x in parts[2:5]]
            except (ValueError, IndexError):  # "[N/A]" or a cut line
                continue
            for series, value in zip(by_gpu[parts[1]], values):
                series.append(value)
        for gpu, (mhz, watts, util) in sorted(by_gpu.items()):
            rows.append(f"| {k} | {gpu} | {len(mhz)} | {statistics.median(mhz):.0f} | {statistics.median(watts):.0f} | "
                        f"{statistics.median(util):.0f} |")
    if not rows:
        return []
    return ["### GPU state while each sweep ran (nvidia-smi, 1 s samples, medians)", "",
            "| sweep on GPUs | GPU | samples | SM MHz | power W | utilisation % |", "|---|---|---|---|---|---|",
            *rows, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work")
    parser.add_argument("out")
    for flag in ("--config", "--window", "--input-len", "--output-len"):
        parser.add_argument(flag)
    args = parser.parse_args()
    gpus = {}
    gpus_file = os.path.join(args.work, "gpus.csv")
    if os.path.exists(gpus_file):
        with open(gpus_file) as fh:
            for row in csv.reader(fh):
                if len(row) >= 3:
                    gpus[row[0].strip()] = (row[1].strip(), row[2].strip())
    body, verdicts = [], []
    smi_rows = []
    for folder in sorted(glob.glob(os.path.join(args.work, "*", ""))):
        tag = os.path.basename(os.path.dirname(folder))
        if not (os.path.exists(os.path.join(folder, "runs.tsv")) or os.path.exists(os.path.join(folder, "skipped"))):
            continue
        lines, found = model_section(tag, folder, gpus, args.out)
        body += lines
        verdicts += found
        if os.path.exists(os.path.join(folder, "smi.csv")):
            smi_rows += [f"{tag}, {line}" for line in open(os.path.join(folder, "smi.csv")).read().splitlines()]
    if smi_rows:
        with open(os.path.join(args.out, "nvidia_smi_samples.csv"), "w") as fh:
            fh.write("model, epoch_s, pid, used_mib, gpu_uuid, process_name\n" + "\n".join(smi_rows) + "\n")
    head = ["# Multi-GPU sweep on one host", "",
            "`bash docs/benchmarks/multi_gpu_sweep.sh`: the same `hybench sweep` in local mode on 1 GPU "
            "(CUDA_VISIBLE_DEVICES=0) and on every GPU of the host; NCCL_NVLS_ENABLE=0, "
            "TORCH_SYMM_MEM_DISABLE_MULTICAST=1 and NVSHMEM_DISABLE_NVLS=1 in every process.", ""]
    if gpus:
        head += ["GPUs: " + "; ".join(f"{i}: {name} ({uuid})" for i, (uuid, name) in sorted(gpus.items())), ""]
    head += ["Summary:", ""] + [f"- {v}" for v in verdicts] + [""]
    with open(os.path.join(args.out, "multi_gpu_results.md"), "w") as fh:
        fh.write("\n".join(head + body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
