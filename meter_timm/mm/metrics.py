"""``DepthMetric``: the depth metrics of :mod:`meter_timm.evaluation` in mmengine's evaluator."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from mmengine.dist import all_gather, get_world_size
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from meter_timm.evaluation import DEPTH_METRICS, crop_mask, evaluate_depth
from meter_timm.mm.registry import METRICS

__all__ = ["DepthMetric"]


@METRICS.register_module()
class DepthMetric(BaseMetric):
    """Standard monocular depth metrics, computed per image and averaged over images.

    Args:
        depth_metrics (list[str], optional): subset of ``d1 d2 d3 abs_rel sq_rel rmse rmse_log
            log10 silog``. Default: all.
        min_depth_eval (float): lower bound of valid ground truth and of the clamped prediction.
            Default 1e-3.
        max_depth_eval (float): upper bound (exclusive for ground truth). Default 10.0; 80.0 is
            the KITTI cap.
        crop_type (str, optional): ``"nyu_crop"`` (Eigen crop, default), ``"garg_crop"`` or
            ``"eigen_crop"`` (KITTI), or None.
        collect_device (str): kept for mmengine's interface; results are gathered as tensors on
            the process group's device whatever its value.
        prefix (str, optional): prefix of the metric names in logs.

    Each processed sample must carry ``pred_depth`` and ``gt_depth`` (``(1, H, W)`` metres); the
    prediction is upsampled bilinearly to the ground truth's size. The results list holds one
    entry per image; across processes the entries travel as tensors (``all_gather``), in the
    sampler's order and without its padding, so the average is exactly that of one process, and
    nothing is pickled (mmengine's own collection writes and unpickles files on CPU).
    Images without a valid pixel are left out with a warning naming them; a metric with no valid
    image (or with non-finite predictions) is None.
    """

    default_prefix = ""  # metric keys stay "rmse", "d1", ... in logs and JSON

    def __init__(
        self,
        depth_metrics: Sequence[str] | None = None,
        min_depth_eval: float = 1e-3,
        max_depth_eval: float = 10.0,
        crop_type: str | None = "nyu_crop",
        collect_device: str = "cpu",
        prefix: str | None = None,
        **kwargs,
    ):
        super().__init__(collect_device=collect_device, prefix=prefix, **kwargs)
        names = tuple(depth_metrics) if depth_metrics is not None else DEPTH_METRICS
        unknown = [n for n in names if n not in DEPTH_METRICS]
        if unknown:
            raise ValueError(
                f"DepthMetric: unknown metric(s) {unknown}; choose from {DEPTH_METRICS}"
            )
        crop_mask((2, 2), crop_type)  # validate early
        self.metric_names = names
        self.min_depth_eval = min_depth_eval
        self.max_depth_eval = max_depth_eval
        self.crop_type = crop_type

    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:
            get = (
                sample.get
                if isinstance(sample, dict)
                else (lambda k, s=sample: getattr(s, k, None))
            )
            pred, gt = get("pred_depth"), get("gt_depth")
            if pred is None or gt is None:
                raise KeyError("DepthMetric: each data sample needs 'pred_depth' and 'gt_depth'")
            errors = evaluate_depth(
                pred.detach().cpu(),
                gt.detach().cpu(),
                self.min_depth_eval,
                self.max_depth_eval,
                self.crop_type,
            )
            name = get("img_path") or get("sample_idx")
            name = str(name) if name is not None else f"image {len(self.results)}"
            if errors is None:
                self.results.append({_NO_VALID_PIXEL: name})
            else:
                self.results.append({"image": name, **{k: errors[k] for k in self.metric_names}})

    def evaluate(self, size: int) -> dict:
        """The metrics over the ``size`` images of the dataset, on every process."""
        if get_world_size() == 1:
            return super().evaluate(size)
        metrics = self.compute_metrics(self._gather_results(size))
        self.results.clear()
        if self.prefix:
            metrics = {f"{self.prefix}/{k}": v for k, v in metrics.items()}
        return metrics

    def _gather_results(self, size: int) -> list[dict]:
        """Every process's results, interleaved as mmengine's samplers deal images out (image i
        on process i % world_size) and cut to ``size`` (dropping the sampler's padding), as
        mmengine's ``collect_results`` orders them; sent as tensors, never pickled."""
        names = [r.get("image", r.get(_NO_VALID_PIXEL)) for r in self.results]
        columns = len(self.metric_names) + 1  # the metrics, then 1.0 for "no valid pixel"
        values = torch.tensor(
            [
                [r.get(k, math.nan) for k in self.metric_names] + [float(_NO_VALID_PIXEL in r)]
                for r in self.results
            ],
            dtype=torch.float64,
        ).view(-1, columns)
        encoded = torch.tensor(list("\0".join(names).encode()), dtype=torch.uint8)
        per_process = []
        for rows, text in zip(_all_gather_rows(values), _all_gather_rows(encoded)):
            image_names = bytes(text.tolist()).decode().split("\0") if len(rows) else []
            per_process.append(
                [
                    {_NO_VALID_PIXEL: name}
                    if row[-1] == 1.0
                    else {"image": name, **dict(zip(self.metric_names, row[:-1]))}
                    for name, row in zip(image_names, rows.tolist())
                ]
            )
        return [result for group in zip(*per_process) for result in group][:size]

    def compute_metrics(self, results: list) -> dict[str, float | None]:
        """Per-image averages. Images without a valid pixel are left out with a warning naming
        them; a metric that cannot be computed (no valid image, non-finite predictions) is None,
        written as ``null`` in JSON."""
        valid = [r for r in results if r is not None and _NO_VALID_PIXEL not in r]
        empty = [
            r[_NO_VALID_PIXEL] if r else "?" for r in results if r is None or _NO_VALID_PIXEL in r
        ]
        if empty:
            print_log(
                f"DepthMetric: {len(empty)} of {len(results)} image(s) have no valid ground-truth "
                f"pixel ({self.min_depth_eval} < depth < {self.max_depth_eval}, crop "
                f"{self.crop_type}) and are left out: {_name_some(empty)}",
                logger="current",
                level=logging.WARNING,
            )
        not_finite = [
            r.get("image", "?")
            for r in valid
            if not all(math.isfinite(r[k]) for k in self.metric_names)
        ]
        if not_finite:
            print_log(
                f"DepthMetric: non-finite errors (NaN/inf predictions) on {len(not_finite)} "
                f"image(s): {_name_some(not_finite)}; every metric is null (d1 would count "
                "NaN as a miss)",
                logger="current",
                level=logging.WARNING,
            )
        if not valid or not_finite:
            return OrderedDict((k, None) for k in self.metric_names)
        return OrderedDict((k, sum(r[k] for r in valid) / len(valid)) for k in self.metric_names)


_NO_VALID_PIXEL = "no_valid_pixel"  # a result entry naming an image without valid ground truth


def _all_gather_rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``tensor`` (the first dimension may differ between processes), on CPU."""
    lengths = [int(n) for n in all_gather(torch.tensor([tensor.shape[0]]))]
    padded = tensor.new_zeros((max(max(lengths), 1), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    return [rows[:n].cpu() for rows, n in zip(all_gather(padded), lengths)]


def _name_some(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
