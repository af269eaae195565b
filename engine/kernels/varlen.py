"""Packed variable-length sequences scanned as padded batches.

A prefill step packs its sequences' chunks one after another; a scan kernel with a batch dimension
(mamba-ssm's `mamba_chunk_scan_combined` takes one initial state per batch row, not per packed
sequence) would otherwise run once per sequence, from Python, and a step of a hundred prompts pays a
hundred rounds of kernel launches per layer. Padding a sequence with steps of dt = 0 leaves an SSD
state unchanged (decay exp(0 * A) = 1, input 0 * x B^T = 0), so the padded scan's final state is the
sequence's own. Sequences are grouped by length so that padding never more than doubles a group's
tokens: the activation peak that sizes the KV pool was profiled on packed tokens. A group of
consecutive sequences of one length (a lone chunk, equal prompts) needs no padding and is scanned
as a view of the packed tokens.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

PAD_SLACK = 2.0  # a group's padded tokens (rows x longest) stay within this factor of its real tokens

# scan_batch(x [S, L, G, P], b [S, L, G, N], c [S, L, H, N], dt [S, L, G], initial [S, G, P, N])
#   -> (y [S, L, H, P], final states [S, G, P, N])
BatchScan = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                     tuple[torch.Tensor, torch.Tensor]]


def length_groups(lengths: list[int], slack: float = PAD_SLACK) -> list[list[int]]:
    """Indices of `lengths` in groups, longest first, each padded to its longest within `slack`."""
    groups: list[list[int]] = []
    tokens = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        group = groups[-1] if groups else None
        if group is None or (len(group) + 1) * lengths[group[0]] > slack * (tokens + lengths[i]):
            groups.append([i])
            tokens = lengths[i]
        else:
            group.append(i)
            tokens += lengths[i]
    return groups


def scan_in_groups(scan_batch: BatchScan, x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, dt: torch.Tensor,
                   cu_seqlens: list[int], initial_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSMBackend.scan contract on packed tokens (x [T, G, P], b [T, G, N], c [T, H, N], dt [T, G],
    sequence i = tokens cu_seqlens[i]:cu_seqlens[i+1]) through `scan_batch` on padded groups.
    Returns y [T, H, P] in c's dtype and the final states [S, G, P, N] in fp32."""
    total = cu_seqlens[-1]
    lengths = [end - start for start, end in zip(cu_seqlens, cu_seqlens[1:])]
    y = c.new_empty((total, c.shape[1], x.shape[2]))
    finals = torch.empty(initial_states.shape, dtype=torch.float32, device=initial_states.device)
    padded = None
    for group in length_groups(lengths):
        longest = lengths[group[0]]
        if group == list(range(group[0], group[0] + len(group))) and all(lengths[i] == longest for i in group):
            # Consecutive sequences of one length (a lone chunk, equal prompts): the packed tokens
            # already are the batch, so the scan reads them where they are, with no gather.
            rows = slice(group[0], group[0] + len(group))
            span = slice(cu_seqlens[group[0]], cu_seqlens[group[0]] + len(group) * longest)
            y_group, final = scan_batch(*(t[span].unflatten(0, (len(group), longest)) for t in (x, b, c, dt)),
                                        initial_states[rows])
            y[span] = y_group.flatten(0, 1)
        else:
            if padded is None:  # row `total` is zeros: the padding steps
                padded = [torch.cat([t, t.new_zeros((1, *t.shape[1:]))]) for t in (x, b, c, dt)]
            index = torch.full((len(group), longest), total, dtype=torch.long)
            for row, i in enumerate(group):
                index[row, : lengths[i]] = torch.arange(cu_seqlens[i], cu_seqlens[i + 1])
            index = index.to(c.device, non_blocking=True)
            rows = torch.tensor(group, device=initial_states.device)
            y_group, final = scan_batch(*(t[index] for t in padded), initial_states[rows])
            real = index < total
            y[index[real]] = y_group[real].to(y.dtype)
        finals[rows] = final.float()
    return y, finals
