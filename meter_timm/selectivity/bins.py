"""Depth bins: Eq. 2 of the seed (which bin each unit is assigned) and the uniform and log bin
edges. The ``uniform`` and ``log`` strategies (:mod:`meter_timm.strategies.fixed`) are these.

torch is imported on first use, so that ``meter-timm strategies`` lists strategies without it.
"""

from __future__ import annotations

from meter_timm._lazy import lazy_module

torch = lazy_module("torch")

__all__ = ["eq2_assignment", "eq2_shares", "uniform_edges", "log_edges"]


def eq2_assignment(num_units: int, num_bins: int) -> torch.Tensor:
    """Eq. 2 of the seed, d_k = floor(k / (K / N_b)), computed exactly as floor(k * N_b / K).

    Consecutive units share a bin; bin d receives ``#{k : floor(k N_b / K) = d}`` units (the
    "share" of the bin; shares differ by at most one). Integer arithmetic avoids the off-by-one
    that float division (e.g. 48 / 32 = 1.5 then k / 1.5) can give on some k.
    """
    return torch.arange(num_units, dtype=torch.int64) * num_bins // num_units


def eq2_shares(num_units: int, num_bins: int) -> torch.Tensor:
    """Units per bin under Eq. 2, shape (num_bins,), summing to num_units."""
    return torch.bincount(eq2_assignment(num_units, num_bins), minlength=num_bins)


def uniform_edges(num_bins: int, min_depth: float, max_depth: float) -> torch.Tensor:
    """``num_bins + 1`` equally spaced edges from min_depth to max_depth (float64, exact ends)."""
    steps = torch.arange(num_bins + 1, dtype=torch.float64) / num_bins
    edges = min_depth + (max_depth - min_depth) * steps
    edges[0], edges[-1] = min_depth, max_depth
    return edges


def log_edges(num_bins: int, min_depth: float, alpha: float, beta: float) -> torch.Tensor:
    """Spacing-increasing edges of You et al. (ICCV 2021), float64, ``num_bins + 1`` values.

    ``min_depth, alpha, t_1, ..., t_{N-2}, beta`` with
    ``t_i = (beta + 1 - alpha) ** (i / (N - 1)) - (1 - alpha)``; the same curve gives alpha at
    i = 0 and beta at i = N - 1, so the bins grow geometrically from alpha to beta. With
    N = 1 the single bin is (min_depth, beta].
    """
    if num_bins == 1:
        return torch.tensor([min_depth, beta], dtype=torch.float64)
    i = torch.arange(num_bins, dtype=torch.float64)  # 0 .. N-1
    curve = (beta + 1.0 - alpha) ** (i / (num_bins - 1)) - (1.0 - alpha)
    edges = torch.cat([torch.tensor([min_depth], dtype=torch.float64), curve])
    edges[1], edges[-1] = alpha, beta
    return edges
