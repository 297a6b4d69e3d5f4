"""mmengine model wrapper for timm depth networks.

:class:`DepthEstimator` wraps either a timm model that already predicts depth (the ``meter_*``
family: ``(B, 1, H/4, W/4)`` metres) or any timm backbone created with ``features_only=True``
followed by :class:`~meter_timm.models.LightDepthDecoder`. :class:`DepthDataPreprocessor` stacks
the 0-255 images and applies ImageNet normalisation on the 0-255 scale (identical to METER's
[0, 1] + ImageNet mean/std). The depth losses come from :mod:`meter_timm.losses` through MODELS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel, ImgDataPreprocessor

import meter_timm  # noqa: F401  (registers meter_* with timm)
from meter_timm.data.resize import resize_depth_nearest
from meter_timm.mm.registry import MODELS
from meter_timm.mm.structures import DepthDataSample
from meter_timm.models.decoder import LightDepthDecoder
from meter_timm.models.weights import create_model
from meter_timm.precision import autocast_disabled

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@MODELS.register_module()
class DepthDataPreprocessor(ImgDataPreprocessor):
    """Stack images, normalise with ImageNet mean/std given on the 0-255 scale (inputs are uint8 or
    float 0-255 from :class:`~meter_timm.mm.transforms.PackDepthInputs`), move everything to the
    model's device. Arguments as mmengine's ``ImgDataPreprocessor``; defaults to ImageNet."""

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN_255,
        std: Sequence[float] = IMAGENET_STD_255,
        pad_size_divisor: int = 1,
        pad_value: float = 0,
        bgr_to_rgb: bool = False,
        rgb_to_bgr: bool = False,
        non_blocking: bool = False,
    ):
        super().__init__(
            mean=mean,
            std=std,
            pad_size_divisor=pad_size_divisor,
            pad_value=pad_value,
            bgr_to_rgb=bgr_to_rgb,
            rgb_to_bgr=rgb_to_bgr,
            non_blocking=non_blocking,
        )

    @torch.compiler.disable
    def forward(self, data: dict, training: bool = False) -> dict:
        """As mmengine's, always eager. mmengine's ``--compile`` compiles the whole ``train_step``,
        and moving the data samples copies their metadata (file names, flip flags), which dynamo
        would guard object by object: a recompile at nearly every batch until it gives up."""
        return super().forward(data, training)


def create_backbone(backbone: dict) -> nn.Module:
    """``timm.create_model`` from a config dict whose ``name`` (or ``model_name``) is the timm
    model; the other keys are timm keyword arguments."""
    kwargs = dict(backbone)
    name = kwargs.pop("name", None) or kwargs.pop("model_name", None)
    if not name:
        raise ValueError("DepthEstimator: backbone needs a 'name' (a timm model name)")
    if ":" not in name:  # hf-hub:, local-dir: ... names are timm's to resolve
        from meter_timm._names import check_model_name

        try:
            check_model_name(name)
        except ValueError as exc:
            raise ValueError(f"DepthEstimator backbone: {exc}") from None
    return create_model(name, **kwargs)  # a pretrained_cfg_overlay file: the one reader


@MODELS.register_module()
class DepthEstimator(BaseModel):
    """Monocular depth estimation with a timm network.

    Args:
        backbone (dict): timm arguments, ``name`` = model name, e.g.
            ``dict(name="meter_xxs", pretrained=False)`` (a depth model, output ``(B, 1, H/4, W/4)``
            metres) or ``dict(name="resnet18", features_only=True)`` (then ``decoder`` is used).
            Original weights: ``pretrained=True, pretrained_cfg_overlay=dict(file=PATH)``.
        decoder (dict, optional): arguments of :class:`~meter_timm.models.LightDepthDecoder`
            (``channels``, ``init_depth``) for ``features_only`` backbones.
        depth_loss (dict, optional): loss built from MODELS; called as
            ``depth_loss(pred, target, valid)`` at the prediction's resolution (target resized with
            nearest-exact), returns a dict of ``loss_*`` terms. Default ``L1DepthLoss``.
        selectivity (dict, optional): e.g. ``dict(type="SelectivityLoss", layers=[...])``; built
            from MODELS, attached to the backbone, and called in loss mode with the full-resolution
            ground truth and the detached sum of the depth terms.
        data_preprocessor (dict, optional): default :class:`DepthDataPreprocessor`.
        channels_last (bool): keep the network's weights and inputs in channels-last memory
            layout (faster convolutions on GPUs with tensor cores). Default False.
        compile_network (bool or dict): ``torch.compile`` the network only (the backbone, and
            the decoder if any, through ``nn.Module.compile``; a dict gives its arguments, e.g.
            ``dict(backend="eager")``; ``dynamic`` defaults to False: each new input size
            compiles anew). Backward is compiled with it; the losses and the
            optimizer step stay eager, and parameter names do not change. The top-level
            ``compile`` option of mmengine compiles the whole training step instead.
        init_cfg (dict, optional): mmengine init config.

    Modes: ``"loss"`` -> dict of losses; ``"predict"`` -> the data samples with ``pred_depth``
    ``(1, H, W)`` upsampled bilinearly to the ground truth's size (else ``ori_shape``, else the
    input size); ``"tensor"`` -> the raw prediction ``(B, 1, h, w)``.
    """

    def __init__(
        self,
        backbone: dict,
        decoder: dict | None = None,
        depth_loss: dict | None = None,
        selectivity: dict | None = None,
        data_preprocessor: dict | None = None,
        channels_last: bool = False,
        compile_network: bool | dict = False,
        init_cfg: dict | None = None,
    ):
        if data_preprocessor is None:
            data_preprocessor = dict(type="DepthDataPreprocessor")
        if isinstance(data_preprocessor, dict) and "type" in data_preprocessor:
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone_cfg = dict(backbone)
        self.backbone = create_backbone(backbone)
        self.features_only = bool(backbone.get("features_only", False))
        if self.features_only:
            info = self.backbone.feature_info
            self.decoder = LightDepthDecoder(info.channels(), info.reduction(), **(decoder or {}))
            # timm's features_only wrappers declare their layout: NHWC for Swin and the like
            fmt = getattr(self.backbone, "output_fmt", "NCHW")
            self.channels_last_features = str(getattr(fmt, "value", fmt)).upper() == "NHWC"
        else:
            if decoder:
                raise ValueError("DepthEstimator: 'decoder' is only used with features_only=True")
            self.decoder = None
        self.depth_loss = MODELS.build(depth_loss or dict(type="L1DepthLoss"))
        self.selectivity = None
        if selectivity is not None:
            self.selectivity = MODELS.build(selectivity)
            self.selectivity.attach(self.backbone)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if compile_network:  # after the selectivity hooks: dynamo traces them with the network
            options = dict(compile_network) if isinstance(compile_network, dict) else {}
            options.setdefault("dynamic", False)  # see meter_timm.cli.train: static shapes
            for module in (self.backbone, self.decoder):
                if module is not None:
                    module.compile(**options)

    # ------------------------------------------------------------------------------ forward
    def predict_depth(self, inputs: torch.Tensor) -> torch.Tensor:
        """Raw prediction ``(B, 1, h, w)`` in metres for normalised ``(B, 3, H, W)`` inputs."""
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.features_only:
            features = self.backbone(inputs)
            if self.channels_last_features:
                features = [f.permute(0, 3, 1, 2) for f in features]
            return self.decoder(features, inputs.shape[-2:])
        out = self.backbone(inputs)
        if out.dim() == 3:
            out = out[:, None]
        if out.dim() != 4 or out.shape[1] != 1:
            raise ValueError(
                f"DepthEstimator: backbone {self.backbone_cfg.get('name')!r} returned shape "
                f"{tuple(out.shape)}, not a (B, 1, h, w) depth map; give features_only=True to "
                "add the light decoder"
            )
        return out

    def forward(self, inputs: torch.Tensor, data_samples: list | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.predict_depth(inputs)
        raise ValueError(
            f"DepthEstimator: invalid mode {mode!r} (use 'loss', 'predict' or 'tensor')"
        )

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        if not data_samples:
            raise ValueError("DepthEstimator.loss needs data samples with gt_depth")
        pred = self.predict_depth(inputs)
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred = pred.float()  # mixed precision: the losses and statistics below are float32
        gt = [s.gt_depth.to(pred.dtype) for s in data_samples]
        target = torch.stack([resize_depth_nearest(g, pred.shape[-2:]) for g in gt])
        valid = target > 0
        with autocast_disabled():
            losses = dict(self.depth_loss(pred, target, valid))
        if self.selectivity is not None:
            base = sum(v for k, v in losses.items() if "loss" in k and torch.is_tensor(v))
            if all(g.shape == gt[0].shape for g in gt):
                depth = torch.stack(gt)
            else:  # mixed sizes: bring every map to the input resolution
                depth = torch.stack([resize_depth_nearest(g, inputs.shape[-2:]) for g in gt])
            losses.update(self.selectivity(depth=depth, base_loss=base.detach()))
        return losses

    def predict(self, inputs: torch.Tensor, data_samples: list | None = None) -> list:
        pred = self.predict_depth(inputs)
        if data_samples is None:
            data_samples = [
                DepthDataSample(metainfo=dict(img_shape=tuple(inputs.shape[-2:])))
                for _ in range(inputs.shape[0])
            ]
        for p, sample in zip(pred, data_samples):
            if "gt_depth" in sample:
                size = sample.gt_depth.shape[-2:]
            elif "ori_shape" in sample:
                size = sample.ori_shape[:2]
            else:
                size = inputs.shape[-2:]
            if tuple(p.shape[-2:]) != tuple(size):
                p = F.interpolate(p[None], size=tuple(size), mode="bilinear", align_corners=False)[
                    0
                ]
            sample.pred_depth = p.detach()
        return data_samples
