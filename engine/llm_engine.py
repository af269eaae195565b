"""LLMEngine: requests in, exactly-sized outputs with per-token timestamps out.

Wires the pieces together (nano-vllm's split): the Scheduler and RowManager decide in plain
Python, the ModelRunner owns the tensors, the KVCache owns the memory. Every step is timed on the
host after the sampled tokens are read back (which synchronises the device), and its bytes or
FLOPs are recorded for bandwidth and MFU figures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hybench.engine.attention import AttentionLayout
from hybench.engine.config import EngineConfig
from hybench.engine.errors import EngineConfigError
from hybench.engine.kernels import select_backends
from hybench.engine.kv_budget import KVPlan, gpu_budget_bytes, plan_kv_pool
from hybench.engine.kv_cache import KVCache
from hybench.engine.llama import LlamaForCausalLM
from hybench.engine.memory import SequenceMemory
from hybench.engine.model_runner import ModelRunner
from hybench.engine.prefix_cache import PrefixCache
from hybench.engine.row_manager import RowManager
from hybench.engine.scheduler import ScheduledBatch, Scheduler
from hybench.engine.sequence import SamplingParams, Sequence
from hybench.engine.step_cost import StepCost


@dataclass(frozen=True, slots=True)
class StepRecord:
    is_prefill: bool
    num_seqs: int
    num_tokens: int
    duration_ns: int
    work: float  # bytes moved (decode) or FLOPs (prefill)


class LLMEngine:
    def __init__(self, model: LlamaForCausalLM, config: EngineConfig, budget_bytes: int | None = None) -> None:
        self.config = config
        self.model = model
        self.memory = SequenceMemory.of(config)
        self.attn_backend, self.ssm_backend = select_backends(config.device, config.model.head_dim)
        window = config.window if config.windowed else None
        layout = AttentionLayout(config.attention, window, self.attn_backend, self.ssm_backend)
        on_gpu = config.device.type == "cuda"
        self.activation_peak = 0
        if on_gpu and budget_bytes is None and config.kv_cache_gib is None:
            self.activation_peak = self._profile_activation_peak(layout)
            budget_bytes = gpu_budget_bytes(config, self.activation_peak, config.max_num_seqs)
        self.plan: KVPlan = plan_kv_pool(config, self.memory, budget_bytes)
        use_graphs = on_gpu and not config.enforce_eager
        # CUDA graphs pad batches into a scratch row of their own, outside the planned pool.
        self.cache = KVCache(config, self.plan.num_rows + (1 if use_graphs else 0))
        model.configure(layout, self.cache, config.seed)
        self.rows = RowManager(self.plan.num_rows, self.memory)
        self.prefix_cache = PrefixCache(self.rows, config.prefix_block_size) if config.enable_prefix_caching else None
        self.scheduler = Scheduler(self.rows, config.max_num_seqs, config.max_num_batched_tokens, self.prefix_cache)
        self.runner = ModelRunner(model, config, self.cache)
        if use_graphs:
            self.runner.capture_decode_graphs(max_batch=self.plan.num_rows, scratch_row=self.plan.num_rows)
        weight_bytes = sum(p.nbytes for p in model.parameters())
        self.cost = StepCost(config.model, self.memory, weight_bytes, _matmul_params(model))
        self.steps: list[StepRecord] = []
        self._next_id = 0

    @torch.inference_mode()
    def _profile_activation_peak(self, layout: AttentionLayout) -> int:
        """Peak memory of one prefill step at the full token budget, on a one-row cache."""
        config, device = self.config, self.config.device
        tokens = min(config.max_num_batched_tokens, config.max_model_len)
        cache = KVCache(config, 1)
        self.model.configure(layout, cache, config.seed)
        runner = ModelRunner(self.model, config, cache)
        seq = Sequence(-1, [0] * tokens, SamplingParams(1), 0, row=0)
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.run(ScheduledBatch(True, [seq], [tokens]))
        peak = torch.cuda.max_memory_allocated(device) - before
        del cache, runner
        torch.cuda.empty_cache()
        return peak

    @property
    def ssm_backend_name(self) -> str:
        return self.ssm_backend.name if self.config.attention == "hybrid" else "none"

    def add_request(self, prompt: list[int], sampling: SamplingParams, arrival_ns: int | None = None) -> Sequence:
        vocab = self.config.model.vocab_size
        if not prompt:
            raise EngineConfigError("empty prompt")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise EngineConfigError(f"prompt token ids must lie in 0..{vocab - 1}")
        if sampling.max_tokens < 1:
            raise EngineConfigError("max_tokens must be at least 1")
        total = len(prompt) + sampling.max_tokens
        if total > self.config.max_model_len:
            raise EngineConfigError(
                f"request of {len(prompt)} + {sampling.max_tokens} tokens exceeds max model length "
                f"{self.config.max_model_len}")
        seq = Sequence(self._next_id, list(prompt), sampling, arrival_ns or time.monotonic_ns())
        self._next_id += 1
        self.scheduler.add(seq)
        return seq

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def step(self) -> list[Sequence]:
        """Run one scheduled step; returns the sequences it finished."""
        batch = self.scheduler.schedule()
        if batch.is_prefill:
            work = self.cost.prefill_flops([(s.num_cached, n) for s, n in zip(batch.seqs, batch.num_new)])
        else:
            work = self.cost.decode_bytes([s.num_tokens for s in batch.seqs])
        start = time.monotonic_ns()
        self.runner.copy_rows(batch.restores)
        tokens = self.runner.run(batch)  # reading tokens back synchronises the device
        now = time.monotonic_ns()
        self.steps.append(StepRecord(batch.is_prefill, len(batch.seqs), batch.num_tokens, now - start, work))
        finished = self.scheduler.postprocess(batch, tokens, now)
        self.runner.copy_rows(batch.snapshots)
        return finished

    def run_until_done(self, on_finish=None) -> None:
        while self.has_work:
            for seq in self.step():
                if on_finish is not None:
                    on_finish(seq)

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Sequence]:
        seqs = [self.add_request(p, sampling) for p in prompts]
        self.run_until_done()
        return seqs

    def release(self) -> None:
        """Free the KV cache and decode graphs (the model stays loaded for the next engine)."""
        for attn in self.model.attention_layers:  # the layers hold views of the cache
            attn.cache = None
        self.cache = None
        self.runner.graphs = None
        self.runner.cache = None
        if self.config.device.type == "cuda":
            torch.cuda.synchronize(self.config.device)
            torch.cuda.empty_cache()


def _matmul_params(model: LlamaForCausalLM) -> int:
    """Weights multiplied per token: every linear layer (not embeddings, norms or the branch's dt)."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "history" not in name:
            total += module.weight.numel()
    return total
