"""Bad and hostile input (issue 7): flags, sweep files, checkpoint folders, datasets, queries, and how
Ray is exposed (report paths: test_queries_report.py). Property-based where the input space is large
(hypothesis, derandomized so CI is repeatable; the soak variants draw many more examples).

The contract: a mistake is one line on stderr naming the field (or file), exit code 2, nothing written;
no code shipped with a checkpoint ever runs unless asked; a query cannot change the store or write
anywhere; Ray listens on loopback only in local mode.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray_helpers import sweep_env, table_rows

from hybench.engine import EngineConfigError, resolve_model
from hybench.orchestrator import bench_cli, driver
from hybench.orchestrator.cli import build_parser, main
from hybench.workers.datasets import DatasetError, DatasetRef

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SOAK = settings(FUZZ, max_examples=2000, derandomize=False)
BENCH = ["bench", "--model", "tiny-llama", "--config", "hybrid", "--sliding-window-override", "16",
         "--input-lengths", "32", "--num-prompts", "2", "--output-len", "4", "--num-warmup-iters", "0",
         "--num-benchmark-iters", "1", "--no-progress"]


class WouldRun(Exception):
    """Raised where a valid command would start running jobs (or Ray): the input was accepted."""


def _would_run(*_args, **_kwargs):
    raise WouldRun


def invoke(argv: list[str], cwd: str, run: bool = False) -> tuple[object, str, list[str]]:
    """Run the CLI in `cwd`, without running jobs or Ray unless `run`: (exit code, or "run" where a job
    would start, stderr, files left in cwd)."""
    err = io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    stubs = [] if run else [mock.patch.object(driver, "ray_session", _would_run),
                            mock.patch.object(bench_cli, "run_job", _would_run)]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}), contextlib.ExitStack() as stack:
            for stub in stubs:
                stack.enter_context(stub)
            try:
                code: object = main(argv)
            except SystemExit as exc:
                code = exc.code
            except WouldRun:
                code = "run"
    finally:
        os.chdir(before)
    left = sorted(os.path.relpath(os.path.join(d, f), cwd) for d, _, fs in os.walk(cwd) for f in fs)
    return code, err.getvalue(), left


def assert_one_clear_line(code, err: str, names: set[str], left: list[str], allowed_files=()) -> None:
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert any(name in lines[0] for name in names), (names, lines[0])
    assert [f for f in left if f not in allowed_files] == [], left  # nothing written


def _flag_actions(command: str) -> list[argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [a for a in sub.choices[command]._actions if a.option_strings and a.nargs is None]


def _names(action) -> set[str]:
    """How an error may name the field: a flag spelling, the field, or the field in words."""
    names = {s for s in action.option_strings} | {s.lstrip("-") for s in action.option_strings}
    names |= {action.dest, action.dest.replace("_", " "), action.dest.replace("_len", " length")}
    return names


SPECIAL = ["nan", "inf", "-inf", "0", "-1", "1e309", "1e-300", "1_0", " 5", "true", "none", "auto", "", ",",
           "1,", "1,,2", "-0.0", "2147483648", "99999999999999999999", "-99999999999999999999", "nan,1",
           "full,nan", "--", "meta", "cuda:99", "a\nb", "x\r", "../..", "/", "\x00"]
ATOM = st.one_of(st.text(max_size=8), st.sampled_from(SPECIAL), st.integers(-2**70, 2**70).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr))
FLAG_VALUE = st.one_of(ATOM, st.lists(ATOM, min_size=1, max_size=3).map(",".join))


def _flag_property(command: str, data, tmp_path) -> None:
    action = data.draw(st.sampled_from(_flag_actions(command)), label="flag")
    value = data.draw(FLAG_VALUE, label="value")
    if action.dest in ("results", "output_dir") and "://" in value:
        return  # a URI opens a remote filesystem; not this test's business
    base = ["sweep", "--no-report", "--no-progress"] if command == "sweep" else BENCH
    folder = tempfile.mkdtemp(dir=tmp_path)
    code, err, left = invoke([*base, f"{action.option_strings[0]}={value}"], folder)
    if code != "run":  # rejected: one line naming the field, nothing written
        assert_one_clear_line(code, err, _names(action), left)
    else:
        assert left == [], left
    shutil.rmtree(folder)


@FUZZ
@given(data=st.data())
def test_random_sweep_flags_are_accepted_or_one_line_naming_the_flag(tmp_path, data):
    _flag_property("sweep", data, tmp_path)


@FUZZ
@given(data=st.data())
def test_random_bench_flags_are_accepted_or_one_line_naming_the_flag(tmp_path, data):
    _flag_property("bench", data, tmp_path)


@pytest.mark.soak
@SOAK
@given(data=st.data())
def test_random_flags_soak(tmp_path, data):
    _flag_property(data.draw(st.sampled_from(["sweep", "bench"])), data, tmp_path)


# Values that used to be accepted and then failed inside the job (an error row, garbage, or a
# traceback): now each is refused before anything runs.
KNOWN_BAD = [
    ("--temperature=nan", "temperature"), ("--kv-cache-gib=nan", "--kv-cache-gib"),
    ("--kv-cache-gib=inf", "--kv-cache-gib"), ("--seed=-1", "seed"), ("--seed=99999999999999999999", "seed"),
    ("--num-prompts=99999999999999999999", "--num-prompts"),
    ("--max-concurrency=99999999999999999999", "--max-concurrency"), ("--request-rate=1e-300", "--request-rate"),
    ("--device=meta", "device"), ("--sliding-window-override=--", "--sliding-window-override"),
    ("--config=full\rsliding", "--config"),
]


@pytest.mark.parametrize("command", ["sweep", "bench"])
@pytest.mark.parametrize("flag,name", KNOWN_BAD, ids=[flag for flag, _ in KNOWN_BAD])
def test_values_that_used_to_fail_inside_the_job_are_refused_up_front(tmp_path, command, flag, name):
    if command == "sweep":
        flag = flag.replace("--config=", "--configs=").replace("--sliding-window-override=", "--windows=")
        argv = ["sweep", "--no-report", "--no-progress", flag]
    else:
        argv = [*BENCH, flag]
    code, err, left = invoke(argv, str(tmp_path))
    assert_one_clear_line(code, err, {name, name.replace("--sliding-window-override", "--windows")}, left)


@pytest.mark.parametrize("flag", ["--gpus-per-worker=nan", "--gpus-per-worker=inf", "--job-timeout=nan",
                                  "--job-timeout=inf"])
def test_run_options_must_be_finite(tmp_path, flag):
    code, err, left = invoke(["sweep", "--no-report", flag], str(tmp_path))
    assert_one_clear_line(code, err, {flag[2:].split("=")[0].replace("-", "_")}, left)


# -- sweep files ----------------------------------------------------------------------------------
def _sweep_keys() -> list[str]:
    from hybench.orchestrator.sweep import _file_keys

    return sorted(_file_keys())


YAML_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8),
                        st.sampled_from(SPECIAL))
YAML_VALUE = st.recursive(YAML_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4), inner, max_size=2), max_leaves=6)


def _sweep_file_property(data, tmp_path) -> None:
    folder = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "sweep.yaml"
    if data.draw(st.booleans(), label="raw text"):
        path.write_text(data.draw(st.text(max_size=40), label="text"), encoding="utf-8")
        key = None
    else:
        key = data.draw(st.one_of(st.sampled_from(_sweep_keys()), st.text(max_size=6)), label="key")
        value = data.draw(YAML_VALUE, label="value")
        if key in ("results", "output_dir") and "://" in str(value):
            return
        path.write_text(yaml.safe_dump({key: value}), encoding="utf-8")
    code, err, left = invoke(["sweep", "--no-report", "--no-progress", "sweep.yaml"], str(folder))
    if code == "run":
        assert left == ["sweep.yaml"]
        return
    from hybench.orchestrator.sweep import _file_keys

    setting, flag = _file_keys().get(str(key).replace("-", "_"), (None, None))
    names = {"sweep.yaml"} if key is None else {"sweep.yaml", str(key), repr(str(key))}
    if setting:  # a value that passes the file's checks and fails the job's names the field
        names |= {setting, setting.replace("_", " "), setting.replace("_len", " length"), flag}
    assert_one_clear_line(code, err, names, left, allowed_files=("sweep.yaml",))


@FUZZ
@given(data=st.data())
def test_random_sweep_files_are_accepted_or_one_line_naming_the_field(tmp_path, data):
    _sweep_file_property(data, tmp_path)


@pytest.mark.soak
@SOAK
@given(data=st.data())
def test_random_sweep_files_soak(tmp_path, data):
    _sweep_file_property(data, tmp_path)


# -- checkpoint folders -----------------------------------------------------------------------------
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 97, "hidden_size": 64,
    "intermediate_size": 112, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
    "head_dim": 8, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "float32",
}
MARKER_CODE = "import os, pathlib; pathlib.Path(os.environ['HYBENCH_TEST_MARKER']).write_text(__name__)\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A two-shard Llama checkpoint saved by transformers (random weights)."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{k: v for k, v in CONFIG.items()
                                                                       if k not in ("architectures", "model_type")}))
    model.save_pretrained(folder, max_shard_size="60KB")
    assert len([f for f in os.listdir(folder) if f.endswith(".safetensors")]) >= 2
    return str(folder)


def _copy(checkpoint: str, tmp_path, name: str = "model") -> str:
    target = tmp_path / name
    shutil.copytree(checkpoint, target)
    return str(target)


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=8)


@FUZZ
@given(case=st.one_of(
    st.tuples(st.sampled_from(sorted(CONFIG)), JSON_VALUE).map(lambda kv: ("set", kv)),
    st.sampled_from(sorted(CONFIG)).map(lambda k: ("drop", k)),
    st.binary(max_size=60).map(lambda b: ("bytes", b)),
    JSON_VALUE.map(lambda v: ("whole", v)),
))
def test_a_malformed_config_json_is_a_clear_error_naming_it(tmp_path_factory, case):
    folder = tmp_path_factory.mktemp("config")
    kind, value = case
    path = folder / "config.json"
    if kind == "bytes":
        path.write_bytes(value)
    elif kind == "whole":
        path.write_text(json.dumps(value))
    else:
        config = dict(CONFIG)
        if kind == "drop":
            config.pop(value)
        else:
            config[value[0]] = value[1]
        path.write_text(json.dumps(config))
    try:
        resolved = resolve_model(str(folder), "dummy")
    except EngineConfigError as exc:
        assert str(folder) in str(exc) and "\n" not in str(exc).strip()
        return
    c = resolved.config  # accepted: every size is usable
    assert min(c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) >= 1
    assert math.isfinite(c.rope_theta) and c.num_heads % c.num_kv_heads == 0


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True))
def test_a_truncated_shard_is_one_line_naming_it_before_anything_is_written(checkpoint, tmp_path_factory, cut):
    folder = _copy(checkpoint, tmp_path_factory.mktemp("truncated"))
    shard = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))[-1]
    data = open(os.path.join(folder, shard), "rb").read()
    with open(os.path.join(folder, shard), "wb") as fh:
        fh.write(data[:int(cut * len(data))])
    cwd = tmp_path_factory.mktemp("cwd")
    code, err, left = invoke([*BENCH, "--model", folder, "--config", "full"], str(cwd))
    assert_one_clear_line(code, err, {os.path.join(folder, shard)}, left)


def test_missing_shard_or_wrong_shape_is_one_line_naming_the_file(checkpoint, tmp_path):
    folder = _copy(checkpoint, tmp_path / "models")
    shard = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))[-1]
    os.unlink(os.path.join(folder, shard))
    (tmp_path / "cwd1").mkdir()
    code, err, left = invoke([*BENCH, "--model", folder], str(tmp_path / "cwd1"))
    assert_one_clear_line(code, err, {f"missing: {os.path.join(folder, shard)}"}, left)

    folder = _copy(checkpoint, tmp_path / "models", "reshaped")
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    config["intermediate_size"] = 96  # the checkpoint's MLP has 112 rows
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(config, fh)
    (tmp_path / "cwd2").mkdir()
    code, err, left = invoke([*BENCH, "--model", folder], str(tmp_path / "cwd2"))
    assert_one_clear_line(code, err, {f"{folder}/model-"}, left)
    assert re.search(r"\.safetensors: tensor 'model\.layers\.\d+\.mlp\.\w+\.weight' has shape", err), err


def _hostile(checkpoint: str, tmp_path, model_type: str) -> str:
    """The checkpoint plus Python files that config.json asks to run (auto_map), as a Hub repo may ship."""
    folder = _copy(checkpoint, tmp_path, f"hostile-{model_type}")
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    config |= {"model_type": model_type, "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                      "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(config, fh)
    for name in ("modeling_evil.py", "configuration_evil.py"):
        with open(os.path.join(folder, name), "w") as fh:
            fh.write(MARKER_CODE + "from transformers import LlamaConfig as EvilConfig\n"
                     "from transformers import LlamaForCausalLM as EvilForCausalLM\n")
    return folder


@pytest.mark.parametrize("model_type", ["llama", "evil"])
def test_checkpoint_code_never_runs_without_trust_remote_code(checkpoint, tmp_path, model_type):
    """Both engines, weights and dummy: a config.json with an auto_map is refused up front (one line naming
    auto_map and --trust-remote-code, nothing written), and the checkpoint's Python never runs (it would
    write the marker)."""
    folder = _hostile(checkpoint, tmp_path, model_type)
    marker = tmp_path / "MARKER"
    runs = {}
    with mock.patch.dict(os.environ, {"HYBENCH_TEST_MARKER": str(marker)}):
        for engine, config in (("hybrid", "hybrid"), ("hf", "full")):
            for load_format in ("auto", "dummy"):
                (tmp_path / f"cwd-{engine}-{load_format}").mkdir()
                runs[engine, load_format] = invoke(
                    [*BENCH, "--model", folder, "--engine", engine, "--config", config, "--load-format", load_format],
                    str(tmp_path / f"cwd-{engine}-{load_format}"), run=True)
    assert not marker.exists(), marker.read_text()
    for code, err, left in runs.values():
        assert_one_clear_line(code, err, {"auto_map"}, left)
        assert "--trust-remote-code" in err, err


def test_tokenizer_code_never_runs(tmp_path):
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    (folder / "tokenization_evil.py").write_text(
        MARKER_CODE + "from transformers import PreTrainedTokenizer as EvilTokenizer\n")
    marker = tmp_path / "MARKER"
    with mock.patch.dict(os.environ, {"HYBENCH_TEST_MARKER": str(marker)}):
        code, err, left = invoke(["data", "--tokenizer", str(folder), "--input-lengths", "8", "--num-prompts", "1",
                                  "--output-file", "out/p.json"], str(tmp_path))
    assert not marker.exists()
    assert_one_clear_line(code, err, {"--tokenizer"}, [f for f in left if f.startswith("out")])


class _Exploit:
    """Unpickling this writes the marker: what a hostile pytorch_model.bin can do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("with_safetensors", [False, True])
