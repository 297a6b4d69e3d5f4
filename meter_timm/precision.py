"""Precision helpers shared by the losses, the selectivity statistics and the model wrapper."""

from __future__ import annotations

import torch

__all__ = ["autocast_disabled"]

_AUTOCAST_DEVICES = ("cpu", "cuda")


class autocast_disabled:  # noqa: N801 - used like torch.autocast, a context manager
    """Turn autocast off (CPU and CUDA) for code that must run in float32.

    Enters ``torch.autocast(device, enabled=False)`` only for the devices where autocast is on, so
    outside mixed precision it costs two flag reads (it runs several times per training step)."""

    __slots__ = ("_contexts",)

    def __enter__(self) -> None:
        self._contexts = [
            torch.autocast(device, enabled=False)
            for device in _AUTOCAST_DEVICES
            if torch.is_autocast_enabled(device)
        ]
        for context in self._contexts:
            context.__enter__()

    def __exit__(self, *exc_info) -> None:
        for context in reversed(self._contexts):
            context.__exit__(*exc_info)
