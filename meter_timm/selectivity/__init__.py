"""Depth selectivity of units (Eq. 1-3 of the seed; You et al., ICCV 2021), pure PyTorch.

* :func:`average_response` - Eq. 1, exact and without upsampling the activations;
  :class:`BinnedDepth` shares the binned depth between layers.
* :func:`eq2_assignment` - Eq. 2; :func:`uniform_edges` / :func:`log_edges` - bin edges.
* :func:`selectivity_index` - the per-unit index against assigned or argmax bins.
* :class:`SelectivityLoss` - Eq. 3 over several layers, strategies from
  :mod:`meter_timm.strategies`, usable from any training loop.
* :class:`LayerCapture` - forward hooks on named modules.
* :class:`ResponseAccumulator` / :class:`DissectionReport` - dissection over a data set (JSON,
  plots); :class:`Dissection` - the one builder of a dissection (strategies, accumulator, report)
  behind ``meter-timm dissect`` and the validation dissection of ``SelectivityHook``.
* :func:`ablate` / :func:`ablation_study` - silence units and measure the per-bin error change.

The names are imported on first use (``from meter_timm.selectivity import X`` works as usual), so
that importing :mod:`meter_timm.selectivity.bins` alone, as the strategies do, needs no torch.
Nothing here imports mmengine or pluggy; strategy names are resolved through
:mod:`meter_timm.strategies` only when a loss or a dissection is built.
"""

from __future__ import annotations

import importlib

#: public name -> submodule that defines it
_EXPORTS = {
    "AblationResult": "ablation",
    "ablate": "ablation",
    "ablation_study": "ablation",
    "per_bin_abs_rel": "ablation",
    "DissectionReport": "accumulator",
    "ResponseAccumulator": "accumulator",
    "eq2_assignment": "bins",
    "eq2_shares": "bins",
    "log_edges": "bins",
    "uniform_edges": "bins",
    "LayerCapture": "capture",
    "LayerLayout": "capture",
    "resolve_module": "capture",
    "token_grid": "capture",
    "unwrap_model": "capture",
    "Dissection": "dissection",
    "ValidationDissector": "dissection",
    "argmax_bins": "index",
    "other_bins_mean": "index",
    "selectivity_index": "index",
    "SelectivityLoss": "loss",
    "normalize_layers": "loss",
    "BinnedDepth": "response",
    "average_response": "response",
    "bilinear_source_index": "response",
    "interpolation_matrix": "response",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