def test_pickle_weights_are_never_loaded(checkpoint, tmp_path, with_safetensors):
    folder = _copy(checkpoint, tmp_path) if with_safetensors else str(tmp_path / "model")
    if not with_safetensors:
        os.makedirs(folder)
        with open(os.path.join(folder, "config.json"), "w") as fh:
            json.dump(CONFIG, fh)
    marker = tmp_path / "MARKER"
    with open(os.path.join(folder, "pytorch_model.bin"), "wb") as fh:
        pickle.dump({"model.norm.weight": _Exploit(str(marker))}, fh)
    for engine, config in (("hybrid", "hybrid"), ("hf", "full")):
        argv = [*BENCH, "--model", folder, "--engine", engine, "--config", config, "--output-dir", "out"]
        if with_safetensors:  # the safetensors are read, the pickle never
            code, err, _ = invoke(argv, str(tmp_path), run=True)
            assert code == 0, err
        else:
            code, err, left = invoke(argv, str(tmp_path))
            assert_one_clear_line(code, err, {"pickle weights such as .bin are never loaded"},
                                  [f for f in left if not f.startswith("model/")])
    assert not marker.exists()


# -- datasets ---------------------------------------------------------------------------------------
HEADER = {"format": "hybench-prompts", "version": 1, "pattern": "random", "seed": 0, "vocab_size": 512,
          "vocab_source": "test"}
