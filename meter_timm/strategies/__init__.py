"""Depth-bin assignment strategies (Eq. 2 and beyond), supplied through pluggy plugins.

``create_strategy("log", num_units=48, num_bins=32)`` builds the strategy of one layer;
``list_strategies()`` shows what the installed plugins provide. The plugin machinery lives here
too: the hook specifications (:mod:`.hookspecs`), the one plugin manager (:mod:`.plugins`, whose
``hookimpl`` marks a plugin's functions) and the built-in strategies (:mod:`.builtin`), registered
through the same hook as any third-party plugin. Importing this package needs neither torch nor
mmengine.
"""

from meter_timm.strategies.base import DepthBinStrategy
from meter_timm.strategies.catalog import (
    DEFAULT_NUM_BINS,
    StrategyInfo,
    create_layer_strategy,
    create_strategy,
    default_num_bins,
    get_strategy_class,
    list_strategies,
    parse_strategy_spec,
    strategy_table,
    validate_strategy,
)
from meter_timm.strategies.fixed import depth_histogram
from meter_timm.strategies.plugins import hookimpl
from meter_timm.strategies.saved import trained_strategies

__all__ = [
    "DEFAULT_NUM_BINS",
    "DepthBinStrategy",
    "StrategyInfo",
    "create_layer_strategy",
    "create_strategy",
    "default_num_bins",
    "depth_histogram",
    "get_strategy_class",
    "hookimpl",
    "list_strategies",
    "parse_strategy_spec",
    "strategy_table",
    "trained_strategies",
    "validate_strategy",
]
