"""Model families registered with timm: ``meter_xxs``, ``meter_xs``, ``meter_s`` (tags ``.nyu``,
``.kitti``), and :class:`LightDepthDecoder`, which turns any timm backbone's features into depth."""

from meter_timm.models.decoder import LightDepthDecoder
from meter_timm.models.meter import (
    DEPTH_UNIT_SCALE,
    Meter,
    MeterPretrainedCfg,
    checkpoint_filter_fn,
)
from meter_timm.models.weights import create_model

__all__ = [
    "Meter",
    "MeterPretrainedCfg",
    "checkpoint_filter_fn",
    "LightDepthDecoder",
    "DEPTH_UNIT_SCALE",
    "create_model",
]
