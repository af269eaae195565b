"""The shipped SQL and the views it runs on, against numbers computed independently with numpy."""
from __future__ import annotations

import math

import numpy as np
import pyarrow.fs as pafs
import pytest

from hybench.queries import catalog, store_views
from hybench.queries.errors import QueryError
from hybench.queries.store_views import Selection, open_views
from hybench.workers.records import JOBS_SCHEMA
from hybench.workers.store import ResultStore
from queries_fixtures import (MODEL, WORKLOAD, add_edge_cases, add_workload_variants, build_store, expected_all_cells,
                              expected_cells, expected_prefix_caching, synthetic)  # noqa: F401 - synthetic is a fixture

# Columns no oracle value checks: keys, and text that is checked apart.
_UNCHECKED = {"model", "engine", "window", "output_len", "input_len", "config", "status", "sweeps",
              "attn_backend", "ssm_backend"}
_WORKLOAD_DEFAULTS = {"enable_prefix_caching": False, "request_rate": math.inf, "concurrency_limit": None,
                      "dataset_sha256": None}
_PROJECTIONS = ("cells", "throughput", "latency", "token_latency", "memory", "utilization", "efficiency", "status")


@pytest.fixture(scope="module")
def views(synthetic):
    with open_views(Selection(synthetic.root), materialize_cells=True) as views:
        yield views


@pytest.fixture(scope="module")
def workloads(tmp_path_factory):
    """The store with jobs that differ only in their workload: with and without caching, two rates."""
    synthetic = build_store(str(tmp_path_factory.mktemp("workloads")))
    add_edge_cases(synthetic)
    add_workload_variants(synthetic)
    with open_views(Selection(synthetic.root), materialize_cells=True) as views:
        yield synthetic, views


def _close(got, want) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if isinstance(want, (bool, str)) or isinstance(got, (bool, str)):
        return got == want
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)


def test_every_query_is_covered_by_a_test():
    assert set(catalog.names()) == set(_PROJECTIONS) | {"config_ratios", "totals", "failures", "environment",
                                                          "prefix_caching",
                                                          "perplexity", "recall"}  # test_quality_jobs.py


@pytest.mark.parametrize("name", _PROJECTIONS)
def test_per_cell_queries_match_numpy(views, synthetic, name):
    expected = expected_cells(synthetic)
    rows = views.table(catalog.load(name)).to_pylist()
    assert {(r["config"], r["input_len"]) for r in rows} == set(expected)
    for row in rows:
        assert row["model"] == MODEL and row["window"] == 512
        assert all(row[c] == v for c, v in _WORKLOAD_DEFAULTS.items())  # a store without the columns
        want = expected[(row["config"], row["input_len"])]
        unchecked = set(row) - set(want) - _UNCHECKED
        assert not unchecked, f"{name} returns columns no test checks: {unchecked}"
        for column in set(row) & set(want):
            assert _close(row[column], want[column]), (name, row["config"], row["input_len"], column)


def _workload(row: dict) -> tuple:
    return tuple(row[c] for c in WORKLOAD)


@pytest.mark.parametrize("name", _PROJECTIONS)
def test_workload_columns_are_cell_dimensions(workloads, name):
    """Jobs that differ only in caching, request rate, concurrency limit or dataset are cells of their own."""
    synthetic, views = workloads
    expected = expected_all_cells(synthetic)
    rows = views.table(catalog.load(name)).to_pylist()
    keys = [(r["window"], _workload(r), r["config"], r["input_len"]) for r in rows]
    assert sorted(keys, key=str) == sorted(expected, key=str)  # each once
    assert {k[1][:2] for k in keys} >= {(False, math.inf), (True, math.inf), (False, 4.0), (True, 4.0)}
    for row, key in zip(rows, keys):
        want = expected[key]
        unchecked = set(row) - set(want) - _UNCHECKED
        assert not unchecked, f"{name} returns columns no test checks: {unchecked}"
        for column in set(row) & set(want):
            assert _close(row[column], want[column]), (name, key, column, row[column], want[column])


def test_prefix_caching_query_matches_numpy(workloads):
    synthetic, views = workloads
    expected = expected_prefix_caching(synthetic)
    rows = views.table(catalog.load("prefix_caching")).to_pylist()
    keys = [(r["window"], _workload({**r, "enable_prefix_caching": True})[1:], r["config"], r["input_len"]) for r in rows]
    assert sorted(keys, key=str) == sorted(expected, key=str)
    assert sum(want["has_without"] for want in expected.values()) == 8  # 6 offline and 2 at 4 requests/s
    for row, key in zip(rows, keys):
        want = dict(expected[key])
        assert (row["status_without"] is not None) == want.pop("has_without")
        unchecked = set(row) - set(want) - _UNCHECKED - {"status_without"}
        assert not unchecked, f"prefix_caching returns columns no test checks: {unchecked}"
        for column in set(row) & set(want):
            assert _close(row[column], want[column]), (key, column, row[column], want[column])
        if want["ttft_p50_ratio"] is not None:
            assert want["ttft_p50_ratio"] < 1  # the synthetic cache cuts TTFT


