"""Packed sequences scanned as padded groups: the same outputs and final states as one scan per
sequence, padding within its bound."""
from __future__ import annotations

import pytest
import torch

from hybench.engine.kernels.ssd_ref import ssd_scan_chunked_ref
from hybench.engine.kernels.varlen import length_groups, scan_in_groups


@pytest.mark.parametrize("lengths", [[5], [7, 7, 7], [1, 40, 3, 17, 40, 2], [64, 1, 1, 1, 1, 1, 1, 1, 1, 30]])
def test_length_groups_cover_every_sequence_within_the_padding_bound(lengths):
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        longest = max(lengths[i] for i in g)
        assert lengths[g[0]] == longest
        assert len(g) * longest <= 2.0 * sum(lengths[i] for i in g) or len(g) == 1
    assert len(length_groups([7, 7, 7])) == 1  # equal lengths: one kernel call


def test_groups_of_equal_lengths_never_split():
    assert length_groups([100] * 64) == [list(range(64))]


@pytest.mark.parametrize("lengths, in_place", [
    ([9], [True]),
    ([4, 13, 1, 13], [False]),
    ([30, 2, 2, 2, 2, 7], [False, True]),
    ([6, 6, 6], [True]),
    ([40, 40, 1, 1, 1, 1, 1, 1], [False, True]),
])
def test_padded_group_scan_equals_one_scan_per_sequence(lengths, in_place):
    """Padding steps have dt = 0, so outputs and final states are the per-sequence ones exactly
    (up to float rounding), whatever the grouping; a group of consecutive sequences of one length
    is handed to the scan as a view of the packed tokens, not a padded copy."""
    g, r, d = 2, 3, 8
    total = sum(lengths)
    gen = torch.Generator().manual_seed(total)
    x, b = torch.randn(total, g, d, generator=gen), torch.randn(total, g, d, generator=gen) * 0.3
    c = torch.randn(total, g * r, d, generator=gen) * 0.3
    dt = torch.rand(total, g, generator=gen) * 0.2
    a = -torch.rand(g, generator=gen) * 3 - 0.5
    init = torch.randn(len(lengths), g, d, d, generator=gen)
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    views = []

    def scan_batch(xs, bs, cs, dts, states):
        views.append(all(t.untyped_storage().data_ptr() == s.untyped_storage().data_ptr()
                         for t, s in zip((xs, bs, cs, dts), (x, b, c, dt))))
        outs = [ssd_scan_chunked_ref(*row, a, s) for *row, s in zip(xs, bs, cs, dts, states)]
        return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])

    y, finals = scan_in_groups(scan_batch, x, b, c, dt, cu, init)
    assert views == in_place  # one call per group, in place exactly where a group needs no padding
    for i, (start, end) in enumerate(zip(cu, cu[1:])):
        y_i, s_i = ssd_scan_chunked_ref(x[start:end], b[start:end], c[start:end], dt[start:end], a, init[i])
        torch.testing.assert_close(y[start:end], y_i, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(finals[i], s_i, rtol=1e-5, atol=1e-5)