RECORD = {"input_len": 4, "token_ids": [1, 2, 3, 4], "prefix_len": 0, "prefix_index": None, "text": None}


@st.composite
def _dataset_case(draw):
    kind = draw(st.sampled_from(["whole", "header", "record", "ids", "parquet-meta", "parquet-columns"]))
    if kind == "whole":
        return "json", draw(JSON_VALUE)
    if kind == "header":
        return "json", HEADER | {draw(st.sampled_from(sorted(HEADER) + ["prompts"])): draw(JSON_VALUE)} | (
            {"prompts": [RECORD]} if draw(st.booleans()) else {})
    if kind == "record":
        return "json", HEADER | {"prompts": [RECORD | {draw(st.sampled_from(sorted(RECORD))): draw(JSON_VALUE)}]}
    if kind == "ids":  # empty prompts, ids outside the vocabulary, huge vocabularies
        ids = draw(st.lists(st.integers(-2**70, 2**70), max_size=5))
        return "json", HEADER | {"vocab_size": draw(st.integers(-2, 2**70)),
                                 "prompts": [RECORD | {"token_ids": ids, "input_len": len(ids)}]}
    if kind == "parquet-meta":
        return "parquet-meta", draw(JSON_VALUE)
    return "parquet-columns", draw(st.sampled_from(["input_len", "token_ids", "prefix_len", "prefix_index", "text"]))


