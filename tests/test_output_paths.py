"""Every output path is checked before any work: one line naming the flag and the path, exit 2,
nothing written; and --output-json is strict JSON."""
from __future__ import annotations

import json
import math

import pytest

from hybench.orchestrator import bench_cli, driver
from hybench.orchestrator.cli import main

BENCH = ["bench", "--model", "tiny-llama", "--config", "full", "--input-lengths", "16", "--num-prompts", "1",
         "--output-len", "2", "--num-warmup-iters", "0", "--num-benchmark-iters", "1", "--no-progress"]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("not a folder")
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Any benchmark or sweep that starts fails the test: the check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output paths were checked")
    monkeypatch.setattr(bench_cli, "run_job", refuse)
    monkeypatch.setattr(driver, "run_sweep", refuse)


def _cases(tmp, a_file):
    return [
        (BENCH + ["--output-dir", "/proc/nope/results"], "--output-dir /proc/nope/results"),
        (BENCH + ["--output-dir", str(a_file / "results")], f"--output-dir {a_file / 'results'}"),
        (BENCH + ["--output-dir", str(tmp / "r"), "--output-json", "/proc/x/full.json"],
         "--output-json /proc/x/full.json"),
        (BENCH + ["--output-dir", str(tmp / "r"), "--output-json", str(tmp)], f"--output-json {tmp}"),
        (["sweep", "--models", "tiny-llama", "--results", "/proc/nope/results"], "--results /proc/nope/results"),
        (["sweep", "--models", "tiny-llama", "--results", str(tmp / "r"), "--report-dir", str(a_file)],
         f"--report-dir {a_file}"),
        (["data", "--input-lengths", "8", "--num-prompts", "1", "--output-file", "/proc/nope/p.json"],
         "--output-file /proc/nope/p.json"),
        (["report", "--results-dir", str(tmp / "r"), "--output-dir", str(a_file / "plots")],
         f"--output-dir {a_file / 'plots'}"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_unwritable_output_fails_first_in_one_line(tmp_path, a_file, no_work, capsys, index):
    argv, named = _cases(tmp_path, a_file)[index]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing partial, no probe left


def test_output_json_is_strict_json(tmp_path):
    spec = bench_cli.make_specs(_args())[0]
    rows = [{"status": "ok", "latency_p99_ms": math.inf, "mbu": math.nan, "input_len": 16}]
    path = tmp_path / "out.json"
    bench_cli.write_json(str(path), [spec], rows)

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    result = json.loads(path.read_text(), parse_constant=refuse)["results"][0]
    assert result["latency_p99_ms"] is None and result["mbu"] is None and result["input_len"] == 16


def _args():
    from hybench.orchestrator.cli import build_parser
    return build_parser().parse_args(BENCH + ["--output-dir", "unused"])
