"""`hybench data` and the workload flags of `hybench bench` end to end on the tiny preset: a dataset
round trip, a Poisson job under a concurrency limit, and bad input that fails in one line."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybench.engine import LLMEngine
from hybench.orchestrator.cli import main
from hybench.workers.arrivals import arrival_offsets_ns
from hybench.workers.datasets import load_dataset

BENCH = ["bench", "--model", "tiny-llama", "--config", "sliding", "--sliding-window-override", "16",
         "--output-len", "3", "--num-warmup-iters", "0", "--num-benchmark-iters", "2", "--no-progress"]


def _read(folder, table):
    return pq.read_table(folder / table).to_pylist()


def test_dataset_round_trip_runs_exactly_the_files_ids(tmp_path, monkeypatch, capsys):
    data, out = tmp_path / "x.json", tmp_path / "results"
    assert main(["data", "--input-lengths", "24,40", "--num-prompts", "5", "--pattern", "shared_prefix",
                 "--prefix-len", "8", "--num-prefixes", "2", "--output-file", str(data)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "note: no --tokenizer given" in err
    records = json.loads(data.read_text())["prompts"]
    by_length = {n: [r["token_ids"] for r in records if r["input_len"] == n] for n in (24, 40)}

    ran = []
    add_request = LLMEngine.add_request

    def recording_add_request(self, prompt, sampling, arrival_ns=None):
        ran.append(list(prompt))
        return add_request(self, prompt, sampling, arrival_ns)

    monkeypatch.setattr(LLMEngine, "add_request", recording_add_request)
    assert main(BENCH + ["--dataset", str(data), "--input-lengths", "24,40", "--num-prompts", "4",
                         "--output-dir", str(out)]) == 0
    # two iterations per length, each the first four prompts of that length, in file order
    assert ran == by_length[24][:4] * 2 + by_length[40][:4] * 2
    jobs = _read(out, "jobs")
    assert all(j["status"] == "ok" for j in jobs) and len(jobs) == 2
    assert {j["dataset_sha256"] for j in jobs} == {load_dataset(str(data)).sha256}
    assert {j["dataset"] for j in jobs} == {str(data)}
    assert all(r["prompt_tokens"] == r["input_len"] for r in _read(out, "requests"))


def test_poisson_job_records_its_schedule_and_waits(tmp_path):
    out = tmp_path / "results"
    assert main(BENCH + ["--input-lengths", "20", "--num-prompts", "6", "--request-rate", "150",
                         "--max-concurrency", "2", "--seed", "5", "--output-dir", str(out)]) == 0
    (job,) = _read(out, "jobs")
    assert job["request_rate"] == 150 and job["concurrency_limit"] == 2 and job["dataset"] is None
    requests = _read(out, "requests")
    for iteration in (0, 1):
        rows = sorted((r for r in requests if r["iteration"] == iteration), key=lambda r: r["request_id"])
        arrivals = np.array([r["arrival_ns"] for r in rows])
        assert np.array_equal(arrivals - arrivals[0], arrival_offsets_ns(6, 150, 5, iteration))
    for r in requests:
        assert 0 <= r["client_queue_ms"] <= r["queue_ms"] <= r["ttft_ms"] <= r["e2e_ms"]


def test_offline_jobs_record_engine_side_queueing(tmp_path):
    out = tmp_path / "results"
    assert main(BENCH + ["--input-lengths", "20", "--num-prompts", "4", "--max-num-seqs", "2",
                         "--output-dir", str(out)]) == 0
    requests = _read(out, "requests")
    assert {j["request_rate"] for j in _read(out, "jobs")} == {float("inf")}
    assert all(r["client_queue_ms"] < r["queue_ms"] for r in requests if r["request_id"] % 4 >= 2)


def _prompts_file(path, records=None, **header):
    """A dataset file of one 4-token prompt unless told otherwise."""
    payload = {"format": "hybench-prompts", "version": 1, "pattern": "random", "seed": 0, "vocab_size": 512,
               "vocab_source": "test"} | header | {"prompts": [_record()] if records is None else records}
    path.write_text(json.dumps(payload))
    return str(path)


def _write(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def _record(**fields):
    return {"input_len": 4, "token_ids": [1, 2, 3, 4], "prefix_len": 0, "prefix_index": None, "text": None} | fields


BAD_FILES = {
    "missing": (lambda p: str(p / "missing.json"), "cannot read: No such file or directory"),
    "not json": (lambda p: _write(p / "x.json", b"{nope"), "not valid JSON"),
    "no prompts list": (lambda p: _write(p / "x.json", b'{"prompts": 3}'),
                        "expected an object with a \"prompts\" list"),
    "other format": (lambda p: _prompts_file(p / "x.json", format="other"), "not a hybench-prompts version 1 file"),
    "no prompts": (lambda p: _prompts_file(p / "x.json", records=[]), "holds no prompts"),
    "empty prompt": (lambda p: _prompts_file(p / "x.json", records=[_record(token_ids=[], input_len=0)]),
                     "prompt 0 is empty"),
    "length mismatch": (lambda p: _prompts_file(p / "x.json", records=[_record(input_len=5)]),
                        "input_len 5 is not its 4 token ids"),
    "id outside file vocabulary": (lambda p: _prompts_file(p / "x.json", records=[_record(token_ids=[1, 2, 3, 600])]),
                                   "token ids must lie in 0..511"),
    "negative id": (lambda p: _prompts_file(p / "x.json", records=[_record(token_ids=[1, -2, 3, 4])]),
                    "found -2"),
    "prefix not shared": (lambda p: _prompts_file(p / "x.json", records=[
        _record(prefix_len=2, prefix_index=0), _record(token_ids=[9, 2, 3, 4], prefix_len=2, prefix_index=0)]),
        "prompt 1 does not begin with prefix 0"),
    "garbage parquet": (lambda p: _write(p / "x.parquet", b"nope"), "not a Parquet file"),
    "plain parquet": (lambda p: pq.write_table(pa.table({"a": [1]}), p / "x.parquet") or str(p / "x.parquet"),
                      "no hybench metadata"),
    "csv": (lambda p: str(p / "x.csv"), "a dataset file ends in .json or .parquet"),
}
BAD_BENCH = {
    "negative rate": (["--request-rate", "-3"], "--request-rate must be a positive number"),
    "zero concurrency": (["--max-concurrency", "0"], "must be at least 1, got 0"),
    "hf under load": (["--engine", "hf", "--config", "full", "--request-rate", "5"], "--engine hf runs offline only"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_dataset_files_fail_in_one_line(tmp_path, capsys, case):
    make, message = BAD_FILES[case]
    _assert_fails(BENCH + ["--input-lengths", "4", "--num-prompts", "1", "--dataset", make(tmp_path)],
                  tmp_path / "results", capsys, message)


@pytest.mark.parametrize("case", BAD_BENCH)
def test_bad_workload_flags_fail_in_one_line(tmp_path, capsys, case):
    flags, message = BAD_BENCH[case]
    _assert_fails(BENCH + ["--input-lengths", "8"] + flags, tmp_path / "results", capsys, message)


@pytest.mark.parametrize("flags,message", [
    (["--input-lengths", "8"], "has no prompts of 8 tokens (it has --input-lengths 4)"),
    (["--input-lengths", "4", "--num-prompts", "2"], "has 1 prompts of 4 tokens, fewer than --num-prompts 2"),
])
def test_a_dataset_that_cannot_serve_the_job_fails_before_running(tmp_path, capsys, flags, message):
    _assert_fails(BENCH + ["--dataset", _prompts_file(tmp_path / "x.json")] + flags, tmp_path / "results",
                  capsys, message)


def test_ids_outside_the_models_vocabulary_fail_before_running(tmp_path, capsys):
    path = _prompts_file(tmp_path / "x.json", records=[_record(token_ids=[1, 2, 3, 700])], vocab_size=1000)
    _assert_fails(BENCH + ["--dataset", path, "--input-lengths", "4", "--num-prompts", "1"], tmp_path / "results",
                  capsys, "holds token id 700, outside tiny-llama's vocabulary of 512 ids")


@pytest.mark.parametrize("flags,message", [
    (["--pattern", "shared_prefix", "--prefix-len", "40"],
     "a shared prefix of 40 tokens is longer than the 32-token prompts"),
    (["--pattern", "shared_prefix", "--prefix-ratio", "0"], "--prefix-ratio must be in (0, 1]"),
    (["--pattern", "shared_prefix", "--num-prefixes", "5"], "5 shared prefixes for 4 prompts"),
    (["--pattern", "shared_prefix", "--num-prefixes", "0"], "0 shared prefixes for 4 prompts"),
    (["--prefix-len", "8"], "--prefix-len apply to --pattern shared_prefix only"),
    (["--input-lengths", "0,64"], "--input-lengths must be at least 1"),
    (["--num-prompts", "0"], "--num-prompts must be at least 1"),
    (["--output-file", "OUT.csv"], "ends in .json or .parquet"),
    (["--tokenizer", "TMP"], "no tokenizer in this folder"),
])
def test_bad_data_arguments_fail_in_one_line(tmp_path, capsys, flags, message):
    out = tmp_path / "out" / "prompts.json"
    flags = [str(tmp_path / "out" / "x.csv") if f == "OUT.csv" else str(tmp_path) if f == "TMP" else f for f in flags]
    argv = ["data", "--input-lengths", "32,64", "--num-prompts", "4", "--output-file", str(out)]
    _assert_fails(argv + flags, tmp_path / "out", capsys, message)


def _assert_fails(argv, must_not_exist, capsys, message):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not must_not_exist.exists()