def _write_case(folder, case) -> str:
    kind, value = case
    if kind == "json":
        path = os.path.join(folder, "prompts.json")
        with open(path, "w") as fh:
            json.dump(value, fh)
        return path
    path = os.path.join(folder, "prompts.parquet")
    columns = {"input_len": [4], "token_ids": [[1, 2, 3, 4]], "prefix_len": [0],
               "prefix_index": pa.array([None], pa.int64()), "text": pa.array([None], pa.string())}
    meta = json.dumps(HEADER).encode()
    if kind == "parquet-meta":
        meta = json.dumps(value).encode()
    else:  # a column of the wrong type
        columns[value] = pa.array([["x"]]) if value != "token_ids" else pa.array([["1", "2"]])
    pq.write_table(pa.table(columns).replace_schema_metadata({b"hybench": meta}), path)
    return path


def _dataset_property(tmp_path_factory, case) -> None:
    folder = str(tmp_path_factory.mktemp("dataset"))
    path = _write_case(folder, case)
    try:
        ref = DatasetRef.open(path)
        prompts = ref.prompts(4, 1, 512, "tiny-llama")
    except DatasetError as exc:
        assert str(exc).startswith(path) and "\n" not in str(exc)
        return
    assert prompts and all(ids and all(0 <= i < 512 for i in ids) for ids in prompts)


