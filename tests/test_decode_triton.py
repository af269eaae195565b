"""The Triton decode kernels against the PyTorch references, over shapes and dtypes.

On a machine without a GPU, conftest.py runs Triton in its interpreter, so these check the kernels'
arithmetic, masking and indexing (not their speed) in CI; docs/benchmarks/gpu_parity.py repeats
the comparison compiled on the GPU."""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from hybench.engine.context import DecodeMeta  # noqa: E402
from hybench.engine.kernels.fused import gated_add_ref as gated_add  # noqa: E402
from hybench.engine.history import HistoryBranch  # noqa: E402
from hybench.engine.kernels import ReferenceSSM  # noqa: E402
from hybench.engine.kernels.attention_ref import decode_attention_ref  # noqa: E402
from hybench.engine.kernels import decode_triton as dt_kernels  # noqa: E402
from hybench.engine.kv_cache import LayerCache  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cache(rows: int, cap: int, kv_heads: int, dim: int, dtype, gen, hybrid: bool) -> LayerCache:
    def rnd(*shape, scale=1.0, dt=dtype):
        return (torch.randn(*shape, generator=gen) * scale).to(dt).to(DEV)

    return LayerCache(k=rnd(rows, cap, kv_heads, dim), v=rnd(rows, cap, kv_heads, dim),
                      dt=(torch.rand(rows, cap, kv_heads, generator=gen) * 0.2).to(DEV) if hybrid else None,
                      state=rnd(rows, kv_heads, dim, dim, scale=0.5, dt=torch.float32) if hybrid else None)


def _clone(c: LayerCache) -> LayerCache:
    return LayerCache(*(None if t is None else t.clone() for t in (c.k, c.v, c.dt, c.state)))


def _meta(rows: list[int], positions: list[int], cap: int, window: int | None, group: int) -> DecodeMeta:
    t = lambda xs, dt=torch.long: torch.tensor(xs, dtype=dt, device=DEV)  # noqa: E731
    return DecodeMeta(rows=t(rows), slots=t([r * cap + p % cap for r, p in zip(rows, positions)]),
                      evict=t([int(window is not None and p >= window) for p in positions]),
                      used=t([min(p + 1, cap) for p in positions], torch.int32),
                      row_starts=t([r * cap for r in rows] + [rows[-1] * cap + cap], torch.int32),
                      query_starts=t(list(range(0, (len(rows) + 1) * group, group)), torch.int32))


