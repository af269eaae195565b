"""The Hugging Face reference peer (`--engine hf`, DESIGN.md section 9).

transformers' own `generate` runs the job's prompts so every report can set our engine beside the
reference implementation: same weights (or the same config with random weights), same prompts, the
same per-request records. HF has no continuous batching, so prompts run in fixed batches one after
another; a request of a later batch waits for the earlier ones, and that wait is part of its TTFT.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedModel
from transformers.generation.streamers import BaseStreamer

from hybench.engine import ResolvedModel
from hybench.engine.model_config import PRESET_DIR, PRESETS

ATTN_IMPLEMENTATION = "sdpa"
PAD_ID = 0  # only fills left-padding that the attention mask hides, so any id in the vocabulary will do


class HFResult(NamedTuple):
    """One request as the peer ran it; the first three fields are the (prompt, timestamps, count) triple."""

    prompt_tokens: int
    token_ns: tuple[int, ...]  # monotonic ns at which each output token was ready on the host
    output_tokens: int
    output_ids: tuple[int, ...]
    arrival_ns: int


def raw_config(name: str) -> dict:
    """The config.json dict behind a resolved model name: a local folder, a shipped preset, or a Hub id.

    ModelConfig keeps only what our engine needs; transformers needs the whole file (model_type,
    rope scaling, activation, ...) to build the same architecture."""
    if os.path.isdir(name):
        path = os.path.join(name, "config.json")
    elif name in PRESETS:
        path = os.path.join(PRESET_DIR, PRESETS[name])
    else:  # a Hub id: resolve_model has already fetched its config into the local cache
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(name, "config.json")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _TokenClock(BaseStreamer):
    """Records when each generation step's tokens are ready.

    `generate` hands a streamer the prompt first (2-D), then each step's chosen tokens (1-D, one per
    row) right after they are picked and copied to the host. A LogitsProcessor would instead run before
    the choice, one step late, and never for the last token."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.token_ns: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if value.dim() == 1:
            _synchronize(self.device)
            self.token_ns.append(time.monotonic_ns())

    def end(self) -> None:
        pass


def _load(resolved: ResolvedModel, device: torch.device, dtype: torch.dtype, seed: int,
          trust_remote_code: bool) -> PreTrainedModel:
    """The checkpoint's safetensors when there are weights; else random weights from the config, built
    directly on the device (fast even for 8B) and seeded so a job is reproducible."""
    if resolved.weight_files:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(resolved.weight_files[0]), dtype=dtype, use_safetensors=True,
            attn_implementation=ATTN_IMPLEMENTATION, trust_remote_code=trust_remote_code)
        # Loading on CPU then moving avoids device_map, which needs accelerate.
        return model.to(device)
    config = AutoConfig.for_model(**raw_config(resolved.config.name))
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=ATTN_IMPLEMENTATION,
                                                trust_remote_code=trust_remote_code)


def _left_padded(prompts: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder-only generation appends on the right, so shorter prompts are padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


class HFPeer:
    """Hugging Face generate on the same prompts, as the reference implementation."""

    name = f"hf-generate-{ATTN_IMPLEMENTATION}"  # recorded as the job's attn_backend

    def __init__(self, resolved: ResolvedModel, device: torch.device, dtype: torch.dtype, seed: int,
                 trust_remote_code: bool = False) -> None:
        self.device = device
        self.model = _load(resolved, device, dtype, seed, trust_remote_code).eval()
        # Replace the checkpoint's generation defaults: generate() fills unset fields from them, and an
        # eos_token_id there would end requests early. Greedy, no EOS: exactly the requested tokens.
        self.model.generation_config = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=PAD_ID)

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], output_len: int, max_batch: int, arrival_ns: int,
            on_finish: Callable[[], object] | None = None) -> list[HFResult]:
        """Generate exactly `output_len` greedy tokens per prompt, `max_batch` prompts at a time, in order.

        All requests arrived at `arrival_ns` (offline mode). Results are in the order of `prompts`."""
        results: list[HFResult] = []
        for start in range(0, len(prompts), max_batch):
            batch = prompts[start:start + max_batch]
            ids, mask = _left_padded(batch, self.device)
            clock = _TokenClock(self.device)
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=output_len,
                                      min_new_tokens=output_len, streamer=clock)
            generated = out[:, ids.shape[1]:].tolist()
            if len(clock.token_ns) != output_len or any(len(g) != output_len for g in generated):
                raise RuntimeError(f"transformers generated {len(clock.token_ns)} steps, {output_len} were asked for")
            token_ns = tuple(clock.token_ns)
            for prompt, output in zip(batch, generated):
                results.append(HFResult(len(prompt), token_ns, output_len, tuple(output), arrival_ns))
                if on_finish is not None:
                    on_finish()
        return results
