"""CUDA-graph padding, checked on CPU: a decode batch padded to its bucket with scratch-row entries
gives the real entries the same logits and never touches a real sequence's cache."""
from __future__ import annotations

import pytest
import torch

from hybench.engine import build_model
from hybench.engine.cuda_graphs import bucket_sizes
from hybench.engine.loader import ResolvedModel
from hybench.engine.scheduler import ScheduledBatch
from hybench.engine.sequence import SamplingParams, Sequence
from engine_harness import TINY, make_engine


def test_bucket_sizes():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(5) == [1, 2, 4, 5]
    assert bucket_sizes(40) == [1, 2, 4, 8, 16, 32, 40]


@pytest.mark.parametrize("kind", ["full", "sliding", "hybrid"])
@torch.inference_mode()
def test_padded_decode_matches_unpadded(kind):
    model = build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 512, seed=1)
    engine = make_engine(model, kind, window=6, kv_cache_gib=None, max_num_seqs=4)
    scratch = engine.cache.num_rows - 1  # tests allocate no scratch row; use the last row as one
    seqs = []
    for i, n in enumerate((9, 3)):
        seq = Sequence(i, list(range(1, n + 1)), SamplingParams(4), 0)
        engine.rows.allocate(seq)
        engine.runner.run(ScheduledBatch(True, [seq], [n]))
        seq.num_cached = n
        seq.output.append(5)
        seqs.append(seq)
    assert scratch not in [s.row for s in seqs]
    batch = ScheduledBatch(False, seqs, [1, 1])
    runner = engine.runner
    snapshot = engine.cache.kv.clone(), None if engine.cache.history_state is None else engine.cache.history_state.clone()

    ids, ctx = runner.prepare_decode(batch)
    plain = model(ids, ctx)
    after_plain = engine.cache.kv.clone()
    # restore and run again padded to 4 entries
    engine.cache.kv.copy_(snapshot[0])
    if snapshot[1] is not None:
        engine.cache.history_state.copy_(snapshot[1])
    packed64, packed32 = runner.pack_decode(batch, pad_to=4, scratch_row=scratch)
    assert packed64[2, 2:].tolist() == [scratch, scratch] and packed32[0, 2:4].tolist() == [1, 1]
    ids, ctx = runner.decode_context(packed64, packed32)
    padded = model(ids, ctx)[:2]
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-5)  # BLAS blocking differs by batch size
    real_rows = [s.row for s in seqs]
    torch.testing.assert_close(engine.cache.kv[:, :, real_rows], after_plain[:, :, real_rows], rtol=1e-5, atol=1e-5)
