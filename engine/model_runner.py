"""ModelRunner: turns a scheduled batch into tensors and a StepContext, runs the model, samples.

It owns every tensor of a step; the scheduler never sees one. Slot arithmetic lives here:
token at position p of the sequence in cache row r goes to slot r * C + p % C.
"""
from __future__ import annotations

import torch

from hybench.engine.config import EngineConfig
from hybench.engine.context import DecodeMeta, PrefillMeta, StepContext
from hybench.engine.llama import LlamaForCausalLM
from hybench.engine.sampler import sample
from hybench.engine.scheduler import ScheduledBatch


def _arange(start: int, end: int) -> torch.Tensor:
    return torch.arange(start, end, dtype=torch.long)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, config: EngineConfig) -> None:
        self.model = model
        self.config = config
        self.device = config.device
        self.capacity = config.kv_capacity
        self.history_window = config.window if config.attention == "hybrid" else None
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)

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

    def prepare_decode(self, batch: ScheduledBatch) -> tuple[torch.Tensor, StepContext]:
        cap, hw = self.capacity, self.history_window
        positions = torch.tensor([seq.num_tokens - 1 for seq in batch.seqs], dtype=torch.long)
        rows = torch.tensor([seq.row for seq in batch.seqs], dtype=torch.long)
        meta = DecodeMeta(
            rows=self._to_device(rows),
            slots=self._to_device(rows * cap + positions % cap),
            used=self._to_device(torch.clamp(positions + 1, max=cap).to(torch.int32)),
            evict=self._to_device(positions >= hw if hw is not None else torch.zeros_like(positions, dtype=torch.bool)),
        )
        ids = torch.tensor([seq.last_token for seq in batch.seqs], dtype=torch.long)
        ctx = StepContext(
            positions=self._to_device(positions),
            logits_indices=self._to_device(torch.arange(len(batch.seqs))),
            decode=meta,
        )
        return self._to_device(ids), ctx

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int]:
        """One forward step; returns the sampled token of each sequence that samples."""
        ids, ctx = self.prepare_prefill(batch) if batch.is_prefill else self.prepare_decode(batch)
        logits = self.model(ids, ctx)
        if logits.shape[0] == 0:
            return []
        samplers = [seq for i, seq in enumerate(batch.seqs) if batch.completes_prompt(i)]
        temperature = torch.tensor([s.sampling.temperature for s in samplers], device=self.device)
        top_p = torch.tensor([s.sampling.top_p for s in samplers], device=self.device)
        return sample(logits, temperature, top_p, self.generator).tolist()