@FUZZ
@given(case=_dataset_case())
def test_random_datasets_are_rejected_clearly_or_safe_to_run(tmp_path_factory, case):
    _dataset_property(tmp_path_factory, case)


@pytest.mark.soak
@SOAK
@given(case=_dataset_case())
def test_random_datasets_soak(tmp_path_factory, case):
    _dataset_property(tmp_path_factory, case)


@pytest.mark.parametrize("case", [
    ("json", HEADER | {"vocab_size": 10**30, "prompts": [RECORD | {"token_ids": [10**25, 1], "input_len": 2}]}),
    ("parquet-meta", [1]), ("parquet-meta", None), ("parquet-columns", "token_ids"),
], ids=["vocabulary beyond int64", "metadata a list", "metadata null", "ids as strings"])
def test_datasets_that_used_to_crash_are_one_line(tmp_path, case):
    path = _write_case(str(tmp_path), case)
    code, err, left = invoke([*BENCH, "--dataset", path, "--input-lengths", "4", "--num-prompts", "1"], str(tmp_path))
    assert_one_clear_line(code, err, {path}, left, allowed_files=(os.path.basename(path),))


# -- queries: read-only ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("query") / "store")
    assert main([*BENCH, "--input-lengths", "32,48", "--output-dir", root]) == 0
    return root


def _snapshot(root: str) -> dict[str, tuple]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            digest = hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else None
            out[os.path.relpath(path, root)] = (stat.st_mode, stat.st_size, stat.st_mtime_ns, digest)
    return out


