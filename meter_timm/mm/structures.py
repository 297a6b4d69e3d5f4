"""Data sample carrying one frame's ground truth and prediction through mmengine."""

from __future__ import annotations

import torch
from mmengine.structures import BaseDataElement


class DepthDataSample(BaseDataElement):
    """Per-frame data: ``gt_depth`` / ``pred_depth`` are ``(1, H, W)`` float tensors in metres
    (0 = invalid in ``gt_depth``); metainfo holds ``img_path``, ``ori_shape``, ``img_shape``, ...
    """

    @property
    def gt_depth(self) -> torch.Tensor:
        return self._gt_depth

    @gt_depth.setter
    def gt_depth(self, value: torch.Tensor) -> None:
        self.set_field(value, "_gt_depth", dtype=torch.Tensor)

    @gt_depth.deleter
    def gt_depth(self) -> None:
        del self._gt_depth

    @property
    def pred_depth(self) -> torch.Tensor:
        return self._pred_depth

    @pred_depth.setter
    def pred_depth(self, value: torch.Tensor) -> None:
        self.set_field(value, "_pred_depth", dtype=torch.Tensor)

    @pred_depth.deleter
    def pred_depth(self) -> None:
        del self._pred_depth
