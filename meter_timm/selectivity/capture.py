"""Capture the outputs of named layers of any ``nn.Module`` through forward hooks."""
from __future__ import annotations

import difflib
from typing import Iterable

import torch
from torch import nn

__all__ = ["LayerCapture", "resolve_module", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / mmengine-style wrappers."""
    while isinstance(getattr(model, "module", None), nn.Module) and type(model).__name__ in (
            "DistributedDataParallel", "DataParallel", "MMDistributedDataParallel",
            "MMFullyShardedDataParallel", "MMSeparateDistributedDataParallel"):
        model = model.module
    return model


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that lists the valid names close to ``name``."""
    modules = dict(unwrap_model(model).named_modules())
    if name in modules and name != "":
        return modules[name]
    valid = [n for n in modules if n]
    close = difflib.get_close_matches(name, valid, n=8, cutoff=0.5)
    if not close:  # fall back to siblings: same parent prefix, or the top-level children
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        close = [n for n in valid if parent and n.startswith(parent + ".")][:8] or \
            [n for n in valid if "." not in n][:8]
    raise KeyError(f"layer {name!r} not found in {type(unwrap_model(model)).__name__}; "
                   f"close valid names: {', '.join(close) if close else '(none)'}")


class LayerCapture:
    """Keeps the latest output of each named layer, captured by forward hooks.

    Args:
        model: any ``nn.Module`` (DDP/DataParallel wrappers are looked through).
        names: module names as in ``model.named_modules()``, e.g. ``["encoder.6"]``.
        detach_outputs: store detached outputs (dissection) instead of graph-connected ones (training).

    Use as a context manager (hooks removed on exit) or call ``attach()`` / ``detach()``::

        with LayerCapture(model, ["encoder.6", "encoder.8"]) as capture:
            model(images)
            feats = capture.outputs["encoder.6"]   # (B, K, h, w)

    A layer whose output is a tuple/list contributes its first tensor element.
    """

    def __init__(self, model: nn.Module, names: Iterable[str],
                 detach_outputs: bool = False) -> None:
        self.model = model
        self.names = list(dict.fromkeys(names))
        if not self.names:
            raise ValueError("LayerCapture needs at least one layer name")
        self.detach_outputs = detach_outputs
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self.modules = {name: resolve_module(model, name) for name in self.names}  # validate now

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "LayerCapture":
        """Register the forward hooks (idempotent)."""
        if not self._handles:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def detach(self) -> None:
        """Remove every hook and forget the captured outputs."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    remove = detach

    def clear(self) -> None:
        """Forget the captured outputs (keeps the hooks)."""
        self.outputs.clear()

    def _make_hook(self, name: str) -> "_StoreOutput":
        return _StoreOutput(self, name)

    def __enter__(self) -> "LayerCapture":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def __del__(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
        except Exception:
            pass


class _StoreOutput:
    """Forward hook storing a layer's output in its capture. An object (not a closure) so that
    ``copy.deepcopy`` of a hooked model (e.g. an EMA copy) gets hooks writing to the copied
    capture instead of the original one."""

    def __init__(self, capture: LayerCapture, name: str) -> None:
        self.capture, self.name = capture, name

    def __call__(self, module: nn.Module, args, output) -> None:
        if isinstance(output, (tuple, list)):
            output = next((o for o in output if isinstance(o, torch.Tensor)), None)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {self.name!r} ({type(module).__name__}) returned no tensor")
        self.capture.outputs[self.name] = output.detach() if self.capture.detach_outputs else output
