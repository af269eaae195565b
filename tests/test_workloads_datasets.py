"""Prompt generation and dataset files: exact lengths for every pattern, shared prefixes that really
are shared, ids from a tokenizer's ordinary tokens, and files whose hash (not path) names the job."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybench.orchestrator.cli import main
from hybench.workers.datasets import Dataset, DatasetError, DatasetRef, load_dataset, write_dataset
from hybench.workers.job_spec import JobSpec
from hybench.workers.prompts import PromptSet, random_prompts, shared_prefix_prompts
from hybench.workers.vocabulary import choose_vocabulary

SPECIAL = {"<unk>": 0, "<s>": 1, "</s>": 2}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A local word-level tokenizer: 300 ordinary-or-special tokens plus one added special token (id 300)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = SPECIAL | {f"w{i}": i for i in range(3, 300)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            additional_special_tokens=["<extra>"]).save_pretrained(folder)
    return str(folder)


def test_job_prompts_are_unchanged_by_the_pool_argument():
    """Jobs without a dataset keep the exact prompts (and so results) they had before datasets existed."""
    expected = np.random.default_rng([42, 64, 1]).integers(0, 512, size=(3, 64)).tolist()
    assert random_prompts(512, 64, 3, 42, 1) == expected
    assert random_prompts(np.arange(512), 64, 3, 42, 1) == expected


@settings(max_examples=60, deadline=None)
@given(input_len=st.integers(1, 300), num_prompts=st.integers(1, 12), data=st.data())
def test_every_pattern_has_exact_lengths_and_shared_prefixes_are_shared(input_len, num_prompts, data):
    prefix_len = data.draw(st.integers(1, input_len))
    num_prefixes = data.draw(st.integers(1, num_prompts))
    pool = np.array([5, 7, 11, 13, 17, 19])
    assert all(len(p) == input_len for p in random_prompts(pool, input_len, num_prompts, seed=3))
    made = shared_prefix_prompts(pool, input_len, num_prompts, prefix_len, num_prefixes, seed=3)
    assert len(made.token_ids) == num_prompts and all(len(p) == input_len for p in made.token_ids)
    assert made.prefix_len == prefix_len
    assert made.prefix_index == [i % num_prefixes for i in range(num_prompts)]  # round robin
    assert set(np.unique(made.token_ids)) <= set(pool.tolist())
    for i, ids in enumerate(made.token_ids):
        first = made.token_ids[made.prefix_index[i]]  # prompt k < K is the first to use prefix k
        assert ids[:prefix_len] == first[:prefix_len]


def test_shared_prefixes_differ_and_draws_are_seeded():
    made = shared_prefix_prompts(512, 64, 8, 32, 4, seed=1)
    prefixes = {tuple(ids[:32]) for ids in made.token_ids}
    assert len(prefixes) == 4  # four distinct prefixes, each used twice
    assert shared_prefix_prompts(512, 64, 8, 32, 4, seed=1) == made
    assert shared_prefix_prompts(512, 64, 8, 32, 4, seed=2) != made
    suffixes = {tuple(ids[32:]) for ids in made.token_ids}
    assert len(suffixes) == 8


@pytest.mark.parametrize("prefix_len,num_prefixes,message", [
    (65, 1, "longer than the 64-token prompts"),
    (0, 1, "needs at least 1"),
    (8, 9, "9 shared prefixes for 8 prompts"),
])
def test_shared_prefix_rejects_what_cannot_fit(prefix_len, num_prefixes, message):
    with pytest.raises(ValueError, match=message):
        shared_prefix_prompts(512, 64, 8, prefix_len, num_prefixes, seed=1)


def _dataset() -> Dataset:
    shared = shared_prefix_prompts(512, 24, 5, 10, 2, seed=0)
    return Dataset("shared_prefix", 0, 512, "model config tiny-llama",
                   (PromptSet(16, random_prompts(512, 16, 3, 0)), shared))


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_dataset_files_round_trip(tmp_path, suffix):
    path = str(tmp_path / f"prompts{suffix}")
    original = _dataset()
    write_dataset(original, path)
    assert [p.name for p in tmp_path.iterdir()] == [f"prompts{suffix}"]  # no temporary file left
    loaded = load_dataset(path)
    assert loaded == original and loaded.sha256 == original.sha256


def test_job_id_follows_the_token_ids_not_the_path_or_format(tmp_path):
    write_dataset(_dataset(), str(tmp_path / "a.json"))
    write_dataset(_dataset(), str(tmp_path / "a.parquet"))
    shutil.copy(tmp_path / "a.json", tmp_path / "moved.json")

    def job(name):
        return JobSpec("tiny-llama", "full", 16, 16, 4, 3, dataset=DatasetRef.open(str(tmp_path / name))).job_id

    assert job("a.json") == job("a.parquet") == job("moved.json")
    data = json.loads((tmp_path / "moved.json").read_text())
    data["prompts"][0]["text"] = "text is decoration"
    (tmp_path / "moved.json").write_text(json.dumps(data))
    assert job("moved.json") == job("a.json")
    stale = DatasetRef.open(str(tmp_path / "moved.json"))
    data["prompts"][0]["token_ids"][0] = (data["prompts"][0]["token_ids"][0] + 1) % 512
    (tmp_path / "moved.json").write_text(json.dumps(data))
    assert job("moved.json") != job("a.json")
    with pytest.raises(DatasetError, match="token ids changed since the job was defined"):
        stale.load()
    assert JobSpec("tiny-llama", "full", 16, 16, 4, 3).job_id != job("a.json")


def test_workload_fields_define_the_job():
    base = JobSpec("tiny-llama", "full", 16, 16, 4, 3)
    loaded = JobSpec("tiny-llama", "full", 16, 16, 4, 3, request_rate=2.0, concurrency_limit=4)
    assert loaded.defining_fields()["request_rate"] == 2.0 and loaded.defining_fields()["concurrency_limit"] == 4
    cached = JobSpec("tiny-llama", "full", 16, 16, 4, 3, enable_prefix_caching=True)
    assert len({base.job_id, loaded.job_id, cached.job_id}) == 3


def test_tokenizer_vocabulary_leaves_out_special_tokens_and_adds_text(tmp_path, tokenizer_dir):
    out = tmp_path / "tok.parquet"
    assert main(["data", "--tokenizer", tokenizer_dir, "--input-lengths", "32,48", "--num-prompts", "40",
                 "--pattern", "shared_prefix", "--prefix-ratio", "0.25", "--num-prefixes", "3",
                 "--output-file", str(out)]) == 0
    dataset = load_dataset(str(out))
    assert dataset.vocab_size == 301 and "tokenizer" in dataset.vocab_source
    assert [(s.input_len, s.prefix_len) for s in dataset.sets] == [(32, 8), (48, 12)]
    ids = np.concatenate([np.ravel(s.token_ids) for s in dataset.sets])
    assert not {0, 1, 2, 300} & set(ids.tolist()) and ids.max() < 300
    for s in dataset.sets:
        assert s.texts == [" ".join(f"w{i}" for i in p) for p in s.token_ids]
    table = pq.read_table(out)
    assert table.column_names == ["input_len", "token_ids", "prefix_len", "prefix_index", "text"]


def test_without_a_tokenizer_the_model_config_gives_the_vocabulary(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vocab, note = choose_vocabulary(None, None)
    assert vocab.size == 512 and vocab.tokenizer is None and "no --tokenizer given" in note
    vocab, note = choose_vocabulary("meta-llama/Llama-3.2-1B", None)  # offline: its preset's config
    assert vocab.size == 128256 and "not reachable" in note
    vocab, note = choose_vocabulary("no-such/tokenizer", "tiny-llama")
    assert vocab.size == 512 and "tokenizer no-such/tokenizer is not reachable" in note
