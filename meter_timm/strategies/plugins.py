"""The one plugin manager of meter-timm.

Built-in plugins are registered exactly like third-party ones, then the entry points of the
group ``meter_timm`` are loaded one by one (a plugin that fails to import is skipped with a
warning naming it; the others still load). Set the environment variable
``METER_TIMM_DISABLE_PLUGIN_AUTOLOAD`` (to anything non-empty) to load built-ins only.

The manager is built on first use: ``get_plugin_manager()``. Plugin authors decorate their hook
functions with ``hookimpl`` from this module (also ``meter_timm.strategies.hookimpl``); the
specifications are in :mod:`meter_timm.strategies.hookspecs`.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata

import pluggy

from meter_timm.strategies import hookspecs

ENTRY_POINT_GROUP = "meter_timm"
DISABLE_AUTOLOAD_ENV = "METER_TIMM_DISABLE_PLUGIN_AUTOLOAD"
#: modules registered as built-in plugins, in this order
BUILTIN_PLUGINS = ("meter_timm.strategies.builtin",)

hookimpl = pluggy.HookimplMarker("meter_timm")


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded and was skipped."""


class PluginError(RuntimeError):
    """A plugin misbehaves (e.g. two plugins register a strategy under the same name)."""


@dataclass(frozen=True)
class PluginRecord:
    """Where a registered plugin came from."""

    name: str  #: name in the plugin manager
    distribution: str  #: distribution that ships it ("meter-timm" for built-ins)
    version: str  #: that distribution's version ("unknown" when not installed)
    entry_point: str = (
        ""  #: "module:attr" of its entry point ("" for built-ins and in-memory plugins)
    )


class PluginManager(pluggy.PluginManager):
    """pluggy's manager for project ``meter_timm`` that also remembers where plugins came from."""

    def __init__(self) -> None:
        super().__init__("meter_timm")
        self.add_hookspecs(hookspecs)
        #: plugin name -> origin, for built-ins and entry points
        self.records: dict[str, PluginRecord] = {}


_lock = threading.Lock()
_manager: PluginManager | None = None


def _own_version() -> str:
    try:
        return metadata.version("meter-timm")
    except metadata.PackageNotFoundError:
        return "unknown"


def new_plugin_manager(autoload: bool | None = None) -> PluginManager:
    """Build a fresh manager: hook specs, built-ins, then (if ``autoload``) entry points.

    ``autoload=None`` follows the environment variable. Use ``get_plugin_manager()`` for the
    process-wide one; this is for tests and tools that need an isolated manager.
    """
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
    pm = PluginManager()
    version = _own_version()
    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        pm.records[module_name] = PluginRecord(module_name, "meter-timm", version)
    if autoload:
        load_entry_points(pm)
    return pm


def load_entry_points(pm: PluginManager, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Load and register every entry point of ``group``; return the names registered.

    Each entry point is imported on its own: one that fails (import error, or a name already
    taken) is skipped with a ``PluginLoadWarning`` naming it and its distribution.
    """
    loaded = []
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
        version = dist.version if dist is not None else "unknown"
        where = f"plugin {ep.name!r} ({ep.value}) from {dist_name} {version}"
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            other = pm.records.get(ep.name)
            other_text = f" by {other.distribution} {other.version}" if other else ""
            warnings.warn(
                f"meter_timm: skipping {where}: the plugin name is already taken{other_text}",
                PluginLoadWarning,
                stacklevel=2,
            )
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not break the others
            warnings.warn(
                f"meter_timm: skipping {where}: {type(exc).__name__}: {exc}",
                PluginLoadWarning,
                stacklevel=2,
            )
            continue
        pm.records[ep.name] = PluginRecord(ep.name, dist_name, version, ep.value)
        loaded.append(ep.name)
        _warn_unknown_hooks(pm, plugin, where)
    return loaded


def _warn_unknown_hooks(pm: PluginManager, plugin: object, where: str) -> None:
    """A PluginLoadWarning for hook implementations whose names no meter-timm hook has (pluggy
    keeps them quietly, and a misspelt hook is then never called)."""
    from meter_timm._names import did_you_mean

    known = [name for name in dir(hookspecs) if name.startswith("meter_timm_")]
    callers = pm.get_hookcallers(plugin) or []
    for caller in callers:
        if caller.spec is None:
            warnings.warn(
                f"meter_timm: {where} implements {caller.name!r}, which is not a meter-timm hook"
                f"{did_you_mean(caller.name, known)}; it is never called",
                PluginLoadWarning,
                stacklevel=3,
            )
    if not any(caller.spec is not None for caller in callers):
        warnings.warn(
            f"meter_timm: {where} implements no meter-timm hook (known: {', '.join(known)})",
            PluginLoadWarning,
            stacklevel=3,
        )


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                _manager = new_plugin_manager()
    return _manager


def plugin_record(pm: pluggy.PluginManager, plugin: object) -> PluginRecord:
    """Name, distribution and version of a registered plugin (in-memory ones: its
    ``__version__``)."""
    name = pm.get_name(plugin) or repr(plugin)
    record = getattr(pm, "records", {}).get(name)
    if record is not None:
        return record
    return PluginRecord(name, "(in memory)", str(getattr(plugin, "__version__", "unknown")))
