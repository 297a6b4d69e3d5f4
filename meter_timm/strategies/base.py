"""The interface every depth-bin assignment strategy implements.

A strategy decides, for ONE layer with ``num_units`` units and ``num_bins`` depth bins over
``(min_depth, max_depth]`` metres, two things:

* ``edges()``: the bin edges, a float64 tensor of shape (num_bins + 1,), strictly increasing;
  bin d is the half-open interval (edges[d], edges[d + 1]];
* ``assignment()``: the bin of every unit, an int64 tensor of shape (num_units,), each value in
  [0, num_bins), every bin used by at least one unit when num_units >= num_bins.

Strategies that learn from data (``learnable = True``) receive measured responses through
``observe()`` and change their assignment in ``refit()``; everything they learned is in
``state_dict()`` so that a resumed run continues with the same assignment.
"""

from __future__ import annotations

from typing import Any, ClassVar

from meter_timm._lazy import lazy_module

torch = lazy_module("torch")  # imported on first use: listing strategies stays fast


class StrategyParameterError(TypeError, ValueError):
    """Parameters a strategy does not take (a TypeError, as for any call, and bad user input)."""


class DepthBinStrategy:
    """Base class of depth-bin assignment strategies (one instance per layer)."""

    #: registry name, e.g. "uniform"; unique over all plugins
    name: ClassVar[str] = ""
    #: one line shown by ``meter-timm strategies``
    description: ClassVar[str] = ""
    #: True when observe()/refit() change the assignment
    learnable: ClassVar[bool] = False

    def __init__(
        self,
        num_units: int,
        num_bins: int,
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        **params: Any,
    ) -> None:
        if params:
            from meter_timm._names import did_you_mean
            from meter_timm.strategies.catalog import strategy_parameters

            unknown, accepted = sorted(params), strategy_parameters(type(self)) or []
            raise StrategyParameterError(
                f"strategy {self.name!r} got unknown parameters {unknown}"
                f"{did_you_mean(unknown[0], accepted)} (accepted: {', '.join(accepted) or 'none'})"
            )
        self.num_units = int(num_units)
        self.num_bins = int(num_bins)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)

    @property
    def frozen(self) -> bool:
        """True while ``observe_depth()``/``observe()``/``refit()`` would change nothing: the
        selectivity loss then keeps the edges and assignment between steps (and skips the
        observations) until a refit or a loaded state. A fixed strategy is always frozen; a
        learnable one that stops learning says so by overriding this."""
        return not self.learnable

    def edges(self) -> torch.Tensor:
        raise NotImplementedError

    def assignment(self) -> torch.Tensor:
        raise NotImplementedError

    # learned strategies override these
    def observe_depth(self, depth: torch.Tensor) -> None:
        """See a batch of ground-truth depth in metres (any shape; invalid pixels <= 0 or
        non-finite)."""

    def observe(self, responses: torch.Tensor, counts: torch.Tensor) -> None:
        """Accumulate measured responses (num_units, num_bins) and bin pixel counts (num_bins,)."""

    def refit(self) -> bool:
        """Recompute the assignment from what was observed; return True if it changed."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, num_units={self.num_units}, "
            f"num_bins={self.num_bins}, depth=({self.min_depth}, {self.max_depth}])"
        )
