"""Depth selectivity of units (Eq. 1-3 of the seed; You et al., ICCV 2021), pure PyTorch.

* :func:`average_response` - Eq. 1, exact and without upsampling the activations;
  :class:`BinnedDepth` shares the binned depth between layers.
* :func:`selectivity_index` - the per-unit index against assigned or argmax bins.
* :class:`SelectivityLoss` - Eq. 3 over several layers, strategies from
  :mod:`meter_timm.strategies`, usable from any training loop.
* :class:`LayerCapture` - forward hooks on named modules.
* :class:`ResponseAccumulator` / :class:`DissectionReport` - dissection over a data set (JSON, plots).
* :func:`ablate` / :func:`ablation_study` - silence units and measure the per-bin error change.
"""
from meter_timm.selectivity.ablation import AblationResult, ablate, ablation_study, per_bin_abs_rel
from meter_timm.selectivity.accumulator import DissectionReport, ResponseAccumulator, eq2_assignment
from meter_timm.selectivity.capture import (
    LayerCapture,
    LayerLayout,
    resolve_module,
    token_grid,
    unwrap_model,
)
from meter_timm.selectivity.index import argmax_bins, other_bins_mean, selectivity_index
from meter_timm.selectivity.loss import SelectivityLoss
from meter_timm.selectivity.response import (
    BinnedDepth,
    average_response,
    bilinear_source_index,
    interpolation_matrix,
    response_sums,
)

__all__ = [
    "AblationResult",
    "BinnedDepth",
    "DissectionReport",
    "LayerCapture",
    "LayerLayout",
    "ResponseAccumulator",
    "SelectivityLoss",
    "ablate",
    "ablation_study",
    "argmax_bins",
    "average_response",
    "bilinear_source_index",
    "eq2_assignment",
    "interpolation_matrix",
    "other_bins_mean",
    "per_bin_abs_rel",
    "resolve_module",
    "response_sums",
    "selectivity_index",
    "token_grid",
    "unwrap_model",
]
