"""A light decoder that turns the multi-scale features of any timm backbone into depth."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LightDepthDecoder"]


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(
            nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class LightDepthDecoder(nn.Module):
    """A small FPN-like decoder: 1x1 lateral convs to ``channels``, top-down bilinear upsampling
    and addition, one 3x3 conv per level, then a 3x3 head to one channel at stride 4.

    Args:
        in_channels (list[int]): channels of the backbone features, finest first.
        reductions (list[int]): their strides (features with stride < 4 are ignored).
        channels (int): width of the decoder. Default 64.
        init_depth (float): initial bias of the output (metres), so training starts near a
            plausible depth. Default 3.0.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        reductions: Sequence[int],
        channels: int = 64,
        init_depth: float = 3.0,
    ):
        super().__init__()
        keep = [i for i, r in enumerate(reductions) if r >= 4]
        if not keep:
            raise ValueError(
                f"LightDepthDecoder: no backbone feature at stride >= 4 ({reductions})"
            )
        self.indices = keep
        self.out_reduction = 4
        self.finest_reduction = reductions[keep[0]]
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[i], channels, 1) for i in keep)
        self.smooth = nn.ModuleList(_ConvBNReLU(channels, channels) for _ in keep)
        self.head = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, init_depth)

    def forward(self, features: Sequence[torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
        feats = [features[i] for i in self.indices]
        x = self.smooth[-1](self.lateral[-1](feats[-1]))
        for j in range(len(feats) - 2, -1, -1):
            lat = self.lateral[j](feats[j])
            x = F.interpolate(x, size=lat.shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[j](x + lat)
        out_size = (-(-int(input_size[0]) // 4), -(-int(input_size[1]) // 4))
        if tuple(x.shape[-2:]) != out_size:
            x = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
        return self.head(x)
