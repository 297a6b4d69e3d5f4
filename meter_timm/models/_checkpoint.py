"""Reading METER checkpoints: safe loading and translation of the authors' key layout.

Kept apart from the model definition so that ``meter.py`` never knows the foreign names.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import torch
import torch.nn as nn

__all__ = ["load_checkpoint_file", "checkpoint_allowlist", "CheckpointReadError", "translate_state_dict",
           "is_original_layout"]

# original ModuleList index -> index in this package's ``encoder`` Sequential
_MV2_TO_ENCODER = (1, 2, 3, 4, 5, 7, 9)
_MVIT_TO_ENCODER = (6, 8, 10)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_ORIGINAL_MARKERS = ("encoder.conv1.", "encoder.mv2.", "encoder.mvit.", "decoder.ups_block_")


class CheckpointReadError(ValueError):
    """A file that the one checkpoint reader refuses or cannot read; the message is one line naming it."""


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


def checkpoint_allowlist() -> list:
    """Every non-tensor type the reader accepts: exactly what mmengine and this package write.

    numpy arrays, scalars and (non-object) dtypes in the message hub and meta data; mmengine's
    ``HistoryBuffer``; its statistics methods through a restricted ``getattr``. Nothing else.
    """
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1
    dtype_classes = {type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64, np.complex64, np.complex128)}
    allowed = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
               *sorted(dtype_classes, key=lambda c: c.__name__),
               (_history_buffer_statistic, "builtins.getattr")]
    try:
        from mmengine.logging import HistoryBuffer
        allowed.append(HistoryBuffer)
    except ImportError:
        pass
    return allowed


def _allowed_names(allowed: list) -> set:
    return {entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
            for entry in allowed}


def _unpickler_detail(error: Exception) -> str:
    """The first sentence of the unpickler's (long) message."""
    text = " ".join(str(error).split())
    if "Unpickler error:" in text:
        text = text.split("Unpickler error:", 1)[1]
    return text.split(" Check the documentation")[0].split(". ")[0].strip(" .")[:160] or type(error).__name__


def _refused_types(path: Path, error: Exception, allowed: list) -> list:
    """The pickled types outside the allowlist (empty when the file is not a pickle at all)."""
    try:
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - _allowed_names(allowed))
    except Exception:  # legacy (non-zip) format: read the unpickler's message instead
        return sorted(set(re.findall(r"GLOBAL (\S+?) (?:was not|whose module)", str(error))))


