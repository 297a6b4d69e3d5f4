"""meter-timm plugin: equal-frequency ("quantile") depth bins fitted to the training depths.

How the edges are fitted:

1. Until the first refit the edges are uniform over (min_depth, max_depth].
2. ``observe_depth(depth)`` adds every valid ground-truth pixel (finite, > min_depth and
   <= max_depth) to a fine histogram of ``resolution`` equal-width cells over the depth range
   (float64 counts, so nothing is lost over a long warm-up).
3. ``refit()`` (called by the training loop on its schedule), once at least ``warmup_pixels``
   pixels were seen, inverts the histogram's cumulative distribution (linearly inside a cell)
   at the quantiles i / N_b, i = 1..N_b-1, so every bin holds about the same number of training
   pixels. The ends stay min_depth and max_depth. To keep edges strictly increasing even where
   the data have gaps, the result is blended with the uniform edges:
   ``(1 - mix) * quantile_edges + mix * uniform_edges`` (``mix`` = 0.01 by default).
4. Units keep the assignment of Eq. 2 of the seed, d_k = floor(k N_b / K).

The histogram and the current edges are the state (tensors), so checkpoints resume exactly.
"""

from __future__ import annotations

from typing import Any

from meter_timm._lazy import lazy_module
from meter_timm.strategies import DepthBinStrategy, depth_histogram, hookimpl

torch = lazy_module("torch")  # imported on first use: listing strategies stays fast

__version__ = "0.1.0"


class QuantileStrategy(DepthBinStrategy):
    """Equal-frequency bins estimated from training depths (see the module docstring).

    Parameters:
        resolution: histogram cells over the depth range (default 4096).
        warmup_pixels: valid pixels needed before ``refit()`` moves the edges (default 1).
        mix: weight of the uniform edges in the blend, in (0, 1] (default 0.01).
    """

    name = "quantile"
    description = (
        "equal-frequency bins fitted to training depths seen during warm-up; Eq. 2 assignment"
    )
    learnable = True

    def __init__(
        self,
        num_units: int,
        num_bins: int,
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        resolution: int = 4096,
        warmup_pixels: int = 1,
        mix: float = 0.01,
    ) -> None:
        super().__init__(num_units, num_bins, min_depth, max_depth)
        if int(resolution) < self.num_bins:
            raise ValueError(
                f"depth-bin strategy 'quantile': resolution ({resolution}) must be "
                f">= num_bins ({self.num_bins})"
            )
        if not 0.0 < float(mix) <= 1.0:
            raise ValueError(f"depth-bin strategy 'quantile': mix must be in (0, 1], got {mix}")
        self.resolution, self.warmup_pixels, self.mix = (
            int(resolution),
            int(warmup_pixels),
            float(mix),
        )
        self.histogram = torch.zeros(self.resolution, dtype=torch.float64)
        self._edges = self._uniform()

    def _uniform(self) -> torch.Tensor:
        steps = torch.arange(self.num_bins + 1, dtype=torch.float64) / self.num_bins
        return self.min_depth + (self.max_depth - self.min_depth) * steps

    def edges(self) -> torch.Tensor:
        return self._edges.clone()

    def assignment(self) -> torch.Tensor:
        return torch.arange(self.num_units, dtype=torch.int64) * self.num_bins // self.num_units

    def observe_depth(self, depth: torch.Tensor) -> None:
        self.histogram += depth_histogram(depth, self.min_depth, self.max_depth, self.resolution)

    def refit(self) -> bool:
        total = float(self.histogram.sum())
        if total <= 0 or total < self.warmup_pixels:
            return False
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), self.histogram.cumsum(0)])
        targets = total * torch.arange(1, self.num_bins, dtype=torch.float64) / self.num_bins
        # first cell whose upper cumulative count reaches the target (that cell is non-empty)
        cell = torch.searchsorted(cdf[1:], targets).clamp_(max=self.resolution - 1)
        inside = (targets - cdf[cell]) / self.histogram[cell].clamp_min(1e-300)
        width = (self.max_depth - self.min_depth) / self.resolution
        inner = self.min_depth + (cell.double() + inside.clamp(0, 1)) * width
        quantile = torch.cat(
            [
                torch.tensor([self.min_depth], dtype=torch.float64),
                inner,
                torch.tensor([self.max_depth], dtype=torch.float64),
            ]
        )
        new = (1.0 - self.mix) * quantile + self.mix * self._uniform()
        changed = not torch.equal(new, self._edges)
        self._edges = new
        return changed

    def state_dict(self) -> dict[str, Any]:
        return {"histogram": self.histogram.clone(), "edges": self._edges.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, shape in (("histogram", (self.resolution,)), ("edges", (self.num_bins + 1,))):
            value = state.get(key)
            if value is None or tuple(torch.as_tensor(value).shape) != shape:
                raise ValueError(
                    f"depth-bin strategy 'quantile': state[{key!r}] missing or not of shape {shape}"
                )
        self.histogram = torch.as_tensor(state["histogram"]).to(torch.float64).clone()
        self._edges = torch.as_tensor(state["edges"]).to(torch.float64).clone()


@hookimpl
def meter_timm_register_strategies(register):
    register(QuantileStrategy)
