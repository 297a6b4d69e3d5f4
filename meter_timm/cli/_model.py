"""The model of the commands that look inside one (dissect, ablate): a timm name or a config;
and the ``--device`` every command that runs a model moves it to."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_HELP = (
    "raw state dict or mmengine checkpoint (weights_only load); "
    "without it the model is randomly initialised"
)


def build_model(
    spec: str,
    weights: str | None,
    features_only: bool = False,
    timm_kwargs: dict | None = None,
):
    """(DepthEstimator from a timm name or a training config's ``model``, with the weights loaded;
    the weights file's state dict or None; the config's network input size (the ``ResizeDepth``
    scale of its test, else validation, pipeline) or None). The weights file and the config are
    each read once."""
    import meter_timm.mm  # noqa: F401  (registers the meter_timm scope)
    from meter_timm.checkpoint import load_checkpoint_file, load_weights, state_dict_of
    from meter_timm.mm.model import DepthEstimator
    from meter_timm.mm.registry import MODELS

    if spec.endswith(".py"):
        from meter_timm.cli._errors import load_config

        if not Path(spec).is_file():
            raise FileNotFoundError(f"config file not found: {spec}")
        if timm_kwargs:
            raise ValueError("--model-arg applies to a timm model name, not to a config")
        if features_only:
            raise ValueError("--features-only applies to a timm model name, not to a config")
        cfg = load_config(spec)
        model = MODELS.build(cfg.model)
        config_size = _pipeline_input_size(cfg)
    else:
        config_size = None
        backbone = dict(name=spec, pretrained=False, **(timm_kwargs or {}))
        if features_only:
            backbone["features_only"] = True
        model = DepthEstimator(backbone=backbone)
    state = None
    if weights:
        state = state_dict_of(load_checkpoint_file(weights), weights)
        load_weights(model, weights, state=state)
    return model, state, config_size


def _pipeline_input_size(cfg) -> tuple[int, int] | None:
    """The ``ResizeDepth`` scale of a config's test (else validation) pipeline, or None."""
    for loader in ("test_dataloader", "val_dataloader"):
        dataset = (cfg.get(loader) or {}).get("dataset") or {}
        for step in dataset.get("pipeline") or []:
            if step.get("type") == "ResizeDepth" and step.get("scale"):
                height, width = step["scale"]
                return int(height), int(width)
    return None


#: the network input size of models without a METER tag to take it from
DEFAULT_INPUT_SIZE = (192, 256)
INPUT_SIZE_HELP = (
    "network input size (default: a config's test pipeline size; the METER tag's own, 192x256 "
    "for .nyu and 192x636 for .kitti; 192x256 for other models)"
)


def input_size(model, given=None, config_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``--input-size`` when given; else ``config_size``, the size of the config the model comes
    from (see :func:`build_model`); else the input size of the METER model's pretrained config
    (the size its weights were trained at: 192x636 for ``.kitti``); else 192x256."""
    from meter_timm.models.meter import Meter

    if given:
        return int(given[0]), int(given[1])
    if config_size:
        return config_size
    backbone = getattr(model, "backbone", model)
    if isinstance(backbone, Meter):
        height, width = backbone.pretrained_cfg["input_size"][-2:]
        return int(height), int(width)
    return DEFAULT_INPUT_SIZE


def to_device(model, device: str):
    """``model`` moved to ``device``; ValueError naming the device when it cannot be used (no GPU,
    torch built without CUDA, a misspelt name)."""
    import torch

    try:
        return model.to(torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"cannot use device {device!r}: {err}") from err
