"""Resizing depth maps without blending invalid pixels into valid ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_depth_nearest"]


def resize_depth_nearest(depth: torch.Tensor, size) -> torch.Tensor:
    """Resize a ``(1, H, W)`` depth map with nearest-exact (no blending of invalid zeros)."""
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth[None], size=tuple(size), mode="nearest-exact")[0]
