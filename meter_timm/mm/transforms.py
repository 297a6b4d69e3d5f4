"""Transforms that keep the image and its depth map aligned.

Images travel as ``results["img"]`` ``(H, W, 3)`` RGB on the 0-255 scale (uint8; float32 after
:class:`ResizeDepth`), depth as ``results["gt_depth"]``
``(H, W) float32`` metres with 0 = invalid. Every transform that changes depth values re-marks
depth outside ``(0, max_depth]`` as invalid (``results["max_depth"]``, default 10 m).
The METER training augmentations (Papa et al. 2023) each fire with probability ``prob`` = 0.5.
ImageNet normalisation happens in :class:`meter_timm.mm.model.DepthDataPreprocessor`.

Each random transform takes its probability ``prob`` itself, as mmcv's own ``RandomFlip`` does,
instead of being wrapped in ``mmcv.transforms.RandomApply``: configs keep
``dict(type="RandomMirror", prob=0.5)``, and ``RandomMirror`` records ``flip=False`` when it does
not fire. Every random draw happens in a method marked ``mmcv.transforms.utils.cache_randomness``
(the draws and their order are those of a plain ``np.random`` implementation), so
``TransformBroadcaster`` and ``cache_random_params`` can reuse one draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from meter_timm.data.nyu import sanitize_depth
from meter_timm.mm.registry import TRANSFORMS
from meter_timm.mm.structures import DepthDataSample


@TRANSFORMS.register_module()
class RandomMirror(BaseTransform):
    """Flip image and depth left-right with probability ``prob`` (default 0.5); sets ``flip``."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    @cache_randomness
    def _flips(self) -> bool:
        return bool(np.random.rand() < self.prob)

    def transform(self, results: dict) -> dict:
        flip = self._flips()
        if flip:
            results["img"] = np.ascontiguousarray(results["img"][:, ::-1])
            results["gt_depth"] = np.ascontiguousarray(results["gt_depth"][:, ::-1])
        results["flip"] = bool(flip)
        results["flip_direction"] = "horizontal" if flip else None
        return results


