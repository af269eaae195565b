"""Quality jobs (--task perplexity | recall): their rows against transformers and the trained preset,
their ids, --history-weights, bad input, and the shipped queries by the numbers."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

transformers = pytest.importorskip("transformers")

from hybench.engine.calibration import CalibrationSpec, HistoryWeightsRef, calibrate, history_weights  # noqa: E402
from hybench.engine.calibration import calibration_batch, save_history_weights  # noqa: E402
from hybench.engine import build_model, resolve_model  # noqa: E402
from hybench.orchestrator.cli import main  # noqa: E402
from hybench.queries import catalog  # noqa: E402
from hybench.queries.store_views import Selection, open_views  # noqa: E402
from hybench.workers import job_spec  # noqa: E402
from hybench.workers.eval_text import EvalTextRef, text_sequences  # noqa: E402
from hybench.workers.intervals import t_quantile  # noqa: E402
from hybench.workers.job import run_job  # noqa: E402
from hybench.workers.job_spec import JobSpec  # noqa: E402
from hybench.workers.perplexity_task import position_buckets  # noqa: E402
from hybench.workers.store import ResultStore  # noqa: E402
from test_hf_parity import _write_checkpoint  # noqa: E402

WINDOW, INPUT_LEN = 24, 100
RECALL_W = 32  # the window tiny-recall was trained for


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Llama checkpoint with a word-level tokenizer in its folder, its transformers twin, and a text."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("ckpt")
    hf = _write_checkpoint(str(folder), tie=False)
    words = [f"w{i}" for i in range(90)]
    vocab = {"[UNK]": 0, "</s>": 1} | {w: i + 2 for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                         eos_token="</s>").save_pretrained(str(folder))
    rng = np.random.default_rng(0)
    text = folder / "eval.jsonl"
    with open(text, "w") as handle:  # 4 documents of 80 words: 323 tokens with the separators
        for _ in range(4):
            handle.write(json.dumps({"text": " ".join(rng.choice(words, 80))}) + "\n")
    return str(folder), hf, str(text)


def _run(tmp_path, **fields) -> tuple[dict, list[dict]]:
    spec = JobSpec(**({"input_len": INPUT_LEN, "output_len": 1, "num_prompts": 3, "window": WINDOW, "dtype": "float32",
                       "device": "cpu", "num_warmup_iters": 0, "num_benchmark_iters": 1} | fields))
    store_dir = str(tmp_path / "results")
    row = run_job(spec, ResultStore(store_dir), progress=False)
    assert row["status"] == "ok", row["error"]
    quality = [r for r in pq.read_table(os.path.join(store_dir, "quality")).to_pylist() if r["job_id"] == spec.job_id]
    return row, quality


@pytest.mark.parametrize("budget", [8192, 16])  # one prefill step per sequence; chunks of 16 tokens
def test_full_perplexity_equals_transformers_loss(checkpoint, tmp_path, budget):
    folder, hf, text = checkpoint
    ref = EvalTextRef.open(text)
    row, quality = _run(tmp_path, model=folder, config="full", task="perplexity", eval_text=ref,
                        max_num_batched_tokens=budget)
    sequences = text_sequences(ref, folder, 101, INPUT_LEN, 3)
    assert row["task"] == "perplexity" and row["scored_tok_s"] > 0 and row["ssm_init"] == "none"
    for i, tokens in enumerate(sequences):
        mine = [r for r in quality if r["request_id"] == i]
        ids = torch.tensor([tokens])
        with torch.no_grad():
            loss = hf(ids, labels=ids).loss.item()
        assert abs(sum(r["nll_sum"] for r in mine) / sum(r["tokens"] for r in mine) - loss) <= 1e-4
    # buckets [0,W), [W,2W), [2W,4W), [4W,8W) hold the scored positions 1..L-1, each exactly once
    assert position_buckets(WINDOW, INPUT_LEN) == [(0, 24), (24, 48), (48, 96), (96, 192)]
    for i in range(3):
        mine = sorted((r["bucket_start"], r["bucket_end"], r["tokens"]) for r in quality if r["request_id"] == i)
        assert mine == [(0, 24, 23), (24, 48, 24), (48, 96, 48), (96, 192, 4)]
    assert {(r["bucket_start_w"], r["bucket_end_w"]) for r in quality} == {(0, 1), (1, 2), (2, 4), (4, 8)}
    assert row["nll_mean"] == pytest.approx(sum(r["nll_sum"] for r in quality) / sum(r["tokens"] for r in quality))


def test_recall_on_tiny_recall_full_recalls_at_2w_and_sliding_does_not(tmp_path):
    rows = {}
    for config in ("full", "sliding"):
        job, quality = _run(tmp_path, model="tiny-recall", config=config, task="recall", window=RECALL_W,
                            input_len=256, num_prompts=4)
        assert job["task"] == "recall" and job["scored_tok_s"] > 0
        assert len(quality) == 4 * 4  # prompts x distances 0.5W, W, 2W, 4W
        assert all(r["tokens"] == 15 and r["distance"] == round(r["distance_w"] * RECALL_W) for r in quality)
        rows[config] = quality

    def accuracy(config, multiple):
        mine = [r for r in rows[config] if r["distance_w"] == multiple]
        return sum(r["correct"] for r in mine) / sum(r["tokens"] for r in mine)

    assert accuracy("full", 2.0) >= 0.95 and accuracy("full", 4.0) >= 0.95
    assert accuracy("sliding", 2.0) <= 0.2 and accuracy("sliding", 0.5) >= 0.9


def test_job_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(job_spec, "project_version", lambda: "0.1.0")
    throughput = JobSpec("tiny-llama", "full", 256, 512, 16, 4)
    assert throughput.job_id == "8f0b66988d5f6751fb68"  # the id it had before tasks existed
    assert JobSpec("tiny-llama", "full", 256, 512, 16, 4, task="throughput").job_id == throughput.job_id
    recall = JobSpec("tiny-llama", "full", 256, 512, 16, 4, task="recall")
    assert recall.job_id != throughput.job_id
    text = tmp_path / "a.txt"
    text.write_text("some text")
    ref = EvalTextRef.open(str(text))
    assert JobSpec("tiny-llama", "full", 256, 512, 16, 4, task="recall", eval_text=ref).job_id == recall.job_id
    first = JobSpec("tiny-llama", "full", 256, 512, 16, 4, task="perplexity", eval_text=ref)
    text.write_text("other text")
    second = JobSpec("tiny-llama", "full", 256, 512, 16, 4, task="perplexity", eval_text=EvalTextRef.open(str(text)))
    assert len({first.job_id, second.job_id, recall.job_id}) == 3
    weights = HistoryWeightsRef(str(tmp_path / "w.safetensors"), "a" * 12, 256)
    assert JobSpec("tiny-llama", "full", 256, 512, 16, 4, history_weights=weights).job_id == throughput.job_id
    seeded = JobSpec("tiny-llama", "hybrid", 256, 512, 16, 4)
    calibrated = JobSpec("tiny-llama", "hybrid", 256, 512, 16, 4, history_weights=weights)
    other = JobSpec("tiny-llama", "hybrid", 256, 512, 16, 4, history_weights=HistoryWeightsRef("x", "b" * 12, 256))
    assert len({seeded.job_id, calibrated.job_id, other.job_id}) == 3
    # a quality job ignores what only generation and arrivals use: it is one job, not one per setting
    assert JobSpec("tiny-llama", "full", 256, 512, 64, 4, task="recall", num_benchmark_iters=3,
                   request_rate=2.0).job_id == recall.job_id


@pytest.fixture(scope="module")
def recall_weights(tmp_path_factory):
    """History weights for tiny-recall at its window (a few calibration steps)."""
    model = build_model(resolve_model("tiny-recall"), torch.device("cpu"), torch.float32, 256, seed=0)
    spec = CalibrationSpec(window=RECALL_W, steps=3, seq_len=256, batch=2)
    branches, curve = calibrate(model, spec)
    path = str(tmp_path_factory.mktemp("weights") / "tiny-recall-w32.safetensors")
    save_history_weights(history_weights(model, branches, RECALL_W, spec.steps, curve[-1]), path)
    return path


def test_history_weights_set_ssm_init_and_change_hybrid(tmp_path, recall_weights):
    ref = HistoryWeightsRef.open(recall_weights)
    common = dict(model="tiny-recall", config="hybrid", task="recall", window=RECALL_W, input_len=256, num_prompts=2)
    seeded, seeded_rows = _run(tmp_path, **common)
    calibrated, calibrated_rows = _run(tmp_path, **common, history_weights=ref)
    assert seeded["ssm_init"] == "seeded" and calibrated["ssm_init"] == f"calibrated:{ref.sha}"
    assert len(ref.sha) == 12 and calibrated["history_weights"] == recall_weights
    assert seeded["job_id"] != calibrated["job_id"]
    assert abs(seeded["nll_mean"] - calibrated["nll_mean"]) > 1e-3
    assert sum(r["nll_sum"] for r in seeded_rows) != pytest.approx(sum(r["nll_sum"] for r in calibrated_rows))


BENCH = ["bench", "--model", "tiny-recall", "--config", "hybrid", "--sliding-window-override", "32",
         "--input-lengths", "256", "--num-prompts", "2", "--no-progress"]


def _bad_inputs(checkpoint, recall_weights, tmp_path) -> list[tuple[list[str], str]]:
    folder, _, text = checkpoint
    missing = str(tmp_path / "missing.txt")
    return [
        (["--task", "perplexity", "--model", folder, "--eval-text", text, "--input-lengths", "200"],
         "323 tokens with " + folder + "'s tokenizer, fewer than the 400 needed (--num-prompts 2 x input length 200)"),
        (["--task", "perplexity", "--eval-text", text], "--eval-text needs a tokenizer and tiny-recall has none (a "
         "built-in preset); --task recall and calibration without --eval-text need none"),
        (["--task", "perplexity"], "--task perplexity needs --eval-text FILE"),
        (["--task", "recall", "--history-weights", recall_weights, "--sliding-window-override", "16"],
         f"--history-weights {recall_weights}: calibrated for window 32, the window asked is 16"),
        (["--task", "recall", "--history-weights", recall_weights, "--model", "tiny-llama"],
         f"--history-weights {recall_weights}: calibrated for another model"),
        (["--task", "recall", "--input-lengths", "40"], "no recall distance fits: a block of 16 tokens repeated "
         "0.5W = 16 tokens later needs an input of at least 48 tokens, the input length is 40"),
        (["--task", "perplexity", "--eval-text", missing], f"--eval-text {missing}: cannot read it (No such file"),
        (["--task", "summarise"], "argument --task: invalid choice: 'summarise'"),
    ]


BAD_CASES = ("text too short", "no tokenizer", "perplexity without text", "weights of another window",
             "weights of another model", "no recall distance fits", "missing text", "unknown task")


@pytest.mark.parametrize("case", range(len(BAD_CASES)), ids=BAD_CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(checkpoint, recall_weights, tmp_path, capsys, monkeypatch,
                                                         case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bad, message = _bad_inputs(checkpoint, recall_weights, tmp_path)[case]
    out = tmp_path / "results"
    try:
        code = main(BENCH + ["--output-dir", str(out)] + bad)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for part in message.split(" ... "):
        assert part in err, err
    assert not out.exists()


def test_shipped_queries_by_the_numbers(checkpoint, tmp_path):
    folder, _, text = checkpoint
    ref = EvalTextRef.open(text)
    _run(tmp_path, model=folder, config="full", task="perplexity", eval_text=ref)
    _run(tmp_path, model=folder, config="sliding", task="perplexity", eval_text=ref)
    _run(tmp_path, model="tiny-recall", config="sliding", task="recall", window=RECALL_W, input_len=256, num_prompts=3)
    results = str(tmp_path / "results")
    rows = pq.read_table(os.path.join(results, "quality")).to_pylist()
    with open_views(Selection.of(results)) as views:
        perplexity = views.table(catalog.load("perplexity")).to_pylist()
        recall = views.table(catalog.load("recall")).to_pylist()
        assert views.table("SELECT count(*) AS n FROM cells").to_pylist() == [{"n": 0}]  # no throughput jobs

    def expected(mine: list[dict], value) -> tuple[float, float, float]:
        per_request = [value(r) for r in mine]
        mean = sum(r["nll_sum"] if value is _nll else r["correct"] for r in mine) / sum(r["tokens"] for r in mine)
        half = t_quantile(0.975, len(mine) - 1) * np.std(per_request, ddof=1) / math.sqrt(len(mine))
        return mean, mean - half, mean + half

    assert len(perplexity) == 2 * 4
    for got in perplexity:
        mine = [r for r in rows if r["task"] == "perplexity" and r["config"] == got["config"]
                and r["bucket_start_w"] == got["bucket_start_w"]]
        assert got["requests"] == 3 and got["tokens"] == sum(r["tokens"] for r in mine)
        assert (got["nll_mean"], got["nll_ci_low"], got["nll_ci_high"]) == pytest.approx(expected(mine, _nll))
        assert got["perplexity"] == pytest.approx(math.exp(got["nll_mean"]))
    assert len(recall) == 4
    for got in recall:
        mine = [r for r in rows if r["task"] == "recall" and r["distance_w"] == got["distance_w"]]
        assert got["requests"] == 3 and got["distance"] == round(got["distance_w"] * RECALL_W)
        assert (got["accuracy"], got["accuracy_ci_low"], got["accuracy_ci_high"]) == pytest.approx(
            expected(mine, lambda r: r["correct"] / r["tokens"]), abs=1e-12)
        assert (got["nll_mean"], got["nll_ci_low"], got["nll_ci_high"]) == pytest.approx(expected(mine, _nll))


def _nll(row: dict) -> float:
    return row["nll_sum"] / row["tokens"]


def test_tasks_fan_out_in_sweeps_and_sweep_files(tmp_path, recall_weights):
    from hybench.orchestrator.sweep import expand, resolve

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"models: tiny-recall\nconfigs: [full, hybrid]\nwindows: 32\ninput_lengths: [128, 256]\n"
                          f"tasks: [throughput, recall]\nengines: [hybrid, hf]\nhistory_weights: {recall_weights}\n")
    runs = expand(resolve({}, str(sweep_file)))
    # Throughput jobs run --repeats (3) times; a quality job scores fixed sequences and runs once.
    assert {s.repeat for s in runs if s.task == "recall"} == {0}
    assert sorted(s.repeat for s in runs if s.task == "throughput") == sorted([0, 1, 2] * 6)
    specs = [s for s in runs if s.repeat == 0]
    cells = sorted((s.engine, s.config, s.task, s.input_len) for s in specs)
    assert cells == sorted([(engine, config, task, n) for config in ("full", "hybrid") for task in ("throughput", "recall")
                            for n in (128, 256) for engine in ("hybrid", "hf")
                            if engine == "hybrid" or (config == "full" and task == "throughput")])
    assert {s.history_weights.sha for s in specs if s.config == "hybrid"} == {HistoryWeightsRef.open(recall_weights).sha}
    assert all(s.history_weights is None for s in specs if s.config == "full")


def test_calibration_on_text_trains_on_windows_of_the_tokenized_text(checkpoint, tmp_path, capsys):
    folder, _, text = checkpoint
    tokens = torch.tensor(text_sequences(EvalTextRef.open(text), folder, 92, 323, 1)[0])
    spec = CalibrationSpec(window=8, batch=4, seq_len=64, data="text")
    batch = calibration_batch(92, spec, torch.Generator().manual_seed(0), tokens)
    for row in batch:  # each row is the text's tokens from some offset on
        starts = [i for i in range(len(tokens) - 63) if torch.equal(tokens[i:i + 64], row)]
        assert starts, row
    output = tmp_path / "h.safetensors"
    args = ["calibrate", "--model", folder, "--sliding-window-override", "8", "--seq-len", "64", "--batch-size", "2",
            "--steps", "2", "--no-progress", "--eval-text", text, "--output", str(output)]
    assert main(args) == 0 and output.exists()
    capsys.readouterr()
    short = args[:-1] + [str(tmp_path / "g.safetensors")]
    short[short.index("64")] = "400"
    assert main(short) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the text has 323 tokens, fewer than one calibration sequence of 400" in err
    assert not (tmp_path / "g.safetensors").exists()
    preset = ["calibrate", "--model", "tiny-recall", "--sliding-window-override", "32", "--eval-text", text,
              "--output", str(tmp_path / "p.safetensors")]
    assert main(preset) == 2
    assert "needs a tokenizer and tiny-recall has none" in capsys.readouterr().err
