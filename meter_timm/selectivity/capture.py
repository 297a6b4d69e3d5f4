"""Capture the outputs of named layers of any ``nn.Module`` through forward hooks.

Layer outputs are handed over as ``(B, K, h, w)``, whatever the layer's own layout: channels-last
outputs of timm models that declare ``output_fmt = "NHWC"`` (Swin, ...) are permuted, and token
outputs ``(B, N, K)`` of transformers (ViT, DeiT, ...) lose their prefix tokens (class,
distillation, registers: timm's ``num_prefix_tokens``) and are reshaped to the patch grid of the
model's input. A model that pads its input internally (METER at sizes the original rejects) can
define ``feature_region(map_size, input_size) -> (h, w)``: maps of its layers are then cropped to
the part that covers the image, so that they line up with the depth map.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = [
    "LayerCapture",
    "LayerLayout",
    "check_feature_map",
    "resolve_module",
    "token_grid",
    "unwrap_model",
]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / mmengine-style wrappers."""
    # by class name, not mmengine.model.is_model_wrapper: the selectivity core loads no mmengine
    while isinstance(getattr(model, "module", None), nn.Module) and type(model).__name__ in (
        "DistributedDataParallel",
        "DataParallel",
        "MMDistributedDataParallel",
        "MMFullyShardedDataParallel",
        "MMSeparateDistributedDataParallel",
    ):
        model = model.module
    return model


class LayerNotFoundError(KeyError, ValueError):
    """A layer name that the model does not have (a KeyError, and a ValueError: bad user input)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that lists the valid names close to ``name``."""
    modules = dict(unwrap_model(model).named_modules())
    if name in modules and name != "":
        return modules[name]
    valid = [n for n in modules if n]
    close = difflib.get_close_matches(name, valid, n=8, cutoff=0.5)
    if not close:  # fall back to siblings: same parent prefix, or the top-level children
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        close = [n for n in valid if parent and n.startswith(parent + ".")][:8] or [
            n for n in valid if "." not in n
        ][:8]
    raise LayerNotFoundError(
        f"layer {name!r} not found in {type(unwrap_model(model)).__name__}; "
        f"close valid names: {', '.join(close) if close else '(none)'}"
    )


def _is_grid(h: int, w: int, image_size) -> bool:
    """Whether an (h, w) map can be the feature grid of an ``image_size`` input (one stride for
    both axes, rounding either way)."""
    if h < 1 or w < 1 or h > image_size[0] or w > image_size[1]:
        return False
    ratio = (image_size[0] / h) / (image_size[1] / w)
    return 0.8 <= ratio <= 1.25


