"""GPU checks (marker ``cuda``; skipped without CUDA; ``benchmarks/gpu_check.py`` runs them):

* Eq. 1 on the GPU equals the CPU computation (float32 and float64, channels-last activations);
* a METER xxs training step with SelectivityLoss on 3 layers (forward, losses, backward, AdamW)
  makes no host synchronisation (``torch.cuda.set_sync_debug_mode("error")``), in float32 and
  under bfloat16 autocast;
* ``MixedPrecisionOptimWrapper`` trains on the GPU in float16 and bfloat16 with finite losses.
"""

from __future__ import annotations

import math

import pytest
import torch
from _training import depth_batch, selectivity_estimator

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _step(model, optimizer, images, samples, autocast_dtype=None):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(
        "cuda", dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    ):
        losses = model(images, samples, mode="loss")
    total = sum(v for k, v in losses.items() if k.startswith("loss"))
    total.backward()
    optimizer.step()
    return total.detach()


def test_eq1_on_gpu_equals_cpu():
    from meter_timm.selectivity import average_response

    gen = torch.Generator().manual_seed(0)
    act = torch.randn(4, 16, 12, 16, generator=gen, dtype=torch.float64)
    depth = torch.rand(4, 1, 96, 128, generator=gen, dtype=torch.float64) * 11 - 0.5
    depth[0, 0, 0, :3] = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)
    alpha, beta, n = 0.75, 10.0, 32
    edges = torch.tensor(
        [0.0, alpha]
        + [(beta + 1 - alpha) ** (i / (n - 1)) - (1 - alpha) for i in range(1, n - 1)]
        + [beta],
        dtype=torch.float64,
    )
    ref, ref_counts = average_response(act, depth, edges)
    got, counts = average_response(act.cuda(), depth.cuda(), edges)
    torch.testing.assert_close(counts.cpu(), ref_counts, rtol=0, atol=0)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-10, atol=1e-12)
    ref32, _ = average_response(act.float(), depth.float(), edges)
    got32, _ = average_response(
        act.float().cuda().contiguous(memory_format=torch.channels_last),
        depth.float().cuda(),
        edges,
    )
    torch.testing.assert_close(got32.cpu(), ref32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
def test_training_step_makes_no_host_sync(autocast_dtype):
    if autocast_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16 on this GPU")
    model = selectivity_estimator().to("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, _, samples = depth_batch(4, 128, 192, "cuda")
    for _ in range(2):  # warm-up: caches of bin tables and assignments, cuDNN, allocator
        _step(model, optimizer, images, samples, autocast_dtype)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [_step(model, optimizer, images, samples, autocast_dtype) for _ in range(2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(bool(torch.isfinite(v)) for v in losses)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_wrapper_trains_on_gpu(dtype):
    from meter_timm.mm.amp import MixedPrecisionOptimWrapper

    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16 on this GPU")
    model = selectivity_estimator(bins=16).to("cuda")
    wrapper = MixedPrecisionOptimWrapper(
        dtype=dtype, optimizer=torch.optim.AdamW(model.parameters(), lr=2e-3)
    )
    assert wrapper.device_type == "cuda" and (wrapper.loss_scaler is not None) == (
        dtype == "float16"
    )
    images, _, samples = depth_batch(8, 64, 96, "cuda", seed=1)
    before = [p.detach().clone() for p in model.parameters()]
    totals = []
    for _ in range(12):
        with wrapper.optim_context(model):
            losses = model(images, samples, mode="loss")
        assert all(v.dtype == torch.float32 for k, v in losses.items() if k.startswith("loss"))
        total = sum(v for k, v in losses.items() if k.startswith("loss"))
        wrapper.update_params(total)
        totals.append(float(total.detach()))
    assert all(math.isfinite(t) for t in totals), totals
    assert totals[-1] < totals[0], totals
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