HOSTILE_SQL = [
    "DROP VIEW jobs", "DELETE FROM jobs", "UPDATE jobs SET status = 'x'", "INSERT INTO jobs SELECT * FROM jobs",
    "CREATE TABLE t AS SELECT * FROM jobs", "ALTER VIEW jobs RENAME TO j", "COPY jobs TO 'out.csv'",
    "COPY (SELECT 1 AS a) TO 'STORE/jobs/evil.parquet'", "COPY (SELECT 1 AS a) TO '.tmp/x.csv'",
    "ATTACH 'x.duckdb' AS x", "ATTACH 'STORE/jobs/new.db' AS y", "EXPORT DATABASE 'export'", "INSTALL httpfs",
    "LOAD httpfs", "SET enable_external_access = true", "SET lock_configuration = false",
    "SET allowed_directories = ['/']", "PRAGMA enable_profiling = 'json'", "SET profiling_output = 'prof.json'",
    "CREATE SECRET s (TYPE S3, KEY_ID 'a', SECRET 'b')", "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('STORE/**')", "SELECT 1; COPY (SELECT 1 AS a) TO 'y.csv'", "CHECKPOINT", "VACUUM",
]


@pytest.mark.parametrize("sql", HOSTILE_SQL)
def test_a_query_cannot_change_the_store_or_write_anywhere(store, tmp_path, sql):
    cwd = tmp_path / "cwd"
    (cwd / ".tmp").mkdir(parents=True)  # DuckDB's default spill folder is always writable: not here
    before, cwd_before = _snapshot(store), _snapshot(str(cwd))
    code, err, _ = invoke(["query", "--results-dir", store, sql.replace("STORE", store)], str(cwd))
    assert code in (0, 2) and "Traceback" not in err and len(err.splitlines()) <= 1, err
    assert _snapshot(store) == before and _snapshot(str(cwd)) == cwd_before
    code, _, _ = invoke(["query", "--results-dir", store, "--format", "csv", "SELECT count(*) FROM jobs"], str(cwd))
    assert code == 0  # and the views still read the store


@pytest.mark.parametrize("flag,value", [
    ("--where", "TRUE) AS x; COPY (SELECT 1 AS a) TO 'w.csv'; SELECT * FROM (SELECT 1"),
    ("--where", "1=1; DROP VIEW requests"), ("--model", "x') OR TRUE; COPY (SELECT 1) TO 'm.csv'; --"),
    ("--sweep", "'; ATTACH 's.db' AS s; --"),
])
def test_filters_cannot_smuggle_statements(store, tmp_path, flag, value):
    before = _snapshot(store)
    code, err, left = invoke(["query", "--results-dir", store, flag, value, "SELECT count(*) FROM jobs"], str(tmp_path))
    assert code in (0, 2) and len(err.splitlines()) <= 1 and left == [], (err, left)
    assert _snapshot(store) == before


# -- Ray exposure -------------------------------------------------------------------------------------
_LISTEN_SCRIPT = r"""
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from hybench.orchestrator.driver import ray_session
from hybench.workers.actor import RemoteJobWorker
sys.path.insert(0, sys.argv[1])
from chaos_helpers import descendants
with ray_session(None):
    worker = RemoteJobWorker.remote(sys.argv[2], 1)
    ray.get(worker.placement.remote())
    pids = descendants({os.getpid()}) | {os.getpid()}
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            pass
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{table}") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if inode in inodes and (state == "0A" or table.startswith("udp")):
                    print(table, local, inodes[inode])
"""


def _address(table: str, local: str) -> str:
    host, port = local.split(":")
    raw = bytes.fromhex(host)
    if table.endswith("6"):
        words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
        ip = ":".join(b"".join(words).hex()[i:i + 4] for i in range(0, 32, 4))
    else:
        ip = ".".join(str(b) for b in raw[::-1])
    return f"{ip}:{int(port, 16)}"


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads listening sockets from /proc (Linux)")
def test_local_mode_listens_on_loopback_only(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _LISTEN_SCRIPT, os.path.dirname(__file__), str(tmp_path / "r")],
                          capture_output=True, text=True, env=sweep_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr
    sockets = [(table, _address(table, local))
               for table, local, _ in (line.split() for line in proc.stdout.splitlines())]
    assert len(sockets) >= 3, proc.stdout  # GCS, raylet, workers, ...
    loopback = re.compile(r"^(127\.\d+\.\d+\.\d+|0000:0000:0000:0000:0000:ffff:7f\w\w:\w{4}|0{4}(:0{4}){6}:0001):\d+$")
    exposed = [s for s in sockets if not loopback.match(s[1])]
    assert exposed == [], exposed
    assert not any(addr.endswith(":8265") for _, addr in sockets)  # no dashboard in local mode


