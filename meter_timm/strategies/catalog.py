"""The catalogue of strategies the plugins register: looking them up by name, creating them per
layer, and checking what they return. (Not called ``registry``: that name is mmengine's, for
:mod:`meter_timm.registry` and :mod:`meter_timm.mm.registry`.)"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

from meter_timm._lazy import lazy_module
from meter_timm._names import did_you_mean
from meter_timm.strategies import plugins
from meter_timm.strategies.base import DepthBinStrategy, StrategyParameterError

torch = lazy_module("torch")  # imported on first use: listing strategies stays fast


@dataclass(frozen=True)
class StrategyInfo:
    """One registered strategy and the plugin that provides it."""

    name: str
    cls: type[DepthBinStrategy]
    plugin: str  #: plugin name in the manager
    distribution: str  #: distribution shipping the plugin
    version: str  #: its version

    @property
    def description(self) -> str:
        return self.cls.description

    @property
    def learnable(self) -> bool:
        return bool(self.cls.learnable)


def strategy_table(pm: plugins.PluginManager | None = None) -> dict[str, StrategyInfo]:
    """All strategies registered through ``meter_timm_register_strategies``, by name.

    A name registered twice keeps its first registration (built-ins before any plugin); the
    other one is ignored with a ``PluginLoadWarning`` naming both plugins, given once per process.
    A plugin whose hook raises, or registers something that is not a named ``DepthBinStrategy``
    subclass, is skipped whole with a ``PluginLoadWarning`` naming it (given once per process),
    as a plugin that fails to import: the built-ins and the other plugins still work.
    """
    pm = pm or plugins.get_plugin_manager()
    table: dict[str, StrategyInfo] = {}
    # call each implementation separately to know which plugin registered what; built-ins first,
    # so that a plugin cannot shadow a built-in name
    impls = sorted(
        pm.hook.meter_timm_register_strategies.get_hookimpls(),
        key=lambda impl: pm.get_name(impl.plugin) not in plugins.BUILTIN_PLUGINS,
    )
    for impl in impls:
        record = plugins.plugin_record(pm, impl.plugin)
        origin = f"plugin {record.name!r} ({record.distribution} {record.version})"
        registered: list[type] = []

        def register(cls: Any, _origin: str = origin, _registered: list = registered) -> None:
            if not (isinstance(cls, type) and issubclass(cls, DepthBinStrategy)):
                raise plugins.PluginError(
                    f"{_origin} registered {cls!r}, which is not a DepthBinStrategy subclass"
                )
            if not isinstance(cls.name, str) or not cls.name or ":" in cls.name:
                raise plugins.PluginError(
                    f"{_origin} registered {cls.__name__} with invalid name "
                    f"{cls.name!r} (need a non-empty string without ':')"
                )
            _registered.append(cls)

        kwargs = {"register": register}
        try:
            impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:
            if record.name in plugins.BUILTIN_PLUGINS:
                raise  # meter_timm's own: a bug
            # as for a plugin that fails to import: skipped whole, the others still load
            detail = (
                str(exc)
                if isinstance(exc, plugins.PluginError)
                else (f"meter_timm_register_strategies raised {type(exc).__name__}: {exc}")
            )
            _report_once(f"meter_timm: skipping {origin}: {detail}")
            continue
        for cls in registered:
            if cls.name in table:
                other = table[cls.name]
                if other.cls is not cls:
                    _report_once(
                        f"meter_timm: ignoring strategy {cls.name!r} of {origin} (class "
                        f"{cls.__qualname__}): the name is already registered by plugin "
                        f"{other.plugin!r} ({other.distribution} {other.version}, class "
                        f"{other.cls.__qualname__}), which is kept"
                    )
                continue
            table[cls.name] = StrategyInfo(
                cls.name, cls, record.name, record.distribution, record.version
            )
    return table


_reported: set[str] = set()


def _report_once(message: str) -> None:
    if message not in _reported:
        _reported.add(message)
        warnings.warn(message, plugins.PluginLoadWarning, stacklevel=3)


def list_strategies(pm: plugins.PluginManager | None = None) -> list[StrategyInfo]:
    """Every available strategy, sorted by name."""
    return sorted(strategy_table(pm).values(), key=lambda info: info.name)


def get_strategy_class(
    name: str, pm: plugins.PluginManager | None = None
) -> type[DepthBinStrategy]:
    """The class registered as ``name`` (``"log"`` or a spec such as ``"log:alpha=0.5"``).

    Unknown names raise ValueError listing close matches and every known name.
    """
    name = parse_strategy_spec(name)[0] if ":" in str(name) else name
    table = strategy_table(pm)
    if name not in table:
        raise ValueError(
            f"unknown depth-bin strategy {name!r}{did_you_mean(name, table)} "
            f"(known: {', '.join(sorted(table))})"
        )
    return table[name].cls


#: the arguments every strategy gets from its layer, not from the strategy's parameters
LAYER_ARGUMENTS = ("num_units", "num_bins", "min_depth", "max_depth")


def strategy_parameters(cls: type[DepthBinStrategy]) -> list[str] | None:
    """The parameters strategy class ``cls`` takes besides :data:`LAYER_ARGUMENTS`: the keyword
    arguments of its ``__init__`` and, while an ``__init__`` passes ``**kwargs`` on, of its base
    classes' up to :class:`DepthBinStrategy` (which takes none). None if that chain never
    reaches it (the class then checks its parameters itself)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        if klass is DepthBinStrategy:
            return names
        arguments = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names += [
            a.name
            for a in arguments
            if a.kind in (a.POSITIONAL_OR_KEYWORD, a.KEYWORD_ONLY)
            and a.name not in LAYER_ARGUMENTS
            and a.name not in names
        ]
        if not any(a.kind is a.VAR_KEYWORD for a in arguments):
            return names
    return None


