"""Run a quality job (--task perplexity | recall): teacher-forced scoring of the task's sequences through
the engine a throughput job of the same cell runs on (engine/scoring.py), into `quality` rows.

Each task module (perplexity_task.py, recall_task.py) says which sequences to score and how their
per-token scores become rows; this module runs them once, times the scoring (tokens scored per second:
the quality job's own throughput, beside a throughput job's prefill speed) and reads the shared memory
and backend fields from the engine.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hybench.engine.scoring import TokenScores, score_sequences
from hybench.workers.job_engine import engine_fields, start_engine

if TYPE_CHECKING:
    from hybench.workers.job import ModelCache, PreparedJob


@dataclass(frozen=True)
class QualityWork:
    """How to build a quality job's sequences and the positions of each that are scored (None: all), and
    how their scores become `quality` rows (without the job key). `build` runs when the job runs, not when
    the driver checks it, so that checking a large job allocates nothing."""

    build: Callable[[], tuple[list[list[int]], list[range] | None]]
    rows: Callable[[list[TokenScores]], list[dict]]


def execute_quality(job: PreparedJob, work: QualityWork, models: ModelCache, quality_rows: list[dict]) -> dict:
    """Score the work's sequences, append its rows to `quality_rows`, return the jobs row's figures.

    The first sequence is scored once untimed before the timed pass, as a throughput job's warmup
    iterations are: the first calls of a shape pay for kernel selection and allocator growth."""
    sequences, positions = work.build()
    engine, ssm_init = start_engine(job, models)
    try:
        score_sequences(engine, sequences[:1], positions and positions[:1])
        engine.steps.clear()
        start = time.monotonic_ns()
        scores = score_sequences(engine, sequences, positions)
        elapsed_s = (time.monotonic_ns() - start) / 1e9
        rows = work.rows(scores)
        quality_rows += rows
        forced = sum(len(tokens) for tokens in sequences)
        tokens = sum(r["tokens"] for r in rows)
        return engine_fields(job, engine, engine.steps) | {
            "ssm_init": ssm_init,
            "elapsed_s": elapsed_s,
            "scored_tok_s": forced / elapsed_s if elapsed_s > 0 else None,
            "nll_mean": sum(r["nll_sum"] for r in rows) / tokens,
            "top1_accuracy": sum(r["correct"] for r in rows) / tokens,
        }
    finally:
        engine.release()