def test_config_ratios_pair_within_a_workload(workloads):
    synthetic, views = workloads
    cells = expected_all_cells(synthetic)
    rows = views.table(catalog.load("config_ratios")).to_pylist()
    pairs = {("sliding", "full"), ("hybrid", "full"), ("hybrid", "sliding")}
    expected_keys = {(w, wl, c, b, n) for c, b in pairs for (w, wl, config, n) in cells
                     if config == c and (w, wl, b, n) in cells}
    assert sorted(((r["window"], _workload(r), r["config"], r["baseline"], r["input_len"]) for r in rows), key=str) \
        == sorted(expected_keys, key=str)
    for r in rows:
        mine = cells[(r["window"], _workload(r), r["config"], r["input_len"])]
        base = cells[(r["window"], _workload(r), r["baseline"], r["input_len"])]
        if mine["throughput_tok_s_log_mean"] is not None and base["throughput_tok_s_log_mean"] is not None:
            want = math.exp(mine["throughput_tok_s_log_mean"] - base["throughput_tok_s_log_mean"])
        else:
            want = None if mine["throughput_tok_s"] is None or not base["throughput_tok_s"] else \
                mine["throughput_tok_s"] / base["throughput_tok_s"]
        assert _close(r["throughput_ratio"], want)


def test_failures_show_the_workload(workloads):
    _, views = workloads
    rows = views.table(catalog.load("failures")).to_pylist()
    assert rows and all(_workload(r) == (False, math.inf, None, None) for r in rows)


def test_percentiles_are_over_requests_and_leave_warmup_out(views, synthetic):
    (row,) = views.table("SELECT * FROM cells WHERE config = 'sliding' AND input_len = 1024").to_pylist()
    measured = [r["e2e_ms"] for r in synthetic.requests
                if (r["config"], r["input_len"]) == ("sliding", 1024) and not r["warmup"]]
    assert row["requests"] == len(measured) == 20
    assert row["latency_p99_ms"] == pytest.approx(float(np.percentile(measured, 99, method="linear")), rel=1e-12)


def test_memory_query_shows_every_memory_field_of_the_jobs_table(views):
    columns = set(views.table(catalog.load("memory")).schema.names)
    assert {f.name for f in JOBS_SCHEMA if f.name.endswith("_gib")} <= columns


def test_cell_status_shows_failed_jobs(views):
    status = {(r["config"], r["input_len"]): r for r in views.table(catalog.load("status")).to_pylist()}
    assert status[("full", 4096)]["status"] == "oom"
    assert status[("hybrid", 2048)]["status"] == "error"
    assert status[("hybrid", 8192)]["status"] == "incomplete"
    assert status[("sliding", 1024)]["status"] == "ok"
    assert status[("sliding", 1024)]["sweeps"] == "s1"


def test_config_ratios_match_numpy(views, synthetic):
    cells = expected_cells(synthetic)
    rows = views.table(catalog.load("config_ratios")).to_pylist()
    pairs = {("sliding", "full"), ("hybrid", "full"), ("hybrid", "sliding")}
    expected_keys = {(c, b, n) for c, b in pairs for (config, n) in cells if config == c and (b, n) in cells}
    assert {(r["config"], r["baseline"], r["input_len"]) for r in rows} == expected_keys
    for r in rows:
        mine, base = cells[(r["config"], r["input_len"])], cells[(r["baseline"], r["input_len"])]

        def ratio(a, b):
            return None if a is None or not b else a / b

        def kv(c):
            return None if c["kv_used_gib"] is None else c["kv_used_gib"] + (c["ssm_state_gib"] or 0)

        assert _close(r["kv_ratio"], ratio(kv(mine), kv(base)))
        assert _close(r["concurrency_ratio"], ratio(mine["kv_capacity_seqs"], base["kv_capacity_seqs"]))
        def centre(samples, column):  # the ratio of the samples' geometric means, else of the pooled figures
            if mine[f"{samples}_log_mean"] is None or base[f"{samples}_log_mean"] is None:
                return ratio(mine[column], base[column])
            return math.exp(mine[f"{samples}_log_mean"] - base[f"{samples}_log_mean"])

        assert _close(r["throughput_ratio"], centre("throughput_tok_s", "throughput_tok_s"))
        assert _close(r["p50_ratio"], centre("e2e_p50_ms", "latency_p50_ms"))
        assert _close(r["p99_ratio"], centre("e2e_p99_ms", "latency_p99_ms"))
        assert _close(r["per_gib_ratio"], ratio(mine["tok_s_per_gib"], base["tok_s_per_gib"]))
        assert _close(r["kv_state_gib"], kv(mine)) and _close(r["baseline_kv_state_gib"], kv(base))


