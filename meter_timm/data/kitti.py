"""KITTI depth (Eigen split) readers, no mmengine.

* Split files in either common form:
  - ``<image> <depth or None> <focal>`` per line (BTS / AdaBins / Depth-Anything lists, e.g.
    ``2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
    2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377``);
  - ``<date/drive folder> <frame index> <l|r>`` per line (Monodepth2 lists); the depth map is
    then ``<drive>/proj_depth/groundtruth/image_0{2,3}/<frame:010d>.png``.
* Images are looked up under ``image_root`` (``.png``, else ``.jpg``), depth maps under
  ``depth_root`` (also under its ``train/`` and ``val/`` folders, as the KITTI depth benchmark
  ships them). Lines without ground truth (``None``) are skipped.
* Depth maps are uint16 PNGs, metres = value / 256, 0 = no measurement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meter_timm.data.folder import DepthDataError, read_depth_map

__all__ = [
    "KITTI_DEPTH_SCALE",
    "KITTI_MAX_DEPTH",
    "KittiSample",
    "read_kitti_depth",
    "read_kitti_split",
]

KITTI_DEPTH_SCALE = 1.0 / 256.0
#: the usual evaluation cap (metres)
KITTI_MAX_DEPTH = 80.0


@dataclass
class KittiSample:
    image: str
    depth: str
    focal: float | None
    line: int


def read_kitti_depth(path: str | os.PathLike, max_depth: float | None = None) -> np.ndarray:
    """A KITTI ground-truth PNG as ``(H, W) float32`` metres (0 = no measurement)."""
    from PIL import Image

    path = Path(path)
    if path.is_file():
        try:
            with Image.open(path) as im:
                mode = im.mode
        except Exception as exc:
            raise DepthDataError(f"{path}: cannot read KITTI depth PNG ({exc})") from exc
        if mode not in ("I;16", "I;16B", "I"):
            raise DepthDataError(
                f"{path}: KITTI depth must be a 16-bit PNG (value / 256 = metres), "
                f"found image mode {mode}"
            )
    return read_depth_map(path, KITTI_DEPTH_SCALE, 0.0, max_depth, invalid_value=0)


def _find(root: Path, rel: str, alternatives: tuple[str, ...] = ()) -> Path | None:
    rel_path = Path(rel)
    names = [rel_path] + [rel_path.with_suffix(s) for s in alternatives if s != rel_path.suffix]
    for base in (root, root / "train", root / "val"):
        for name in names:
            if (base / name).is_file():
                return base / name
    return None


def read_kitti_split(
    split_file: str | os.PathLike,
    image_root: str | os.PathLike,
    depth_root: str | os.PathLike | None = None,
) -> list[KittiSample]:
    """The samples of an Eigen split file that have ground truth, with resolved paths.

    A listed image or depth map that does not exist is an error naming the split line."""
    split_file, image_root = Path(split_file), Path(image_root)
    depth_root = Path(depth_root) if depth_root is not None else image_root
    if not split_file.is_file():
        raise DepthDataError(f"{split_file}: KITTI split file not found")
    try:
        lines = split_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DepthDataError(f"{split_file}: split file is not UTF-8 text ({exc})") from exc
    samples = []
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{split_file}:{line_no}"
        if len(fields) == 3 and fields[2] in ("l", "r") and fields[1].isdigit():
            folder, frame, side = fields
            camera = "image_02" if side == "l" else "image_03"
            image_rel = f"{folder}/{camera}/data/{int(frame):010d}.png"
            depth_rel = f"{Path(folder).name}/proj_depth/groundtruth/{camera}/{int(frame):010d}.png"
            focal = None
        elif len(fields) in (2, 3):
            image_rel, depth_rel = fields[0], fields[1]
            try:
                focal = float(fields[2]) if len(fields) == 3 else None
            except ValueError as exc:
                raise DepthDataError(
                    f"{where}: focal length {fields[2]!r} is not a number"
                ) from exc
            if depth_rel == "None":
                continue  # no ground truth for this frame
        else:
            raise DepthDataError(
                f"{where}: expected '<image> <depth> [<focal>]' or "
                f"'<folder> <frame> <l|r>', got {line.strip()!r}"
            )
        image = _find(image_root, image_rel, (".png", ".jpg"))
        if image is None:
            raise DepthDataError(f"{where}: image {image_rel} not found under {image_root}")
        depth = _find(depth_root, depth_rel)
        if depth is None:
            raise DepthDataError(f"{where}: depth map {depth_rel} not found under {depth_root}")
        samples.append(KittiSample(str(image), str(depth), focal, line_no))
    if not samples:
        raise DepthDataError(f"{split_file}: no sample with ground truth listed")
    return samples
