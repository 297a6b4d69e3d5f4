"""Depth-metric math, pure torch: the NYU / KITTI evaluation crops, the per-frame errors
(``d1``..``silog``), and metrics as a text table or strict JSON."""

from meter_timm.evaluation.metrics import (
    CROP_TYPES,
    DEPTH_METRICS,
    KITTI_CROPS,
    NYU_CROP,
    NYU_SHAPE,
    crop_mask,
    depth_errors,
    evaluate_depth,
    format_table,
    metrics_to_json,
)

__all__ = [
    "CROP_TYPES",
    "DEPTH_METRICS",
    "KITTI_CROPS",
    "NYU_CROP",
    "NYU_SHAPE",
    "crop_mask",
    "depth_errors",
    "evaluate_depth",
    "format_table",
    "metrics_to_json",
]
