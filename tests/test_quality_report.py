"""The report's quality side: perplexity against position, recall against distance and the cost-quality
figure drawn from the right numbers, findings that state both sides with intervals, nothing of it for a
store without quality jobs (the no-argument sweep that runs both: tests/test_sweep_spec.py)."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from hybench.queries.quality_plots import draw_quality_figures, quality_label
from hybench.queries.report import collect, write_report
from hybench.queries.store_views import Selection, sides
from hybench.workers.records import result_tables
from hybench.workers.store import ResultStore
from queries_fixtures import MODEL, OUTPUT_LEN, WINDOW, build_store

VOCAB = 256
INPUT_LEN = 4096
DISTANCES = (0.5, 1.0, 2.0, 4.0)
BUCKETS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0))
SEQUENCES = 8
BLOCK = 15  # tokens scored per recall sequence
# Top-1 hits per sequence at each distance: full recalls everywhere, sliding only inside the window,
# a calibrated hybrid some of the way; seeded hybrid as sliding. A miss costs 16 nats: confidently wrong.
HITS = {"full": lambda d, i: BLOCK, "sliding": lambda d, i: BLOCK if d < 1 else 0,
        "hybrid": lambda d, i: BLOCK if d < 1 else 0, "hybrid@calibrated:abc": lambda d, i: BLOCK if d < 1 else i % 4}


def _quality_job(store: ResultStore, label: str, task: str, rng: np.random.Generator) -> None:
    config, _, init = label.partition("@")
    job_id = f"{task}-{config}-{init or 'seeded'}"
    key = dict(job_id=job_id, sweep_id="s1", model=MODEL, config=config, window=WINDOW, engine="hybrid",
               input_len=INPUT_LEN, output_len=OUTPUT_LEN)
    rows = []
    for i in range(SEQUENCES):
        if task == "recall":
            for d in DISTANCES:
                hits = HITS[label](d, i)
                rows.append(dict(key, task=task, request_id=i, distance=int(d * WINDOW), distance_w=d, tokens=BLOCK,
                                 nll_sum=float(BLOCK - hits) * 16.0 + rng.uniform(0, 0.1), correct=hits))
        else:
            for start, end in BUCKETS:
                tokens = int((end - start) * WINDOW)
                nll = 2.0 + (0.0 if config == "full" or start < 1 else 1.5) + rng.normal(0, 0.05)
                rows.append(dict(key, task=task, request_id=i, bucket_start=int(start * WINDOW),
                                 bucket_end=int(end * WINDOW), bucket_start_w=start, bucket_end_w=end, tokens=tokens,
                                 nll_sum=nll * tokens, correct=tokens // 3))
    job = dict(key, status="ok", task=task, ssm_init=init or ("seeded" if config == "hybrid" else "none"),
               vocab_size=VOCAB, num_prompts=SEQUENCES)
    store.write_result({"model": MODEL, "config": config, "input_len": INPUT_LEN}, job_id,
                       result_tables([], [], [job], rows))


@pytest.fixture(scope="module")
def quality_store(tmp_path_factory) -> str:
    """The synthetic throughput store (full, sliding, hybrid at 256, 1024, 4096) plus quality jobs at 4096."""
    synthetic = build_store(str(tmp_path_factory.mktemp("store")), oom=())
    rng = np.random.default_rng(0)
    for label in HITS:
        _quality_job(synthetic.store, label, "recall", rng)
        _quality_job(synthetic.store, label, "perplexity", rng)
    return synthetic.root


@pytest.fixture(scope="module")
def drawn(quality_store, tmp_path_factory):
    results = collect(sides(Selection(quality_store))[0])
    figures = draw_quality_figures(results.rows("perplexity"), results.rows("recall"), results.rows("cells"),
                                   str(tmp_path_factory.mktemp("figures")), "png")
    return results, {f.name: f for f in figures}


def _series(figure, label, column):
    [found] = [s for s in figure.series if s.config == label and s.column == column]
    return found


def test_recall_figure_draws_each_configs_accuracy_by_distance(drawn):
    _, figures = drawn
    figure = figures["recall_vs_distance"]
    assert os.path.getsize(figure.path) > 0
    for label, hits in HITS.items():
        config, _, init = label.partition("@")
        line = _series(figure, f"{config} (calibrated)" if init else config, "accuracy")
        assert line.x == DISTANCES
        want = [sum(hits(d, i) for i in range(SEQUENCES)) / (SEQUENCES * BLOCK) for d in DISTANCES]
        assert line.y == pytest.approx(want)


def test_recall_nll_figure_draws_each_configs_nll_by_distance(drawn):
    results, figures = drawn
    figure = figures["recall_nll_vs_distance"]
    by_cell = {(quality_label(r), r["distance_w"]): r["nll_mean"] for r in results.rows("recall")}
    for label in ("full", "sliding", "hybrid", "hybrid (calibrated)"):
        line = _series(figure, label, "nll_mean")
        assert line.x == DISTANCES and line.y == pytest.approx([by_cell[(label, d)] for d in DISTANCES])
    assert _series(figure, "sliding", "nll_mean").y[-1] > math.log(VOCAB)  # confidently wrong beyond W


def test_perplexity_figure_draws_nll_by_position_bucket(drawn):
    results, figures = drawn
    figure = figures["perplexity_vs_position"]
    full, sliding = _series(figure, "full", "nll_mean"), _series(figure, "sliding", "nll_mean")
    assert full.x == sliding.x == (0, 1, 2)
    assert full.y == pytest.approx([2.0, 2.0, 2.0], abs=0.05)
    assert sliding.y == pytest.approx([2.0, 3.5, 3.5], abs=0.05)


def test_cost_quality_points_pair_recall_with_the_cells_memory(drawn):
    results, figures = drawn
    cells = {(c["config"], c["input_len"]): c for c in results.rows("cells")}
    figure = figures["cost_quality"]
    for label, config in (("full", "full"), ("sliding", "sliding"), ("hybrid (calibrated)", "hybrid")):
        point = _series(figure, label, "accuracy")
        cell = cells[(config, INPUT_LEN)]
        assert point.x == pytest.approx([cell["kv_used_gib"] + (cell["ssm_state_gib"] or 0.0)])
    beyond = [d for d in DISTANCES if d >= 1]
    calibrated = _series(figure, "hybrid (calibrated)", "accuracy").y[0]
    assert calibrated == pytest.approx(sum(HITS["hybrid@calibrated:abc"](d, i) for d in beyond for i in range(SEQUENCES))
                                       / (len(beyond) * SEQUENCES * BLOCK))


def test_findings_state_both_sides_with_intervals(quality_store, tmp_path):
    summary = open(write_report(quality_store, str(tmp_path), "png")).read()
    [recall] = [line for line in summary.splitlines() if line.startswith("- Recall,")]
    assert f"W = {WINDOW}, input {INPUT_LEN}" in recall and f"chance is {100 / VOCAB:.2g}%" in recall
    beyond = recall.split("beyond it (distance 2W): ")[1]
    assert beyond.startswith("full 100.0% [100.0, 100.0], sliding 0.0% [0.0, 0.0], hybrid 0.0% [0.0, 0.0] "
                             "(no difference beyond noise from sliding), hybrid (calibrated) ")
    assert "KV + SSM state in use at peak against full: sliding" in recall  # the cost side, in the same line
    [perplexity] = [line for line in summary.splitlines() if line.startswith("- Perplexity,")]
    assert f"a uniform guess scores {math.log(VOCAB):.2f}" in perplexity
    assert "inside the window (0-1W): full 2.0" in perplexity and "farthest (2-4W): full 2.0" in perplexity
    assert "sliding 2.0" in perplexity.split("farthest")[0] and "no difference beyond noise from full" in perplexity
    for name in ("perplexity_vs_position", "recall_vs_distance", "recall_nll_vs_distance", "cost_quality"):
        assert f"({name}.png)" in summary and os.path.exists(tmp_path / f"{name}.png")
    assert "## Recall" in summary and "## Perplexity" in summary


def test_a_store_without_quality_jobs_has_no_quality_figures(tmp_path):
    store = build_store(str(tmp_path / "store"))
    summary = open(write_report(store.root, str(tmp_path / "plots"), "svg")).read()
    assert "Recall" not in summary and "Perplexity" not in summary
    assert not any(name.startswith(("recall", "perplexity", "cost_quality")) for name in os.listdir(tmp_path / "plots"))
