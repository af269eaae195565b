"""ModelRunner: turns a scheduled batch into tensors and a StepContext, runs the model, samples.

It owns every tensor of a step; the scheduler never sees one. Slot arithmetic lives here:
token at position p of the sequence in cache row r goes to slot r * C + p % C.
"""
from __future__ import annotations

import numpy as np
import torch

from hybench.engine.config import EngineConfig
from hybench.engine.context import DecodeMeta, PrefillMeta, StepContext
from hybench.engine.cuda_graphs import DecodeGraphs
from hybench.engine.kv_cache import KVCache
from hybench.engine.llama import LlamaForCausalLM
from hybench.engine.sampler import sample
from hybench.engine.scheduler import ScheduledBatch


def _arange(start: int, end: int) -> torch.Tensor:
    return torch.arange(start, end, dtype=torch.long)


_ARANGES: dict[tuple, torch.Tensor] = {}


def _arange_cached(n: int, device: torch.device) -> torch.Tensor:
    key = (n, str(device))
    if key not in _ARANGES:
        _ARANGES[key] = torch.arange(n, device=device)
    return _ARANGES[key]


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, config: EngineConfig, cache: KVCache) -> None:
        self.model = model
        self.cache = cache
        self.config = config
        self.device = config.device
        self.capacity = config.kv_capacity
        self.group = config.model.num_heads // config.model.num_kv_heads
        self.history_window = config.window if config.attention == "hybrid" else None
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.graphs: DecodeGraphs | None = None

    def copy_rows(self, copies: list[tuple[int, int, int]]) -> None:
        """Prefix-cache snapshots and restores: copy the first `tokens` positions' slots (the whole
        ring once it has wrapped) and the history state of row `src` into row `dst`."""
        cache = self.cache
        for src, dst, tokens in copies:
            slots = min(tokens, self.capacity)
            cache.kv[:, :, dst, :slots] = cache.kv[:, :, src, :slots]
            if cache.dt_ring is not None:
                cache.dt_ring[:, dst, :slots] = cache.dt_ring[:, src, :slots]
                cache.history_state[:, dst] = cache.history_state[:, src]

    def capture_decode_graphs(self, max_batch: int, scratch_row: int) -> None:
        self.graphs = DecodeGraphs(self.model, self, max_batch, scratch_row, self.device)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True)

    def prepare_prefill(self, batch: ScheduledBatch) -> tuple[torch.Tensor, StepContext]:
        cap, hw = self.capacity, self.history_window
        ids, pos, ctx_src, ctx_dst, new_dst, write_src, write_dst, hist, logit_rows = ([] for _ in range(9))
        cu_q, cu_k = [0], [0]
        rows, has_state = [], []
        num_ctx = sum(min(seq.num_cached, cap) for seq in batch.seqs)
        zero_row = num_ctx + batch.num_tokens
        q_off = k_off = 0
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new)):
            start, end, row = seq.num_cached, seq.num_cached + n, seq.row
            ctx_len = min(start, cap)
            ctx_pos = _arange(start - ctx_len, start)
            ctx_src.append(row * cap + ctx_pos % cap)
            ctx_dst.append(_arange(k_off, k_off + ctx_len))
            new_dst.append(_arange(k_off + ctx_len, k_off + ctx_len + n))
            kept = _arange(max(start, end - cap), end)  # a chunk longer than the ring keeps its tail
            write_src.append(q_off + kept - start)
            write_dst.append(row * cap + kept % cap)
            chunk_pos = _arange(start, end)
            if hw is not None:
                leaving = chunk_pos - hw  # token that left the window when chunk_pos arrived
                hist.append(torch.where(leaving >= 0, k_off + leaving - (start - ctx_len), zero_row))
            ids.append(torch.tensor(seq.prompt[start:end], dtype=torch.long))
            pos.append(chunk_pos)
            if batch.completes_prompt(i):
                logit_rows.append(q_off + n - 1)
            rows.append(row)
            has_state.append(start > 0)
            q_off += n
            k_off += ctx_len + n
            cu_q.append(q_off)
            cu_k.append(k_off)
        meta = PrefillMeta(
            cu_seqlens_q=self._to_device(torch.tensor(cu_q, dtype=torch.int32)),
            cu_seqlens_k=self._to_device(torch.tensor(cu_k, dtype=torch.int32)),
            cu_seqlens_q_host=cu_q,
            cu_seqlens_k_host=cu_k,
            max_seqlen_q=max(batch.num_new),
            max_seqlen_k=max(b - a for a, b in zip(cu_k, cu_k[1:])),
            ctx_src=self._to_device(_cat(ctx_src)),
            ctx_dst=self._to_device(_cat(ctx_dst)),
            new_dst=self._to_device(_cat(new_dst)),
            write_src=self._to_device(_cat(write_src)),
            write_dst=self._to_device(_cat(write_dst)),
            rows=self._to_device(torch.tensor(rows, dtype=torch.long)),
            has_state=self._to_device(torch.tensor(has_state, dtype=torch.bool)),
            hist_src=self._to_device(_cat(hist)),
        )
        ctx = StepContext(
            positions=self._to_device(_cat(pos)),
            logits_indices=self._to_device(torch.tensor(logit_rows, dtype=torch.long)),
            prefill=meta,
        )
        return self._to_device(_cat(ids)), ctx

    def pack_decode(self, batch: ScheduledBatch, pad_to: int | None = None,
                    scratch_row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode step's inputs as two host tensors, so each is one copy to the device:
        int64 [5, B] (token, position, row, slot, evict) and int32 [3, B + 1] (used, row start,
        query start).
        Entries past the batch (CUDA-graph padding) read and write only `scratch_row`, slot 0."""
        cap, hw = self.capacity, self.history_window
        n = len(batch.seqs)
        size = pad_to or n
        # numpy from three Python lists, then vector arithmetic: the host builds this every step.
        packed = np.zeros((5, size), dtype=np.int64)
        packed[0, :n] = [seq.last_token for seq in batch.seqs]
        packed[1, :n] = [seq.num_tokens - 1 for seq in batch.seqs]
        packed[2, :n] = [seq.row for seq in batch.seqs]
        packed[2, n:] = scratch_row
        pos, rows = packed[1], packed[2]
        packed[3] = rows * cap + pos % cap
        if hw is not None:
            packed[4] = pos >= hw
        meta = np.empty((3, size + 1), dtype=np.int32)
        meta[0, :size] = np.minimum(pos + 1, cap)
        meta[0, size] = 0
        meta[1, :size] = rows * cap
        meta[1, size] = rows[-1] * cap + cap
        meta[2] = np.arange(size + 1, dtype=np.int32) * self.group
        return torch.from_numpy(packed), torch.from_numpy(meta)

    @staticmethod
    def decode_context(packed64: torch.Tensor, packed32: torch.Tensor) -> tuple[torch.Tensor, StepContext]:
        """Views of the packed device tensors as the model's inputs."""
        size = packed64.shape[1]
        meta = DecodeMeta(rows=packed64[2], slots=packed64[3], evict=packed64[4], used=packed32[0, :size],
                          row_starts=packed32[1], query_starts=packed32[2])
        ctx = StepContext(positions=packed64[1], logits_indices=_arange_cached(size, packed64.device), decode=meta)
        return packed64[0], ctx

    def prepare_decode(self, batch: ScheduledBatch) -> tuple[torch.Tensor, StepContext]:
        packed64, packed32 = self.pack_decode(batch)
        return self.decode_context(self._to_device(packed64), self._to_device(packed32))

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int]:
        """One forward step; returns the sampled token of each sequence that samples."""
        n = len(batch.seqs)
        if not batch.is_prefill and self.graphs is not None and self.graphs.fits(n):
            bucket = self.graphs.bucket(n)
            logits = self.graphs.run(*self.pack_decode(batch, bucket, self.graphs.scratch_row), n)
        else:
            ids, ctx = self.prepare_prefill(batch) if batch.is_prefill else self.prepare_decode(batch)
            logits = self.model(ids, ctx)
        if logits.shape[0] == 0:
            return []
        samplers = [seq for i, seq in enumerate(batch.seqs) if batch.completes_prompt(i)]
        if all(s.sampling.temperature == 0 for s in samplers):
            return logits.argmax(dim=-1).tolist()
        temperature = torch.tensor([s.sampling.temperature for s in samplers], device=self.device)
        top_p = torch.tensor([s.sampling.top_p for s in samplers], device=self.device)
        return sample(logits, temperature, top_p, self.generator).tolist()
