"""The losses in the ``meter_timm`` MODELS registry, under their class names.

``BalancedLoss``, ``SiLogLoss`` and ``L1DepthLoss`` (:mod:`meter_timm.losses`) for
``depth_loss=dict(type=...)``, and ``SelectivityLoss`` (:mod:`meter_timm.selectivity`) for
``selectivity=dict(type="SelectivityLoss", ...)``.
"""

from meter_timm.losses import BalancedLoss, L1DepthLoss, SiLogLoss
from meter_timm.mm.registry import MODELS
from meter_timm.selectivity.loss import SelectivityLoss

for _loss in (BalancedLoss, SiLogLoss, L1DepthLoss, SelectivityLoss):
    MODELS.register_module(module=_loss, force=True)

__all__ = ["BalancedLoss", "L1DepthLoss", "SiLogLoss", "SelectivityLoss"]
