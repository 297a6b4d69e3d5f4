"""Dissection of chosen layers over a data set: the one builder behind ``meter-timm dissect`` and
the validation dissection of :class:`~meter_timm.mm.hooks.SelectivityHook`.

:class:`Dissection` takes layer specs (``{"name", "num_bins", "strategy", "params"}`` or plain
names, checked by :func:`~meter_timm.selectivity.loss.normalize_layers`, the one list of layer
keys), builds each layer's strategy once the first batch shows its unit count, accumulates Eq. 1
(:class:`~meter_timm.selectivity.ResponseAccumulator`), and gives the
:class:`~meter_timm.selectivity.DissectionReport`.

Which bins score a layer (:func:`dissection_strategy`):

* a layer the model was trained on with a ``SelectivityLoss`` (:class:`TrainedLayer`, from the
  model's loss or from a checkpoint) is scored with its trained strategy, i.e. its edges and
  assignment as trained (a learned matching, a plugin's state), unless the spec asks for other
  bins: the spec, with the keys it leaves out taken from the trained layer's spec, must describe
  the same strategy, parameters and bin count (the trained strategy keeps its own depth range);
* any other layer gets the spec's ``strategy`` (default ``uniform``: Eq. 2) with its ``num_bins``
  (default :data:`~meter_timm.strategies.DEFAULT_NUM_BINS` = 32, at most the layer's units, as in
  training) over ``(min_depth, max_depth]``.

Nothing here imports mmengine or pluggy: the strategies are created through
:mod:`meter_timm.strategies` when the first batch arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from meter_timm.selectivity.accumulator import DissectionReport, ResponseAccumulator
from meter_timm.selectivity.capture import LayerCapture
from meter_timm.selectivity.loss import normalize_layers

__all__ = [
    "Dissection",
    "TrainedLayer",
    "ValidationDissector",
    "default_plot_units",
    "dissection_strategy",
    "trained_layers_from_checkpoint",
    "trained_layers_of",
]


@dataclass(frozen=True)
class TrainedLayer:
    """A layer trained with selectivity: the spec it was trained with, and its trained strategy
    for a given unit count (a callable, so that it is only created, or restored, when used)."""

    spec: Mapping[str, Any]
    strategy: Callable[[int], Any]


def trained_layers_of(selectivity: Any) -> dict[str, TrainedLayer]:
    """The trained layers of a model's ``SelectivityLoss`` (None: none); their strategies are the
    loss's own objects, with whatever they learned."""
    if selectivity is None:
        return {}

    def strategy(name: str) -> Callable[[int], Any]:
        return lambda num_units: selectivity.build_strategy(name, num_units)

    return {
        spec["name"]: TrainedLayer(dict(spec), strategy(spec["name"]))
        for spec in getattr(selectivity, "layers", [])
    }


def trained_layers_from_checkpoint(
    state_dict: Mapping[str, Any], source: str = "checkpoint", prefix: str = "selectivity."
) -> dict[str, TrainedLayer]:
    """The trained layers stored in a checkpoint's state dict by its ``SelectivityLoss`` (empty
    when it holds none), restored by :func:`meter_timm.strategies.trained_strategies`; ``source``
    names the file in errors (including a unit count that does not fit the model)."""
    from meter_timm.strategies import trained_strategies

    restored = trained_strategies(state_dict, prefix=prefix, source=source)
    saved = dict((state_dict.get(f"{prefix}_extra_state") or {}).get("strategies") or {})

    def strategy(name: str) -> Callable[[int], Any]:
        def fitting(num_units: int):
            trained = restored[name]
            if trained.num_units != num_units:
                raise ValueError(
                    f"{source}: layer {name!r} was trained with {trained.num_units} "
                    f"units, the model has {num_units}"
                )
            return trained

        return fitting

    return {
        name: TrainedLayer(
            {
                "name": name,
                "num_bins": s.num_bins,
                "strategy": s.name,
                "params": dict(saved.get(name, {}).get("params") or {}),
            },
            strategy(name),
        )
        for name, s in restored.items()
    }


def _description(spec: Mapping[str, Any], num_units: int) -> tuple:
    """(strategy name, its parameters, bin count) that a layer spec stands for."""
    from meter_timm.strategies import default_num_bins, parse_strategy_spec

    name, params = parse_strategy_spec(spec.get("strategy") or "uniform")
    num_bins = spec.get("num_bins")
    return (
        name,
        {**params, **dict(spec.get("params") or {})},
        int(num_bins) if num_bins is not None else default_num_bins(num_units),
    )


def dissection_strategy(
    spec: Mapping[str, Any],
    num_units: int,
    trained: TrainedLayer | None = None,
    min_depth: float = 0.0,
    max_depth: float = 10.0,
):
    """The strategy that scores one layer (see the module docstring); returns
    ``(strategy, from_training)``."""
    from meter_timm.strategies import create_layer_strategy

    if trained is not None:
        asked = {k: v for k, v in spec.items() if k != "name" and v is not None}
        if _description({**trained.spec, **asked}, num_units) == _description(
            trained.spec, num_units
        ):
            return trained.strategy(num_units), True
    return create_layer_strategy(dict(spec), num_units, min_depth, max_depth), False