def _reads_keyword_arguments(cls: type[DepthBinStrategy]) -> bool:
    """Whether an ``__init__`` outside meter_timm between ``cls`` and the base class takes
    ``**kwargs``: it may take parameters of its own from them (meter_timm's only pass them on)."""
    for klass in cls.__mro__:
        if klass is DepthBinStrategy:
            return False
        init = vars(klass).get("__init__")
        if init is None or klass.__module__.partition(".")[0] == "meter_timm":
            continue
        if any(a.kind is a.VAR_KEYWORD for a in inspect.signature(init).parameters.values()):
            return True
    return False


def check_strategy_parameters(name: str, cls: type[DepthBinStrategy], params) -> None:
    """StrategyParameterError naming the strategy, the parameters ``cls`` does not take and the
    ones it does (with a "did you mean")."""
    accepted = strategy_parameters(cls)
    unknown = sorted(set(params) - set(accepted)) if accepted is not None else []
    if unknown and _reads_keyword_arguments(cls) and not set(unknown) & set(LAYER_ARGUMENTS):
        return  # its **kwargs may take them: its constructor (and then the base class) decides
    if unknown:
        raise StrategyParameterError(
            f"depth-bin strategy {name!r} got unknown parameters {unknown}"
            f"{did_you_mean(unknown[0], accepted)} (accepted: {', '.join(accepted) or 'none'})"
        )


def check_strategy_spec(
    spec: str, params: dict[str, Any] | None = None, pm: plugins.PluginManager | None = None
) -> type[DepthBinStrategy]:
    """The class of strategy ``spec`` (``"log"`` or ``"log:alpha=0.5"``), once it is known to be
    registered and to take the spec's parameters and ``params``; ValueError (unknown name) or
    StrategyParameterError naming them otherwise."""
    base, spec_params = parse_strategy_spec(spec)
    cls = get_strategy_class(base, pm)
    check_strategy_parameters(base, cls, {**spec_params, **(params or {})})
    return cls


def parse_strategy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"log:alpha=0.5,beta=8"`` into ``("log", {"alpha": 0.5, "beta": 8})``.

    Values are read as Python literals when possible (numbers, True/False/None, quoted strings),
    otherwise kept as strings, so ``"learned:edges=log"`` gives ``{"edges": "log"}``.
    """
    import ast

    name, _, rest = str(spec).partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"strategy spec {spec!r}: expected key=value, got {item!r}")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    return name.strip(), params


def strategy_origin(cls: type, pm: plugins.PluginManager | None = None) -> str | None:
    """``"plugin 'x' (dist version)"`` for a strategy class a plugin registered, ``"class
    module.Name"`` for an unregistered outside class, None for meter_timm's own."""
    if cls.__module__.partition(".")[0] == "meter_timm":
        return None
    try:
        info = next(i for i in strategy_table(pm).values() if i.cls is cls)
        return f"plugin {info.plugin!r} ({info.distribution} {info.version})"
    except (StopIteration, plugins.PluginError):
        return f"class {cls.__module__}.{cls.__qualname__}"


