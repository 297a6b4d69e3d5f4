"""A module imported on its first attribute access.

The strategy modules (and the example plugin) name ``torch`` at module level but use it only
inside functions; importing them through :func:`lazy_module` lets ``meter-timm strategies`` list
them without paying torch's import (about 2 s on 2 cores).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        module: ModuleType = importlib.import_module(self._name)  # a dict lookup once imported
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str):
    """A stand-in for ``import name`` that imports on first use."""
    return _LazyModule(name)