class Dissection:
    """Streaming dissection of named layers: strategies, accumulation, report.

    Args:
        layers: layer specs (dicts with ``name`` and optional ``num_bins``/``strategy``/``params``,
            or plain names).
        min_depth, max_depth: depth range (metres) of the bins of layers scored with a fresh
            strategy.
        trained: layer name -> :class:`TrainedLayer` (:func:`trained_layers_of`,
            :func:`trained_layers_from_checkpoint`).
        use_abs: accumulate ``|activation|`` (the ICCV 2021 dissection) instead of the raw value.

    ``update(features, depth)`` adds one batch (``features``: layer -> (B, K, h, w); ``depth``:
    (B, 1, H, W) metres); the first call builds the strategies. ``all_reduce()`` sums over
    processes; ``report(meta)`` gives the :class:`DissectionReport`.
    """

    def __init__(
        self,
        layers: Sequence[Mapping[str, Any] | str],
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        trained: Mapping[str, TrainedLayer] | None = None,
        use_abs: bool = True,
    ) -> None:
        self.layers = normalize_layers(layers)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.trained = dict(trained or {})
        self.use_abs = bool(use_abs)
        self.strategies: dict[str, Any] = {}
        self.from_training: dict[str, bool] = {}  # layer -> scored with its trained strategy
        self.assignments: dict[str, torch.Tensor] = {}
        self.accumulator: ResponseAccumulator | None = None

    @property
    def layer_names(self) -> list[str]:
        return [layer["name"] for layer in self.layers]

    def _build(self, features: Mapping[str, torch.Tensor]) -> None:
        edges = {}
        for spec in self.layers:
            name = spec["name"]
            strategy, trained = dissection_strategy(
                spec,
                features[name].shape[1],
                self.trained.get(name),
                self.min_depth,
                self.max_depth,
            )
            self.strategies[name], self.from_training[name] = strategy, trained
            edges[name] = strategy.edges()
            self.assignments[name] = strategy.assignment().clone()
        self.accumulator = ResponseAccumulator(edges, use_abs=self.use_abs)

    @torch.no_grad()
    def update(self, features: Mapping[str, torch.Tensor], depth: torch.Tensor) -> None:
        """Add one batch; the first one builds the strategies."""
        if self.accumulator is None:
            self._build(features)
        self.accumulator.update(features, depth)

    def all_reduce(self) -> None:
        """Sum the statistics over the processes of a distributed run (no-op otherwise).

        Every process must call it. One that saw no batch (a validation set smaller than the
        processes) takes the layers' bins and assignments from the lowest process that did and
        adds zeros; when none did, it stays without statistics."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        from meter_timm.distributed import collective_device

        device = collective_device()
        world, rank = dist.get_world_size(), dist.get_rank()
        source = torch.tensor([rank if self.accumulator is not None else world], device=device)
        dist.all_reduce(source, op=dist.ReduceOp.MIN)
        source = int(source.item())
        if source == world:
            return  # no process saw a batch
        # the source's (K, N_b, trained) per layer, then its edges and assignments
        shapes = torch.zeros(len(self.layers), 3, dtype=torch.int64, device=device)
        if rank == source:
            for i, name in enumerate(self.layer_names):
                shapes[i] = torch.tensor(
                    [
                        self.assignments[name].numel(),
                        self.accumulator.bin_edges[name].numel() - 1,
                        int(self.from_training[name]),
                    ]
                )
        dist.broadcast(shapes, src=source)
        edges, assignments = {}, {}
        for (units, bins, trained), name in zip(shapes.tolist(), self.layer_names):
            if rank == source:
                edge = self.accumulator.bin_edges[name].to(device)
                assignment = self.assignments[name].long().to(device)
            else:
                edge = torch.zeros(bins + 1, dtype=torch.float64, device=device)
                assignment = torch.zeros(units, dtype=torch.int64, device=device)
            dist.broadcast(edge, src=source)
            dist.broadcast(assignment, src=source)
            edges[name], assignments[name] = edge.cpu(), assignment.cpu()
            self.from_training.setdefault(name, bool(trained))
        if self.accumulator is None:
            self.assignments = assignments
            self.accumulator = ResponseAccumulator(edges, use_abs=self.use_abs)
            for name in self.layer_names:  # this process adds nothing
                self.accumulator.sums[name] = torch.zeros(
                    assignments[name].numel(), edges[name].numel() - 1, dtype=torch.float64
                )
        self.accumulator.all_reduce()

    def report(self, meta: dict | None = None) -> DissectionReport:
        """The dissection so far, against each layer's assigned bins."""
        if self.accumulator is None:
            raise RuntimeError("Dissection.report: no batch was added")
        return self.accumulator.report(self.assignments, meta=meta)