CASES = [  # heads, kv_heads, dim, capacity, split_len
    (4, 4, 16, 37, 64),
    (8, 2, 32, 200, 64),
    (8, 2, 32, 200, None),
    (12, 3, 64, 301, 128),
    (16, 2, 64, 130, 64),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,dim,cap,split_len", CASES)
def test_split_kv_decode_matches_reference(heads, kv_heads, dim, cap, split_len, dtype):
    """Rows out of order, fill levels from one slot to the whole row (ring wrapped), several
    splits per row including empty ones; with and without the gated history read-out."""
    gen = torch.Generator().manual_seed(heads * cap + dim)
    cache = _cache(6, cap, kv_heads, dim, dtype, gen, hybrid=False)
    rows, positions = [4, 0, 5, 2], [0, cap - 1, cap + 17, cap // 3]
    meta = _meta(rows, positions, cap, None, heads // kv_heads)
    q = torch.randn(4, heads, dim, generator=gen).to(dtype).to(DEV)
    y = torch.randn(4, heads, dim, generator=gen).to(dtype).to(DEV)
    gate = torch.randn(heads, generator=gen).to(DEV)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for history in (None, (y, gate)):
        want = decode_attention_ref(q, cache.k, cache.v, meta.rows, meta.used, dim**-0.5)
        want = want if history is None else gated_add(want, *history)
        got = dt_kernels.split_kv_decode(q, cache.k, cache.v, meta.rows, meta.used, dim**-0.5, split_len,
                                         *(history or (None, None)))
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def test_split_kv_decode_ignores_slots_past_used():
    """Garbage (inf) beyond `used` must not reach the output: masking, not luck."""
    gen = torch.Generator().manual_seed(0)
    cache = _cache(2, 100, 2, 16, torch.float32, gen, hybrid=False)
    clean = _clone(cache)
    cache.k[:, 10:] = float("inf")
    cache.v[:, 10:] = float("nan")
    meta = _meta([1, 0], [9, 4], 100, None, 2)
    q = torch.randn(2, 4, 16, generator=gen).to(DEV)
    got = dt_kernels.split_kv_decode(q, cache.k, cache.v, meta.rows, meta.used, 0.25, 64)
    want = decode_attention_ref(q, clean.k, clean.v, meta.rows, meta.used, 0.25)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,dim,hidden", [(4, 4, 16, 48), (8, 2, 32, 1100), (12, 3, 64, 256)])
def test_write_and_history_step_match_reference(heads, kv_heads, dim, hidden, dtype):
    """The fused step = dt projection + gathers + state update + read-out + dt write of the
    reference, in place; rows that evict and rows that do not (their state must stay as it was);
    step sizes across softplus's range (biases from -25 to 25), hidden sizes that are not a power of
    two or span several blocks."""
    gen = torch.Generator().manual_seed(dim)
    window = 8
    cache = _cache(5, window, kv_heads, dim, dtype, gen, hybrid=True)
    rows, positions = [3, 0, 4], [window + 2, 3, window]
    meta = _meta(rows, positions, window, window, heads // kv_heads)
    q = torch.randn(3, heads, dim, generator=gen).to(dtype).to(DEV)
    k = torch.randn(3, kv_heads, dim, generator=gen).to(dtype).to(DEV)
    v = torch.randn(3, kv_heads, dim, generator=gen).to(dtype).to(DEV)
    x = torch.randn(3, hidden, generator=gen).to(dtype).to(DEV)
    history = HistoryBranch(hidden, heads, kv_heads, dtype).to(DEV)
    history.init_seeded(gen)
    with torch.no_grad():
        history.dt_bias.copy_(torch.linspace(-25, 25, kv_heads))

    ref = _clone(cache)
    y_ref = ReferenceSSM().step(ref, meta, history, x, q)
    ref.write_kv(meta.slots, k, v)
    got = _clone(cache)
    y = dt_kernels.history_step(got, meta, history, x, q)
    dt_kernels.write_kv(got, meta.slots, k, v)

    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(y.float(), y_ref.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(got.state, ref.state, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.state[1], cache.state[1])  # a row not in the batch is untouched
    assert torch.equal(got.state[0], cache.state[0])  # row 0 is at position 3 < W: nothing leaves
    # this step's dt in its slots (the reference rounds the bf16 projection's output; the kernel does not)
    torch.testing.assert_close(got.dt, ref.dt, atol=1e-12, rtol=1e-5 if dtype == torch.float32 else 1e-2)
    assert not torch.equal(got.dt, cache.dt)
    assert torch.equal(got.k, ref.k) and torch.equal(got.v, ref.v)


def test_split_len_fills_the_gpu_and_covers_the_row():
    assert dt_kernels.split_len_for(1, 8, 1100, 132) == 64  # batch 1: as many splits as one block each
    assert dt_kernels.split_len_for(64, 8, 4192, 132) == 4224  # batch 64: the GPU is full with one split per row
    for batch, cap in ((1, 37), (3, 5000), (512, 70000)):
        n = dt_kernels.split_len_for(batch, 8, cap, 132)
        assert n % dt_kernels.BLOCK_N == 0 and n >= dt_kernels.BLOCK_N
        assert -(-cap // n) * n >= cap


@pytest.mark.parametrize("kind", ["full", "sliding", "hybrid"])
def test_engine_decode_on_triton_kernels_matches_reference(kind, monkeypatch):
    """The whole decode path (write, history step, split-KV attention, gated mix) through the
    engine: teacher-forced logits equal the reference backends' for two sequences decoding past
    the window together."""
    from engine_harness import TINY, make_engine, open_history, teacher_forced_logits

    from hybench.engine import build_model
    from hybench.engine.loader import ResolvedModel

    model = build_model(ResolvedModel(TINY, ()), torch.device("cpu"), torch.float32, 512, seed=5)
    tokens = [torch.randint(0, TINY.vocab_size, (n,), generator=torch.Generator().manual_seed(n)).tolist()
              for n in (21, 14)]
    expected = teacher_forced_logits(open_history(make_engine(model, kind, window=6)), tokens, [5, 3])
    monkeypatch.setattr(dt_kernels, "available", lambda device, head_dim: True)
    engine = open_history(make_engine(model, kind, window=6))
    assert engine.attn_backend.name.endswith("triton-splitkv")
    got = teacher_forced_logits(engine, tokens, [5, 3])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
