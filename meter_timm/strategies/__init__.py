"""Depth-bin assignment strategies (Eq. 2 and beyond), supplied through pluggy plugins."""
from meter_timm.strategies.base import DepthBinStrategy

__all__ = ["DepthBinStrategy"]