def test_totals_failures_environment(views, synthetic):
    (totals,) = views.table(catalog.load("totals")).to_pylist()
    cells = expected_cells(synthetic).values()
    for name in ("jobs", "ok", "oom", "error", "incomplete"):
        assert totals[name] == sum(c[name] for c in cells)
    assert totals["measured_requests"] == sum(c["requests"] for c in cells)
    assert totals["warmup_requests"] == sum(r["warmup"] for r in synthetic.requests)

    failures = views.table(catalog.load("failures")).to_pylist()
    assert {(f["job_id"], f["status"], f["error"]) for f in failures} == {
        (j["job_id"], j["status"], j["error"].splitlines()[0]) for j in synthetic.jobs if j["status"] != "ok"}

    (environment,) = views.table(catalog.load("environment")).to_pylist()
    assert environment["jobs"] == len(synthetic.jobs)
    assert environment["device_name"] == "NVIDIA H100 80GB HBM3"


def test_views_skip_truncated_files_and_keep_newer_columns(views, synthetic):
    assert list(views.skipped) == synthetic.skipped
    (count,) = views.table("SELECT count(newer_metric) AS n FROM requests").to_pylist()
    assert count["n"] == sum(r["config"] == "sliding" and r["input_len"] == 2048 for r in synthetic.requests)
    models = views.table("SELECT DISTINCT model FROM requests UNION SELECT DISTINCT model FROM jobs").to_pylist()
    assert models == [{"model": MODEL}]  # percent-encoded in the paths, decoded in the views


def test_views_are_read_only(views, synthetic, tmp_path):
    with pytest.raises(QueryError, match="Permission"):
        views.table(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'")
    with pytest.raises(QueryError, match="Permission"):
        views.table("SELECT * FROM read_csv('/etc/hostname')")
    with pytest.raises(QueryError):
        views.table("SET enable_external_access = true")


@pytest.mark.parametrize("selection, expected_configs, expected_lengths", [
    (dict(configs=("hybrid",)), {"hybrid"}, {256, 1024, 2048, 4096, 8192}),
    (dict(where="input_len >= 2048 AND config <> 'full'"), {"sliding", "hybrid"}, {2048, 4096, 8192}),
    (dict(models=(MODEL,), sweeps=("s1",), configs=("full", "sliding")), {"full", "sliding"}, {256, 1024, 2048, 4096}),
])
def test_filters_narrow_both_tables(synthetic, selection, expected_configs, expected_lengths):
    with open_views(Selection(synthetic.root, **selection)) as views:
        for table in ("requests", "jobs", "cells"):
            rows = views.table(f"SELECT DISTINCT config, input_len FROM {table}").to_pylist()
            assert {r["config"] for r in rows} <= expected_configs
            assert {r["input_len"] for r in rows} <= expected_lengths
        assert {r["input_len"] for r in views.table("SELECT input_len FROM cells").to_pylist()} == expected_lengths


def test_where_on_a_column_one_table_lacks_is_a_clear_error(synthetic):
    with pytest.raises(QueryError, match=r"--where .status = 'ok'.: Binder Error.*both tables share"):
        open_views(Selection(synthetic.root, where="status = 'ok'"))


def test_unknown_sweep_gives_empty_tables_not_an_error(synthetic):
    with open_views(Selection(synthetic.root, sweeps=("nope",))) as views:
        assert views.table(catalog.load("throughput")).num_rows == 0
        assert views.table(catalog.load("totals")).to_pylist()[0]["jobs"] is None


def test_object_store_is_read_through_its_filesystem(monkeypatch):
    store = ResultStore("mock://bucket/results")
    assert not store.is_local
    synthetic = build_store(store)
    monkeypatch.setattr(store_views, "ResultStore", lambda uri: store)
    with open_views(Selection(store.uri)) as views:
        rows = views.table(catalog.load("latency")).to_pylist()
    expected = expected_cells(synthetic)
    assert {(r["config"], r["input_len"]) for r in rows} == set(expected)
    for r in rows:
        assert _close(r["latency_p99_ms"], expected[(r["config"], r["input_len"])]["latency_p99_ms"])
    # Without its _SUCCESS marker an object is not complete: it is not read.
    marker = synthetic.jobs[0]["job_id"]
    infos = store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))
    store.fs.delete_file(next(i.path for i in infos if "/jobs/" in i.path and i.path.endswith(f"{marker}._SUCCESS")))
    with open_views(Selection(store.uri)) as views:
        assert views.table(f"SELECT * FROM jobs WHERE job_id = '{marker}'").num_rows == 0


def test_no_results_is_an_error(tmp_path):
    with pytest.raises(QueryError, match="does not exist"):
        open_views(Selection(str(tmp_path / "missing")))
    with pytest.raises(QueryError, match="holds no results"):
        open_views(Selection(str(tmp_path)))
