"""Any timm model with a weights file read by meter-timm's one checkpoint reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn

from meter_timm.checkpoint import load_checkpoint_file, state_dict_of
from meter_timm.models.meter import check_hub_depth_unit, resolve_weights_file

__all__ = ["create_model", "read_file_overlay"]


def read_file_overlay(overlay: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """A timm ``pretrained_cfg_overlay`` whose ``file`` (a weights file or hub folder) is replaced
    by the ``state_dict`` that :func:`~meter_timm.checkpoint.load_checkpoint_file` reads from it,
    and the file read: timm's own reader, whose rules are not this package's, never sees it."""
    overlay = dict(overlay)
    path = resolve_weights_file(overlay.pop("file"))
    overlay["state_dict"] = state_dict_of(load_checkpoint_file(path), path)
    overlay["source"] = ""  # a state dict passed through, whatever the model's default source
    return overlay, path


def create_model(name: str, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)``, for METER and any other timm model, with the weights
    ``weights`` (or ``pretrained_cfg_overlay=dict(file=...)``) read by the one reader. Weights
    that do not fit the model raise a ValueError naming the file."""
    if weights is not None:
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {
            **(kwargs.get("pretrained_cfg_overlay") or {}),
            "file": str(weights),
        }
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if not kwargs.get("pretrained") or not overlay.get("file"):
        return _create(name, kwargs)
    kwargs["pretrained_cfg_overlay"], path = read_file_overlay(overlay)
    if not {"output_scale", "pretrained_cfg"} & set(kwargs):  # else the caller sets the unit
        _check_depth_unit(name, path)
    if "num_classes" in kwargs:  # the file's head is loaded (and must fit), not dropped by timm
        kwargs["pretrained_cfg_overlay"].setdefault("num_classes", kwargs["num_classes"])
    try:
        return _create(name, kwargs)
    except (RuntimeError, KeyError) as err:  # load_state_dict, a filter_fn: keys or shapes
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"{path}: the weights do not fit {name} ({detail})") from None


def _create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model``; a keyword argument the model does not take is a ValueError naming
    it (a typo in ``--model-arg`` or a backbone config is bad input, not a crash)."""
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as err:
        found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if not found:
            raise
        raise ValueError(
            f"{name} does not take the argument {found.group(1)!r} ({err}); its arguments are "
            "those of the model class and of timm.create_model"
        ) from None


def _check_depth_unit(name: str, path: Path) -> None:
    """ValueError when weights from a hub folder predict depth in another unit than the tag
    ``name`` scales from (see :func:`~meter_timm.models.meter.check_hub_depth_unit`)."""
    expected = getattr(timm.models.get_pretrained_cfg(name), "depth_unit", None)
    if expected is not None:
        check_hub_depth_unit(path, expected, name)