def _strings(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, str(i)))
    else:
        yield path, str(node)


SECRET_KEYS = re.compile(r"secret|password|passwd|token|access_key|api_key|credential|private_key_data", re.I)
SECRET_VALUES = re.compile(r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|-----BEGIN|hf_[A-Za-z0-9]{30,}|ghp_[A-Za-z0-9]{30,}"
                           r"|xox[bap]-|aws_secret_access_key|AWS_SECRET|HF_TOKEN=\S")


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_configs_carry_no_secrets_and_keep_the_job_server_private(name):
    text = open(os.path.join(REPO, name), encoding="utf-8").read()
    assert not SECRET_VALUES.search(text)
    for path, value in _strings(yaml.safe_load(text)):
        assert not SECRET_KEYS.search(path[-1]) or not value, (path, "holds a secret")
        if path[-1] == "ssh_private_key":
            assert value.startswith("~/") and "\n" not in value  # a path on the user's machine, not a key
    # The dashboard's job server runs whatever it is sent: on the head's loopback, reached by `ray dashboard`.
    assert "--dashboard-host=0.0.0.0" not in text and "--dashboard-host=127.0.0.1" in text


# -- bounded parsing: sizes, nesting and aliases (engine/bounded_input.py) -----------------------------

DEEP = 50_000  # far past Python's recursion limit: an unbounded parser ends in a RecursionError


def _deep_json(key: str) -> str:
    return '{"%s": %s}' % (key, "[" * DEEP + "]" * DEEP)