def run_strategy_code(
    cls: type, name: str, what: str, call, pm: plugins.PluginManager | None = None
) -> Any:
    """``call()``, which runs code of strategy class ``cls`` (its constructor or a method). What a
    plugin's code raises names the plugin: a ValueError stays a ValueError (bad input), anything
    else becomes a PluginError. meter_timm's own strategies' exceptions pass unchanged."""
    try:
        return call()
    except Exception as exc:
        origin = strategy_origin(cls, pm)
        if origin is None:
            raise
        message = f"depth-bin strategy {name!r} of {origin}: {what} raised {type(exc).__name__}"
        message += f": {exc}" if str(exc) else ""
        kind = plugins.PluginError
        for bad_input in (StrategyParameterError, ValueError):  # keep the type of bad input
            if isinstance(exc, bad_input):
                kind = bad_input
                break
        raise kind(message) from exc


def validate_strategy(
    strategy: DepthBinStrategy, pm: plugins.PluginManager | None = None
) -> DepthBinStrategy:
    """Check ``edges()`` and ``assignment()`` of a strategy; return it or raise ValueError (a
    PluginError when a plugin's method raises).

    Call again after ``refit()`` of a learnable strategy. The message names the strategy (and
    the plugin, looked up in ``pm``).
    """
    name = strategy.name or type(strategy).__name__
    origin = strategy_origin(type(strategy), pm)
    who = f"depth-bin strategy {name!r}" + (f" of {origin}" if origin else "")
    K, N = strategy.num_units, strategy.num_bins
    edges = run_strategy_code(type(strategy), name, "edges()", strategy.edges, pm)
    if not isinstance(edges, torch.Tensor):
        raise ValueError(f"{who}: edges() returned {type(edges).__name__}, expected a tensor")
    if edges.dim() != 1 or edges.numel() != N + 1:
        raise ValueError(
            f"{who}: edges() returned shape {tuple(edges.shape)}, expected ({N + 1},) "
            f"for num_bins={N}"
        )
    if not edges.is_floating_point() or not torch.isfinite(edges).all():
        raise ValueError(
            f"{who}: edges() must be finite floating-point values, got {edges.tolist()}"
        )
    steps = edges[1:] - edges[:-1]
    if (steps <= 0).any():
        bad = int(torch.nonzero(steps <= 0)[0])
        raise ValueError(
            f"{who}: edges() are not strictly increasing: edges[{bad}]="
            f"{float(edges[bad])} >= edges[{bad + 1}]={float(edges[bad + 1])}"
        )
    # depth is binned in float32 (half-precision depth is upcast): the edges must stay apart there
    steps32 = edges.float()[1:] - edges.float()[:-1]
    if (steps32 <= 0).any():
        bad = int(torch.nonzero(steps32 <= 0)[0])
        raise ValueError(
            f"{who}: edges() are not strictly increasing in float32, the dtype depth is "
            f"binned in: edges[{bad}]={float(edges[bad])!r} and edges[{bad + 1}]="
            f"{float(edges[bad + 1])!r} are both {float(edges.float()[bad])!r} in float32"
        )
    assignment = run_strategy_code(type(strategy), name, "assignment()", strategy.assignment, pm)
    if not isinstance(assignment, torch.Tensor):
        raise ValueError(
            f"{who}: assignment() returned {type(assignment).__name__}, expected a tensor"
        )
    if assignment.dim() != 1 or assignment.numel() != K:
        raise ValueError(
            f"{who}: assignment() returned {assignment.numel()} values with shape "
            f"{tuple(assignment.shape)}, expected ({K},) for num_units={K}"
        )
    if assignment.is_floating_point() or assignment.is_complex() or assignment.dtype == torch.bool:
        raise ValueError(f"{who}: assignment() must be integer bins, got dtype {assignment.dtype}")
    out_of_range = (assignment < 0) | (assignment >= N)
    if out_of_range.any():
        unit = int(torch.nonzero(out_of_range)[0])
        raise ValueError(
            f"{who}: assignment() puts unit {unit} in bin {int(assignment[unit])}, "
            f"outside [0, {N}) for num_bins={N}"
        )
    if K >= N:
        used = torch.bincount(assignment.long(), minlength=N)
        empty = torch.nonzero(used == 0).flatten().tolist()
        if empty:
            raise ValueError(
                f"{who}: assignment() leaves bin(s) {empty} without units "
                f"(num_units={K} >= num_bins={N}, so every bin needs one)"
            )
    return strategy


