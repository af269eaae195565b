"""Recall sequences are what they claim: prefix, block, filler, the same block; exact lengths; seeded;
the block's tokens nowhere else; distances in windows; a distance the input cannot hold refused."""
from __future__ import annotations

import pytest

from hybench.workers.recall import (RecallInputError, distance_tokens, distances_that_fit,
                                    recall_sequence)


@pytest.mark.parametrize("input_len,block,distance", [(160, 16, 128), (512, 16, 16), (36, 18, 0), (64, 8, 48)])
def test_layout_block_filler_repeat(input_len, block, distance):
    seq = recall_sequence(256, input_len, block, distance, seed=7)
    tokens = seq.tokens
    assert len(tokens) == input_len
    assert seq.repeat_start + block == input_len  # the repeat ends the input
    assert seq.repeat_start - seq.block_start == block + distance
    original = tokens[seq.block_start:seq.block_start + block]
    assert tokens[seq.repeat_start:] == original
    assert len(set(original)) == block
    others = tokens[:seq.block_start] + tokens[seq.block_start + block:seq.repeat_start]
    assert len(others) == input_len - 2 * block and not set(others) & set(original)
    assert all(0 <= t < 256 for t in tokens)
    assert list(seq.scored_positions) == list(range(seq.repeat_start + 1, input_len))


def test_seeded():
    a = recall_sequence(512, 300, 16, 64, seed=1)
    assert a == recall_sequence(512, 300, 16, 64, seed=1)
    assert a.tokens != recall_sequence(512, 300, 16, 64, seed=2).tokens
    # fillers are random, not a fixed pattern
    filler = a.tokens[a.block_start + 16:a.repeat_start]
    assert len(set(filler)) > 40


def test_distances_in_windows():
    assert [distance_tokens(m, 32) for m in (0.5, 1, 2, 4)] == [16, 32, 64, 128]
    assert distances_that_fit(32, 160, 16) == [(0.5, 16), (1.0, 32), (2.0, 64), (4.0, 128)]
    assert distances_that_fit(32, 159, 16) == [(0.5, 16), (1.0, 32), (2.0, 64)]


def test_refuses_what_does_not_fit():
    with pytest.raises(RecallInputError, match=r"at least 2 x 16 \+ 128 = 160 tokens, the input length is 159"):
        recall_sequence(256, 159, 16, 128, seed=0)
    with pytest.raises(RecallInputError, match="vocabulary"):
        recall_sequence(16, 100, 16, 10, seed=0)
    with pytest.raises(RecallInputError, match="block length"):
        recall_sequence(256, 100, 1, 10, seed=0)
    with pytest.raises(RecallInputError, match=">= 0"):
        recall_sequence(256, 100, 8, -1, seed=0)


def test_a_recall_job_too_large_to_hold_is_refused_in_one_line(tmp_path, capsys):
    """Its sequences are built before the job runs: 2^31 prompts must not try to allocate them."""
    from hybench.orchestrator.cli import main

    assert main(["sweep", "--num-prompts", "2147483648", "--results", str(tmp_path / "r"), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--num-prompts 2147483648" in err and "lower --num-prompts" in err
    assert not (tmp_path / "r").exists()
