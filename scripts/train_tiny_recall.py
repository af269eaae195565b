"""Train the `tiny-recall` preset: a small Llama that copies a random block it saw long ago.

Data: the recall sequences hybench measures (workers/recall.py: prefix, block, filler, block again)
with random block lengths, filler distances of 0 to 10 windows and total lengths of 128 to 1024, the
loss on the repeat's scored tokens only (the rest is unpredictable noise). The model is Hugging
Face's LlamaForCausalLM (plain torch on CPU), saved under the Hugging Face tensor names hybench's
loader reads. Seeded and single-threaded, so a rerun on the same machine gives the same weights.

    python scripts/train_tiny_recall.py     # writes engine/presets/tiny-recall/{config.json,model.safetensors}

The shipped weights are this command's output (seed 0, 3000 steps of 4096 tokens, 361,088 parameters):
16.5 minutes wall time on one thread of a shared 2-core CPU. The copying circuit forms at about step
1100, during the first 1000 steps of 128-token sequences; before them, with all lengths mixed from the
start, 1100 steps had not left the plateau. Top-1 recall it then printed (block 16, input 512, W = 32,
16 sequences, scored by hybench's engine):

    filler          0.25W  0.5W   1W     2W     4W     8W
    full            1.000  1.000  1.000  1.000  1.000  1.000
    sliding         0.975  0.975  0.000  0.000  0.000  0.000
    hybrid (seeded) 0.975  0.979  0.000  0.000  0.000  0.000

(At 0.5W block and repeat still lie inside one window: 16 + 16 - 1 < 32. Chance is 1/256.)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file

from hybench.engine import EngineConfig, LLMEngine, build_model, resolve_model
from hybench.engine.model_config import TRAINED_PRESET_WINDOWS
from hybench.engine.scoring import score_sequences
from hybench.workers.recall import distance_tokens, recall_outcome, recall_sequence

PRESET_FOLDER = os.path.join(os.path.dirname(__file__), os.pardir, "engine", "presets", "tiny-recall")
WINDOW = TRAINED_PRESET_WINDOWS["tiny-recall"]  # the preset's default sliding window W
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 256,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 32,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "bos_token_id": 0,
    "eos_token_id": 1,
}
LENGTHS = (128, 256, 512, 1024)  # total tokens of a batch's sequences, cycled
TOKENS_PER_STEP = 4096
MAX_DISTANCE = 10 * WINDOW


def make_batch(step: int, seed: int, short_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of one length with random block lengths and distances, and their loss mask. The first
    `short_steps` use the shortest length only: the most scored tokens per step while the copying
    circuit forms, which is the slow part of training."""
    length = LENGTHS[0] if step < short_steps else LENGTHS[step % len(LENGTHS)]
    rng = np.random.default_rng([seed, step])
    rows, masks = [], []
    for i in range(TOKENS_PER_STEP // length):
        block = int(rng.integers(8, min(96, length // 2) + 1))  # long blocks: many scored tokens a step
        distance = int(rng.integers(0, min(MAX_DISTANCE, length - 2 * block) + 1))
        seq = recall_sequence(CONFIG["vocab_size"], length, block, distance, seed=int(rng.integers(2**31)))
        mask = torch.zeros(length, dtype=torch.bool)
        mask[list(seq.scored_positions)] = True
        rows.append(seq.tokens)
        masks.append(mask)
    return torch.tensor(rows), torch.stack(masks)


def masked_loss(model: transformers.LlamaForCausalLM, tokens: torch.Tensor, mask: torch.Tensor):
    logits = model(tokens).logits[:, :-1]
    targets, scored = tokens[:, 1:], mask[:, 1:]
    loss = F.cross_entropy(logits[scored], targets[scored])
    accuracy = (logits[scored].argmax(-1) == targets[scored]).float().mean()
    return loss, accuracy


@torch.no_grad()
def recall_accuracy(model: transformers.LlamaForCausalLM, multiple: float, input_len: int, count: int = 32) -> float:
    """Top-1 accuracy on the repeat, full attention, block 16 at `multiple` windows (held-out seeds)."""
    rows, masks = [], []
    for i in range(count):
        seq = recall_sequence(CONFIG["vocab_size"], input_len, 16, round(multiple * WINDOW), seed=10**6 + i)
        mask = torch.zeros(input_len, dtype=torch.bool)
        mask[list(seq.scored_positions)] = True
        rows.append(seq.tokens)
        masks.append(mask)
    return masked_loss(model, torch.tensor(rows), torch.stack(masks))[1].item()


def save(model: transformers.LlamaForCausalLM, out_dir: str) -> None:
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items() if name != "lm_head.weight"}
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(CONFIG, fh, indent=2)
        fh.write("\n")


def evaluate(out_dir: str, input_len: int = 512, block: int = 16, count: int = 16) -> None:
    """Recall accuracy of the saved weights per config and distance, scored by hybench's engine."""
    resolved = resolve_model(out_dir)
    config = resolved.config
    model = build_model(resolved, torch.device("cpu"), torch.float32, input_len + 1, seed=0)
    multiples = (0.25, 0.5, 1, 2, 4, 8)
    print(f"top-1 recall, block {block}, input {input_len}, W {WINDOW}, {count} sequences: "
          + " ".join(f"{m}W" for m in multiples), flush=True)
    for kind in ("full", "sliding", "hybrid"):
        accuracies = []
        for multiple in multiples:
            engine = LLMEngine(model, EngineConfig(model=config, attention=kind, window=WINDOW,
                                                   max_model_len=input_len + 1))
            seqs = [recall_sequence(config.vocab_size, input_len, block, distance_tokens(multiple, WINDOW), seed=s)
                    for s in range(count)]
            scores = score_sequences(engine, [s.tokens for s in seqs])
            accuracies.append(sum(recall_outcome(s, sc)[1] for s, sc in zip(seqs, scores)) / count)
        print(f"{kind:8s} " + " ".join(f"{a:.3f}" for a in accuracies), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--short-steps", type=int, default=1000)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop early after this long (the weights then depend on the machine's speed)")
    parser.add_argument("--out", default=PRESET_FOLDER, help="checkpoint folder to write (config.json + model.safetensors)")
    parser.add_argument("--evaluate-only", action="store_true", help="score the weights in --out, train nothing")
    args = parser.parse_args()
    if args.evaluate_only:
        evaluate(args.out)
        return

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    hf_config = transformers.LlamaConfig(**{k: v for k, v in CONFIG.items() if k != "architectures"})
    model = transformers.LlamaForCausalLM(hf_config)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 100

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start = time.monotonic()
    for step in range(args.steps):
        model.train()
        tokens, mask = make_batch(step, args.seed, args.short_steps)
        loss, accuracy = masked_loss(model, tokens, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        if step % 50 == 0 or step == args.steps - 1:
            minutes = (time.monotonic() - start) / 60
            line = f"step {step} loss {loss.item():.3f} train acc {accuracy.item():.3f} {minutes:.1f} min"
            if step % 200 == 0 or step == args.steps - 1:
                model.eval()
                line += (f" | recall 4W@256 {recall_accuracy(model, 4, 256):.3f}"
                         f" 4W@1024 {recall_accuracy(model, 4, 1024, 8):.3f}")
                save(model, args.out)
            print(line, flush=True)
            if args.max_minutes is not None and minutes > args.max_minutes:
                print("time budget reached", flush=True)
                break
    save(model, args.out)
    print(f"wall time {(time.monotonic() - start) / 60:.1f} min", flush=True)
    evaluate(args.out)


if __name__ == "__main__":
    main()
