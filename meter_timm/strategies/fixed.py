"""Strategies with fixed edges and the fixed assignment of Eq. 2 (the math lives in
:mod:`meter_timm.selectivity.bins`)."""

from __future__ import annotations

from meter_timm._lazy import lazy_module
from meter_timm.selectivity.bins import eq2_assignment, log_edges, uniform_edges
from meter_timm.strategies.base import DepthBinStrategy

torch = lazy_module("torch")  # imported on first use: listing strategies stays fast


def depth_histogram(
    depth: torch.Tensor, min_depth: float, max_depth: float, resolution: int
) -> torch.Tensor:
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
    description = (
        "spacing-increasing bins (You et al. 2021: alpha 0.75, beta max_depth); Eq. 2 assignment"
    )

    def __init__(
        self,
        num_units: int,
        num_bins: int,
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        alpha: float = 0.75,
        beta: float | None = None,
    ) -> None:
        super().__init__(num_units, num_bins, min_depth, max_depth)
        self.alpha = float(alpha)
        self.beta = self.max_depth if beta is None else float(beta)
        if self.num_bins > 1 and not self.min_depth < self.alpha < self.beta:
            raise ValueError(
                f"depth-bin strategy 'log': need min_depth < alpha < beta, got "
                f"{self.min_depth} / {self.alpha} / {self.beta}"
            )
        if not self.min_depth < self.beta:
            raise ValueError(
                f"depth-bin strategy 'log': need min_depth < beta, got "
                f"{self.min_depth} / {self.beta}"
            )

    def edges(self) -> torch.Tensor:
        return log_edges(self.num_bins, self.min_depth, self.alpha, self.beta)

    def assignment(self) -> torch.Tensor:
        return eq2_assignment(self.num_units, self.num_bins)
