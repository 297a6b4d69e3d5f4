"""The METER authors' state-dict layout, translated to this package's (``checkpoint_filter_fn``).

Kept apart from the model definition so that ``meter.py`` never knows the foreign names. Files are
read by :func:`meter_timm.checkpoint.load_checkpoint_file`; this module only renames keys.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from meter_timm.checkpoint import adaptable_input_conv, state_dict_of

__all__ = ["translate_state_dict", "is_original_layout"]

# original ModuleList index -> index in this package's ``encoder`` Sequential
_MV2_TO_ENCODER = (1, 2, 3, 4, 5, 7, 9)
_MVIT_TO_ENCODER = (6, 8, 10)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_ORIGINAL_MARKERS = ("encoder.conv1.", "encoder.mv2.", "encoder.mvit.", "decoder.ups_block_")


def _strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    out = OrderedDict()
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    # a wrapper (e.g. mmengine's DepthEstimator) holding the model as ``backbone``: keep only it
    if any(k.startswith("backbone.") for k in out):
        out = OrderedDict(
            (k[len("backbone.") :], v) for k, v in out.items() if k.startswith("backbone.")
        )
    return out


def is_original_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether the keys follow the authors' ``architecture.py`` (``encoder.mv2.0.conv.0.weight``,
    ...)."""
    return any(k.startswith(_ORIGINAL_MARKERS) for k in state_dict)


def _mv2_names(expanded: bool) -> dict[str, str]:
    if expanded:
        return {
            "0": "conv_pw.conv",
            "1": "conv_pw.bn",
            "3": "conv_dw.conv",
            "4": "conv_dw.bn",
            "6": "conv_pwl.conv",
            "7": "conv_pwl.bn",
        }
    return {"0": "conv_dw.conv", "1": "conv_dw.bn", "3": "conv_pwl.conv", "4": "conv_pwl.bn"}


_SEP = {"0.depthwise": "spatial", "0.pointwise": "pointwise", "1": "bn"}
_MVIT_SUB = [
    (r"conv1\.(0\.depthwise|0\.pointwise|1)\.", lambda m: f"conv_kxk.{_SEP[m.group(1)]}."),
    (r"conv2\.0\.", lambda m: "conv_1x1.conv."),
    (r"conv2\.1\.", lambda m: "conv_1x1.bn."),
    (r"transformer\.layers\.(\d+)\.0\.norm\.", lambda m: f"transformer.{m.group(1)}.norm1."),
    (
        r"transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.",
        lambda m: f"transformer.{m.group(1)}.attn.qkv.",
    ),
    (
        r"transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.",
        lambda m: f"transformer.{m.group(1)}.attn.proj.",
    ),
    (r"transformer\.layers\.(\d+)\.1\.norm\.", lambda m: f"transformer.{m.group(1)}.norm2."),
    (
        r"transformer\.layers\.(\d+)\.1\.fn\.net\.0\.",
        lambda m: f"transformer.{m.group(1)}.mlp.fc1.",
    ),
    (
        r"transformer\.layers\.(\d+)\.1\.fn\.net\.3\.",
        lambda m: f"transformer.{m.group(1)}.mlp.fc2.",
    ),
    (r"conv3\.0\.", lambda m: "conv_proj.conv."),
    (r"conv3\.1\.", lambda m: "conv_proj.bn."),
    (r"conv4\.(0\.depthwise|0\.pointwise|1)\.", lambda m: f"conv_fusion.{_SEP[m.group(1)]}."),
]


def _translate_key(key: str, expanded: dict[str, bool]) -> str:
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
    m = re.match(
        r"decoder\.ups_block_(\d)\.(conv2d_transpose|end_up_layer\.0\.depthwise|"
        r"end_up_layer\.0\.pointwise)\.(.+)$",
        key,
    )
    if m:
        sub = {
            "conv2d_transpose": "upconv",
            "end_up_layer.0.depthwise": "conv_fusion.spatial",
            "end_up_layer.0.pointwise": "conv_fusion.pointwise",
        }[m.group(2)]
        return f"decoder.blocks.{int(m.group(1)) - 1}.{sub}.{m.group(3)}"
    return key


def _translate_original(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    # MV2 blocks with expansion 1 have no expand conv: their Sequential has 5 entries, not 8
    expanded = {}
    for key in state_dict:
        m = re.match(r"encoder\.mv2\.(\d+)\.conv\.(\d+)\.", key)
        if m:
            expanded[m.group(1)] = expanded.get(m.group(1), False) or int(m.group(2)) >= 6
    return OrderedDict((_translate_key(k, expanded), v) for k, v in state_dict.items())


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def translate_state_dict(checkpoint: Any, model: nn.Module) -> dict[str, torch.Tensor]:
    """This package's state dict for ``model`` from any supported checkpoint; ValueError otherwise.

    Supported: the authors' original layout, this package's own state dicts, timm/mmengine
    training checkpoints (``state_dict`` / ``model`` entry, ``module.`` / ``_orig_mod.`` prefixes),
    and wrappers holding the network as ``backbone`` (other modules' keys are dropped). The error
    lists missing keys, unexpected keys and shape mismatches.
    """
    state_dict = _strip_wrappers(state_dict_of(checkpoint))
    if is_original_layout(state_dict):
        state_dict = _translate_original(state_dict)
    expected = model.state_dict()
    if getattr(model, "depth_head", True) is False:
        # a classifier or backbone from depth weights, as timm loads pretrained weights into a
        # new head: the depth decoder's weights are dropped, the head keeps its initialisation
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("decoder.")}
        state_dict.update(
            {k: v for k, v in expected.items() if k.startswith("head.") and k not in state_dict}
        )
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    not_tensor = [
        k for k in state_dict if k in expected and not isinstance(state_dict[k], torch.Tensor)
    ]
    # RGB weights of the first conv for a model with other input channels: left as they are for
    # timm's adapt_input_conv (which timm applies after this filter; load_weights does too)
    first_conv = f"{getattr(model, 'pretrained_cfg', {}).get('first_conv')}.weight"
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict
        and isinstance(state_dict[k], torch.Tensor)
        and state_dict[k].shape != expected[k].shape
        and not (k == first_conv and adaptable_input_conv(state_dict[k], expected[k]))
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