@TRANSFORMS.register_module()
class RandomChannelSwap(BaseTransform):
    """With probability ``prob``, rebuild the RGB channels from one of the 27 index triples
    (repetition allowed, identity included), as in METER."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    @cache_randomness
    def _channel_order(self) -> np.ndarray | None:
        """The channel triple, or None when the transform does not fire."""
        if np.random.rand() >= self.prob:
            return None
        return np.random.randint(0, 3, size=3)

    def transform(self, results: dict) -> dict:
        order = self._channel_order()
        if order is not None:
            results["img"] = np.ascontiguousarray(results["img"][..., order])
            results["channel_order"] = tuple(int(c) for c in order)
        return results


@TRANSFORMS.register_module()
class RandomDepthCrop(BaseTransform):
    """With probability ``prob``, crop image and depth at the same random window.

    Args:
        crop_size (tuple[int, int] | None): (h, w) in pixels; frames not larger are left alone.
        crop_ratio (float | None): alternatively, the window as a fraction of each side
            (e.g. 0.9 keeps 432x576 of 480x640). Exactly one of the two must be set.
        prob (float): probability. Default 0.5.
    """

    def __init__(
        self,
        crop_size: Sequence[int] | None = None,
        crop_ratio: float | None = None,
        prob: float = 0.5,
    ):
        if (crop_size is None) == (crop_ratio is None):
            raise ValueError("RandomDepthCrop: set exactly one of crop_size and crop_ratio")
        if crop_ratio is not None and not 0 < crop_ratio <= 1:
            raise ValueError(f"RandomDepthCrop: crop_ratio must be in (0, 1], got {crop_ratio}")
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.crop_ratio = crop_ratio
        self.prob = prob

    @cache_randomness
    def _window(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        """``(top, left, height, width)`` of the crop of an ``h x w`` frame, or None (no crop)."""
        if np.random.rand() >= self.prob:
            return None
        if self.crop_size is not None:
            ch, cw = self.crop_size
        else:
            ch, cw = int(round(h * self.crop_ratio)), int(round(w * self.crop_ratio))
        if ch >= h and cw >= w:
            return None
        ch, cw = min(ch, h), min(cw, w)
        top = np.random.randint(0, h - ch + 1)
        left = np.random.randint(0, w - cw + 1)
        return top, left, ch, cw

    def transform(self, results: dict) -> dict:
        window = self._window(*results["gt_depth"].shape)
        if window is None:
            return results
        top, left, ch, cw = window
        results["img"] = np.ascontiguousarray(results["img"][top : top + ch, left : left + cw])
        results["gt_depth"] = np.ascontiguousarray(
            results["gt_depth"][top : top + ch, left : left + cw]
        )
        results["img_shape"] = (ch, cw)
        results["crop_bbox"] = (top, left, top + ch, left + cw)
        return results


@TRANSFORMS.register_module()
class ColorDepthShift(BaseTransform):
    """METER's "shifting strategy": with probability ``prob``, gamma, brightness and per-channel
    colour factors (each uniform in ``factor_range``) on the image and an integer depth shift in
    ``shift_cm`` centimetres on the valid depth.

    The image is handled in [0, 1] for the gamma (``255 * (x / 255) ** gamma``) and clipped back to
    uint8; shifted depth outside ``(0, max_depth]`` becomes invalid (0).

    Args:
        factor_range (tuple[float, float]): range of gamma, brightness and colour.
            Default (0.9, 1.1).
        shift_cm (tuple[int, int]): inclusive range of the depth shift in cm. Default (-10, 10).
        prob (float): probability. Default 0.5.
    """

    def __init__(
        self,
        factor_range: Sequence[float] = (0.9, 1.1),
        shift_cm: Sequence[int] = (-10, 10),
        prob: float = 0.5,
    ):
        self.factor_range = tuple(factor_range)
        self.shift_cm = tuple(shift_cm)
        self.prob = prob

    @cache_randomness
    def _factors(self) -> tuple[float, float, np.ndarray, float] | None:
        """``(gamma, brightness, colour (3,), depth shift in m)``, or None when it does not fire."""
        if np.random.rand() >= self.prob:
            return None
        lo, hi = self.factor_range
        gamma, brightness = np.random.uniform(lo, hi), np.random.uniform(lo, hi)
        colour = np.random.uniform(lo, hi, size=3).astype(np.float32)
        shift = np.random.randint(self.shift_cm[0], self.shift_cm[1] + 1) / 100.0
        return gamma, brightness, colour, shift

    def transform(self, results: dict) -> dict:
        factors = self._factors()
        if factors is None:
            return results
        gamma, brightness, colour, shift = factors
        img = results["img"].astype(np.float32) / 255.0
        img = np.power(img, gamma) * (brightness * colour)
        results["img"] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        depth = results["gt_depth"]
        valid = depth > 0
        shifted = np.where(valid, depth + np.float32(shift), 0).astype(np.float32)
        results["gt_depth"] = sanitize_depth(shifted, results.get("max_depth", 10.0))
        results["depth_shift"] = float(shift)
        return results


@TRANSFORMS.register_module()
class ResizeDepth(BaseTransform):
    """Resize to ``scale`` = (h, w): image bilinear with antialiasing, depth nearest
    (``nearest-exact``: pixel-centre aligned, so invalid pixels never blend into valid ones).
    A resized image is float32 on the 0-255 scale, not rounded back to uint8 (rounding moves the
    reproduced METER scores by ~0.1%).

    Args:
        scale (tuple[int, int]): output (height, width), e.g. (192, 256).
        resize_depth (bool): resize ``gt_depth`` too (training); keep it at its original size for
            evaluation (the metric upsamples the prediction). Default True.
    """

    def __init__(self, scale: Sequence[int] = (192, 256), resize_depth: bool = True):
        self.scale = tuple(int(s) for s in scale)
        self.resize_depth = resize_depth

    def transform(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        if (h, w) != self.scale:
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
            t = F.interpolate(
                t, size=self.scale, mode="bilinear", align_corners=False, antialias=True
            )
            results["img"] = t[0].permute(1, 2, 0).numpy()
        if self.resize_depth and results["gt_depth"].shape != self.scale:
            d = torch.from_numpy(np.ascontiguousarray(results["gt_depth"]))[None, None]
            results["gt_depth"] = F.interpolate(d, size=self.scale, mode="nearest-exact")[
                0, 0
            ].numpy()
        results["img_shape"] = self.scale
        results["scale_factor"] = (self.scale[1] / w, self.scale[0] / h)
        return results


@TRANSFORMS.register_module()
class PackDepthInputs(BaseTransform):
    """Pack ``img`` into ``inputs`` (``(3, H, W)`` uint8 or float32 tensor, 0-255) and
    ``gt_depth`` into a :class:`DepthDataSample` (``(1, H, W)`` float32 metres, invalid = 0, values
    outside ``(0, max_depth]`` forced to 0).

    Args:
        meta_keys (tuple[str]): keys of ``results`` copied into the sample's metainfo when present.
    """

    def __init__(
        self,
        meta_keys: Sequence[str] = (
            "img_path",
            "depth_path",
            "sample_idx",
            "frame_index",
            "ori_shape",
            "img_shape",
            "scale_factor",
            "flip",
            "flip_direction",
            "depth_format",
            "max_depth",
        ),
    ):
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results["img"])
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"PackDepthInputs: expected an (H, W, 3) image, got {img.shape} "
                f"({results.get('img_path', '?')})"
            )
        inputs = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        sample = DepthDataSample()
        if "gt_depth" in results:
            depth = sanitize_depth(results["gt_depth"], results.get("max_depth", 10.0))
            sample.gt_depth = torch.from_numpy(np.ascontiguousarray(depth))[None]
        sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        return dict(inputs=inputs, data_samples=sample)
