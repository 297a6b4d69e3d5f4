"""Causal unit ablation: do the units assigned to (or preferring) a depth bin matter for that bin?

* :func:`ablate` - a context manager that silences chosen units of a named layer (any layout:
  NCHW, NHWC, transformer tokens).
* :func:`per_bin_abs_rel` - the absolute relative error of a prediction per ground-truth depth bin.
* :func:`ablation_study` - for every bin g, silence the units assigned to g and, as a control,
  the same number of random units; report the change of every bin's error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from meter_timm.selectivity.capture import LayerLayout, resolve_module, unwrap_model

__all__ = ["AblationResult", "ablate", "ablation_study", "per_bin_abs_rel"]


class _SilenceUnits:
    """Forward hook returning the layer's output with the chosen units set to ``value``."""

    def __init__(self, layer: str, layout: LayerLayout, units: torch.Tensor, value: float) -> None:
        self.layer, self.layout, self.units, self.value = layer, layout, units, value
        self.input_size = None

    def record_input(self, module: nn.Module, args) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            self.input_size = tuple(args[0].shape[-2:])

    def __call__(self, module: nn.Module, args, output):
        if isinstance(output, (tuple, list)):
            index = next((i for i, o in enumerate(output) if isinstance(o, torch.Tensor)), None)
            if index is None:
                raise TypeError(f"layer {self.layer!r} returned no tensor to ablate")
            items = list(output)
            items[index] = self(module, args, items[index])
            return type(output)(items) if isinstance(output, tuple) else items
        axis = self.layout.unit_axis(output, self.input_size)
        num_units = output.shape[axis]
        if self.units.numel() and int(self.units.max()) >= num_units:
            raise ValueError(
                f"ablate: layer {self.layer!r} has {num_units} units; unit "
                f"{int(self.units.max())} is out of range"
            )
        if self.units.numel() == 0:
            return output
        silenced = output.clone()
        index = [slice(None)] * output.dim()
        index[axis] = self.units.to(output.device)
        silenced[tuple(index)] = self.value
        return silenced


@contextmanager
def ablate(model: nn.Module, layer: str, units: Iterable[int] | torch.Tensor, value: float = 0.0):
    """Silence ``units`` of ``layer`` (a module name in ``model``) for the forward passes run
    inside the block: their activations are replaced by ``value`` (0), so every later layer sees
    them as dead. The units are those of :class:`~meter_timm.selectivity.LayerCapture`: channels
    of NCHW outputs, the last axis of NHWC and token outputs. The hooks are removed on exit::

        with ablate(model, "encoder.6", [3, 17]):
            pred = model(images)
    """
    module = resolve_module(model, layer)  # unknown names fail here, listing close ones
    units = torch.as_tensor(list(units) if not torch.is_tensor(units) else units, dtype=torch.long)
    if units.dim() != 1 or (units.numel() and int(units.min()) < 0):
        raise ValueError(
            f"ablate: layer {layer!r}: units must be non-negative indices, got {units.tolist()}"
        )
    hook = _SilenceUnits(layer, LayerLayout(model, layer), units.unique(), float(value))
    handles = [
        unwrap_model(model).register_forward_pre_hook(hook.record_input),
        module.register_forward_hook(hook),
    ]
    try:
        yield hook
    finally:
        for handle in handles:
            handle.remove()


