"""Streaming accumulation of Eq. 1 over a data set, across processes, and the dissection report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from meter_timm.selectivity.bins import eq2_assignment  # the one implementation of Eq. 2
from meter_timm.selectivity.capture import check_feature_map
from meter_timm.selectivity.index import argmax_bins, selectivity_index
from meter_timm.selectivity.response import BinnedDepth, _check_edges

__all__ = ["ResponseAccumulator", "DissectionReport", "eq2_assignment"]


class ResponseAccumulator:
    """Float64 running sums of Eq. 1's numerators and pixel counts, per layer.

    Args:
        bin_edges: one (N_b + 1,) edge tensor for every layer, or a mapping layer -> edges.
        layers: layer names (needed when ``bin_edges`` is a single tensor).
        use_abs: accumulate ``|activation|`` (the ICCV 2021 dissection) instead of the raw value.

    ``update(features, depth)`` adds one batch; ``all_reduce()`` sums over torch.distributed
    processes; ``responses(name)`` gives (K, N_b) averages; ``report()`` the dissection.
    """

    def __init__(
        self,
        bin_edges: torch.Tensor | Mapping[str, torch.Tensor],
        layers: list[str] | None = None,
        use_abs: bool = True,
    ) -> None:
        if isinstance(bin_edges, Mapping):
            self.bin_edges = {name: _check_edges(e).double().cpu() for name, e in bin_edges.items()}
        else:
            if not layers:
                raise ValueError(
                    "ResponseAccumulator: give layers when bin_edges is a single tensor"
                )
            edges = _check_edges(bin_edges).double().cpu()
            self.bin_edges = {name: edges for name in layers}
        self.layers = list(self.bin_edges)
        self.use_abs = use_abs
        self.sums: dict[str, torch.Tensor] = {}  # name -> (K, N_b) float64
        self.counts = {
            name: torch.zeros(e.numel() - 1, dtype=torch.float64)
            for name, e in self.bin_edges.items()
        }
        self.num_images = 0

    @torch.no_grad()
    def update(self, features: Mapping[str, torch.Tensor], depth: torch.Tensor) -> None:
        """Add one batch: ``features`` maps each layer to (B, K, h, w); depth (B, 1, H, W)
        metres."""
        binned: dict[tuple, BinnedDepth] = {}
        for name in self.layers:
            if name not in features:
                raise KeyError(
                    f"ResponseAccumulator: no activation for layer {name!r} "
                    f"(got {sorted(features)})"
                )
            act = features[name].detach()
            check_feature_map(name, act, depth.shape[0])
            if self.use_abs:
                act = act.abs()
            key = tuple(self.bin_edges[name].tolist())
            if key not in binned:
                binned[key] = BinnedDepth(depth.to(act.device), self.bin_edges[name])
            sums = binned[key].response_sums(act).double().cpu()
            if name not in self.sums:
                self.sums[name] = torch.zeros_like(sums)
            elif self.sums[name].shape != sums.shape:
                raise ValueError(
                    f"layer {name!r}: {sums.shape[0]} units now, {self.sums[name].shape[0]} before"
                )
            self.sums[name] += sums
            self.counts[name] += binned[key].counts.cpu()
        self.num_images += int(depth.shape[0])

    def all_reduce(self, group=None) -> None:
        """Sum the statistics of all processes of ``group`` (no-op when not distributed).

        Every process must have seen at least one batch (the unit counts come from the data).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        from meter_timm.distributed import collective_device

        device = collective_device(group)
        for name in self.layers:
            if name not in self.sums:
                raise RuntimeError(
                    f"ResponseAccumulator.all_reduce: layer {name!r} saw no batch on this process"
                )
            flat = torch.cat([self.sums[name].reshape(-1), self.counts[name]]).to(device)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
            flat = flat.cpu()
            k = self.sums[name].numel()
            self.sums[name] = flat[:k].view_as(self.sums[name]).clone()
            self.counts[name] = flat[k:].clone()
        images = torch.tensor([float(self.num_images)], dtype=torch.float64, device=device)
        dist.all_reduce(images, op=dist.ReduceOp.SUM, group=group)
        self.num_images = int(images.item())

    def responses(self, name: str) -> torch.Tensor:
        """(K, N_b) float64 average responses of layer ``name`` so far (0 in empty bins)."""
        return self.sums[name] / self.counts[name].clamp(min=1.0)

    def report(
        self,
        assignments: Mapping[str, torch.Tensor] | None = None,
        eps: float = 1e-8,
        meta: dict[str, Any] | None = None,
    ) -> DissectionReport:
        """Per layer and unit: responses per bin, assigned and argmax bin, both selectivities.

        ``assignments`` maps layer -> (K,) assigned bins; missing layers use Eq. 2.
        """
        layers = {}
        for name in self.layers:
            if name not in self.sums:
                raise RuntimeError(f"ResponseAccumulator.report: layer {name!r} saw no batch")
            resp, counts = self.responses(name), self.counts[name]
            num_units, num_bins = resp.shape
            assigned = (assignments or {}).get(name)
            assigned = (
                eq2_assignment(num_units, num_bins)
                if assigned is None
                else torch.as_tensor(assigned).long().cpu()
            )
            if assigned.shape != (num_units,) or bool(
                ((assigned < 0) | (assigned >= num_bins)).any()
            ):
                raise ValueError(
                    f"layer {name!r}: the assignment must give each of the {num_units} "
                    f"units a bin in [0, {num_bins}), got shape {tuple(assigned.shape)}"
                )
            best = argmax_bins(resp, counts)
            # a unit whose assigned bin never occurred has no defined index: null in the JSON
            assigned_empty = (counts[assigned] <= 0).tolist()

            def against_assigned(other_bins: str) -> list:
                values = selectivity_index(resp, assigned, eps, counts, other_bins).tolist()
                return [None if empty else v for v, empty in zip(values, assigned_empty)]

            layers[name] = {
                "num_units": num_units,
                "num_bins": num_bins,
                "bin_edges": self.bin_edges[name].tolist(),
                "counts": counts.tolist(),
                "responses": resp.tolist(),
                "assigned_bin": assigned.tolist(),
                "argmax_bin": best.tolist(),
                # R_other over the non-empty other bins (default) and over all N_b - 1 (ICCV 2021)
                "selectivity_assigned": against_assigned("nonempty"),
                "selectivity_argmax": selectivity_index(resp, best, eps, counts).tolist(),
                "selectivity_assigned_all_bins": against_assigned("all"),
                "selectivity_argmax_all_bins": selectivity_index(
                    resp, best, eps, counts, "all"
                ).tolist(),
            }
        info = {"num_images": self.num_images, "use_abs": self.use_abs}
        info.update(meta or {})
        return DissectionReport(layers, info)


