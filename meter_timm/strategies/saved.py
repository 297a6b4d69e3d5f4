"""Trained strategies back from a checkpoint: the edges and assignment a layer was trained with.

A :class:`~meter_timm.selectivity.SelectivityLoss` keeps every layer's strategy (its name,
parameters and learned state) in the model's state dict under ``<prefix>_extra_state``; scoring a
trained layer against anything else (e.g. a fresh Eq. 2 assignment) measures the wrong thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meter_timm.strategies.base import DepthBinStrategy
from meter_timm.strategies.catalog import create_strategy, validate_strategy
from meter_timm.strategies.plugins import PluginError

__all__ = ["trained_strategies"]


def trained_strategies(
    state_dict: Mapping[str, Any], prefix: str = "selectivity.", source: str = "checkpoint"
) -> dict[str, DepthBinStrategy]:
    """Layer name -> the strategy restored from ``state_dict`` (empty when it holds none).

    ``source`` names the file in error messages (a strategy that cannot be rebuilt or whose state
    does not fit raises a ValueError naming the file, the layer and the strategy).
    """
    extra = state_dict.get(f"{prefix}_extra_state") or {}
    restored: dict[str, DepthBinStrategy] = {}
    for layer, saved in dict(extra.get("strategies") or {}).items():
        name = saved.get("strategy", "?")
        try:
            strategy = create_strategy(
                name,
                int(saved["num_units"]),
                int(saved["num_bins"]),
                float(saved.get("min_depth", 0.0)),
                float(saved.get("max_depth", 10.0)),
                **dict(saved.get("params") or {}),
            )
            strategy.load_state_dict(saved.get("state") or {})
            validate_strategy(strategy)
        except (KeyError, TypeError, ValueError, PluginError) as exc:
            kind = PluginError if isinstance(exc, PluginError) else ValueError
            raise kind(
                f"{source}: layer {layer!r}: cannot restore its trained strategy {name!r}: {exc}"
            ) from exc
        restored[layer] = strategy
    return restored