def create_strategy(
    name: str,
    num_units: int,
    num_bins: int,
    min_depth: float = 0.0,
    max_depth: float = 10.0,
    pm: plugins.PluginManager | None = None,
    **params: Any,
) -> DepthBinStrategy:
    """Create and validate the strategy ``name`` for one layer.

    Args:
        name: registered name, optionally with parameters: ``"log"`` or ``"log:alpha=0.5"``
            (keyword ``params`` override those given in the string).
        num_units: units (channels) K of the layer.
        num_bins: depth bins N_b.
        min_depth, max_depth: the depth range in metres the edges cover.
        pm: plugin manager to look the name up in (default: the process-wide one).
        **params: the strategy's own parameters.
    """
    base_name, spec_params = parse_strategy_spec(name)
    params = {**spec_params, **params}
    cls = get_strategy_class(base_name, pm)
    if int(num_units) < 1 or int(num_bins) < 1:
        raise ValueError(
            f"depth-bin strategy {base_name!r}: num_units ({num_units}) and num_bins "
            f"({num_bins}) must be >= 1"
        )
    if not float(min_depth) < float(max_depth):
        raise ValueError(
            f"depth-bin strategy {base_name!r}: min_depth ({min_depth}) must be below "
            f"max_depth ({max_depth})"
        )
    check_strategy_parameters(base_name, cls, params)
    strategy = run_strategy_code(
        cls,
        base_name,
        "__init__()",
        lambda: cls(int(num_units), int(num_bins), float(min_depth), float(max_depth), **params),
        pm,
    )
    return validate_strategy(strategy, pm)


#: depth bins of a layer whose spec gives no ``num_bins`` (capped at its unit count), in training
#: and in dissections alike: the seed's N_b = 32
DEFAULT_NUM_BINS = 32


def default_num_bins(num_units: int) -> int:
    """Depth bins of a layer whose spec gives none: ``min(DEFAULT_NUM_BINS, num_units)``."""
    return min(DEFAULT_NUM_BINS, int(num_units))


def create_layer_strategy(
    layer: dict[str, Any] | str,
    num_units: int,
    min_depth: float = 0.0,
    max_depth: float = 10.0,
    default_strategy: str = "uniform",
    pm: plugins.PluginManager | None = None,
) -> DepthBinStrategy:
    """Create the strategy of one layer entry of a selectivity config.

    ``layer`` is ``{"name": "encoder.6", "num_bins": 32, "strategy": "log", "params": {...}}``
    (only ``name`` required) or just the layer name, checked by
    :func:`meter_timm.selectivity.loss.normalize_layers` (the one list of layer keys). Missing
    ``num_bins`` defaults to :func:`default_num_bins` (32, at most the units); missing
    ``strategy`` to ``default_strategy``. Any error names the layer.
    """
    from meter_timm.selectivity.loss import normalize_layers  # the one validator of layer specs

    layer = normalize_layers([layer])[0]
    label = f"selectivity layer {layer['name']!r}"
    num_bins = layer.get("num_bins")
    if num_bins is None:
        num_bins = default_num_bins(num_units)
    params = layer.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f"{label}: 'params' must be a dict, got {type(params).__name__}")
    strategy = layer.get("strategy") or default_strategy
    try:
        # checked here too: a parameter named like an argument of create_strategy would clash
        check_strategy_spec(strategy, params, pm)
        return create_strategy(
            strategy,
            num_units,
            num_bins,
            min_depth,
            max_depth,
            pm=pm,
            **params,
        )
    except (ValueError, TypeError, plugins.PluginError) as exc:
        message = f"{label}: {exc}"
        try:
            labelled = type(exc)(message)
        except TypeError:  # a type that takes more than a message (JSONDecodeError): its base
            base = (plugins.PluginError, ValueError, TypeError)
            labelled = next(k for k in base if isinstance(exc, k))(message)
        raise labelled from exc