def _mean_defined(values: list) -> float | None:
    """Mean over the defined (non-None) values; None when there is none (JSON null, not NaN)."""
    defined = [v for v in values if v is not None]
    return float(sum(defined) / len(defined)) if defined else None


class DissectionReport:
    """Result of a dissection: ``layers[name]`` holds lists (JSON-ready) per unit and bin.

    Keys per layer: num_units, num_bins, bin_edges, counts, responses (K x N_b), assigned_bin,
    argmax_bin, selectivity_assigned (None where the assigned bin had no pixel), selectivity_argmax,
    and the same two with R_other over all N_b - 1 other bins (``*_all_bins``, the ICCV 2021 code);
    ``summary()`` adds means (over units with a defined index).
    """

    def __init__(
        self, layers: dict[str, dict[str, Any]], meta: dict[str, Any] | None = None
    ) -> None:
        self.layers = layers
        self.meta = dict(meta or {})

    def summary(self) -> dict[str, dict[str, float]]:
        """Per layer: mean/median selectivity (argmax and assigned bins) and how many units'
        preferred bin is their assigned one."""
        out = {}
        for name, layer in self.layers.items():
            sel_max = torch.tensor(layer["selectivity_argmax"], dtype=torch.float64)
            agree = torch.tensor(layer["argmax_bin"]) == torch.tensor(layer["assigned_bin"])
            out[name] = {
                "units": layer["num_units"],
                "bins": layer["num_bins"],
                "mean_selectivity_argmax": float(sel_max.mean()),
                # the mean of the two middle values for an even count (torch.median: the lower)
                "median_selectivity_argmax": float(sel_max.quantile(0.5)),
                "mean_selectivity_assigned": _mean_defined(layer["selectivity_assigned"]),
                "fraction_argmax_is_assigned": float(agree.double().mean()),
            }
            if "selectivity_assigned_all_bins" in layer:  # reports written before both definitions
                out[name]["mean_selectivity_assigned_all_bins"] = _mean_defined(
                    layer["selectivity_assigned_all_bins"]
                )
                out[name]["mean_selectivity_argmax_all_bins"] = _mean_defined(
                    layer["selectivity_argmax_all_bins"]
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "summary": self.summary(), "layers": self.layers}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> DissectionReport:
        data = json.loads(Path(path).read_text())
        return cls(data["layers"], data.get("meta"))

    def format_summary(self) -> str:
        """A small text table, one line per layer ("-" where an index is undefined)."""

        def cell(value, width: int) -> str:
            return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"

        lines = [
            f"{'layer':<24}{'units':>6}{'bins':>6}{'SI argmax':>11}{'SI assigned':>13}"
            f"{'(all bins)':>12}{'argmax=assigned':>17}"
        ]
        for name, s in self.summary().items():
            lines.append(
                f"{name:<24}{s['units']:>6}{s['bins']:>6}{cell(s['mean_selectivity_argmax'], 11)}"
                f"{cell(s['mean_selectivity_assigned'], 13)}"
                f"{cell(s.get('mean_selectivity_assigned_all_bins'), 12)}"
                f"{s['fraction_argmax_is_assigned']:>17.2%}"
            )
        return "\n".join(lines)

    def plot(
        self,
        out_dir: str | Path,
        units: tuple[int, ...] = (12, 24, 40),
        prefix: str = "",
        layers: list[str] | None = None,
    ) -> list[Path]:
        """Write the bar charts, selectivity histograms and heatmaps (see :mod:`.plots`) of
        ``layers`` (default all)."""
        from meter_timm.selectivity.plots import plot_report

        return plot_report(self, out_dir, units=units, prefix=prefix, layers=layers)