def per_bin_abs_rel(
    pred: torch.Tensor,
    depth: torch.Tensor,
    edges: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of ``|pred - gt| / gt`` and pixel counts per depth bin (float64, (N_b,) each).

    ``pred`` (B, 1, h, w) is upsampled bilinearly to ``depth`` (B, 1, H, W) and clamped to
    ``[min_depth, max_depth]`` (default: the last edge), as in evaluation; a pixel counts in bin
    d when ``edges[d] < gt <= edges[d + 1]`` and ``gt > min_depth``."""
    edges = edges.to(torch.float64).cpu()
    if pred.shape[-2:] != depth.shape[-2:]:
        pred = F.interpolate(
            pred.float(), size=depth.shape[-2:], mode="bilinear", align_corners=False
        )
    top = float(edges[-1]) if max_depth is None else float(max_depth)
    pred = pred.double().clamp(min_depth, top).reshape(-1).cpu()
    gt = depth.double().reshape(-1).cpu()
    valid = torch.isfinite(gt) & (gt > min_depth) & (gt > edges[0]) & (gt <= edges[-1])
    pred, gt = pred[valid], gt[valid]
    bins = (torch.bucketize(gt, edges, right=False) - 1).clamp(0, edges.numel() - 2)
    num_bins = edges.numel() - 1
    sums = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, (pred - gt).abs() / gt)
    counts = torch.bincount(bins, minlength=num_bins).to(torch.float64)
    return sums, counts


@dataclass
class AblationResult:
    """Per-bin error changes of an ablation study (all lists, JSON-ready).

    ``baseline[d]``: abs_rel in bin d without ablation. ``assigned[g][d]``: change of bin d's
    abs_rel when the units of group g (those assigned to bin g) are silenced; ``random[g][d]``:
    the same, averaged over draws of as many random units. ``None`` where a bin has no pixel or a
    group has no unit."""

    layer: str
    edges: list[float]
    assignment: list[int]
    group_sizes: list[int]
    pixel_counts: list[int]
    baseline: list[float | None]
    assigned: list[list[float | None] | None]
    random: list[list[float | None] | None]
    random_draws: int
    meta: dict[str, Any] = field(default_factory=dict)

    def _valid_groups(self) -> list[int]:
        return [g for g, row in enumerate(self.assigned) if row is not None and row[g] is not None]

    def summary(self) -> dict[str, Any]:
        """The own-bin figures.

        * ``own_bin_excess``: mean error increase in the groups' own bins minus the mean increase
          in their other bins (> 0: silencing a bin's units hurts that bin more than the others);
        * ``own_bin_ratio``: the same as a ratio, only when both means are increases (> 0);
          a ratio of a decrease, or over one, does not read as "how much more";
        * ``own_bin_hit_rate``: share of groups whose own bin gets worse, and strictly the most
          (chance: 1 / number of bins with pixels);
        * ``own_bin_increase`` and ``own_bin_increase_random``: mean own-bin increase for the
          assigned units and for as many random units."""
        groups = self._valid_groups()
        if not groups:
            return dict(
                groups=0,
                own_bin_excess=None,
                own_bin_ratio=None,
                own_bin_hit_rate=None,
                own_bin_increase=None,
                own_bin_increase_random=None,
            )
        own, other, hits, own_random = [], [], 0, []
        for g in groups:
            row = self.assigned[g]
            others = [v for d, v in enumerate(row) if d != g and v is not None]
            own.append(row[g])
            other.extend(others)
            # worse, and strictly the largest change (no ties)
            hits += int(row[g] > 0 and all(row[g] > v for v in others))
            if self.random[g] is not None and self.random[g][g] is not None:
                own_random.append(self.random[g][g])
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        own_mean, other_mean = mean(own), mean(other)
        excess = None if other_mean is None else own_mean - other_mean
        ratio = (
            own_mean / other_mean
            if other_mean is not None and min(own_mean, other_mean) > 0
            else None
        )
        return dict(
            groups=len(groups),
            own_bin_excess=excess,
            own_bin_ratio=ratio,
            own_bin_hit_rate=hits / len(groups),
            chance_hit_rate=1.0 / sum(1 for c in self.pixel_counts if c > 0),
            own_bin_increase=own_mean,
            other_bins_increase=other_mean,
            own_bin_increase_random=mean(own_random),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(
            layer=self.layer,
            metric="abs_rel per depth bin",
            edges=self.edges,
            assignment=self.assignment,
            group_sizes=self.group_sizes,
            pixel_counts=self.pixel_counts,
            baseline=self.baseline,
            delta_assigned=self.assigned,
            delta_random=self.random,
            random_draws=self.random_draws,
            summary=self.summary(),
            meta=self.meta,
        )

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def plot_heatmap(self, path: str | Path) -> Path:
        """Two panels, ablated group (rows) x depth bin (columns): the abs_rel change for the
        assigned units, and its excess over as many random units."""
        import numpy as np

        from meter_timm.selectivity.plots import _pyplot, _save

        def matrix(rows):
            n = len(self.edges) - 1
            out = np.full((n, n), np.nan)
            for g, row in enumerate(rows):
                if row is not None:
                    out[g] = [np.nan if v is None else v for v in row]
            return out

        assigned, random = matrix(self.assigned), matrix(self.random)
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
        for ax, data, title in (
            (axes[0], assigned, "silenced: assigned units"),
            (axes[1], assigned - random, "assigned minus random units"),
        ):
            limit = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
            image = ax.imshow(
                data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", origin="lower"
            )
            if len(self.edges) <= 17:  # label the bins with their depth range
                labels = [f"{a:.3g}-{b:.3g}" for a, b in zip(self.edges[:-1], self.edges[1:])]
                ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
                ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_xlabel("depth bin in m (error measured)")
            ax.set_ylabel("ablated group (its units' bin)")
            ax.set_title(f"{self.layer}: {title}", fontsize=9)
            fig.colorbar(image, ax=ax, label="change of abs_rel")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _save(fig, path)

    def format_summary(self) -> str:
        s = self.summary()
        if not s["groups"]:
            return f"{self.layer}: no group with both units and pixels"
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        return (
            f"{self.layer}: {s['groups']} groups; own-bin abs_rel increase "
            f"{fmt(s['own_bin_increase'])} (random units {fmt(s['own_bin_increase_random'])}, "
            f"other bins {fmt(s['other_bins_increase'])}); own-bin excess "
            f"{fmt(s['own_bin_excess'])}, ratio {fmt(s['own_bin_ratio'])}; own bin hurt most in "
            f"{s['own_bin_hit_rate']:.2f} of groups (chance {s['chance_hit_rate']:.2f})"
        )


@torch.no_grad()
def ablation_study(
    predict: Callable[[torch.Tensor], torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    model: nn.Module,
    layer: str,
    assignment: torch.Tensor,
    edges: torch.Tensor,
    random_draws: int = 3,
    seed: int = 0,
    min_depth: float = 1e-3,
    progress: Callable[[int], None] | None = None,
    meta: dict | None = None,
) -> AblationResult:
    """Silence, for every depth bin g, the units that ``assignment`` gives to g, and as many
    random units (``random_draws`` draws over all units), and measure the change of each bin's
    abs_rel over ``batches``.

    Args:
        predict: inputs ``(B, 3, H, W)`` -> depth ``(B, 1, h, w)`` in metres.
        batches: ``(inputs, depth (B, 1, H, W) metres, 0 = invalid)`` pairs (reused per group).
        model: the module in which ``layer`` is named (run by ``predict``).
        assignment: ``(K,)`` bin of each unit of ``layer``.
        edges: ``(N_b + 1,)`` bin edges in metres.
        progress: called with the number of passes done after each pass over ``batches``.
    """
    assignment = torch.as_tensor(assignment, dtype=torch.long).cpu()
    edges = torch.as_tensor(edges, dtype=torch.float64).cpu()
    num_bins, num_units = edges.numel() - 1, assignment.numel()
    if assignment.numel() and (int(assignment.min()) < 0 or int(assignment.max()) >= num_bins):
        raise ValueError(f"ablation of layer {layer!r}: assignment outside [0, {num_bins})")

    def errors(units) -> tuple[torch.Tensor, torch.Tensor]:
        sums = torch.zeros(num_bins, dtype=torch.float64)
        counts = torch.zeros(num_bins, dtype=torch.float64)
        with ablate(model, layer, units):
            for inputs, depth in batches:
                s, c = per_bin_abs_rel(predict(inputs), depth, edges, min_depth)
                sums += s
                counts += c
        if progress is not None:
            progress(1)
        return sums, counts

    def as_list(values: torch.Tensor, counts: torch.Tensor) -> list[float | None]:
        return [float(v) if c > 0 else None for v, c in zip(values, counts)]

    base_sums, counts = errors([])
    base = base_sums / counts.clamp_min(1)
    generator = torch.Generator().manual_seed(seed)
    assigned, random = [], []
    group_sizes = torch.bincount(assignment, minlength=num_bins).tolist()
    for g in range(num_bins):
        units = torch.nonzero(assignment == g).flatten()
        if units.numel() == 0:
            assigned.append(None)
            random.append(None)
            continue
        sums, _ = errors(units)
        assigned.append(as_list(sums / counts.clamp_min(1) - base, counts))
        draws = torch.zeros(num_bins, dtype=torch.float64)
        for _ in range(random_draws):
            pick = torch.randperm(num_units, generator=generator)[: units.numel()]
            sums, _ = errors(pick)
            draws += sums / counts.clamp_min(1) - base
        random.append(as_list(draws / max(random_draws, 1), counts) if random_draws else None)
    return AblationResult(
        layer=layer,
        edges=edges.tolist(),
        assignment=assignment.tolist(),
        group_sizes=group_sizes,
        pixel_counts=[int(c) for c in counts],
        baseline=as_list(base, counts),
        assigned=assigned,
        random=random,
        random_draws=int(random_draws),
        meta=dict(meta or {}),
    )