def load_checkpoint_file(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    """The one checkpoint reader: ``torch.load(weights_only=True)`` with :func:`checkpoint_allowlist`.

    Used for weight files, ``load_from`` and ``--resume`` alike; nothing is ever fully unpickled and
    no directory is trusted. Raises FileNotFoundError naming a missing file and
    :class:`CheckpointReadError` (a ValueError) naming the file and the refused type, or saying
    that the file is not a PyTorch checkpoint (truncated, text, random bytes), or naming a weight
    tensor with NaN/inf values.
    """
    path = Path(path).expanduser()
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
        if refused or "refused pickled getattr" in detail:
            what = f"a pickled {', '.join(refused)}" if refused else detail.replace("refused ", "a ", 1)
            raise CheckpointReadError(
                f"refused checkpoint {path}: it holds {what}, which meter-timm never unpickles "
                "(it reads only tensors, numpy values and mmengine's HistoryBuffer); nothing in it was run") from None
        raise CheckpointReadError(f"cannot read checkpoint {path}: not a PyTorch checkpoint ({detail})") from None
    except Exception as err:  # truncated zip, text, random bytes, ...
        raise CheckpointReadError(f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
                                  f"({type(err).__name__}: {_unpickler_detail(err)})") from None
    refuse_non_finite(checkpoint, path)
    return checkpoint


def refuse_non_finite(checkpoint: Any, path: Union[str, Path]) -> None:
    """CheckpointReadError naming the first weight tensor with NaN or inf values, if any."""
    state = checkpoint
    if isinstance(checkpoint, Mapping):
        state = next((checkpoint[k] for k in ("state_dict", "model") if isinstance(checkpoint.get(k), Mapping)),
                     checkpoint)
    if not isinstance(state, Mapping):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointReadError(f"refused weights in {path}: tensor {name!r} has {bad} non-finite "
                                      f"value(s) (NaN/inf) of {value.numel()}")


def _load_safetensors(path: Path, map_location: Any = "cpu") -> Dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a state dict; CheckpointReadError naming the file if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointReadError(f"cannot read checkpoint {path}: not a safetensors file ({err})") from None


def _unwrap(checkpoint: Any) -> Mapping[str, Any]:
    """The state dict inside a checkpoint (mmengine / timm training checkpoints or a plain dict)."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(checkpoint).__name__}")
    for key in ("state_dict", "model"):
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            return inner
    return checkpoint


def _strip_wrappers(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    out = OrderedDict()
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    # a wrapper (e.g. mmengine's DepthEstimator) holding the model as ``backbone``: keep only it
    if any(k.startswith("backbone.") for k in out):
        out = OrderedDict((k[len("backbone."):], v) for k, v in out.items() if k.startswith("backbone."))
    return out


def is_original_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether the keys follow the authors' ``architecture.py`` (``encoder.mv2.0.conv.0.weight``, ...)."""
    return any(k.startswith(_ORIGINAL_MARKERS) for k in state_dict)


def _mv2_names(expanded: bool) -> Dict[str, str]:
    if expanded:
        return {"0": "conv_pw.conv", "1": "conv_pw.bn", "3": "conv_dw.conv", "4": "conv_dw.bn",
                "6": "conv_pwl.conv", "7": "conv_pwl.bn"}
    return {"0": "conv_dw.conv", "1": "conv_dw.bn", "3": "conv_pwl.conv", "4": "conv_pwl.bn"}


_SEP = {"0.depthwise": "spatial", "0.pointwise": "pointwise", "1": "bn"}
_MVIT_SUB = [
    (r"conv1\.(0\.depthwise|0\.pointwise|1)\.", lambda m: f"conv_kxk.{_SEP[m.group(1)]}."),
    (r"conv2\.0\.", lambda m: "conv_1x1.conv."),
    (r"conv2\.1\.", lambda m: "conv_1x1.bn."),
    (r"transformer\.layers\.(\d+)\.0\.norm\.", lambda m: f"transformer.{m.group(1)}.norm1."),
    (r"transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.", lambda m: f"transformer.{m.group(1)}.attn.qkv."),
    (r"transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.", lambda m: f"transformer.{m.group(1)}.attn.proj."),
    (r"transformer\.layers\.(\d+)\.1\.norm\.", lambda m: f"transformer.{m.group(1)}.norm2."),
    (r"transformer\.layers\.(\d+)\.1\.fn\.net\.0\.", lambda m: f"transformer.{m.group(1)}.mlp.fc1."),
    (r"transformer\.layers\.(\d+)\.1\.fn\.net\.3\.", lambda m: f"transformer.{m.group(1)}.mlp.fc2."),
    (r"conv3\.0\.", lambda m: "conv_proj.conv."),
    (r"conv3\.1\.", lambda m: "conv_proj.bn."),
    (r"conv4\.(0\.depthwise|0\.pointwise|1)\.", lambda m: f"conv_fusion.{_SEP[m.group(1)]}."),
]


def _translate_key(key: str, expanded: Dict[str, bool]) -> str:
    """Authors' key -> this package's key; keys it does not know are returned unchanged."""
    m = re.match(r"encoder\.conv1\.(0\.depthwise|0\.pointwise|1)\.(.+)$", key)
    if m:
        return f"encoder.0.{_SEP[m.group(1)]}.{m.group(2)}"
    m = re.match(r"encoder\.mv2\.(\d+)\.conv\.(\d+)\.(.+)$", key)
    if m and int(m.group(1)) < len(_MV2_TO_ENCODER):
        names = _mv2_names(expanded.get(m.group(1), True))
        if m.group(2) in names:
            return f"encoder.{_MV2_TO_ENCODER[int(m.group(1))]}.{names[m.group(2)]}.{m.group(3)}"
        return key
    m = re.match(r"encoder\.mvit\.(\d+)\.(.+)$", key)
    if m and int(m.group(1)) < len(_MVIT_TO_ENCODER):
        rest = m.group(2)
        for pattern, repl in _MVIT_SUB:
            new, n = re.subn("^" + pattern, repl, rest)
            if n:
                return f"encoder.{_MVIT_TO_ENCODER[int(m.group(1))]}.{new}"
        return key
    m = re.match(r"encoder\.conv2\.([01])\.(.+)$", key)
    if m:
        return f"encoder.11.{'conv' if m.group(1) == '0' else 'bn'}.{m.group(2)}"
    m = re.match(r"decoder\.conv2d_(in|out)\.(.+)$", key)
    if m:
        return f"decoder.conv_{m.group(1)}.{m.group(2)}"
    m = re.match(r"decoder\.ups_block_(\d)\.(conv2d_transpose|end_up_layer\.0\.depthwise|"
                 r"end_up_layer\.0\.pointwise)\.(.+)$", key)
    if m:
        sub = {"conv2d_transpose": "upconv", "end_up_layer.0.depthwise": "conv_fusion.spatial",
               "end_up_layer.0.pointwise": "conv_fusion.pointwise"}[m.group(2)]
        return f"decoder.blocks.{int(m.group(1)) - 1}.{sub}.{m.group(3)}"
    return key


def _translate_original(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    # MV2 blocks with expansion 1 have no expand conv: their Sequential has 5 entries, not 8
    expanded = {}
    for key in state_dict:
        m = re.match(r"encoder\.mv2\.(\d+)\.conv\.(\d+)\.", key)
        if m:
            expanded[m.group(1)] = expanded.get(m.group(1), False) or int(m.group(2)) >= 6
    return OrderedDict((_translate_key(k, expanded), v) for k, v in state_dict.items())


def _describe(keys: List[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def translate_state_dict(checkpoint: Any, model: nn.Module) -> Dict[str, torch.Tensor]:
    """This package's state dict for ``model`` from any supported checkpoint; ValueError otherwise.

    Supported: the authors' original layout, this package's own state dicts, timm/mmengine
    training checkpoints (``state_dict`` / ``model`` entry, ``module.`` / ``_orig_mod.`` prefixes),
    and wrappers holding the network as ``backbone`` (other modules' keys are dropped). The error
    lists missing keys, unexpected keys and shape mismatches.
    """
    state_dict = _strip_wrappers(_unwrap(checkpoint))
    if is_original_layout(state_dict):
        state_dict = _translate_original(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    not_tensor = [k for k in state_dict if k in expected and not isinstance(state_dict[k], torch.Tensor)]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched or not_tensor:
        name = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {_describe(mismatched, 6)}")
        if not_tensor:
            problems.append(f"entries that are not tensors: {_describe(not_tensor)}")
        raise ValueError(f"checkpoint does not fit {name}:\n  " + "\n  ".join(problems))
    return OrderedDict((k, state_dict[k]) for k in expected)