def _alias_bomb(levels: int = 10) -> str:
    """Each anchor a list of nine aliases of the previous one, all in the models field: 9**10 strings
    from a few hundred bytes."""
    lines = ["models:", '- &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"- &a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _under_memory_cap() -> None:
    limit = 2 << 30
    resource = pytest.importorskip("resource")
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("text", [_alias_bomb(), "models: &a [tiny-llama, *a]\n"], ids=["billion-laughs", "self-alias"])
def test_yaml_alias_bomb_fails_fast_under_a_memory_cap(tmp_path, text):
    """The real CLI in a process capped at 2 GiB of address space: one line, exit 2, in seconds."""
    (tmp_path / "bomb.yaml").write_text(text)
    assert len(text) < 600
    hybench = os.path.join(os.path.dirname(sys.executable), "hybench")
    done = subprocess.run([hybench, "sweep", "bomb.yaml", "--no-progress"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, preexec_fn=_under_memory_cap,
                          env=os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "bomb.yaml" in done.stderr and "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["bomb.yaml"]


def _deep_parquet_dataset(path) -> None:
    from hybench.workers.datasets import _PARQUET_SCHEMA
    table = pa.Table.from_pylist([], schema=_PARQUET_SCHEMA)
    pq.write_table(table.replace_schema_metadata({b"hybench": _deep_json("format").encode()}), path)


@pytest.mark.parametrize("kind", ["sweep", "dataset-json", "dataset-parquet", "config", "index", "tokenizer"])
def test_deep_nesting_in_every_input_file_is_one_line(checkpoint, tmp_path, kind):
    """Nesting 50,000 deep in each kind of file a user hands over: one line naming the file, exit 2."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if kind == "sweep":
        path = inputs / "deep.yaml"
        path.write_text("models: " + "[" * DEEP + "]" * DEEP + "\n")
        argv = ["sweep", str(path), "--no-progress"]
    elif kind == "dataset-json":
        path = inputs / "deep.json"
        path.write_text(_deep_json("prompts"))
        argv = [*BENCH, "--dataset", str(path)]
    elif kind == "dataset-parquet":
        path = inputs / "deep.parquet"
        _deep_parquet_dataset(path)
        argv = [*BENCH, "--dataset", str(path)]
    elif kind == "config":
        path = inputs / "model" / "config.json"
        path.parent.mkdir()
        path.write_text(_deep_json("hidden_size"))
        argv = [*BENCH, "--model", str(path.parent), "--load-format", "dummy"]
    elif kind == "index":
        folder = pathlib.Path(_copy(checkpoint, inputs))
        path = folder / "model.safetensors.index.json"
        path.write_text(_deep_json("weight_map"))
        argv = [*BENCH, "--model", str(folder)]
    else:
        path = inputs / "tok" / "tokenizer_config.json"
        path.parent.mkdir()
        path.write_text(_deep_json("tokenizer_class"))
        argv = ["data", "--tokenizer", str(path.parent), "--input-lengths", "8", "--num-prompts", "1",
                "--output-file", "out/p.json"]
    (tmp_path / "cwd").mkdir()
    code, err, left = invoke(argv, str(tmp_path / "cwd"))
    assert_one_clear_line(code, err, {str(path), str(path.parent)}, left)
    assert "nested deeper" in err, err


def _config_folder(tmp_path, **changes) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG | changes))
    return str(folder)


@pytest.mark.parametrize("changes, named", [
    ({"hidden_size": 64.5}, "hidden_size"),
    ({"hidden_size": 1e9}, "hidden_size"),
    ({"vocab_size": 1e10}, "vocab_size"),
    ({"num_attention_heads": 1e6}, "num_attention_heads"),
    ({"num_hidden_layers": 1e7}, "num_hidden_layers"),
    ({"intermediate_size": 1e12}, "intermediate_size"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"num_attention_heads": 5, "head_dim": None}, "num_attention_heads"),
    ({"vocab_size": 4_000_000, "hidden_size": 65_536, "num_attention_heads": 64, "num_key_value_heads": 8,
      "head_dim": None}, "vocab_size"),  # in bounds, but ~1 TiB of weights: more than any machine here
], ids=["fraction", "huge-hidden", "huge-vocab", "huge-heads", "huge-layers", "huge-mlp", "kv-heads-divide",
        "heads-divide-hidden", "weights-exceed-memory"])
def test_absurd_model_configs_are_refused_before_anything_runs(tmp_path, changes, named):
    folder = _config_folder(tmp_path, **changes)
    (tmp_path / "cwd").mkdir()
    with mock.patch("hybench.engine.llama.LlamaForCausalLM.__init__", side_effect=AssertionError("built a model")):
        code, err, left = invoke([*BENCH, "--model", folder, "--load-format", "dummy"], str(tmp_path / "cwd"), run=True)
    assert_one_clear_line(code, err, {named}, left)
    assert folder in err, err


@pytest.mark.parametrize("command", ["bench", "sweep"])
def test_long_model_path_is_refused_before_the_job_runs(tmp_path, command):
    """A model path whose partition folder name (percent-encoded) passes 255 bytes could never be stored."""
    rest = "m" * (245 - len(str(tmp_path)) - 1)
    folder = tmp_path / "/".join(rest[i:i + 99] for i in range(0, len(rest), 100))  # folders of 99 bytes
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    assert len(str(folder)) == 245
    argv = ([*BENCH, "--model", str(folder), "--load-format", "dummy"] if command == "bench"
            else ["sweep", "--models", str(folder), "--load-format", "dummy", "--no-progress"])
    (tmp_path / "cwd").mkdir()
    code, err, left = invoke(argv, str(tmp_path / "cwd"))
    assert_one_clear_line(code, err, {"model"}, left)
    assert "255" in err, err


class _SilentStore:
    """A remote filesystem that never answers (gs:// without network retries for minutes)."""

    def get_file_info(self, path):
        import time
        time.sleep(60)


def test_a_remote_store_that_does_not_answer_fails_within_the_stated_time(tmp_path, monkeypatch):
    import time

    from hybench.workers import store
    silent = _SilentStore()
    monkeypatch.setattr(store, "REMOTE_ANSWER_S", 1.0)
    monkeypatch.setattr(store, "pafs", argparse.Namespace(  # as if gs:// opened, to a store that never answers
        FileSystem=argparse.Namespace(from_uri=lambda uri: (silent, "bucket/results")),
        LocalFileSystem=pa.fs.LocalFileSystem))
    began = time.monotonic()
    code, err, left = invoke(["sweep", "--results", "gs://bucket/results", "--models", "tiny-llama", "--no-progress"],
                             str(tmp_path))
    assert time.monotonic() - began < 20
    assert_one_clear_line(code, err, {"gs://bucket/results"}, left)
    assert "does not answer within 1 s" in err, err
