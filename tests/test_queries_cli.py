"""`hybench query` and `hybench report` through the console entry point: outputs, and one clear
line with a non-zero exit for every bad input."""
from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest

from hybench.orchestrator.cli import main
from hybench.queries import catalog
from queries_fixtures import add_edge_cases, add_workload_variants, build_store, expected_cells


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    synthetic = build_store(str(tmp_path_factory.mktemp("store")))
    add_edge_cases(synthetic)
    return synthetic


def _fails(capsys, argv: list[str], message: str) -> None:
    assert main(argv) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert message in lines[0]
    assert captured.out == ""


def test_bad_input_is_one_line_and_a_nonzero_exit(synthetic, tmp_path, capsys):
    root = synthetic.root
    _fails(capsys, ["query", "--results-dir", str(tmp_path / "missing"), "SELECT 1"], "does not exist")
    _fails(capsys, ["report", "--results-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")],
           "does not exist")
    _fails(capsys, ["query", "--results-dir", str(tmp_path), "--name", "latency"], "holds no results")
    _fails(capsys, ["report", "--results-dir", str(tmp_path)], "holds no results")
    _fails(capsys, ["query", "--results-dir", root, "SELEC config FROM jobs"], "Parser Error")
    _fails(capsys, ["query", "--results-dir", root, "SELECT nope FROM jobs"], "Binder Error")
    _fails(capsys, ["query", "--results-dir", root, "--name", "nope"], "unknown query 'nope'")
    _fails(capsys, ["query", "--results-dir", root], "give either an SQL query or --name")
    _fails(capsys, ["query", "--results-dir", root, "--where", "e2e_ms > 1", "--name", "totals"], "--where")
    _fails(capsys, ["query", "--results-dir", root, "--name", "totals", "--format", "parquet"], "--output FILE")
    _fails(capsys, ["query", "--results-dir", root, "--compare", root, "--name", "totals"], "same results")
    _fails(capsys, ["report", "--results-dir", "s3://bucket/results"], "--output-dir is needed")


def test_unknown_flag_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--format", "gif"])
    assert exit_info.value.code != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_list_names_every_query_with_its_description(capsys):
    assert main(["query", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == catalog.names()
    assert all(catalog.description(line.split()[0]) in line for line in lines)


def test_named_query_as_csv_matches_numpy(synthetic, capsys):
    assert main(["query", "--results-dir", synthetic.root, "--name", "latency", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "skipped results file" in captured.err and "does not read back" in captured.err
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    expected = expected_cells(synthetic)
    assert len(rows) == len(expected)
    for row in rows:
        want = expected[(row["config"], int(row["input_len"]))]["latency_p99_ms"]
        assert (row["latency_p99_ms"] == "") if want is None else float(row["latency_p99_ms"]) == pytest.approx(want)


def test_sql_as_json_with_filters(synthetic, capsys):
    argv = ["query", "--results-dir", synthetic.root, "--config", "hybrid", "--where", "input_len <= 1024",
            "--format", "json", "SELECT config, input_len, count(*) AS n FROM requests "
            "WHERE NOT warmup GROUP BY ALL ORDER BY input_len"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"config": "hybrid", "input_len": n, "n": 20} for n in (256, 1024)]


def test_parquet_output_holds_every_row(synthetic, tmp_path, capsys):
    out = tmp_path / "requests.parquet"
    assert main(["query", "--results-dir", synthetic.root, "--format", "parquet", "--output", str(out),
                 "SELECT * FROM requests"]) == 0
    table = pq.read_table(out)
    assert table.num_rows == len(synthetic.requests)
    assert "newer_metric" in table.column_names and "itl_ms" in table.column_names


def test_table_output_is_aligned(synthetic, capsys):
    assert main(["query", "--results-dir", synthetic.root, "--name", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "engine", "window", "output_len", "input_len", "config", "status", "jobs",
                                "ok", "oom", "error", "incomplete", "sweeps"]
    assert set(lines[1]) == {"-", " "}
    assert len(lines) == 2 + len(expected_cells(synthetic))
    starts = {line.index("incomplete") for line in lines if "incomplete" in line}
    assert len(starts) >= 1 and all(len(line) <= len(lines[1]) for line in lines)


def test_table_output_shows_the_workload_where_it_varies(tmp_path, capsys):
    store = build_store(str(tmp_path / "store"))
    add_workload_variants(store)
    assert main(["query", "--results-dir", store.root, "--name", "status"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[:10] == ["model", "engine", "window", "output_len", "enable_prefix_caching", "request_rate",
                           "concurrency_limit", "dataset_sha256", "input_len", "config"]
    assert main(["query", "--results-dir", store.root, "--name", "status", "--where", "input_len > 1024"]) == 0
    assert "enable_prefix_caching" not in capsys.readouterr().out  # only default workloads there


def test_long_table_output_is_cut_with_a_note(synthetic, capsys):
    assert main(["query", "--results-dir", synthetic.root, "SELECT * FROM requests"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 + 200
    assert "first 200 rows shown" in captured.err


def test_query_compare_stacks_the_sides(tmp_path, capsys):
    a = build_store(str(tmp_path / "a"))
    b = build_store(str(tmp_path / "b"), seed=4, speed=3.0)
    assert main(["query", "--results-dir", a.root, "--compare", b.root, "--name", "throughput", "--format",
                 "csv"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["side"] for r in rows] == ["A"] * 9 + ["B"] * 9
    assert f"A: {a.root}" in captured.err and f"B: {b.root}" in captured.err
    want = expected_cells(b)[("sliding", 1024)]["throughput_tok_s"]
    (row,) = [r for r in rows if r["side"] == "B" and r["config"] == "sliding" and r["input_len"] == "1024"]
    assert float(row["throughput_tok_s"]) == pytest.approx(want)


def test_report_defaults_to_plots_inside_the_store(tmp_path, capsys):
    store = build_store(str(tmp_path / "results"))
    assert main(["report", "--results-dir", store.root, "--model", "org/tiny-model"]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(tmp_path / "results" / "plots" / "summary.md")
    assert "model org/tiny-model" in open(path, encoding="utf-8").read()


def test_report_compare_of_two_stores(tmp_path, capsys):
    a = build_store(str(tmp_path / "h100"))
    b = build_store(str(tmp_path / "h200"), seed=2, speed=1.5)
    out = tmp_path / "out"
    assert main(["report", "--results-dir", a.root, "--compare", b.root, "--output-dir", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "## Comparison: B against A" in summary and "throughput_tok_s_ratio" in summary
    assert "(compare_ratio.png)" in summary
