"""Model families registered with timm: ``meter_xxs``, ``meter_xs``, ``meter_s`` (tags ``.nyu``, ``.kitti``)."""
from meter_timm.models.meter import (
    DEPTH_UNIT_SCALE,
    Meter,
    MeterPretrainedCfg,
    checkpoint_filter_fn,
)

__all__ = ["Meter", "MeterPretrainedCfg", "checkpoint_filter_fn", "DEPTH_UNIT_SCALE"]
