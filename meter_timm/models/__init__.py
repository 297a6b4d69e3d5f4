"""Model families registered with timm: ``meter_xxs``, ``meter_xs``, ``meter_s`` (tags ``.nyu``, ``.kitti``)."""
from meter_timm.models._checkpoint import load_checkpoint_file
from meter_timm.models.meter import (
    DEPTH_UNIT_SCALE,
    Meter,
    MeterPretrainedCfg,
    checkpoint_filter_fn,
    load_meter_weights,
)

__all__ = ["Meter", "MeterPretrainedCfg", "checkpoint_filter_fn", "load_checkpoint_file",
           "load_meter_weights", "DEPTH_UNIT_SCALE"]
