"""Strategies with fixed edges and the fixed assignment of Eq. 2."""
from __future__ import annotations

from meter_timm._lazy import lazy_module
from meter_timm.strategies.base import DepthBinStrategy

torch = lazy_module("torch")  # imported on first use: listing strategies stays fast


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


def depth_histogram(depth: torch.Tensor, min_depth: float, max_depth: float,
                    resolution: int) -> torch.Tensor:
    """Counts of the valid depths (finite, in (min_depth, max_depth]) in ``resolution`` equal
    cells over that range, float64, shape (resolution,); cell i holds (lo_i, hi_i], as the bins do.
    For strategies that fit their edges to the training depths (``learned``, plugins)."""
    depth = torch.as_tensor(depth).detach().flatten().to("cpu", torch.float64)
    valid = depth[torch.isfinite(depth) & (depth > min_depth) & (depth <= max_depth)]
    cells = ((valid - min_depth) / (max_depth - min_depth) * resolution).ceil().long() - 1
    return torch.bincount(cells.clamp_(0, resolution - 1), minlength=resolution).double()


class UniformStrategy(DepthBinStrategy):
    """Equal-width bins over (min_depth, max_depth]; units assigned by Eq. 2."""

    name = "uniform"
    description = "equal-width bins over (min_depth, max_depth]; Eq. 2 assignment"

    def edges(self) -> torch.Tensor:
        return uniform_edges(self.num_bins, self.min_depth, self.max_depth)

    def assignment(self) -> torch.Tensor:
        return eq2_assignment(self.num_units, self.num_bins)


class LogStrategy(DepthBinStrategy):
    """Spacing-increasing bins of the ICCV 2021 code; units assigned by Eq. 2.

    Parameters:
        alpha: upper edge of the first bin in metres (0.75 for NYU, 3 for KITTI).
        beta: upper edge of the last bin (default: max_depth, 10 m for NYU). Depths above
            beta fall in no bin (the original code counted them in bin 0).
    """

    name = "log"
    description = "spacing-increasing bins (You et al. 2021: alpha 0.75, beta max_depth); Eq. 2 assignment"

    def __init__(self, num_units: int, num_bins: int, min_depth: float = 0.0,
                 max_depth: float = 10.0, alpha: float = 0.75, beta: float | None = None) -> None:
        super().__init__(num_units, num_bins, min_depth, max_depth)
        self.alpha = float(alpha)
        self.beta = self.max_depth if beta is None else float(beta)
        if self.num_bins > 1 and not self.min_depth < self.alpha < self.beta:
            raise ValueError(f"depth-bin strategy 'log': need min_depth < alpha < beta, got "
                             f"{self.min_depth} / {self.alpha} / {self.beta}")
        if not self.min_depth < self.beta:
            raise ValueError(f"depth-bin strategy 'log': need min_depth < beta, got "
                             f"{self.min_depth} / {self.beta}")

    def edges(self) -> torch.Tensor:
        return log_edges(self.num_bins, self.min_depth, self.alpha, self.beta)

    def assignment(self) -> torch.Tensor:
        return eq2_assignment(self.num_units, self.num_bins)
