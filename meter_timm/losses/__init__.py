"""Depth losses, pure PyTorch: METER's balanced loss (with SSIM and Sobel), SiLog and L1.

Each is called as ``loss(pred, target, valid) -> {"loss_*": tensor}`` on ``(B, 1, h, w)`` metres;
configs name them by class (``depth_loss=dict(type="BalancedLoss")``, registered by
:mod:`meter_timm.mm.losses`).
"""

from meter_timm.losses.depth import (
    BalancedLoss,
    L1DepthLoss,
    SiLogLoss,
    float32_loss,
    sobel,
    ssim_map,
)

__all__ = ["BalancedLoss", "L1DepthLoss", "SiLogLoss", "float32_loss", "sobel", "ssim_map"]
