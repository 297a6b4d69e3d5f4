"""Precision helpers shared by the losses, the selectivity statistics and the model wrapper."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_disabled"]


@contextlib.contextmanager
def autocast_disabled():
    """Turn autocast off (CPU, and CUDA when present) for code that must run in float32."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield
