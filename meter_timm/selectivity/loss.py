"""The depth-assignment loss L_assign (Eq. 3 of the seed) over several layers of any model."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from meter_timm.precision import autocast_disabled
from meter_timm.selectivity.capture import LayerCapture, check_feature_map
from meter_timm.selectivity.index import OTHER_BINS, layer_scores
from meter_timm.selectivity.response import BinnedDepth

__all__ = ["SelectivityLoss", "normalize_layers"]


def _float32_statistics(forward):
    """Run the loss with autocast off: Eq. 1 and the index in float32 (float64 stays float64),
    whatever the dtype of the captured activations under mixed precision."""

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        with autocast_disabled():
            return forward(*args, **kwargs)

    return wrapper


_LAYER_KEYS = ("name", "num_bins", "strategy", "params")


def _strategy_call(layer: str, strategy, what: str, call: Callable[[], Any]) -> Any:
    """``call()``, code of ``layer``'s strategy: what a plugin's code raises names the layer and
    the plugin (a ValueError stays one, anything else becomes a PluginError)."""
    from meter_timm.strategies.catalog import run_strategy_code
    from meter_timm.strategies.plugins import PluginError

    name = strategy.name or type(strategy).__name__
    try:
        return run_strategy_code(type(strategy), name, what, call)
    except PluginError as exc:
        raise PluginError(f"selectivity layer {layer!r}: {exc}") from exc.__cause__
    except ValueError as exc:
        raise ValueError(f"selectivity layer {layer!r}: {exc}") from exc


#: the values a strategy's state may hold: what a ``weights_only=True`` checkpoint load accepts
_PLAIN_VALUES = (torch.Tensor, bool, int, float, str, type(None))


def _non_plain_entry(value: Any, path: str = "state") -> str | None:
    """The path and type of the first entry of a strategy state that is not a tensor or a plain
    Python value (in lists, tuples and dicts with string keys), or None."""
    if isinstance(value, _PLAIN_VALUES):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} (key {key!r} of type {type(key).__name__})"
            found = _non_plain_entry(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _non_plain_entry(item, f"{path}[{i}]")
            if found:
                return found
        return None
    return f"{path} ({type(value).__module__}.{type(value).__qualname__})"


def normalize_layers(layers: Iterable[dict[str, Any] | str]) -> list[dict[str, Any]]:
    """Validate a ``layers`` list (dicts with 'name', optional 'num_bins'/'strategy'/'params', or
    plain names) and return it as a list of dicts."""
    if isinstance(layers, (str, dict)):
        layers = [layers]
    out: list[dict[str, Any]] = []
    for i, layer in enumerate(layers):
        layer = {"name": layer} if isinstance(layer, str) else dict(layer)
        name = layer.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"selectivity layers[{i}] needs a module name under 'name', got {layer!r}"
            )
        unknown = sorted(set(layer) - set(_LAYER_KEYS))
        if unknown:
            raise ValueError(
                f"selectivity layer {name!r}: unknown key(s) {unknown} "
                f"(allowed: {', '.join(_LAYER_KEYS)})"
            )
        if layer.get("num_bins") is not None and int(layer["num_bins"]) < 1:
            raise ValueError(
                f"selectivity layer {name!r}: num_bins must be >= 1, got {layer['num_bins']}"
            )
        if any(o["name"] == name for o in out):
            raise ValueError(f"selectivity layer {name!r} is listed twice")
        out.append(layer)
    if not out:
        raise ValueError("SelectivityLoss needs at least one layer")
    return out


class SelectivityLoss(nn.Module):
    """Eq. 3: ``L_assign = -w * sum_l mean_k SI_{l,k}``, to be ADDED to the depth loss.

    ``SI_{l,k} = (|R_{l,k}^{d_k}| - |R_{l,k}^{-d_k}|) / (|R_{l,k}^{d_k}| + |R_{l,k}^{-d_k}| + eps)``
    with R the batch's average responses (Eq. 1, :func:`average_response`), d_k the bin that the
    layer's strategy assigns to unit k and R^{-d_k} the mean over the other non-empty bins. Units
    whose assigned bin has no valid pixel in the batch are left out of that batch's mean (a layer
    with no such unit contributes 0, never NaN).

    Weight ``w``: ``lam`` (``relative=False``, the seed's lambda; the ICCV 2021 code used 0.1), or
    ``lam * base_loss.detach()`` (``relative=True``): the selectivity term, ``-w`` times the
    layers' summed mean index, then scales with the depth loss whatever the depth unit (m, cm)
    or loss magnitude, which spares the re-tuning of lambda that the seed found necessary.

    Args:
        layers: list of ``{"name": "encoder.6", "num_bins": 32, "strategy": "uniform",
            "params": {...}}`` (only ``name`` required; plain names allowed). Strategies come from
            :func:`meter_timm.strategies.create_strategy` and are built at the first forward, when
            the layer's unit count is known.
        lam: lambda of Eq. 3 (>= 0; the sign is already in the formula).
        relative: weight relative to the detached base loss (see above).
        use_abs: average ``|activation|`` as in the original code (else the raw activation).
        min_depth, max_depth: depth range (metres) handed to the strategies.
        eps: keeps dead units at index 0.
        other_bins: R_other averages the ``"nonempty"`` other bins of the batch (default) or
            ``"all"`` N_b - 1 other bins, empty ones counting 0 (the ICCV 2021 reference code).

    Use: ``loss.attach(model)`` registers forward hooks on the named layers (DDP wrappers are
    looked through); after ``model(x)``, ``loss(depth, base_loss)`` returns
    ``{"loss_selectivity": tensor, "sel/<layer>": detached mean index, ...}``. Without hooks, pass
    ``features={"encoder.6": activation, ...}``. Learnable strategies are fed every batch's
    detached responses; ``refit()`` updates them; ``calibrate()`` fits them on data before
    training (the ``learned`` strategy matches its units there, then stays frozen); their state
    lives in this module's state_dict.
    """

    def __init__(
        self,
        layers: Iterable[dict[str, Any] | str],
        lam: float = 0.1,
        relative: bool = False,
        use_abs: bool = True,
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        eps: float = 1e-8,
        other_bins: str = "nonempty",
    ) -> None:
        super().__init__()
        if other_bins not in OTHER_BINS:
            raise ValueError(
                f"SelectivityLoss: other_bins must be one of {OTHER_BINS}, got {other_bins!r}"
            )
        self.other_bins = other_bins
        self.layers = normalize_layers(layers)
        if float(lam) < 0:
            raise ValueError(
                f"SelectivityLoss: lam must be >= 0 (Eq. 3 has the minus sign), got {lam}"
            )
        if not float(min_depth) < float(max_depth):
            raise ValueError(
                f"SelectivityLoss: need min_depth < max_depth, got {min_depth}, {max_depth}"
            )
        self.lam, self.relative, self.use_abs = float(lam), bool(relative), bool(use_abs)
        self.min_depth, self.max_depth, self.eps = float(min_depth), float(max_depth), float(eps)
        self.layer_names = [layer["name"] for layer in self.layers]
        self.strategies: dict[str, Any] = {}  # name -> DepthBinStrategy, built lazily
        self._pending_state: dict[str, dict] = {}  # loaded before the strategy existed
        self._capture: LayerCapture | None = None
        self._assignment_cache: dict[
            str, tuple[torch.Tensor, torch.Tensor]
        ] = {}  # name -> (cpu, device)
        # per-step constants of fixed strategies and layer groups, cleared whenever a strategy
        # may change (creation, refit, loaded state): fewer operations per training step
        self._edges_cache: dict[str, tuple[torch.Tensor, tuple]] = {}
        self._segment_cache: dict[tuple, torch.Tensor] = {}
        self._check_strategy_names()

    def _check_strategy_names(self) -> None:
        """Unknown strategies and strategy parameters fail here, not at the first forward."""
        try:
            from meter_timm.strategies.catalog import check_strategy_spec, get_strategy_class
        except ImportError:  # pragma: no cover - strategies package always ships
            return
        for layer in self.layers:
            name = layer.get("strategy") or "uniform"
            params = layer.get("params") or {}
            try:
                if isinstance(params, dict):
                    check_strategy_spec(name, params)
                else:  # create_layer_strategy says what is wrong with the params
                    get_strategy_class(name)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"selectivity layer {layer['name']!r}: {exc}") from exc

    # ---------------------------------------------------------------- hooks
    def attach(self, model: nn.Module) -> SelectivityLoss:
        """Capture the configured layers of ``model`` (replaces any previous attachment)."""
        self.detach()
        self._capture = LayerCapture(model, self.layer_names).attach()
        return self

    def detach(self) -> None:
        """Remove the forward hooks."""
        if self._capture is not None:
            self._capture.detach()
            self._capture = None

    # ---------------------------------------------------------------- strategies
    def strategy(self, name: str):
        """The strategy of layer ``name`` (KeyError before the layer's first forward)."""
        if name not in self.strategies:
            raise KeyError(f"strategy of layer {name!r} not created yet (no forward so far)")
        return self.strategies[name]

    def build_strategy(self, name: str, num_units: int):
        """The strategy of layer ``name``, created with ``num_units`` units if it does not exist
        yet (then with any state loaded before it existed); an existing one must match."""
        strategy = self.strategies.get(name)
        if strategy is None:
            from meter_timm.strategies import create_layer_strategy

            layer = next(layer for layer in self.layers if layer["name"] == name)
            strategy = create_layer_strategy(layer, num_units, self.min_depth, self.max_depth)
            pending = self._pending_state.pop(name, None)
            if pending is not None:
                self._load_strategy_state(name, strategy, pending)
            self.strategies[name] = strategy
            self._forget_constants()
        elif strategy.num_units != num_units:
            raise ValueError(
                f"selectivity layer {name!r}: {num_units} units now, "
                f"{strategy.num_units} when its strategy was created"
            )
        return strategy

    @staticmethod
    def _load_strategy_state(name: str, strategy, saved: dict) -> None:
        from meter_timm.strategies import validate_strategy
        from meter_timm.strategies.plugins import PluginError

        for key in ("strategy", "num_units", "num_bins"):
            mine = strategy.name if key == "strategy" else getattr(strategy, key)
            if key in saved and saved[key] != mine:
                raise ValueError(
                    f"selectivity layer {name!r}: saved {key} {saved[key]!r} does not "
                    f"match the configured {mine!r}"
                )
        label = f"selectivity layer {name!r}: the saved state of strategy {strategy.name!r}"
        try:
            _strategy_call(
                name,
                strategy,
                "load_state_dict()",
                lambda: strategy.load_state_dict(saved.get("state", {})),
            )
        except PluginError:  # a plugin's code raised: named with the layer and the plugin
            raise
        except (KeyError, TypeError, IndexError, RuntimeError) as exc:  # meter_timm's strategies
            raise ValueError(f"{label} does not fit it: {type(exc).__name__}: {exc}") from exc
        try:
            validate_strategy(strategy)
        except ValueError as exc:
            raise ValueError(f"{label} is not valid: {exc}") from exc

    def refit(self) -> dict[str, bool]:
        """Call ``refit()`` on every created strategy; returns layer -> assignment changed.

        A strategy that changed is validated again, so a plugin that refits into invalid edges or
        assignments fails here with a ValueError naming it, not later in the loss."""
        from meter_timm.strategies import validate_strategy
        from meter_timm.strategies.catalog import run_strategy_code
        from meter_timm.strategies.plugins import PluginError

        self._forget_constants()
        changed = {}
        for name, strategy in self.strategies.items():
            try:
                changed[name] = bool(
                    run_strategy_code(type(strategy), strategy.name, "refit()", strategy.refit)
                )
            except PluginError as exc:  # a plugin's code raised: named with the plugin
                raise PluginError(f"selectivity layer {name!r}: {exc}") from exc.__cause__
            except (ValueError, RuntimeError, ArithmeticError) as exc:  # e.g. a solver given NaN
                raise ValueError(
                    f"selectivity layer {name!r}: strategy {strategy.name!r} could not refit: {exc}"
                ) from exc
            if changed[name]:
                try:
                    validate_strategy(strategy)
                except (ValueError, PluginError) as exc:
                    kind = PluginError if isinstance(exc, PluginError) else ValueError
                    raise kind(f"selectivity layer {name!r}, after refit: {exc}") from exc
        return changed

    @torch.no_grad()
    def calibrate(
        self,
        run_model: Callable[[torch.Tensor], Any],
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        rounds: int = 2,
    ) -> dict[str, bool]:
        """Fit the learnable strategies on data before training.

        ``rounds`` passes over ``batches`` (pairs of network input and (B, 1, H, W) depth in
        metres); each pass runs ``run_model(inputs)`` (the caller picks eval mode), feeds every
        learnable strategy the depths and the responses at its current edges, then refits. Two
        rounds let a strategy first fit its edges to the depths, then its assignment to responses
        measured at those edges. Returns layer -> assignment or edges changed. Needs ``attach()``.
        """
        if self._capture is None:
            raise RuntimeError("SelectivityLoss.calibrate: call attach(model) first")
        batches = list(batches)
        changed: dict[str, bool] = {}
        for _ in range(int(rounds)):
            for inputs, depth in batches:
                self._capture.clear()
                run_model(inputs)
                features = dict(self._capture.outputs)
                self._capture.clear()
                binned: dict[tuple, BinnedDepth] = {}
                for name in self.layer_names:
                    self._measure(name, features[name], depth, binned)
            for name, value in self.refit().items():
                changed[name] = changed.get(name, False) or value
        return changed

    def _forget_constants(self) -> None:
        self._edges_cache.clear()
        self._assignment_cache.clear()

    def _edges(self, name: str, strategy) -> tuple[torch.Tensor, tuple]:
        """The strategy's edges and their tuple key; kept between steps while it is frozen."""
        cached = self._edges_cache.get(name)
        if cached is None or not strategy.frozen:
            edges = _strategy_call(name, strategy, "edges()", strategy.edges)
            cached = (edges, tuple(edges.tolist()))
            if strategy.frozen:
                self._edges_cache[name] = cached
        return cached

    def _measure(
        self, name: str, act: torch.Tensor, depth: torch.Tensor, binned: dict[tuple, BinnedDepth]
    ):
        """(strategy, responses (K, N_b), counts (N_b,)) of one layer on one batch; learnable
        strategies observe the batch's depth and detached responses."""
        check_feature_map(name, act, depth.shape[0])
        if self.use_abs:
            act = act.abs()
        strategy = self.build_strategy(name, act.shape[1])
        edges, key = self._edges(name, strategy)
        if key not in binned:
            binned[key] = BinnedDepth(depth.to(act.device), key)
        responses, counts = binned[key].responses(act)
        if not strategy.frozen:
            _strategy_call(
                name, strategy, "observe_depth()", lambda: strategy.observe_depth(depth.detach())
            )
            _strategy_call(
                name, strategy, "observe()", lambda: strategy.observe(responses.detach(), counts)
            )
        return strategy, responses, counts

    def get_extra_state(self) -> dict[str, Any]:
        state = {name: dict(saved) for name, saved in self._pending_state.items()}
        for name, strategy in self.strategies.items():
            from meter_timm.strategies import parse_strategy_spec

            spec = next(layer for layer in self.layers if layer["name"] == name)
            _, spec_params = parse_strategy_spec(spec.get("strategy") or "uniform")
            saved = _strategy_call(name, strategy, "state_dict()", strategy.state_dict)
            wrong = _non_plain_entry(saved)
            if wrong:  # a checkpoint that could be written but never read back
                from meter_timm.strategies.catalog import strategy_origin
                from meter_timm.strategies.plugins import PluginError

                origin = strategy_origin(type(strategy))
                raise PluginError(
                    f"selectivity layer {name!r}: depth-bin strategy {strategy.name!r}"
                    f"{f' of {origin}' if origin else ''}: state_dict() holds {wrong}; a "
                    "strategy state may hold only tensors and plain Python values, which "
                    "checkpoints load with weights_only=True"
                )
            state[name] = {
                "strategy": strategy.name,
                "num_units": strategy.num_units,
                "num_bins": strategy.num_bins,
                "state": saved,
                # enough to rebuild it outside this module (trained_strategies)
                "params": {**spec_params, **dict(spec.get("params") or {})},
                "min_depth": self.min_depth,
                "max_depth": self.max_depth,
            }
        return {"strategies": state}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._forget_constants()
        for name, saved in (state or {}).get("strategies", {}).items():
            if name not in self.layer_names:
                warnings.warn(
                    f"SelectivityLoss: the loaded state holds a {saved.get('strategy')!r} "
                    f"strategy for layer {name!r}, which is not configured (configured: "
                    f"{', '.join(self.layer_names)}); it is ignored",
                    stacklevel=2,
                )
                continue
            if name in self.strategies:
                self._load_strategy_state(name, self.strategies[name], saved)
                continue
            self._pending_state[name] = dict(saved)
            if isinstance(saved.get("num_units"), int):
                # built now, so a state that does not fit fails while loading, not at a forward
                self.build_strategy(name, saved["num_units"])

    # ---------------------------------------------------------------- loss
    def _assignment_on(self, name: str, strategy, device: torch.device) -> torch.Tensor:
        """The strategy's assignment on ``device``, copied there only when it changed (a copy to
        a GPU every step would synchronise with the host)."""
        cached = self._assignment_cache.get(name)
        if cached is not None and strategy.frozen and cached[1].device == device:
            return cached[1]  # a frozen strategy's assignment changes only via _forget_constants
        assignment = _strategy_call(name, strategy, "assignment()", strategy.assignment)
        if cached is None or cached[1].device != device or not torch.equal(cached[0], assignment):
            cached = (assignment.clone(), assignment.to(device))
            self._assignment_cache[name] = cached
        return cached[1]

    def _segments(self, layout: tuple, device: torch.device) -> torch.Tensor:
        """(K_total,) layer position of every unit of a group, built once per layout and device."""
        key = (layout, device)
        if key not in self._segment_cache:
            sizes = torch.tensor([k for _, k in layout])
            self._segment_cache[key] = torch.repeat_interleave(torch.arange(len(layout)), sizes).to(
                device
            )
        return self._segment_cache[key]

    @_float32_statistics
    def forward(
        self,
        depth: torch.Tensor,
        base_loss: torch.Tensor | float | None = None,
        features: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eq. 3 on the latest captured activations (or ``features``) and this batch's depth.

        Args:
            depth: (B, 1, H, W) or (B, H, W) ground truth in metres, invalid pixels <= 0 or
                non-finite (any resolution; the activations are compared at this one).
            base_loss: the depth loss, needed when ``relative=True`` (detached here).
            features: layer name -> (B, K, h, w) activations, instead of the hooks.
        """
        if features is None:
            if self._capture is None:
                raise RuntimeError("SelectivityLoss: call attach(model) first or pass features=")
            features = dict(self._capture.outputs)
            self._capture.clear()  # do not keep the graph alive past this step
        missing = [n for n in self.layer_names if n not in features]
        if missing:
            raise RuntimeError(
                f"SelectivityLoss: no activation captured for layer(s) {missing}; "
                "did the model run a forward pass since the last call?"
            )
        if self.relative and base_loss is None:
            raise ValueError("SelectivityLoss(relative=True) needs base_loss")

        binned: dict[tuple, BinnedDepth] = {}
        groups: dict[int, list] = {}  # layers whose bins share one BinnedDepth (same counts)
        for name in self.layer_names:
            act = features[name]
            strategy, responses, counts = self._measure(name, act, depth, binned)
            bins = self._assignment_on(name, strategy, act.device)
            groups.setdefault(id(counts), []).append((name, responses, counts, bins))
        total = None
        out: dict[str, torch.Tensor] = {}
        for group in groups.values():
            # one index computation for all layers of a group (units concatenated), the
            # per-layer means as segment sums: the operation count does not grow with layers
            names = [name for name, *_ in group]
            counts = group[0][2]
            responses = torch.cat([r for _, r, _, _ in group]) if len(group) > 1 else group[0][1]
            bins = torch.cat([b for *_, b in group]) if len(group) > 1 else group[0][3]
            segment = None
            if len(group) > 1:
                segment = self._segments(
                    tuple((n, r.shape[0]) for n, r, _, _ in group), responses.device
                )
            # mean index over the units whose bin has pixels in this batch (0 for a layer with
            # none), with a hand-derived backward; no host synchronisation
            scores = layer_scores(
                responses, bins, counts, segment, len(group), self.eps, self.other_bins
            )
            for name, score in zip(names, scores.detach().unbind()):
                out[f"sel/{name}"] = score
            total = scores.sum() if total is None else total + scores.sum()
        weight = -self.lam  # the minus sign of Eq. 3
        if self.relative:
            weight = torch.as_tensor(base_loss).detach().to(total) * weight
        out["loss_selectivity"] = total * weight
        return out

    def extra_repr(self) -> str:
        return (
            f"layers={self.layers}, lam={self.lam}, relative={self.relative}, "
            f"use_abs={self.use_abs}, other_bins={self.other_bins!r}, "
            f"depth=({self.min_depth}, {self.max_depth}]"
        )
