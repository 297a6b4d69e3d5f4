"""A folder of RGB images and depth maps matched by name, with a user-given depth scale (no
mmengine).

Two layouts:

* two sub-folders, e.g. ``rgb/scene1/0001.jpg`` and ``depth/scene1/0001.png`` (matched by the path
  relative to each sub-folder, without extension);
* one folder holding both, the depth files marked by a suffix, e.g. ``0001_colors.png`` and
  ``0001_depth.png`` (``image_suffix="_colors"``, ``depth_suffix="_depth"``).

Depth files are PNG/TIFF (integer or float) or ``.npy``; metres = stored value x ``depth_scale``
(1/1000 for millimetre PNGs, 1/256 for KITTI, 1 for float metres).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meter_timm.data.nyu import NYUDataError, check_depth_unit, read_rgb

__all__ = [
    "DepthDataError",
    "FolderPair",
    "discover_folder_pairs",
    "read_depth_map",
    "read_folder_pair",
    "valid_depth",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")
#: (image folder, depth folder) names looked for when none are given
SUBFOLDER_PAIRS = tuple(
    (image, depth)
    for image in ("rgb", "image", "images", "color", "colors")
    for depth in ("depth", "depths")
)


class DepthDataError(NYUDataError):
    """A depth data file or folder is missing, unreadable or inconsistent (the message names it)."""


@dataclass
class FolderPair:
    image: str
    depth: str
    key: str  # the shared name: relative path without extension and suffix


def valid_depth(
    depth: np.ndarray,
    min_depth: float = 0.0,
    max_depth: float | None = None,
    invalid_mask: np.ndarray | None = None,
) -> np.ndarray:
    """float32 depth with invalid pixels set to 0: non-finite, ``<= min_depth``, ``> max_depth``
    (when given), or flagged in ``invalid_mask``."""
    depth = np.asarray(depth, dtype=np.float32)
    bad = ~np.isfinite(depth) | (depth <= min_depth)
    if max_depth is not None:
        bad |= depth > max_depth
    if invalid_mask is not None:
        bad |= invalid_mask
    if bad.any():
        depth = depth.copy()
        depth[bad] = 0.0
    return depth


def read_depth_map(
    path: str | os.PathLike,
    depth_scale: float,
    min_depth: float = 0.0,
    max_depth: float | None = None,
    invalid_value: float | None = None,
) -> np.ndarray:
    """Read a depth map as ``(H, W) float32`` metres (0 = invalid).

    ``metres = stored value * depth_scale``; a stored value equal to ``invalid_value`` (before
    scaling, e.g. 0 or 65535) is invalid, as is anything outside ``(min_depth, max_depth]``."""
    path = Path(path)
    if not path.is_file():
        raise DepthDataError(f"{path}: depth file not found")
    if not depth_scale or not np.isfinite(depth_scale) or depth_scale <= 0:
        raise DepthDataError(f"{path}: depth_scale must be a positive number, got {depth_scale!r}")
    try:
        if path.suffix.lower() == ".npy":
            raw = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                raw = np.asarray(im)
    except Exception as exc:
        raise DepthDataError(f"{path}: cannot read depth map ({exc})") from exc
    raw = np.squeeze(raw)
    if raw.ndim != 2:
        raise DepthDataError(f"{path}: depth map has shape {raw.shape}, expected (H, W)")
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise DepthDataError(f"{path}: depth map of dtype {raw.dtype} is not numeric")
    invalid = None if invalid_value is None else raw == invalid_value
    depth = raw.astype(np.float64) * depth_scale
    check_depth_unit(
        depth if invalid is None else np.where(invalid, 0.0, depth),
        f"{path}: depth (stored value x depth_scale {depth_scale:g})",
        max_depth,
        min_depth,
        hint="depth_scale must turn the stored values into metres (0.001 for millimetres, 1 "
        "for metres)",
        error=DepthDataError,
    )
    return valid_depth(depth, min_depth, max_depth, invalid)


def _files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def _key(path: Path, folder: Path, suffix: str) -> str | None:
    """The path relative to ``folder`` without extension and ``suffix``; None without the suffix."""
    rel = path.relative_to(folder).with_suffix("").as_posix()
    if suffix:
        if not rel.endswith(suffix):
            return None
        rel = rel[: -len(suffix)]
    return rel


def discover_folder_pairs(
    root: str | os.PathLike,
    image_dir: str | None = None,
    depth_dir: str | None = None,
    image_suffix: str = "",
    depth_suffix: str | None = None,
    skip_unmatched: bool = False,
) -> list[FolderPair]:
    """Image/depth pairs under ``root``, sorted by name.

    Without ``image_dir``/``depth_dir`` the first of :data:`SUBFOLDER_PAIRS` present under
    ``root`` is used, else ``root`` itself holds both, and depth files end in ``depth_suffix``
    (default ``"_depth"`` there, ``""`` with two folders). An image without a depth map is an
    error naming it, unless ``skip_unmatched``; so are two images or depth maps of one name."""
    root = Path(root)
    if not root.is_dir():
        raise DepthDataError(f"{root}: data folder not found")
    layout = f"image_dir={image_dir}, depth_dir={depth_dir}"
    if image_dir is None and depth_dir is None:
        found = next(
            ((i, d) for i, d in SUBFOLDER_PAIRS if (root / i).is_dir() and (root / d).is_dir()),
            None,
        )
        image_dir, depth_dir = found or (".", ".")
        layout = (
            f"sub-folders {image_dir}/ and {depth_dir}/"
            if found
            else "one folder (no sub-folders {rgb,image,images,color,colors}/ + {depth,depths}/)"
        )
    images_at = (root / (image_dir or ".")).resolve()
    depths_at = (root / (depth_dir or ".")).resolve()
    for folder in (images_at, depths_at):
        if not folder.is_dir():
            raise DepthDataError(f"{folder}: folder not found")
    same = images_at == depths_at
    if depth_suffix is None:
        depth_suffix = "_depth" if same else ""
    if same and not depth_suffix:
        raise DepthDataError(
            f"{root}: images and depth maps in one folder need a depth_suffix "
            "(e.g. '_depth') to tell them apart"
        )
    depths: dict[str, Path] = {}
    for path in _files(depths_at, DEPTH_EXTENSIONS):
        key = _key(path, depths_at, depth_suffix)
        if key is None:
            continue
        if key in depths:
            raise DepthDataError(f"{path}: two depth maps for {key!r} ({depths[key].name})")
        depths[key] = path
    pairs, images = [], {}
    for path in _files(images_at, IMAGE_EXTENSIONS):
        if same and _key(path, depths_at, depth_suffix) is not None:
            continue  # a depth map
        key = _key(path, images_at, image_suffix)
        if key is None:
            continue
        if key in images:
            raise DepthDataError(f"{path}: two images for {key!r} ({images[key].name})")
        images[key] = path
        depth = depths.get(key)
        if depth is None:
            if skip_unmatched:
                continue
            raise DepthDataError(
                f"{path}: no depth map named {key}{depth_suffix}"
                f"{{{','.join(DEPTH_EXTENSIONS)}}} in {depths_at} (layout: {layout})"
            )
        pairs.append(FolderPair(str(path), str(depth), key))
    if not pairs:
        raise DepthDataError(
            f"{root}: no image/depth pairs found (layout: {layout}; images in {images_at}, depth "
            f"maps ending in {depth_suffix!r} in {depths_at})"
        )
    return pairs


def read_folder_pair(
    pair: FolderPair,
    depth_scale: float,
    min_depth: float = 0.0,
    max_depth: float | None = None,
    invalid_value: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (H, W, 3) uint8, depth (H, W) float32 metres)`` of one pair, sizes checked."""
    rgb = read_rgb(pair.image)
    depth = read_depth_map(pair.depth, depth_scale, min_depth, max_depth, invalid_value)
    if rgb.shape[:2] != depth.shape:
        raise DepthDataError(
            f"{pair.depth}: depth shape {depth.shape} does not match image "
            f"{pair.image} of shape {rgb.shape[:2]}"
        )
    return rgb, depth
