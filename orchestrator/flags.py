"""The benchmark flags, defined once and shared by `hybench bench` (one value each) and
`hybench sweep` (comma-separated lists that fan out into jobs).

Names and defaults follow the original suite's parameter table and troubleshooting section.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

from hybench.engine.calibration import CalibrationError, HistoryWeightsRef
from hybench.workers.datasets import DatasetError, DatasetRef
from hybench.workers.eval_text import EvalTextRef
from hybench.workers.job_spec import ATTENTION_CONFIGS, DTYPES, ENGINES, LOAD_FORMATS, TASKS


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none", "auto") else int(text)


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("", "none", "auto") else float(text)


def _dataset(path: str) -> DatasetRef:
    """Read and hash the file as the flag is parsed, so a bad file is a usage error before any job runs."""
    try:
        return DatasetRef.open(path)
    except DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _eval_text(path: str) -> EvalTextRef:
    """Read, hash and parse the text as the flag is parsed (tokenizing waits for the job's model)."""
    try:
        return EvalTextRef.open(path)
    except DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _history_weights(path: str) -> HistoryWeightsRef:
    """Read and hash the weights as the flag is parsed; their model and window are checked per job."""
    try:
        return HistoryWeightsRef.open(path)
    except CalibrationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Flag:
    """One benchmark flag: its JobSpec field, parser and help. `sweep_name` is the plural
    spelling `hybench sweep` also accepts."""

    spec_field: str
    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple = ()
    sweep_name: str | None = None
    is_switch: bool = False  # a store_true flag in `bench`
    metavar: str | None = None
    aliases: tuple[str, ...] = field(default=())


FLAGS: tuple[Flag, ...] = (
    Flag("model", "--model", str, None, "Hugging Face model id, local checkpoint folder "
         "(config.json + safetensors) or a built-in preset (tiny-llama, meta-llama/Llama-3.2-1B, "
         "meta-llama/Llama-3.2-3B, meta-llama/Llama-3.1-8B, mistralai/Mistral-7B-v0.1)",
         sweep_name="--models", metavar="MODEL"),
    Flag("config", "--config", str, None, "attention configuration: full (baseline), sliding "
         "(last W tokens only) or hybrid (last W tokens + SSM history branch over older tokens)",
         choices=ATTENTION_CONFIGS, sweep_name="--configs"),
    Flag("input_len", "--input-lengths", int, (512, 1024, 2048, 4096),
         "comma-separated prompt lengths in tokens; one job per length", metavar="N,N,..."),
    Flag("num_prompts", "--num-prompts", int, 100, "prompts (requests) per input length"),
    Flag("output_len", "--output-len", int, 128,
         "output tokens per request, generated exactly (EOS is ignored)", sweep_name="--output-lens"),
    Flag("num_warmup_iters", "--num-warmup-iters", int, 3,
         "warmup iterations, recorded with warmup=true and left out of reports"),
    Flag("num_benchmark_iters", "--num-benchmark-iters", int, 10,
         "measured iterations; each submits every prompt (as --request-rate and --max-concurrency say) "
         "and runs them to completion"),
    Flag("dataset", "--dataset", _dataset, None,
         "prompts from a `hybench data` file (JSON or Parquet) instead of seeded random ones: a job runs the "
         "first --num-prompts prompts of its input length, the same in every iteration; the hash of the "
         "file's token ids, not its path, is part of the job id", sweep_name="--datasets", metavar="FILE"),
    Flag("request_rate", "--request-rate", float, float("inf"),
         "requests per second, arriving as a seeded Poisson process (the same schedule for every config); "
         "inf = offline: every request arrives at once. TTFT counts the wait from arrival; requests.queue_ms "
         "records the part before the first prefill step", sweep_name="--request-rates", metavar="R"),
    Flag("concurrency_limit", "--max-concurrency", _optional_int, None,
         "most requests in the engine at once; later arrivals wait in the client queue (requests."
         "client_queue_ms), and that wait counts in TTFT; default: no limit", metavar="C"),
    Flag("gpu_memory_utilization", "--gpu-memory-utilization", float, 0.9,
         "fraction of total GPU memory the engine may use; the KV pool gets what weights, "
         "activations and CUDA graphs leave"),
    Flag("window", "--sliding-window-override", int, 4096,
         "sliding window W for sliding and hybrid: keys per query, the query itself included",
         sweep_name="--windows", metavar="W"),
    Flag("dtype", "--dtype", str, "auto", "weight and activation dtype; auto = the checkpoint's "
         "dtype on GPU (bfloat16 when unset), float32 on CPU", choices=DTYPES),
    Flag("seed", "--seed", int, 42, "seed of prompts, dummy weights, history-branch init and sampling"),
    Flag("engine", "--engine", str, "hybrid", "hybrid = this project's engine; hf = Hugging Face "
         "generate on the same prompts, as the reference peer", choices=ENGINES, sweep_name="--engines"),
    Flag("load_format", "--load-format", str, "auto", "auto = safetensors when the model has "
         "weights, else error; dummy = random weights from the config (real speed and memory, "
         "no download)", choices=LOAD_FORMATS),
    Flag("max_model_len", "--max-model-len", _optional_int, None,
         "longest sequence (prompt + output) a request may have; default: the job's longest request",
         metavar="TOKENS"),
    Flag("max_num_seqs", "--max-num-seqs", int, 256, "most sequences decoded in one step"),
    Flag("max_num_batched_tokens", "--max-num-batched-tokens", int, 8192,
         "prefill token budget per step; longer prompts are prefilled in chunks"),
    Flag("kv_cache_gib", "--kv-cache-gib", _optional_float, None,
         "size the KV pool to this many GiB instead of from free memory (default on CPU: 2)",
         metavar="GIB"),
    Flag("temperature", "--temperature", float, 0.0, "sampling temperature; 0 = greedy"),
    Flag("top_p", "--top-p", float, 1.0, "nucleus sampling threshold (with temperature > 0)"),
    Flag("enforce_eager", "--enforce-eager", _bool, False,
         "run decode eagerly instead of replaying CUDA graphs", is_switch=True),
    Flag("enable_prefix_caching", "--enable-prefix-caching", _bool, False,
         "reuse the cache of prompt prefixes other requests share: K/V for full, the window ring for "
         "sliding, ring + SSM state for hybrid", is_switch=True),
    Flag("trust_remote_code", "--trust-remote-code", _bool, False,
         "let --engine hf run a checkpoint's own Python code (never done otherwise)", is_switch=True),
    Flag("task", "--task", str, "throughput",
         "what a job measures: throughput (the benchmark: speed, latency, memory), perplexity (teacher-forced "
         "NLL of --eval-text per position bucket [0,W), [W,2W), [2W,4W), ...) or recall (NLL and top-1 accuracy "
         "of a random block repeated 0.5W, W, 2W, 4W later; no data or tokenizer needed); quality jobs write "
         "the quality table", choices=TASKS, sweep_name="--tasks"),
    Flag("eval_text", "--eval-text", _eval_text, None,
         "text that --task perplexity scores: .txt, .jsonl (a text field per line) or Parquet (a text column), "
         "tokenized with the model's tokenizer and cut into --num-prompts sequences of each input length; the "
         "file's sha256 is part of the job id", metavar="FILE"),
    Flag("history_weights", "--history-weights", _history_weights, None,
         "history-branch weights from `hybench calibrate` for hybrid jobs (refused for another model or "
         "window); jobs rows say ssm_init calibrated:<sha>, else seeded; the hash is part of the job id",
         metavar="FILE"),
    Flag("device", "--device", str, "auto", "cuda, cuda:N or cpu; auto = cuda when available"),
)


def _split(text: str, parse: Callable[[str], Any], flag: str) -> tuple:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(item == "" for item in items):
        raise argparse.ArgumentTypeError(f"{flag} needs a comma-separated list without empty items, got {text!r}")
    try:
        return tuple(parse(item) for item in items)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{flag}: {exc}") from None


def list_of(parse: Callable[[str], Any], flag: str) -> Callable[[str], tuple]:
    """An argparse type for a comma-separated list, for commands that borrow a list flag's syntax."""
    return lambda text: _split(text, parse, flag)


def _list_parser(flag: Flag) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        values = _split(text, flag.parse, flag.flag)
        if flag.choices:
            bad = [v for v in values if v not in flag.choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"{flag.flag}: {', '.join(map(str, bad))} not one of {', '.join(flag.choices)}")
        return values
    return parse


def scalar_type(parse_value: Callable[[str], Any], label: str = "") -> Callable[[str], Any]:
    """An argparse type: `parse_value`, with its ValueError turned into argparse's one-line error."""
    prefix = f"{label}: " if label else ""

    def parse(text: str) -> Any:
        try:
            return parse_value(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{prefix}invalid value {text!r}") from None
    return parse


def add_bench_flags(parser: argparse.ArgumentParser, required: tuple[str, ...] = ("model", "config")) -> None:
    """One value per flag; --input-lengths stays a list (one job per length), as in the seed."""
    for flag in FLAGS:
        if flag.is_switch:
            parser.add_argument(flag.flag, dest=flag.spec_field, action="store_true", help=flag.help)
            continue
        is_list = flag.spec_field == "input_len"
        parser.add_argument(
            flag.flag,
            dest=flag.spec_field,
            type=_list_parser(flag) if is_list else scalar_type(flag.parse, flag.flag),
            default=flag.default,
            required=flag.spec_field in required,
            choices=None if is_list else (flag.choices or None),
            metavar=flag.metavar,
            help=flag.help + ("" if flag.default is None else f" (default: {_show(flag.default)})"),
        )


def add_sweep_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any],
                    notes: dict[str, str] | None = None) -> None:
    """Every bench flag as a comma-separated list (switches take true,false lists too).
    `defaults` overrides the seed defaults (the sweep's no-argument run is small); `notes` end the help
    of a flag whose default depends on other flags."""
    for flag in FLAGS:
        names = [flag.flag] + ([flag.sweep_name] if flag.sweep_name else [])
        default = defaults.get(flag.spec_field, flag.default)
        if default is not None and not isinstance(default, tuple):
            default = (default,)
        parser.add_argument(
            *names,
            dest=flag.spec_field,
            type=_list_parser(flag),
            default=default,
            metavar=flag.metavar or "V,V,...",
            help=flag.help + ("" if default is None else
                              f" (default: {_show(default)}{(notes or {}).get(flag.spec_field, '')})"),
        )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The JobSpec fields the parsed flags carry."""
    return {flag.spec_field: getattr(args, flag.spec_field) for flag in FLAGS}


def with_flag_names(message: str, plural: bool = False) -> str:
    """A JobSpec problem list ("window must be at least 1, got 0; ...") in the flags the user typed
    (`--sliding-window-override must be ...`); `plural`: the sweep's spelling (--windows) where it has one."""
    def flag_of(problem: str) -> str:
        for flag in FLAGS:
            if problem.startswith(f"{flag.spec_field} "):
                name = flag.sweep_name if plural and flag.sweep_name else flag.flag
                return name + problem[len(flag.spec_field):]
        return problem
    return "; ".join(flag_of(problem) for problem in message.split("; "))
