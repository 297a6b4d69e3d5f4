"""The package's mmengine registries under the conventional name ``<scope>.registry``.

mmengine imports ``meter_timm.registry`` when it builds anything with ``default_scope =
"meter_timm"``; the registries themselves live in :mod:`meter_timm.mm.registry`.
"""

from meter_timm.mm.registry import *  # noqa: F401,F403
from meter_timm.mm.registry import __all__  # noqa: F401