def default_plot_units(num_units: int, units: Sequence[int] | None = None) -> tuple[int, ...]:
    """``units`` clipped to the layer, or the seed's units 12, 24, 40 of 48 scaled to its width."""
    if units is not None:
        return tuple(u for u in units if 0 <= u < num_units) or (0,)
    return tuple(sorted({min(num_units - 1, round(u * num_units / 48)) for u in (12, 24, 40)}))


class ValidationDissector:
    """A :class:`Dissection` of ``model.backbone``'s layers fed by mmengine's validation pass: one
    forward per image feeds both the metric and the dissection (used by ``SelectivityHook``).

    The model's own ``SelectivityLoss`` gives the trained layers (:func:`trained_layers_of`).

    Args:
        model: the unwrapped model (a ``DepthEstimator``: layers are looked up in
            ``model.backbone``, or in ``model`` itself when it has no ``backbone``).
        layers: layer specs ``{"name", "num_bins", "strategy", "params"}``.
        min_depth, max_depth: depth range of the bins (metres).
        dataset_size, rank, world_size: with several processes, the images a sampler adds to
            even out the processes' shares are left out: mmengine's samplers deal image i to
            process i % world_size and pad the end with repeats (as mmengine's result
            collection assumes), so this process's k-th image is a repeat when
            k * world_size + rank >= dataset_size. None: every image counts.

    Activations are averaged as the model's ``SelectivityLoss`` averages them (``use_abs``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Sequence[dict],
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        dataset_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model = model
        loss = getattr(model, "selectivity", None)
        self.dissection = Dissection(
            layers,
            min_depth,
            max_depth,
            trained=trained_layers_of(loss),
            use_abs=getattr(loss, "use_abs", True),
        )
        self.dataset_size, self.rank, self.world_size = dataset_size, rank, world_size
        self.seen = 0  # images this process was given so far, repeats included
        target = getattr(model, "backbone", model)
        self.capture = LayerCapture(
            target, self.dissection.layer_names, detach_outputs=True
        ).attach()

    @torch.no_grad()
    def observe(self, data_batch: Any, outputs: Sequence | None = None) -> None:
        """Add one validation batch: activations captured by the forward, ground truth from the
        returned data samples (or the batch)."""
        samples = outputs if outputs else (data_batch or {}).get("data_samples", [])
        features = dict(self.capture.outputs)
        self.capture.clear()
        first, self.seen = self.seen, self.seen + len(samples)
        keep = len(samples)
        if self.dataset_size is not None:  # the sampler's repeats at the end are left out
            positions = range(first, first + len(samples))
            keep = sum(k * self.world_size + self.rank < self.dataset_size for k in positions)
        depths = [s.gt_depth for s in samples[:keep] if "gt_depth" in s]
        if not depths or len(depths) < keep or len(features) < len(self.dissection.layers):
            return
        if keep < len(samples):
            features = {name: f[:keep] for name, f in features.items()}
        # ground truth of several sizes (KITTI's, unresized): one update per size, each at its
        # own resolution, so the statistics do not depend on how images were batched
        device = next(iter(features.values())).device
        by_size: dict[tuple, list[int]] = {}
        for i, d in enumerate(depths):
            by_size.setdefault(tuple(d.shape[-2:]), []).append(i)
        for indices in by_size.values():
            part = features if len(by_size) == 1 else {n: f[indices] for n, f in features.items()}
            depth = torch.stack(
                [depths[i].float().reshape(1, *depths[i].shape[-2:]) for i in indices]
            )
            self.dissection.update(part, depth.to(device))

    def finish(
        self,
        out_dir: str | Path,
        plot_units: Sequence[int] | None = None,
        write: bool = True,
        epoch: int | None = None,
        metrics: dict | None = None,
    ) -> dict:
        """Sum over processes, build the report, write JSON + plots (when ``write``); returns a
        summary dict: ``selectivity`` (layer -> mean index against each unit's preferred bin),
        ``selectivity_assigned``, ``fraction_argmax_is_assigned``, ``files``, ``epoch``."""
        self.capture.detach()
        self.dissection.all_reduce()  # every process, also one that saw no image
        if self.dissection.accumulator is None:
            return {}
        meta = {"epoch": epoch}
        if metrics:
            meta["metrics"] = {
                k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))
            }
        report = self.dissection.report(meta)
        summary = report.summary()
        files: list[str] = []
        if write:
            out_dir = Path(out_dir)
            files.append(str(report.save_json(out_dir / "report.json")))
            for name, layer in report.layers.items():
                units = default_plot_units(layer["num_units"], plot_units)
                files += [str(p) for p in report.plot(out_dir, units=units, layers=[name])]
        return {
            "epoch": epoch,
            "num_images": report.meta.get("num_images"),
            "selectivity": {k: v["mean_selectivity_argmax"] for k, v in summary.items()},
            "selectivity_assigned": {k: v["mean_selectivity_assigned"] for k, v in summary.items()},
            "fraction_argmax_is_assigned": {
                k: v["fraction_argmax_is_assigned"] for k, v in summary.items()
            },
            "files": files,
        }
