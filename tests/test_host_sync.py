"""The training step's losses never make the host wait for the device, checked on CPU.

``tests/test_cuda.py`` checks this on a GPU with ``torch.cuda.set_sync_debug_mode("error")``; CI
has no GPU, so here every aten operation of the forward (depth losses and SelectivityLoss on 3
layers, Eq. 1 through its GPU path) and of the backward is inspected for the ones that read a
device value on the host: ``.item()``/``float()``/``bool()`` of a tensor, ``nonzero``, boolean-
mask indexing, ``unique``, ``bincount``, ``torch.equal`` and the like. (``.tolist()`` reads memory
without an operation and is only caught on a GPU.) AdamW is torch's, so its step is not inspected.
"""

from __future__ import annotations

import pytest
import torch
from _training import depth_batch, selectivity_estimator
from torch.utils._python_dispatch import TorchDispatchMode

#: aten operations whose CUDA kernels copy a result to the host (or size an output from data)
SYNCING = {
    "_local_scalar_dense",  # .item(), float(t), int(t), bool(t), `if t:`
    "is_nonzero",
    "nonzero",
    "nonzero_static",
    "masked_select",
    "masked_scatter",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "bincount",
    "equal",
    "histc",
}


class HostReads(TorchDispatchMode):
    """Records the operations that would synchronise with a GPU."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING:
            self.found.append(name)
        elif name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
                self.found.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


def test_the_detector_sees_host_reads():
    x = torch.arange(6.0)
    with HostReads() as reads:
        x.sum().item()
        _ = x[x > 2]
        if x.max() > 3:
            pass
    assert reads.found == [
        "_local_scalar_dense",
        "index with a boolean mask",
        "_local_scalar_dense",
    ]


@pytest.mark.parametrize(
    "other_bins, strategy",
    [("nonempty", "uniform"), ("all", "log"), ("nonempty", "learned:edges=uniform")],
)
def test_loss_forward_and_backward_read_nothing_on_the_host(monkeypatch, other_bins, strategy):
    """Fixed strategies, and a learned one once calibrated (frozen), as in the real-NYU study."""
    import meter_timm.selectivity.response as response

    monkeypatch.setattr(response, "LAUNCH_BOUND_DEVICES", ("cuda", "cpu"))  # the GPU path
    model = selectivity_estimator(bins=16, strategy=strategy, other_bins=other_bins)
    images, depth, samples = depth_batch(2, 64, 96)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if strategy.startswith("learned"):
        model.selectivity.calibrate(model.backbone, [(images, depth)])
        assert all(s.frozen for s in model.selectivity.strategies.values())

    for _ in range(2):  # warm-up: bin tables, edges and assignments are cached after it
        optimizer.zero_grad(set_to_none=True)
        losses = model(images, samples, mode="loss")
        sum(v for k, v in losses.items() if k.startswith("loss")).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with HostReads() as reads:
        losses = model(images, samples, mode="loss")
        total = sum(v for k, v in losses.items() if k.startswith("loss"))
        total.backward()
    assert reads.found == [], reads.found
    assert float(losses["loss_selectivity"].detach()) != 0.0
    assert all(p.grad is not None for p in model.backbone.encoder[6].parameters())
