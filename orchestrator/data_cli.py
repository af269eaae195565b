"""`hybench data`: write a prompts dataset (random or shared-prefix) for `bench` and `sweep --dataset`.

The original suite's hybrid_benchmark_data.py, with exact lengths: prompts are drawn as token ids
(the engine runs the ids, so every prompt has exactly its input length) and decoded to text only
when a tokenizer is at hand. Every argument is checked before anything is loaded or written.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from hybench.orchestrator.flags import list_of
from hybench.orchestrator.output_paths import check_output_file
from hybench.workers.datasets import SUFFIXES, Dataset, DatasetError, check_suffix, write_dataset
from hybench.workers.prompts import PATTERNS, PromptSet, check_shared_prefix, random_prompts, shared_prefix_prompts
from hybench.workers.vocabulary import DEFAULT_MODEL, Vocabulary, choose_vocabulary

DEFAULT_PREFIX_RATIO = 0.5


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "data", help="write a prompts dataset (random or shared-prefix token ids) for --dataset",
        description="Write prompts of exactly the requested lengths, as token ids (plus text when a tokenizer is "
        "available), to a JSON or Parquet file that `hybench bench --dataset` and `hybench sweep --dataset` run.",
    )
    parser.add_argument("--tokenizer", default=None, metavar="NAME_OR_DIR",
                        help="Hugging Face tokenizer id or local folder: ids are drawn from its vocabulary less "
                        "its special tokens, and each prompt's text is stored too. Omitted or not reachable: "
                        "ids come from the --model config's vocabulary, without text (one note line says so)")
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help="model whose config gives the vocabulary when there is no tokenizer: a preset, "
                        "local folder or Hub id (default: the --tokenizer when it names a preset, else "
                        f"{DEFAULT_MODEL})")
    parser.add_argument("--input-lengths", type=list_of(int, "--input-lengths"), default=(512, 1024, 2048, 4096),
                        metavar="N,N,...", help="comma-separated prompt lengths in tokens; every prompt has "
                        "exactly its length (default: 512,1024,2048,4096)")
    parser.add_argument("--num-prompts", type=int, default=100, metavar="N",
                        help="prompts per input length (default: 100)")
    parser.add_argument("--pattern", choices=PATTERNS, default="random",
                        help="random: independent random tokens; shared_prefix: each prompt is one of "
                        "--num-prefixes shared prefixes (prompt i takes prefix i mod K) plus a random suffix, "
                        "for prefix caching (default: random)")
    prefix = parser.add_mutually_exclusive_group()
    prefix.add_argument("--prefix-len", type=int, default=None, metavar="P",
                        help="shared_prefix: tokens in each prefix, the same at every input length")
    prefix.add_argument("--prefix-ratio", type=float, default=None, metavar="R",
                        help="shared_prefix: prefix length as a fraction of each input length, rounded to "
                        f"whole tokens (default: {DEFAULT_PREFIX_RATIO})")
    parser.add_argument("--num-prefixes", type=int, default=None, metavar="K",
                        help="shared_prefix: distinct prefixes per input length (default: 1)")
    parser.add_argument("--seed", type=int, default=42, metavar="S", help="seed of every draw: the same "
                        "arguments and seed write the same ids (default: 42)")
    parser.add_argument("--output-file", required=True, metavar="FILE",
                        help=f"where to write the dataset; its suffix ({' or '.join(SUFFIXES)}) picks the format")
    parser.set_defaults(func=run_data)


def run_data(args: argparse.Namespace) -> int:
    prefix_lens = _check(args)
    vocabulary, note = choose_vocabulary(args.tokenizer, args.model)
    if note:
        print(f"hybench data: {note}", file=sys.stderr)
    sets = tuple(_prompt_set(args, n, prefix_lens.get(n, 0), vocabulary) for n in sorted(set(args.input_lengths)))
    dataset = Dataset(args.pattern, args.seed, vocabulary.size, vocabulary.source, sets)
    write_dataset(dataset, args.output_file)
    shared = ""
    if args.pattern == "shared_prefix":
        k = _num_prefixes(args)
        shared = (f" ({k} shared prefix{'es' if k > 1 else ''} per length, of "
                  f"{','.join(str(s.prefix_len) for s in sets)} tokens)")
    print(f"wrote {args.output_file}: {args.num_prompts} {args.pattern} prompts at each of "
          f"{','.join(str(s.input_len) for s in sets)} tokens{shared}, ids from the {vocabulary.source}; "
          f"token-id sha256 {dataset.sha256[:16]}")
    return 0


def _check(args: argparse.Namespace) -> dict[int, int]:
    """Every argument problem as a DatasetError; returns the prefix length per input length."""
    check_suffix(args.output_file)
    check_output_file("--output-file", args.output_file)
    if any(n < 1 for n in args.input_lengths):
        raise DatasetError(f"--input-lengths must be at least 1, got {','.join(map(str, args.input_lengths))}")
    if args.num_prompts < 1:
        raise DatasetError(f"--num-prompts must be at least 1, got {args.num_prompts}")
    shared_options = {"--prefix-len": args.prefix_len, "--prefix-ratio": args.prefix_ratio,
                      "--num-prefixes": args.num_prefixes}
    if args.pattern != "shared_prefix":
        given = [flag for flag, value in shared_options.items() if value is not None]
        if given:
            raise DatasetError(f"{', '.join(given)} apply to --pattern shared_prefix only")
        return {}
    if args.prefix_ratio is not None and not 0 < args.prefix_ratio <= 1:
        raise DatasetError(f"--prefix-ratio must be in (0, 1], got {args.prefix_ratio}")
    ratio = DEFAULT_PREFIX_RATIO if args.prefix_ratio is None else args.prefix_ratio
    prefix_lens = {n: args.prefix_len if args.prefix_len is not None else round(ratio * n) for n in args.input_lengths}
    try:
        for n, p in sorted(prefix_lens.items()):
            check_shared_prefix(n, args.num_prompts, p, _num_prefixes(args))
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    return prefix_lens


def _num_prefixes(args: argparse.Namespace) -> int:
    """--num-prefixes, which defaults to 1 but only where it applies (shared_prefix)."""
    return 1 if args.num_prefixes is None else args.num_prefixes


def _prompt_set(args: argparse.Namespace, input_len: int, prefix_len: int, vocabulary: Vocabulary) -> PromptSet:
    if args.pattern == "random":
        made = PromptSet(input_len, random_prompts(vocabulary.pool, input_len, args.num_prompts, args.seed))
    else:
        made = shared_prefix_prompts(vocabulary.pool, input_len, args.num_prompts, prefix_len,
                                     _num_prefixes(args), args.seed)
    return dataclasses.replace(made, texts=vocabulary.decode(made.token_ids))
