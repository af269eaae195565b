"""The chunked scan and the one-step update agree with the sequential oracle over shapes and dtypes."""
from __future__ import annotations

import pytest
import torch

from hybench.engine.kernels.ssd_ref import (
    ssd_readout_ref,
    ssd_scan_chunked_ref,
    ssd_scan_sequential_ref,
    ssd_state_update_ref,
)

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def _inputs(t, g, r, d, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(t, g, d, generator=gen)
    b = torch.randn(t, g, d, generator=gen)
    c = torch.randn(t, g * r, d, generator=gen)
    dt = torch.rand(t, g, generator=gen) * 0.5
    a = -torch.rand(g, generator=gen) * 4 - 0.1
    s0 = torch.randn(g, d, d, generator=gen)
    return [v.to(dtype) if v.dim() == 3 else v for v in (x, b, c)] + [dt, a, s0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("t,g,r,d,chunk", [(1, 1, 1, 4, 64), (37, 2, 3, 8, 8), (130, 1, 4, 16, 64), (64, 3, 1, 8, 64)])
def test_chunked_scan_matches_sequential(dtype, t, g, r, d, chunk):
    x, b, c, dt, a, s0 = _inputs(t, g, r, d, dtype)
    y_ref, s_ref = ssd_scan_sequential_ref(x.double(), b.double(), c.double(), dt.double(), a.double(), s0.double())
    y, s = ssd_scan_chunked_ref(x, b, c, dt, a, s0, chunk=chunk)
    tol = TOLERANCE[dtype]
    scale = y_ref.abs().max()
    assert y.dtype == dtype
    assert (y.double() - y_ref).abs().max() <= tol * scale
    assert (s.double() - s_ref).abs().max() <= tol * s_ref.abs().max()


def test_zero_dt_tokens_leave_the_state_unchanged():
    """dt = 0 is how 'no token left the window yet' is encoded: it must be an exact no-op."""
    x, b, c, dt, a, s0 = _inputs(10, 2, 2, 4, torch.float32)
    _, s = ssd_scan_chunked_ref(x, b, c, torch.zeros_like(dt), a, s0, chunk=4)
    torch.testing.assert_close(s, s0, rtol=0, atol=0)


@pytest.mark.parametrize("g,r,d", [(1, 1, 4), (2, 4, 8)])
def test_state_update_and_readout_match_sequential(g, r, d):
    t = 6
    x, b, c, dt, a, s0 = _inputs(t, g, r, d, torch.float32, seed=1)
    y_ref, s_ref = ssd_scan_sequential_ref(x, b, c, dt, a, s0)
    state = s0[None]
    for i in range(t):
        state = ssd_state_update_ref(state, x[i][None], b[i][None], dt[i][None], a)
        torch.testing.assert_close(ssd_readout_ref(state, c[i][None])[0], y_ref[i], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[0], s_ref, rtol=1e-5, atol=1e-5)
