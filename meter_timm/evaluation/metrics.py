"""Depth metrics of the standard NYU / KITTI protocols (names as in OpenMMLab's DepthMetric), pure
torch: evaluation crops, per-frame errors, and their text / JSON forms. ``DepthMetric``
(:mod:`meter_timm.mm.metrics`) runs them inside mmengine's evaluator."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEPTH_METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
#: Eigen crop on 480x640 frames: rows 45:471, cols 41:601
NYU_CROP = (45, 471, 41, 601)
NYU_SHAPE = (480, 640)
#: KITTI crops as fractions (top, bottom, left, right) of the frame: Garg et al. 2016 and Eigen
#: et al. 2014, as used by the Eigen-split evaluations
KITTI_CROPS = {
    "garg_crop": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen_crop": (0.3324324, 0.91351351, 0.03594771, 0.96405229),
}
CROP_TYPES = (None, "nyu_crop", *KITTI_CROPS)


def _scaled_span(start: int, stop: int, size: int, full: int) -> tuple[int, int]:
    """The pixels of an axis of ``size`` whose centres, mapped to an axis of ``full`` pixels
    (half-pixel geometry), lie in ``[start, stop)``: pixel i is kept when
    ``start <= (i + 1/2) * full / size < stop``. Exact integer arithmetic (no rounding ties)."""

    def first_at_or_after(edge: int) -> int:  # ceil(edge * size / full - 1/2)
        return -(-(2 * edge * size - full) // (2 * full))

    return first_at_or_after(start), first_at_or_after(stop)


def crop_mask(shape: Sequence[int], crop_type: str | None, device=None) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of the evaluation crop. ``"nyu_crop"`` is the Eigen crop; when the
    ground truth is not 480x640 it keeps the pixels whose centres fall inside the crop scaled to
    480x640; ``"garg_crop"`` and ``"eigen_crop"`` are
    the KITTI crops (fractions of the frame, truncated to whole pixels)."""
    h, w = int(shape[0]), int(shape[1])
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    if crop_type is None:
        mask[:] = True
    elif crop_type == "nyu_crop":
        t, b, l, r = NYU_CROP
        rows, cols = _scaled_span(t, b, h, NYU_SHAPE[0]), _scaled_span(l, r, w, NYU_SHAPE[1])
        mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    elif crop_type in KITTI_CROPS:
        t, b, l, r = KITTI_CROPS[crop_type]
        mask[int(t * h) : int(b * h), int(l * w) : int(r * w)] = True
    else:
        raise ValueError(f"DepthMetric: unknown crop_type {crop_type!r} (use one of {CROP_TYPES})")
    return mask


def depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """All :data:`DEPTH_METRICS` for 1-D tensors of valid predicted and true depths (> 0)."""
    pred, gt = pred.double(), gt.double()
    thresh = torch.maximum(gt / pred, pred / gt)
    diff = pred - gt
    diff_log = torch.log(pred) - torch.log(gt)
    out = {
        "d1": (thresh < 1.25).double().mean(),
        "d2": (thresh < 1.25**2).double().mean(),
        "d3": (thresh < 1.25**3).double().mean(),
        "abs_rel": (diff.abs() / gt).mean(),
        "sq_rel": (diff.pow(2) / gt).mean(),
        "rmse": diff.pow(2).mean().sqrt(),
        "rmse_log": diff_log.pow(2).mean().sqrt(),
        "log10": (torch.log10(pred) - torch.log10(gt)).abs().mean(),
        # scale-invariant log error with variance focus 0.5 (as in OpenMMLab / BTS)
        "silog": (diff_log.pow(2).mean() - 0.5 * diff_log.mean().pow(2)).clamp_min(0).sqrt(),
    }
    return {k: float(v) for k, v in out.items()}


def evaluate_depth(
    pred: torch.Tensor,
    gt: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop_type: str | None = "nyu_crop",
) -> dict | None:
    """Metrics of one frame. ``pred`` and ``gt`` are ``(H, W)``, ``(1, H, W)`` tensors in metres;
    ``pred`` is upsampled bilinearly to ``gt``'s size if needed and clamped to
    ``[min_depth, max_depth]``; pixels count when ``min_depth < gt < max_depth`` inside the crop.
    Returns None when no pixel is valid."""
    pred = torch.as_tensor(pred).float()
    gt = torch.as_tensor(gt).float()
    pred = pred.reshape(-1, *pred.shape[-2:])[0] if pred.dim() > 2 else pred
    gt = gt.reshape(-1, *gt.shape[-2:])[0] if gt.dim() > 2 else gt
    if pred.shape != gt.shape:
        pred = F.interpolate(pred[None, None], size=gt.shape, mode="bilinear", align_corners=False)[
            0, 0
        ]
    pred = pred.clamp(min_depth, max_depth)
    valid = (gt > min_depth) & (gt < max_depth) & crop_mask(gt.shape, crop_type, gt.device)
    if not bool(valid.any()):
        return None
    return depth_errors(pred[valid], gt[valid])


def metrics_to_json(metrics: dict) -> str:
    """Metrics as strict JSON: undefined values (None, NaN, inf) become ``null``, never bare NaN."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return json.dumps(clean(dict(metrics)), indent=2, allow_nan=False) + "\n"


def format_table(metrics: dict[str, float | None]) -> str:
    """Metrics as a two-line text table (names, values with 4 decimals; "n/a" where undefined),
    columns right-aligned and at least one space apart."""
    cells = {
        n: "n/a" if v is None or not math.isfinite(v) else f"{v:.4f}" for n, v in metrics.items()
    }
    width = max(8, *(len(n) for n in cells), *(len(c) for c in cells.values())) + 1
    head = "".join(f"{n:>{width}}" for n in cells)
    vals = "".join(f"{c:>{width}}" for c in cells.values())
    return f"{head}\n{vals}"