def token_grid(num_tokens: int, image_size, patch_size=None) -> tuple[int, int] | None:
    """The (gh, gw) patch grid of ``num_tokens`` tokens for an ``image_size`` input, or None.

    With ``patch_size`` known, the grid is floor or ceil of the image size over it; otherwise
    the factorisation of ``num_tokens`` closest to the image's aspect ratio, one stride for both."""
    height, width = int(image_size[0]), int(image_size[1])
    candidates = []
    if patch_size is not None:
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        candidates = [
            (gh, gw)
            for gh in {height // ph, -(-height // ph)}
            for gw in {width // pw, -(-width // pw)}
        ]
    stride = math.sqrt(height * width / max(num_tokens, 1))
    for gh in {math.floor(height / stride), math.ceil(height / stride), round(height / stride)}:
        if gh > 0 and num_tokens % gh == 0:
            candidates.append((gh, num_tokens // gh))
    for gh, gw in candidates:
        if gh * gw == num_tokens and _is_grid(gh, gw, (height, width)):
            return gh, gw
    return None


def check_feature_map(layer: str, output: torch.Tensor, batch_size: int) -> None:
    """ValueError naming ``layer`` unless its (captured) output is a (B, K, h, w) map of the
    batch's ``batch_size`` images."""
    if output.dim() == 4 and output.shape[0] == batch_size:
        return
    hint = ""
    if output.dim() == 4 and output.shape[0] > batch_size and output.shape[0] % batch_size == 0:
        hint = (
            f": its batch is {output.shape[0] // batch_size}x the images' (e.g. the patches "
            "inside a MobileViT block's transformer); pick the block or a layer outside it"
        )
    raise ValueError(
        f"layer {layer!r}: output of shape {tuple(output.shape)} is not a "
        f"(B={batch_size}, K, h, w) map of the batch's images{hint}"
    )


class LayerLayout:
    """How a layer's output maps to ``(B, K, h, w)``, from the model around it.

    ``declared_fmt`` is the ``output_fmt`` of the nearest enclosing module that declares one
    (timm's NHWC models and their ``features_only`` wrappers); ``num_prefix_tokens`` and
    ``patch_size`` come from the nearest enclosing transformer."""

    def __init__(self, model: nn.Module, name: str) -> None:
        self.name = name
        self.declared_fmt = None
        self.num_prefix_tokens = None
        self.patch_size = None
        #: the nearest enclosing module that pads its input and says which part of its maps
        #: covers the image (``feature_region``), or None
        self.region_owner: nn.Module | None = None
        root = unwrap_model(model)
        parts = name.split(".")
        for depth in range(len(parts), -1, -1):  # the layer itself, then its ancestors
            module = root.get_submodule(".".join(parts[:depth])) if depth else root
            if (
                depth < len(parts)
                and self.region_owner is None
                and callable(getattr(module, "feature_region", None))
            ):
                self.region_owner = module
            fmt = getattr(module, "output_fmt", None)
            if fmt is not None and self.declared_fmt is None:  # the nearest declaration wins
                self.declared_fmt = str(getattr(fmt, "value", fmt)).upper()
            prefix = getattr(module, "num_prefix_tokens", None)
            if self.num_prefix_tokens is None and isinstance(prefix, int):
                self.num_prefix_tokens = prefix
                patch = getattr(getattr(module, "patch_embed", None), "patch_size", None)
                self.patch_size = tuple(patch) if isinstance(patch, (tuple, list)) else patch
        #: whether a module declared the format (timm models do); undeclared models are NCHW
        self.declared = self.declared_fmt is not None
        self.declared_fmt = self.declared_fmt or "NCHW"

    def unit_axis(self, output: torch.Tensor, image_size=None) -> int:
        """The axis of ``output`` that holds the units (1 for NCHW, -1 for NHWC and tokens)."""
        if output.dim() == 3:
            return -1
        if output.dim() == 4 and self._channels_last(output, image_size):
            return -1
        return 1

    def _channels_last(self, output: torch.Tensor, image_size) -> bool:
        if image_size is None:
            return self.declared_fmt == "NHWC"
        nhwc_grid = _is_grid(output.shape[1], output.shape[2], image_size)
        nchw_grid = _is_grid(output.shape[2], output.shape[3], image_size)
        if self.declared_fmt == "NHWC":
            # a conv inside an NHWC model (e.g. Swin's patch projection) still gives NCHW
            return not (nchw_grid and not nhwc_grid)
        # an NHWC part of a timm model declared NCHW (e.g. the MLP of ConvNeXt blocks, a Linear
        # on permuted maps): only the first two axes can be the feature grid
        return self.declared and nhwc_grid and not nchw_grid

    def to_nchw(self, output: torch.Tensor, image_size=None) -> torch.Tensor:
        """``output`` as ``(B, K, h, w)`` (a view where possible; gradients flow through)."""
        if output.dim() == 4:
            return output.permute(0, 3, 1, 2) if self._channels_last(output, image_size) else output
        if output.dim() != 3:
            return output
        if image_size is None:
            raise ValueError(
                f"layer {self.name!r}: token output {tuple(output.shape)} needs the "
                "model's input size to find the patch grid (no 4-D input was seen)"
            )
        prefix = self.num_prefix_tokens or 0
        grid = token_grid(output.shape[1] - prefix, image_size, self.patch_size)
        if grid is None:
            raise ValueError(
                f"layer {self.name!r}: cannot map {output.shape[1]} tokens ({prefix} prefix) of a "
                f"{tuple(image_size)} input to a patch grid"
            )
        tokens = output[:, prefix:]
        return tokens.transpose(1, 2).reshape(output.shape[0], output.shape[2], *grid)


class LayerCapture:
    """Keeps the latest output of each named layer, captured by forward hooks.

    Args:
        model: any ``nn.Module`` (DDP/DataParallel wrappers are looked through).
        names: module names as in ``model.named_modules()``, e.g. ``["encoder.6"]``.
        detach_outputs: store detached outputs (dissection) instead of graph-connected ones
            (training).

    Use as a context manager (hooks removed on exit) or call ``attach()`` / ``detach()``::

        with LayerCapture(model, ["encoder.6", "encoder.8"]) as capture:
            model(images)
            feats = capture.outputs["encoder.6"]   # (B, K, h, w)

    A layer whose output is a tuple/list contributes its first tensor element. Channels-last and
    token outputs are converted to ``(B, K, h, w)`` (see :class:`LayerLayout`); the model's input
    size, which token outputs need, is recorded by a pre-hook on the model.
    """

    def __init__(
        self, model: nn.Module, names: Iterable[str], detach_outputs: bool = False
    ) -> None:
        self.model = model
        self.names = list(dict.fromkeys(names))
        if not self.names:
            raise ValueError("LayerCapture needs at least one layer name")
        self.detach_outputs = detach_outputs
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self.modules = {name: resolve_module(model, name) for name in self.names}  # validate now
        self.layouts = {name: LayerLayout(model, name) for name in self.names}
        self.input_size: tuple[int, int] | None = None
        #: (H, W) of the latest image input of each padding module (``feature_region``)
        self.region_input_sizes: dict[int, tuple[int, int]] = {}

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> LayerCapture:
        """Register the forward hooks (idempotent)."""
        if not self._handles:
            self._handles.append(
                unwrap_model(self.model).register_forward_pre_hook(_RecordInputSize(self))
            )
            owners = {id(o): o for o in (lay.region_owner for lay in self.layouts.values()) if o}
            for owner in owners.values():
                self._handles.append(
                    owner.register_forward_pre_hook(_RecordInputSize(self, region_owner=owner))
                )
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def detach(self) -> None:
        """Remove every hook and forget the captured outputs."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def clear(self) -> None:
        """Forget the captured outputs (keeps the hooks)."""
        self.outputs.clear()

    def _make_hook(self, name: str) -> _StoreOutput:
        return _StoreOutput(self, name)

    def __enter__(self) -> LayerCapture:
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
        layout = self.capture.layouts[self.name]
        output = layout.to_nchw(output, self.capture.input_size)
        owner = layout.region_owner
        if owner is not None and output.dim() == 4:
            size = self.capture.region_input_sizes.get(id(owner))
            if size is not None:
                h, w = owner.feature_region(tuple(output.shape[-2:]), size)
                if (h, w) != tuple(output.shape[-2:]):
                    output = output[..., :h, :w]  # a view: gradients flow to the kept part
        self.capture.outputs[self.name] = output.detach() if self.capture.detach_outputs else output


class _RecordInputSize:
    """Forward pre-hook: remembers the (H, W) of the image input of the model, or of a module
    that pads its input (``region_owner``)."""

    def __init__(self, capture: LayerCapture, region_owner: nn.Module | None = None) -> None:
        self.capture = capture
        self.region_owner = region_owner  # the module itself: deepcopy keeps hook and layout paired

    def __call__(self, module: nn.Module, args) -> None:
        image = args[0] if args else None
        if isinstance(image, torch.Tensor) and image.dim() == 4:
            size = (int(image.shape[-2]), int(image.shape[-1]))
            if self.region_owner is None:
                self.capture.input_size = size
            else:
                self.capture.region_input_sizes[id(self.region_owner)] = size
