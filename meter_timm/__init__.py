"""meter-timm: METER depth networks as timm models, and depth selectivity of their units.

``import meter_timm`` registers the METER family with timm (``timm.create_model("meter_xxs")``).
The mmengine pieces live in :mod:`meter_timm.mm` and are imported by configs
(``default_scope = "meter_timm"``).

Importing this package does not import torch, so that ``meter-timm --help`` answers at once: the
models are registered as soon as timm is imported (right away when it already is), and the
sub-packages load on first use (``meter_timm.models``, ``meter_timm.selectivity``, ...).
"""

__version__ = "0.1.0"

import importlib
import importlib.abc
import importlib.util
import sys

_SUBMODULES = (
    "checkpoint",
    "cli",
    "data",
    "deploy",
    "distributed",
    "evaluation",
    "losses",
    "mm",
    "models",
    "registry",
    "selectivity",
    "strategies",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """One-shot import hook: when ``timm`` is first imported, register the METER models right after
    timm's own module has run, so ``timm.create_model("meter_xxs")`` works whatever the import
    order."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")  # the normal finders
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_timm = spec.loader.exec_module

        def run_timm_then_register(module):
            run_timm(module)
            importlib.import_module(f"{__name__}.models")

        spec.loader.exec_module = run_timm_then_register  # this loader instance serves timm only
        return spec


if "timm" in sys.modules:
    importlib.import_module(f"{__name__}.models")
elif not any(isinstance(finder, _RegisterWithTimm) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())
