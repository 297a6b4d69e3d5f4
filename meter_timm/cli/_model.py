"""The model of the commands that look inside one (dissect, ablate): a timm name or a config."""

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
    the weights file's state dict or None). The file is read once, for the weights and for any
    strategy stored with them."""
    import meter_timm.mm  # noqa: F401  (registers the meter_timm scope)
    from meter_timm.checkpoint import load_checkpoint_file, load_weights, state_dict_of
    from meter_timm.mm.model import DepthEstimator
    from meter_timm.mm.registry import MODELS

    if spec.endswith(".py"):
        from mmengine.config import Config

        if not Path(spec).is_file():
            raise FileNotFoundError(f"config file not found: {spec}")
        if timm_kwargs:
            raise ValueError("--model-arg applies to a timm model name, not to a config")
        if features_only:
            raise ValueError("--features-only applies to a timm model name, not to a config")
        model = MODELS.build(Config.fromfile(spec).model)
    else:
        backbone = dict(name=spec, pretrained=False, **(timm_kwargs or {}))
        if features_only:
            backbone["features_only"] = True
        model = DepthEstimator(backbone=backbone)
    state = None
    if weights:
        state = state_dict_of(load_checkpoint_file(weights), weights)
        load_weights(model, weights, state=state)
    return model, state
