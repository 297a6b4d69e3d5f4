"""The one checkpoint reader of meter-timm, and loading weights into a model.

:func:`load_checkpoint_file` reads every file the package reads: timm weight files
(``pretrained_cfg_overlay=dict(file=...)``, :func:`load_weights`), ``meter-timm eval``, ``test``,
``predict``, ``dissect`` and ``ablate``, and mmengine's ``load_from`` / ``--resume`` (installed as
mmengine's local checkpoint loader by :mod:`meter_timm.mm.checkpoint`). It is
``torch.load(weights_only=True)`` with an explicit allowlist of what mmengine writes (numpy values,
``HistoryBuffer`` and its statistics methods), or safetensors; nothing is ever fully unpickled and
no directory is trusted.

This module imports no mmengine (it is looked up lazily, only while reading), so
:mod:`meter_timm.models` can use it.
"""

from __future__ import annotations

import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "load_checkpoint_file",
    "checkpoint_allowlist",
    "CheckpointReadError",
    "refuse_non_finite",
    "state_dict_of",
    "load_weights",
    "adaptable_input_conv",
]


class CheckpointReadError(ValueError):
    """A file that the one checkpoint reader refuses or cannot read; the message is one line
    naming it."""


def _history_buffer_statistic(owner: Any, name: Any) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling: mmengine's ``HistoryBuffer`` pickles its
    statistics methods as ``getattr(HistoryBuffer, "mean")``. Only those look-ups are answered."""
    try:
        from mmengine.logging import HistoryBuffer
    except ImportError:  # mmengine is optional for plain weight files
        HistoryBuffer = None
    if HistoryBuffer is not None and owner is HistoryBuffer and isinstance(name, str):
        # the default statistics and those registered with HistoryBuffer.register_statistics
        if name in {"min", "max", "mean", "current", *HistoryBuffer._statistics_methods}:
            return getattr(HistoryBuffer, name)
    owner_name = getattr(owner, "__name__", type(owner).__name__)
    raise pickle.UnpicklingError(f"refused pickled getattr({owner_name}, {name!r})")


def _plain_numpy_dtype(*args: Any) -> Any:
    """Stand-in for ``numpy.dtype`` while unpickling: any dtype but those that hold Python
    objects (an object array's elements would be unpickled as arbitrary objects)."""
    import numpy as np

    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refused numpy {dtype} dtype")
    return dtype


def checkpoint_allowlist() -> list:
    """Every non-tensor type the reader accepts: exactly what mmengine and this package write.

    numpy arrays, scalars and (non-object) dtypes in the message hub and meta data; mmengine's
    ``HistoryBuffer``; its statistics methods through a restricted ``getattr``. Nothing else.
    """
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1
    dtype_classes = {
        type(np.dtype(t))
        for t in (
            np.bool_,
            np.int8,
            np.int16,
            np.int32,
            np.int64,
            np.uint8,
            np.uint16,
            np.uint32,
            np.uint64,
            np.float16,
            np.float32,
            np.float64,
            np.complex64,
            np.complex128,
        )
    }
    allowed = [
        np.ndarray,
        (_plain_numpy_dtype, "numpy.dtype"),
        multiarray._reconstruct,
        multiarray.scalar,
        *sorted(dtype_classes, key=lambda c: c.__name__),
        (_history_buffer_statistic, "builtins.getattr"),
    ]
    try:
        from mmengine.logging import HistoryBuffer

        allowed.append(HistoryBuffer)
    except ImportError:
        pass
    return allowed


def _allowed_names(allowed: list) -> set:
    return {
        entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
        for entry in allowed
    }


def _unpickler_detail(error: Exception) -> str:
    """The first sentence of the unpickler's (long) message."""
    text = " ".join(str(error).split())
    if "Unpickler error:" in text:
        text = text.split("Unpickler error:", 1)[1]
    return (
        text.split(" Check the documentation")[0].split(". ")[0].strip(" .")[:160]
        or type(error).__name__
    )


def _refused_types(path: Path, error: Exception, allowed: list) -> list:
    """The pickled types outside the allowlist (empty when the file is not a pickle at all)."""
    try:
        return sorted(
            set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            - _allowed_names(allowed)
        )
    except Exception:  # legacy (non-zip) format: read the unpickler's message instead
        return sorted(set(re.findall(r"GLOBAL (\S+?) (?:was not|whose module)", str(error))))


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """The one checkpoint reader: ``torch.load(weights_only=True)`` with
    :func:`checkpoint_allowlist`.

    Used for weight files, ``load_from`` and ``--resume`` alike; nothing is ever fully unpickled and
    no directory is trusted. Raises FileNotFoundError naming a missing file, IsADirectoryError
    naming a folder (and the hub weights file inside it, if any), and
    :class:`CheckpointReadError` (a ValueError) naming the file and the refused type, or saying
    that the file is not a PyTorch checkpoint (truncated, text, random bytes), or naming a weight
    tensor with NaN/inf values.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        from meter_timm.models.meter import HUB_WEIGHT_FILES

        inside = [path / name for name in HUB_WEIGHT_FILES if (path / name).is_file()]
        hint = (
            f"give the weights file inside it, {inside[0]}"
            if inside
            else f"give a weights file (a hub folder holds {' or '.join(HUB_WEIGHT_FILES)}, "
            "this one has neither)"
        )
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file: {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":  # tensors only, no pickle at all (timm's hub format)
        state = _load_safetensors(path, map_location)
        refuse_non_finite(state, path)
        return state
    allowed = checkpoint_allowlist()
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_types(path, err, allowed)
        detail = _unpickler_detail(err)
        if refused or detail.startswith("refused "):  # a type, or a refused getattr or dtype
            what = (
                f"a pickled {', '.join(refused)}"
                if refused
                else detail.replace("refused ", "a ", 1)
            )
            raise CheckpointReadError(
                f"refused checkpoint {path}: it holds {what}, which meter-timm never unpickles "
                "(it reads only tensors, numpy values and mmengine's HistoryBuffer); "
                "nothing in it was run"
            ) from None
        raise CheckpointReadError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint ({detail})"
        ) from None
    except Exception as err:  # truncated zip, text, random bytes, ...
        raise CheckpointReadError(
            f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
            f"({type(err).__name__}: {_unpickler_detail(err)})"
        ) from None
    refuse_non_finite(checkpoint, path)
    return checkpoint


def refuse_non_finite(checkpoint: Any, path: str | Path) -> None:
    """CheckpointReadError naming the first weight tensor with NaN or inf values, if any."""
    state = checkpoint
    if isinstance(checkpoint, Mapping):
        state = next(
            (
                checkpoint[k]
                for k in ("state_dict", "model")
                if isinstance(checkpoint.get(k), Mapping)
            ),
            checkpoint,
        )
    if not isinstance(state, Mapping):
        return
    for name, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointReadError(
                f"refused weights in {path}: tensor {name!r} has {bad} non-finite "
                f"value(s) (NaN/inf) of {value.numel()}"
            )


def _load_safetensors(path: Path, map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a state dict; CheckpointReadError naming the file if it is not
    one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointReadError(
            f"cannot read checkpoint {path}: not a safetensors file ({err})"
        ) from None


def state_dict_of(checkpoint: Any, source: Any = "checkpoint") -> dict[str, Any]:
    """The state dict inside a checkpoint: its ``state_dict`` (mmengine) or ``model`` (timm
    training) entry, or the checkpoint itself; ValueError naming ``source`` when that is not a
    mapping of names."""
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model"):
            inner = checkpoint.get(key)
            if isinstance(inner, Mapping):
                checkpoint = inner
                break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(k, str) for k in checkpoint):
        raise ValueError(
            f"{source}: not a state dict (a mapping of names to tensors), got "
            f"{type(checkpoint).__name__}"
        )
    return dict(checkpoint)


#: top-level modules of a model wrapper (``meter_timm.mm.model.DepthEstimator``)
_WRAPPER_MODULES = ("backbone.", "decoder.", "depth_loss.", "selectivity.", "data_preprocessor.")
_TRAINING_ONLY = ("selectivity.", "depth_loss.")  # training state; may be absent either side


def _checkpoint_filter(model: nn.Module):
    """The ``checkpoint_filter_fn(state_dict, model)`` of the timm module that defines ``model``'s
    class, if it has one (timm's convention for translating foreign key layouts; timm keeps the
    function in the model's module, not on the model)."""
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def adaptable_input_conv(weight: torch.Tensor, expected: torch.Tensor) -> bool:
    """An RGB conv weight (O, 3, kh, kw) that timm's ``adapt_input_conv`` turns into ``expected``
    (O, C, kh, kw) for C != 3 input channels."""
    return (
        weight.dim() == 4
        and weight.shape[1] == 3
        and expected.shape[1] != 3
        and weight.shape[:1] + weight.shape[2:] == expected.shape[:1] + expected.shape[2:]
    )


def _adapt_input_convs(state: dict, network: nn.Module) -> dict:
    """RGB weights of the network's first conv(s) (timm's ``pretrained_cfg["first_conv"]``)
    adapted to its input channels, as timm does when it loads pretrained weights."""
    names = getattr(network, "pretrained_cfg", {}).get("first_conv") or ()
    for name in [names] if isinstance(names, str) else names:
        key = f"{name}.weight"
        weight = state.get(key)
        try:
            target = network.get_submodule(name).weight
        except AttributeError:  # no such conv in this network
            continue
        if isinstance(weight, torch.Tensor) and adaptable_input_conv(weight, target):
            from timm.models import adapt_input_conv

            state = {**state, key: adapt_input_conv(target.shape[1], weight)}
    return state


def _check_some_fit(path, state: Mapping, unexpected) -> None:
    """ValueError naming ``path`` when none of its tensors went into the model: a non-strict load
    would otherwise leave every weight as it was, silently."""
    if state and len(set(unexpected)) >= len(state):
        raise ValueError(
            f"{path}: none of its {len(state)} tensors fit the model (first keys: "
            f"{list(state)[:4]}); is it the weights of another model?"
        )


def load_weights(
    model: nn.Module, path: str | Path, strict: bool = True, state: dict | None = None
) -> str:
    """Load the weights file ``path`` into ``model``, in place; returns ``"wrapper"`` or
    ``"backbone"``.

    ``model`` is a timm network (e.g. a METER model) or a wrapper holding one as ``backbone``
    (``DepthEstimator``). Accepted files: a checkpoint or state dict of the wrapper (keys
    ``backbone.*``, ``decoder.*``; loaded into a wrapper as such), or a state dict of the network
    alone, e.g. the METER authors' files, which goes through the network's timm
    ``checkpoint_filter_fn`` when its module has one (METER's translates the authors' layout and
    also takes wrapper checkpoints). Read by :func:`load_checkpoint_file`: never fully unpickled.
    ``state``: the state dict of ``path`` when the caller has already read it (``path`` then only
    names it in messages). ValueError when the weights do not fit.
    """
    if state is None:
        state = state_dict_of(load_checkpoint_file(path), path)
    wrapper = isinstance(getattr(model, "backbone", None), nn.Module)
    if wrapper and any(k.startswith("backbone.") for k in state):
        keys = {
            k: v
            for k, v in state.items()
            if k.startswith(_WRAPPER_MODULES)
            and not (getattr(model, "selectivity", None) is None and k.startswith("selectivity."))
        }
        try:
            missing, all_unexpected = model.load_state_dict(keys, strict=False)
        except RuntimeError as exc:  # shapes that do not fit
            raise ValueError(f"{path}: {exc}") from exc
        missing = [k for k in missing if not k.startswith(_TRAINING_ONLY)]
        unexpected = [k for k in all_unexpected if not k.startswith(_TRAINING_ONLY)]
        if strict and (missing or unexpected):
            raise ValueError(
                f"{path}: checkpoint does not fit the model: missing {missing[:8]}, "
                f"unexpected {unexpected[:8]}"
            )
        _check_some_fit(path, keys, all_unexpected)
        if missing or unexpected:
            _log_misfit(path, missing, unexpected)
        return "wrapper"
    network = model.backbone if wrapper else model
    filter_fn = _checkpoint_filter(network)
    # keys or shapes that do not fit: a ValueError (filter) or RuntimeError (torch) naming the file
    try:
        if filter_fn is not None:
            state = filter_fn(state, network)
        state = _adapt_input_convs(state, network)
        result = network.load_state_dict(state, strict=strict)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    _check_some_fit(path, state, result.unexpected_keys)
    if not strict and (result.missing_keys or result.unexpected_keys):
        _log_misfit(path, result.missing_keys, result.unexpected_keys)
    return "backbone"


def _log_misfit(path, missing: list, unexpected: list) -> None:
    """A warning in the run's log (when there is one) about the keys a non-strict load left."""
    from mmengine.logging import print_log

    print_log(
        f"{path}: {len(missing)} missing keys {missing[:8]}, {len(unexpected)} unexpected keys "
        f"{unexpected[:8]}",
        logger="current",
        level=30,
    )
