"""Mixed-precision training on any device: :class:`MixedPrecisionOptimWrapper`.

mmengine's ``AmpOptimWrapper`` refuses to start without a GPU, and its CPU autocast accepts only
bfloat16. This wrapper runs the forward pass under ``torch.autocast`` of the model's device (CUDA
or CPU) in float16 or bfloat16; float16 gets dynamic loss scaling (``torch.amp.GradScaler``),
bfloat16 has float32's range and needs none. The depth losses and the selectivity statistics
cast themselves back to float32 (see :mod:`meter_timm.losses`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from torch import nn

from meter_timm.mm.registry import OPTIM_WRAPPERS

__all__ = ["MixedPrecisionOptimWrapper", "resolve_amp_dtype", "AMP_DTYPES"]

AMP_DTYPES = ("float16", "bfloat16")
DYNAMIC_INIT_SCALE = 2.0**10


def resolve_amp_dtype(dtype: str | None, device_type: str) -> str:
    """The autocast dtype to use: ``dtype`` when given, else bfloat16 where the device supports
    it (every CPU, CUDA GPUs with bf16) and float16 otherwise."""
    if dtype is not None:
        if dtype not in AMP_DTYPES:
            raise ValueError(f"mixed precision dtype must be one of {AMP_DTYPES}, got {dtype!r}")
        return dtype
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return "float16"
    return "bfloat16"


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with autocast and, for float16, dynamic loss scaling.

    Args:
        dtype (str, optional): ``"float16"`` or ``"bfloat16"``; None picks bfloat16 where
            supported (see :func:`resolve_amp_dtype`).
        device_type (str, optional): autocast device, ``"cuda"`` or ``"cpu"``; None: CUDA when
            available (the runner then trains on it), else CPU.
        loss_scale (str | float | dict): float16 only: ``"dynamic"`` (default: dynamic scaling
            from 2^10; METER's balanced loss is in centimetres with weights of 100, and torch's
            initial 2^16 overflowed the float16 gradients for the first ~10 steps), a fixed
            scale, or ``torch.amp.GradScaler`` keyword arguments.
        **kwargs: those of mmengine's ``OptimWrapper`` (optimizer, clip_grad, ...).

    The loss scaler's state is saved in and restored from checkpoints (key ``loss_scaler``).
    """

    def __init__(
        self,
        dtype: str | None = None,
        device_type: str | None = None,
        loss_scale: str | float | dict = "dynamic",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if device_type is None:
            device_type = "cuda" if torch.cuda.is_available() else "cpu"
        self.device_type = device_type
        self.cast_dtype = getattr(torch, resolve_amp_dtype(dtype, device_type))
        self._fixed_scale = None
        self.loss_scaler = None
        self._skipped_steps = 0  # float16 steps the scaler skipped in this process (logged)
        if self.cast_dtype == torch.float16:
            if loss_scale == "dynamic":
                self.loss_scaler = torch.amp.GradScaler(device_type, init_scale=DYNAMIC_INIT_SCALE)
            elif isinstance(loss_scale, (int, float)):
                self._fixed_scale = float(loss_scale)
                self.loss_scaler = torch.amp.GradScaler(device_type, init_scale=self._fixed_scale)
            elif isinstance(loss_scale, dict):
                self.loss_scaler = torch.amp.GradScaler(device_type, **loss_scale)
            else:
                raise TypeError(
                    f"MixedPrecisionOptimWrapper: loss_scale must be 'dynamic', a number "
                    f"or a dict, got {loss_scale!r}"
                )

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(loss)
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.loss_scaler is None:
            super().step(**kwargs)
            return
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        # skips the update when a gradient is inf/NaN and lowers the scale
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._fixed_scale)

    def _clip_grad(self) -> None:
        """mmengine's clipping, but a step the loss scaler will skip (a gradient is inf/NaN)
        logs no gradient norm: its inf would turn the logged window's mean into inf/NaN. Such
        steps are counted in ``train/skipped_steps`` instead."""
        params = [
            p
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.requires_grad and p.grad is not None
        ]
        if not params:
            return
        norm = self.clip_func(params, **self.clip_grad_kwargs)
        if norm is None:  # clip_grad_value_ returns none
            return
        norm = float(norm)
        if self.loss_scaler is not None and not math.isfinite(norm):
            self._skipped_steps += 1
            self.message_hub.update_scalar("train/skipped_steps", self._skipped_steps)
            return
        self.message_hub.update_scalar(f"train/{self.grad_name}", norm)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.loss_scaler is not None:
            state["loss_scaler"] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        scaler_state = state_dict.pop("loss_scaler", None)
        if scaler_state is not None and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(self.device_type, dtype=self.cast_dtype):
            yield
