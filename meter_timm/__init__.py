"""meter-timm: METER depth networks as timm models, and depth selectivity of their units.

``import meter_timm`` registers the METER family with timm (``timm.create_model("meter_xxs")``).
The mmengine pieces live in :mod:`meter_timm.mm` and are imported by configs
(``default_scope = "meter_timm"``).
"""
__version__ = "0.1.0"

from meter_timm import models  # noqa: F401,E402  (registers meter_* with timm)
