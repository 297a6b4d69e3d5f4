"""Dissection during mmengine's validation pass: one forward per image feeds both the metric and
the selectivity report (used by :class:`~meter_timm.mm.hooks.SelectivityHook`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from meter_timm.data.resize import resize_depth_nearest
from meter_timm.selectivity import LayerCapture, ResponseAccumulator

__all__ = ["ValidationDissector", "default_plot_units"]


def default_plot_units(num_units: int, units: Optional[Sequence[int]] = None) -> tuple[int, ...]:
    """``units`` clipped to the layer, or the seed's units 12, 24, 40 of 48 scaled to its width."""
    if units is not None:
        return tuple(u for u in units if 0 <= u < num_units) or (0,)
    return tuple(sorted({min(num_units - 1, round(u * num_units / 48)) for u in (12, 24, 40)}))


class ValidationDissector:
    """Captures the chosen layers of ``model.backbone`` while the validation loop runs.

    Bin edges and assignments are those of the model's own selectivity strategies, as trained
    (a learned matching included), for the layers it trains, unless a layer spec asks for other
    ``num_bins``/``strategy``/``params``; other layers get the spec's strategy (default
    ``uniform``) with its ``num_bins`` (default 32, at most the units).

    Args:
        model: the unwrapped model (a ``DepthEstimator``: layers are looked up in ``model.backbone``,
            or in ``model`` itself when it has no ``backbone``).
        layers: dicts ``{"name", "num_bins", "strategy", "params"}``.
        min_depth, max_depth: depth range of the bins (metres).
    """

    def __init__(self, model: torch.nn.Module, layers: Sequence[dict], min_depth: float = 0.0,
                 max_depth: float = 10.0) -> None:
        self.model = model
        self.layers = [dict(layer) for layer in layers]
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        target = getattr(model, "backbone", model)
        self.capture = LayerCapture(target, [layer["name"] for layer in self.layers],
                                    detach_outputs=True).attach()
        self.accumulator: Optional[ResponseAccumulator] = None
        self.assignments: dict[str, torch.Tensor] = {}

    def _strategy(self, layer: dict, num_units: int):
        """The trained strategy itself (its current edges and assignment, e.g. a learned
        matching) for a layer the model trains, unless the spec asks for other bins; else a
        fresh strategy from the spec."""
        selectivity = getattr(self.model, "selectivity", None)
        trained_spec = next((dict(spec) for spec in getattr(selectivity, "layers", [])
                             if spec["name"] == layer["name"]), None)
        own = {k: v for k, v in layer.items() if k != "name" and v is not None}
        if trained_spec is not None and all(trained_spec.get(k) == v for k, v in own.items()):
            return selectivity.strategy(layer["name"], num_units)
        from meter_timm.strategies import create_strategy

        num_bins = int(own.get("num_bins", min(32, num_units)))
        return create_strategy(own.get("strategy", "uniform"), num_units, num_bins,
                               min_depth=self.min_depth, max_depth=self.max_depth,
                               **dict(own.get("params") or {}))

    @torch.no_grad()
    def observe(self, data_batch: Any, outputs: Optional[Sequence] = None) -> None:
        """Add one validation batch: activations captured by the forward, ground truth from the
        returned data samples (or the batch)."""
        samples = outputs if outputs else (data_batch or {}).get("data_samples", [])
        depths = [s.gt_depth for s in samples if "gt_depth" in s]
        features = dict(self.capture.outputs)
        self.capture.clear()
        if not depths or len(features) < len(self.layers):
            return
        size = depths[0].shape[-2:]
        depth = torch.stack([resize_depth_nearest(d.float(), size) for d in depths])
        if self.accumulator is None:
            edges = {}
            for layer in self.layers:
                strategy = self._strategy(layer, features[layer["name"]].shape[1])
                edges[layer["name"]] = strategy.edges()
                self.assignments[layer["name"]] = strategy.assignment().clone()
            self.accumulator = ResponseAccumulator(edges)
        self.accumulator.update(features, depth.to(next(iter(features.values())).device))

    def finish(self, out_dir: str | Path, plot_units: Optional[Sequence[int]] = None,
               write: bool = True, epoch: Optional[int] = None,
               metrics: Optional[dict] = None) -> dict:
        """Sum over processes, build the report, write JSON + plots (when ``write``); returns a
        summary dict: ``selectivity`` (layer -> mean index against each unit's preferred bin),
        ``selectivity_assigned``, ``fraction_argmax_is_assigned``, ``files``, ``epoch``."""
        self.capture.detach()
        if self.accumulator is None:
            return {}
        self.accumulator.all_reduce()
        meta = {"epoch": epoch}
        if metrics:
            meta["metrics"] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        report = self.accumulator.report(self.assignments, meta=meta)
        summary = report.summary()
        files: list[str] = []
        if write:
            out_dir = Path(out_dir)
            files.append(str(report.save_json(out_dir / "report.json")))
            for name, layer in report.layers.items():
                units = default_plot_units(layer["num_units"], plot_units)
                files += [str(p) for p in report.plot(out_dir, units=units)]
            files = list(dict.fromkeys(files))
        return {
            "epoch": epoch,
            "num_images": report.meta.get("num_images"),
            "selectivity": {k: v["mean_selectivity_argmax"] for k, v in summary.items()},
            "selectivity_assigned": {k: v["mean_selectivity_assigned"] for k, v in summary.items()},
            "fraction_argmax_is_assigned": {k: v["fraction_argmax_is_assigned"] for k, v in summary.items()},
            "files": files,
        }
