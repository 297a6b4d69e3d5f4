"""meter-timm's built-in strategies, registered through the same hook as any plugin."""

from __future__ import annotations

from meter_timm.strategies.fixed import LogStrategy, UniformStrategy
from meter_timm.strategies.learned import LearnedStrategy
from meter_timm.strategies.plugins import hookimpl


@hookimpl
def meter_timm_register_strategies(register):
    register(UniformStrategy)
    register(LogStrategy)
    register(LearnedStrategy)
