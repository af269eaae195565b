"""JobSpec: everything that defines one benchmark job, and its deterministic id.

A job is one (model, config, window, engine, input length, output length, ...) cell of a sweep.
Its id is a hash of every field that changes what the job measures plus the code version, so a
re-run of the same sweep finds the job's results, and a changed sweep runs only what changed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import quote

from hybench.workers.datasets import DatasetRef
from hybench.workers.eval_text import EvalTextRef

if TYPE_CHECKING:  # the calibration module needs torch; the readers of a store must not
    from hybench.engine.calibration import HistoryWeightsRef

NAME_MAX = 255  # bytes in one file or folder name on Linux, macOS and object-store mounts

ATTENTION_CONFIGS = ("full", "sliding", "hybrid")
INT64_MAX = 2**63 - 1
MAX_SCHEDULE_S = 1e7  # about 4 months; far longer would overflow the nanosecond timestamps
ENGINES = ("hybrid", "hf")
DTYPES = ("auto", "float32", "float16", "bfloat16")
LOAD_FORMATS = ("auto", "safetensors", "dummy")
TASKS = ("throughput", "perplexity", "recall")  # throughput: the benchmark; the others: quality jobs
QUALITY_TASKS = TASKS[1:]
# The throughput settings a quality job does not use, at the values its row records.
_QUALITY_IGNORES = {"output_len": 1, "num_warmup_iters": 0, "num_benchmark_iters": 1, "temperature": 0.0,
                    "top_p": 1.0, "request_rate": math.inf, "concurrency_limit": None}


def project_version() -> str:
    try:
        return version("hybench")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


_INT_FIELDS = ("window", "input_len", "output_len", "num_prompts", "seed", "num_warmup_iters", "num_benchmark_iters",
               "max_model_len", "max_num_seqs", "max_num_batched_tokens", "concurrency_limit", "repeat")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One benchmark job. Fields not in `_RUN_ONLY` define the job and so its id.

    `dataset` splits in two: its path says where to read the prompts (run-only: the file may move),
    its sha256 of the token ids is what defines the job (so editing the file makes a new job); so do
    `eval_text` (the hash of its bytes) and `history_weights` (the hash of its tensors). A setting that
    does not apply to a job is dropped from it (`dataset` outside throughput, `eval_text` outside
    perplexity, `history_weights` outside hybrid, and a quality job's output length, iterations,
    sampling and arrival schedule), so a sweep over several tasks or configs does not make ids differ by
    what they ignore. `task`, `eval_text` and `history_weights` enter the id only when
    set, so throughput jobs keep the ids they had before quality jobs existed."""

    model: str
    config: str
    window: int
    input_len: int
    output_len: int
    num_prompts: int
    engine: str = "hybrid"
    seed: int = 42
    dtype: str = "auto"
    num_warmup_iters: int = 3
    num_benchmark_iters: int = 10
    load_format: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None
    enforce_eager: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    trust_remote_code: bool = False
    request_rate: float = math.inf  # Poisson arrivals per second; inf = offline, every request at once
    concurrency_limit: int | None = None  # most requests in the engine at once; None = no limit
    dataset: DatasetRef | None = None  # prompts from a `hybench data` file instead of seeded random ones
    enable_prefix_caching: bool = False
    task: str = "throughput"
    eval_text: EvalTextRef | None = None  # perplexity's text; dropped for other tasks
    history_weights: HistoryWeightsRef | None = None  # calibrated history branch; dropped for other configs
    # Which run of an otherwise identical job this is (`hybench sweep --repeats`): repeats are separate jobs,
    # spread over the sweep, so that a cell's interval holds the variation between jobs, not only between
    # the iterations of one job. Left out of the id when 0, so a single run keeps its id.
    repeat: int = 0
    # Run-only fields: where and under which sweep the job runs, not what it measures.
    sweep_id: str = "adhoc"
    device: str = "auto"

    _RUN_ONLY = ("sweep_id", "device")

    def __post_init__(self) -> None:
        for name, applies in (("dataset", self.task == "throughput"), ("eval_text", self.task == "perplexity"),
                              ("history_weights", self.config == "hybrid")):
            if not applies:
                object.__setattr__(self, name, None)
        if self.task in QUALITY_TASKS:  # a quality job scores its inputs once: no generation, no schedule
            for name, value in _QUALITY_IGNORES.items():
                object.__setattr__(self, name, value)
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "perplexity" and self.eval_text is None:
            problems.append("task perplexity needs --eval-text FILE (the text it scores); recall needs none")
        if self.task in QUALITY_TASKS and self.engine != "hybrid":
            problems.append(f"task {self.task} runs on --engine hybrid only (it scores through our engine's prefill)")
        if self.task in QUALITY_TASKS and self.enable_prefix_caching:
            problems.append(f"task {self.task} scores every position: turn --enable-prefix-caching off")
        if self.config not in ATTENTION_CONFIGS:
            problems.append(f"config must be one of {', '.join(ATTENTION_CONFIGS)}, got {self.config!r}")
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.load_format not in LOAD_FORMATS:
            problems.append(f"load format must be one of {', '.join(LOAD_FORMATS)}, got {self.load_format!r}")
        for name in ("window", "input_len", "output_len", "num_prompts", "max_num_seqs",
                     "max_num_batched_tokens", "num_benchmark_iters"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_warmup_iters < 0:
            problems.append(f"num_warmup_iters must be >= 0, got {self.num_warmup_iters}")
        if self.max_model_len is not None and self.max_model_len < 1:
            problems.append(f"max_model_len must be at least 1, got {self.max_model_len}")
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if self.repeat < 0:
            problems.append(f"repeat must be >= 0, got {self.repeat}")
        for name in _INT_FIELDS:  # every result row stores them as int64
            value = getattr(self, name)
            if value is not None and value > INT64_MAX:
                problems.append(f"{name} must be at most {INT64_MAX}, got {value}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            problems.append(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_gib is not None and not 0 < self.kv_cache_gib < math.inf:  # also rejects NaN
            problems.append(f"kv_cache_gib must be a positive number, got {self.kv_cache_gib}")
        if not 0 <= self.temperature < math.inf:
            problems.append(f"temperature must be a number >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.request_rate > 0:  # also rejects NaN
            problems.append(f"request_rate must be a positive number of requests/s (inf = offline), "
                            f"got {self.request_rate}")
        elif self.num_prompts / self.request_rate > MAX_SCHEDULE_S:
            problems.append(f"request_rate {self.request_rate:g} spreads {self.num_prompts} requests over about "
                            f"{self.num_prompts / self.request_rate:.3g} s, more than the {MAX_SCHEDULE_S:g} s a "
                            f"schedule may span")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            problems.append(f"concurrency_limit (--max-concurrency) must be at least 1, got {self.concurrency_limit}")
        for folder in partition_folders(self.partition()):
            if len(folder.encode()) > NAME_MAX:
                problems.append(f"model {self.model!r} makes the results folder name {folder[:40]}... "
                                f"{len(folder.encode())} bytes long, more than the {NAME_MAX} a file system allows")
        if problems:
            raise ValueError("; ".join(problems))

    def defining_fields(self) -> dict:
        fields = dataclasses.asdict(self)
        for name in self._RUN_ONLY:
            fields.pop(name)
        if self.dataset is not None:
            fields["dataset"] = self.dataset.sha256
        if self.repeat == 0:
            fields.pop("repeat")
        for name, default in (("task", "throughput"), ("eval_text", None), ("history_weights", None)):
            if getattr(self, name) == default:
                fields.pop(name)
        if self.eval_text is not None:
            fields["eval_text"] = self.eval_text.sha256
        if self.history_weights is not None:
            fields["history_weights"] = self.history_weights.sha
        fields["code_version"] = project_version()
        return fields

    @property
    def job_id(self) -> str:
        blob = json.dumps(self.defining_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def partition(self) -> dict[str, str | int]:
        """Hive partition keys of this job's files, in path order (DESIGN.md section 6)."""
        return {"model": self.model, "config": self.config, "input_len": self.input_len}


def partition_folders(partition: dict[str, str | int]) -> list[str]:
    """The folder names of a job's partition in the store: key=value, the value percent-encoded."""
    return [f"{key}={quote(str(value), safe='')}" for key, value in partition.items()]
