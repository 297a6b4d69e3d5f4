"""Procedural indoor scenes with exact per-pixel depth: the built-in data set.

Every frame is a box-shaped room (floor, ceiling, four walls) furnished with boxes standing on the
floor, seen by a pinhole camera with a random pose and field of view. Depth is exact: each pixel's
ray is intersected analytically with the room's planes and the boxes' slabs (vectorised numpy), and
the stored value is the z-depth along the camera's optical axis in metres, as in NYU Depth V2.

Images carry the monocular cues a depth network can learn from: perspective (textures shrink
with distance; the floor and ceiling converge), occlusion by furniture, Lambertian shading from a
ceiling light with distance fall-off, and a mild darkening with distance from the camera. Every
surface has its own colour and texture (plain, checker, stripes, value noise), so brightness
alone does not give the depth away.

Frames are written in the sparse-to-dense / FastDepth h5 layout used for NYU::

    OUT/train/room_0000/00000.h5 ... OUT/val/official/00000.h5
    'rgb'   uint8   (3, H, W)
    'depth' float32 (H, W), metres, all pixels valid, within (0, 10]

Everything is derived from one integer seed, frame by frame, so a data set is reproducible and
can be written in parallel.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SceneConfig",
    "render_frame",
    "generate_dataset",
    "dataset_is_complete",
    "ensure_dataset",
    "read_manifest",
    "check_settings",
    "frame_paths",
    "MAX_DEPTH",
]

MAX_DEPTH = 10.0  # metres; NYU's range
_MANIFEST = "synthetic.json"
_SPLIT_SALT = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SceneConfig:
    """Ranges the random rooms and cameras are drawn from (metres, degrees)."""

    room_width: tuple[float, float] = (3.0, 6.0)
    room_length: tuple[float, float] = (3.5, 7.5)
    room_height: tuple[float, float] = (2.4, 3.1)
    num_boxes: tuple[int, int] = (2, 7)
    camera_height: tuple[float, float] = (0.9, 1.7)
    hfov_deg: tuple[float, float] = (55.0, 70.0)
    pitch_deg: tuple[float, float] = (-20.0, 5.0)
    roll_deg: tuple[float, float] = (-3.0, 3.0)
    min_clearance: float = 0.45  # camera distance from walls and furniture


# ----------------------------------------------------------------------------------------------
# geometry


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation; camera axes x right, y up, z forward; world y is up."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])  # positive pitch looks up
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_yaw @ r_pitch @ r_roll


@dataclass
class _Box:
    center: np.ndarray  # (3,) world; y is the box's mid-height
    half: np.ndarray  # (3,) half extents in the box frame
    yaw: float

    def to_local(self, points: np.ndarray, dirs: np.ndarray | None = None):
        c, s = math.cos(-self.yaw), math.sin(-self.yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        local_p = (points - self.center) @ rot.T
        return local_p if dirs is None else (local_p, dirs @ rot.T)

    def normal_to_world(self, normals: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        return normals @ rot.T

    def contains_xz(self, point: np.ndarray, margin: float) -> bool:
        p = self.to_local(point[None])[0]
        return bool(abs(p[0]) < self.half[0] + margin and abs(p[2]) < self.half[2] + margin)


def _intersect_room(origin: np.ndarray, dirs: np.ndarray, size: np.ndarray):
    """Exit distance of rays starting inside the axis-aligned room [0, size]; returns (t, plane id).

    Plane ids: 0 floor, 1 ceiling, 2 wall x=0, 3 wall x=W, 4 wall z=0, 5 wall z=L.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = (0.0 - origin) / dirs  # (P, 3)
        t_high = (size - origin) / dirs
    t_exit = np.where(dirs > 0, t_high, t_low)  # the plane each axis leaves through
    t_exit = np.where(np.isfinite(t_exit) & (t_exit > 0), t_exit, np.inf)
    axis = np.argmin(t_exit, axis=1)
    t = t_exit[np.arange(len(dirs)), axis]
    positive = dirs[np.arange(len(dirs)), axis] > 0
    # axis 1 (y): floor/ceiling; axis 0: walls x; axis 2: walls z
    plane = np.choose(axis, [2 + positive, 0 + positive, 4 + positive]).astype(np.int64)
    return t, plane


def _intersect_box(box: _Box, origin: np.ndarray, dirs: np.ndarray):
    """Entry distance of rays into a (yawed) box, inf where missed; also the local face normal."""
    o, d = box.to_local(origin[None], dirs)
    o = o[0]
    t_enter = np.full(len(d), -np.inf)
    t_leave = np.full(len(d), np.inf)
    enter_axis = np.zeros(len(d), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = 1.0 / d[:, axis]
            t1 = (-box.half[axis] - o[axis]) * inv
            t2 = (box.half[axis] - o[axis]) * inv
            near, far = np.minimum(t1, t2), np.maximum(t1, t2)
            later = near > t_enter
            t_enter = np.where(later, near, t_enter)
            enter_axis[later] = axis
            t_leave = np.minimum(t_leave, far)
    hit = (t_enter <= t_leave) & (t_enter > 1e-6)
    t = np.where(hit, t_enter, np.inf)
    normal = np.zeros_like(d)
    rows = np.arange(len(d))
    normal[rows, enter_axis] = -np.sign(d[rows, enter_axis])
    return t, normal


# ----------------------------------------------------------------------------------------------
# appearance


def _value_noise(points: np.ndarray, scale: float, perm: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at ``points`` (P, 3), lattice spacing ``scale`` metres."""
    p = points / scale
    base = np.floor(p).astype(np.int64)
    frac = p - base
    frac = frac * frac * (3 - 2 * frac)
    out = np.zeros(len(points))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                ix, iy, iz = (
                    (base[:, 0] + dx) & 255,
                    (base[:, 1] + dy) & 255,
                    (base[:, 2] + dz) & 255,
                )
                value = perm[(perm[(perm[ix] + iy) & 255] + iz) & 255] / 255.0
                w = (
                    (frac[:, 0] if dx else 1 - frac[:, 0])
                    * (frac[:, 1] if dy else 1 - frac[:, 1])
                    * (frac[:, 2] if dz else 1 - frac[:, 2])
                )
                out += w * value
    return out


def _random_material(rng: np.random.Generator) -> dict:
    hue = rng.uniform(0, 1)
    sat = rng.uniform(0.05, 0.6)
    val = rng.uniform(0.35, 0.95)
    # HSV -> RGB
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return {
        "color": np.array(rgb),
        "color2": np.clip(np.array(rgb) * rng.uniform(0.4, 0.8) + rng.uniform(0, 0.2, 3), 0, 1),
        "texture": rng.choice(["plain", "checker", "stripes", "noise", "noise"]),
        "scale": rng.uniform(0.12, 0.6),
        "axis": int(rng.integers(0, 3)),
        "contrast": rng.uniform(0.3, 0.9),
    }


def _texture(material: dict, coords: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Albedo (P, 3) of a surface at texture coordinates ``coords`` (P, 3) metres."""
    kind, scale = material["texture"], material["scale"]
    if kind == "checker":
        cells = np.floor(coords / scale + 1e-4).astype(np.int64).sum(axis=1)
        mix = (cells & 1).astype(np.float64)
    elif kind == "stripes":
        mix = (np.sin(coords[:, material["axis"]] * (2 * np.pi / scale)) > 0).astype(np.float64)
    elif kind == "noise":
        mix = 0.65 * _value_noise(coords, scale, perm) + 0.35 * _value_noise(
            coords, scale / 4, perm
        )
    else:
        mix = np.full(len(coords), 0.5) * 0
    mix = mix * material["contrast"]
    return material["color"][None] * (1 - mix[:, None]) + material["color2"][None] * mix[:, None]


# ----------------------------------------------------------------------------------------------
# one frame


def render_frame(
    seed: int | np.random.SeedSequence,
    height: int = 240,
    width: int = 320,
    config: SceneConfig = SceneConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Render one random room; returns ``(rgb uint8 (3, H, W), depth float32 (H, W) metres)``."""
    rng = np.random.default_rng(seed)
    size = np.array(
        [
            rng.uniform(*config.room_width),
            rng.uniform(*config.room_height),
            rng.uniform(*config.room_length),
        ]
    )
    boxes = _random_boxes(rng, size, config)
    origin = _random_camera_position(rng, size, boxes, config)
    rotation = _rotation(
        _random_yaw(rng, origin, size, boxes),
        math.radians(rng.uniform(*config.pitch_deg)),
        math.radians(rng.uniform(*config.roll_deg)),
    )
    focal = (width / 2) / math.tan(math.radians(rng.uniform(*config.hfov_deg)) / 2)

    # rays with camera-frame z component 1, so the hit distance t IS the z-depth
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    cam = np.stack(
        [(u + 0.5 - width / 2) / focal, -(v + 0.5 - height / 2) / focal, np.ones_like(u)], axis=-1
    ).reshape(-1, 3)
    dirs = cam @ rotation.T

    depth, surface = _intersect_room(origin, dirs, size)
    normals = np.zeros_like(dirs)
    normals[np.arange(len(dirs)), np.array([1, 1, 0, 0, 2, 2])[surface]] = np.array(
        [1, -1, 1, -1, 1, -1], dtype=np.float64
    )[surface]
    for index, box in enumerate(boxes):
        t, box_normal = _intersect_box(box, origin, dirs)
        closer = t < depth
        depth = np.where(closer, t, depth)
        surface = np.where(closer, 6 + index, surface)
        normals[closer] = box.normal_to_world(box_normal[closer])
    points = origin + dirs * depth[:, None]

    rgb = _shade(rng, points, normals, surface, depth, boxes, size, origin)
    rgb = rgb.reshape(height, width, 3).transpose(2, 0, 1)
    depth = np.clip(depth, 1e-3, MAX_DEPTH).reshape(height, width).astype(np.float32)
    return rgb, depth


def _random_boxes(rng: np.random.Generator, size: np.ndarray, config: SceneConfig) -> list[_Box]:
    boxes = []
    for _ in range(int(rng.integers(config.num_boxes[0], config.num_boxes[1] + 1))):
        half = np.array([rng.uniform(0.2, 0.9), rng.uniform(0.2, 1.0), rng.uniform(0.2, 0.9)])
        against_wall = rng.uniform() < 0.5
        yaw = 0.0 if against_wall else rng.uniform(0, math.pi)
        if against_wall:  # furniture along a wall, axis-aligned
            x = rng.uniform(half[0], size[0] - half[0])
            z = rng.uniform(half[2], size[2] - half[2])
            if rng.uniform() < 0.5:
                x = half[0] if rng.uniform() < 0.5 else size[0] - half[0]
            else:
                z = half[2] if rng.uniform() < 0.5 else size[2] - half[2]
        else:
            x = rng.uniform(0.5, size[0] - 0.5)
            z = rng.uniform(0.5, size[2] - 0.5)
        boxes.append(_Box(np.array([x, half[1], z]), half, yaw))
    return boxes


def _random_camera_position(rng, size, boxes, config) -> np.ndarray:
    margin = config.min_clearance
    for _ in range(200):
        pos = np.array(
            [
                rng.uniform(margin, size[0] - margin),
                rng.uniform(*config.camera_height),
                rng.uniform(margin, size[2] - margin),
            ]
        )
        if not any(b.contains_xz(pos, margin) for b in boxes):
            return pos
    boxes.clear()  # a crowded room: drop the furniture rather than put the camera inside it
    return pos


def _random_yaw(
    rng: np.random.Generator, origin: np.ndarray, size: np.ndarray, boxes: list[_Box]
) -> float:
    """A heading that looks across the room (as photographers do) rather than at a near wall."""
    yaws = rng.uniform(0, 2 * math.pi, 8)
    flat = np.stack([np.sin(yaws), np.full(8, -0.15), np.cos(yaws)], axis=1)
    reach, _ = _intersect_room(origin, flat, size)
    for box in boxes:
        reach = np.minimum(reach, _intersect_box(box, origin, flat)[0])
    good = np.flatnonzero(reach >= 0.6 * reach.max())
    return float(yaws[rng.choice(good)])


def _shade(rng, points, normals, surface, depth, boxes, size, origin) -> np.ndarray:
    perm = rng.permutation(256)
    albedo = np.empty_like(points)
    for sid in np.unique(surface):
        mask = surface == sid
        material = _random_material(rng)
        coords = points[mask] if sid < 6 else boxes[sid - 6].to_local(points[mask])
        albedo[mask] = _texture(material, coords, perm)
    # a point light under the ceiling, plus ambient light
    light = np.array(
        [rng.uniform(0.2, 0.8) * size[0], size[1] - 0.15, rng.uniform(0.2, 0.8) * size[2]]
    )
    to_light = light - points
    dist = np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.clip((normals * to_light / np.maximum(dist, 1e-6)).sum(axis=1), 0, None)
    power = rng.uniform(1.2, 2.2)
    diffuse = power * lambert / (1.0 + (dist[:, 0] / 3.0) ** 2)
    ambient = rng.uniform(0.15, 0.35)
    # darkening with distance from the camera (a cheap stand-in for light fall-off and haze)
    haze = np.exp(-depth * rng.uniform(0.04, 0.12))
    radiance = albedo * ((ambient + diffuse) * haze)[:, None]
    radiance *= rng.uniform(0.85, 1.15, 3)[None]  # white balance
    radiance += rng.normal(0, 0.01, radiance.shape)  # sensor noise
    rgb = np.clip(radiance, 0, 1) ** (1 / 2.2)
    return (rgb * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# data set on disk


def _frame_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), _SPLIT_SALT[split], int(index)])


def frame_paths(
    out: str | os.PathLike, split: str, count: int, frames_per_scene: int
) -> Iterator[tuple[int, Path]]:
    """``(i, path)`` of frames 0 .. count-1 of ``split`` ("train" or "val") of a set in ``out``:
    the one place that knows the layout."""
    out = Path(out)
    for index in range(count):
        if split == "train":
            yield index, out / "train" / f"room_{index // frames_per_scene:04d}" / f"{index:05d}.h5"
        else:
            yield index, out / "val" / "official" / f"{index:05d}.h5"


def _write_frames(job: tuple) -> int:
    import h5py

    seed, split, items, height, width = job
    for index, path in items:
        rgb, depth = render_frame(_frame_seed(seed, split, index), height, width)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as f:
            f.create_dataset("rgb", data=rgb)
            f.create_dataset("depth", data=depth)
        os.replace(tmp, path)
    return len(items)


def _manifest(num_train, num_val, height, width, seed, frames_per_scene, finished) -> dict:
    return {
        "generator": "meter_timm.data.synthetic",
        "version": 1,
        "train": num_train,
        "val": num_val,
        "height": height,
        "width": width,
        "seed": seed,
        "frames_per_scene": frames_per_scene,
        "finished": finished,
    }


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The ``synthetic.json`` of a data set written here, or None if there is none."""
    path = Path(out) / _MANIFEST
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a valid data set manifest ({err})") from None
    if not isinstance(info, dict) or info.get("generator") != "meter_timm.data.synthetic":
        raise ValueError(f"{path}: not a manifest of meter_timm.data.synthetic")
    return info


def check_settings(
    out: str | os.PathLike, height: int, width: int, seed: int, frames_per_scene: int
) -> dict | None:
    """The manifest of ``out`` (None if there is none) after checking that its frames were made
    with these settings: frames of two settings in one folder would be read as one data set."""
    info = read_manifest(out)
    asked = dict(height=height, width=width, seed=seed, frames_per_scene=frames_per_scene)
    if info is None:
        foreign = next(Path(out).glob("train/*/*.h5"), None) or next(
            Path(out).glob("val/official/*.h5"), None
        )
        if foreign is not None:
            raise ValueError(
                f"{out} holds frames ({foreign}) but no {_MANIFEST}: they were not "
                "written by make-data; choose another folder"
            )
        return None
    differ = [f"{k}={info.get(k)} (not {v})" for k, v in asked.items() if info.get(k) != v]
    if differ:
        raise ValueError(
            f"{out} holds a data set made with {', '.join(differ)}; "
            "choose another folder (or delete this one)"
        )
    return info


def dataset_is_complete(
    out: str | os.PathLike, num_train: int | None = None, num_val: int | None = None
) -> bool:
    """True if ``out`` holds a finished data set (with at least the given frame counts)."""
    info = read_manifest(out)
    if info is None or not info.get("finished", True):  # manifests before "finished": written last
        return False
    return (num_train is None or info.get("train", 0) >= num_train) and (
        num_val is None or info.get("val", 0) >= num_val
    )


def generate_dataset(
    out: str | os.PathLike,
    num_train: int = 800,
    num_val: int = 100,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    frames_per_scene: int = 20,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a procedural data set in the NYU h5 layout under ``out``; returns ``out``.

    ``workers`` processes render in parallel (default: the CPUs available, at most 8). The
    ``synthetic.json`` manifest records the settings first and is marked finished last. Writing
    into a folder that already holds a set adds the frames it lacks: with the same settings, frame
    ``i`` is the same file whatever the count, so a set of N frames is the first N of a larger one,
    and an interrupted run continues. A folder holding frames of other settings (or frames without
    a manifest) is refused with a ``ValueError``.
    """
    out = Path(out)
    if height < 8 or width < 8:
        raise ValueError(f"image size {height}x{width} is too small (at least 8x8)")
    previous = check_settings(out, height, width, seed, frames_per_scene) or {}
    num_train = max(num_train, previous.get("train", 0))
    num_val = max(num_val, previous.get("val", 0))
    settings = (height, width, seed, frames_per_scene)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MANIFEST).write_text(
        json.dumps(_manifest(num_train, num_val, *settings, False), indent=1)
    )
    workers = workers or min(
        8,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )
    jobs = []
    chunk = 16
    total = 0
    for split, count in (("train", num_train), ("val", num_val)):
        items = [
            (i, path)
            for i, path in frame_paths(out, split, count, frames_per_scene)
            if not path.is_file()
        ]  # frames are written whole (rename), so these are done
        total += len(items)
        jobs += [
            (seed, split, items[i : i + chunk], height, width) for i in range(0, len(items), chunk)
        ]
    bar = None
    if progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"make-data {out}", unit="frame")
    if workers <= 1:
        for job in jobs:
            done = _write_frames(job)
            if bar is not None:
                bar.update(done)
    elif jobs:
        with ProcessPoolExecutor(workers) as pool:
            for done in pool.map(_write_frames, jobs):
                if bar is not None:
                    bar.update(done)
    if bar is not None:
        bar.close()
    (out / _MANIFEST).write_text(
        json.dumps(_manifest(num_train, num_val, *settings, True), indent=1)
    )
    return out


def ensure_dataset(
    out: str | os.PathLike,
    num_train: int = 800,
    num_val: int = 100,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    frames_per_scene: int = 20,
    workers: int | None = None,
    splits: tuple[str, ...] = ("train", "val"),
    timeout: float = 1800.0,
    progress: bool = True,
) -> bool:
    """Write the data set to ``out`` with :func:`generate_dataset` unless it is already there;
    returns True if this process wrote it.

    "There" means a finished set (manifest) with at least ``num_train`` training frames (if
    ``"train"`` is in ``splits``) and ``num_val`` validation frames (if ``"val"`` is). Under
    torchrun the process of local rank 0 (``LOCAL_RANK``) writes and the other processes of the
    node wait for its manifest, at most ``timeout`` seconds.
    """
    need_train = num_train if "train" in splits else None
    need_val = num_val if "val" in splits else None
    check_settings(out, height, width, seed, frames_per_scene)
    if dataset_is_complete(out, need_train, need_val):
        return False
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        generate_dataset(
            out,
            num_train=num_train,
            num_val=num_val,
            height=height,
            width=width,
            seed=seed,
            frames_per_scene=frames_per_scene,
            workers=workers,
            progress=progress,
        )
        return True
    start = time.monotonic()
    while not dataset_is_complete(out, need_train, need_val):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"waited {timeout:.0f} s for local rank 0 to write {out}")
        time.sleep(1.0)
    return False


def mean_depth_baseline(root: str | os.PathLike, max_train_files: int = 400) -> dict:
    """Scores of predicting the mean training depth everywhere, on the ``val/official`` frames.

    The reference a trained model must beat: per-image ``abs_rel``, ``rmse`` and ``d1`` of
    :func:`meter_timm.evaluation.evaluate_depth` (the validation metric, without a crop),
    averaged over images.
    """
    import h5py

    root = Path(root)
    train = sorted((root / "train").glob("*/*.h5"))[:max_train_files]
    val = sorted((root / "val" / "official").glob("*.h5"))
    if not train or not val:
        raise FileNotFoundError(f"{root}: no train/*/*.h5 or val/official/*.h5 frames")
    total, count = 0.0, 0
    for path in train:
        with h5py.File(path, "r") as f:
            d = f["depth"][()]
        valid = (d > 1e-3) & (d <= MAX_DEPTH)
        total += float(d[valid].sum())
        count += int(valid.sum())
    mean = total / max(count, 1)
    import torch

    from meter_timm.evaluation import evaluate_depth  # the same per-image metric as the model's

    scores = {"abs_rel": [], "rmse": [], "d1": []}
    for path in val:
        with h5py.File(path, "r") as f:
            gt = torch.from_numpy(f["depth"][()])
        errors = evaluate_depth(torch.full_like(gt, mean), gt, max_depth=MAX_DEPTH, crop_type=None)
        if errors is None:
            continue
        for key in scores:
            scores[key].append(errors[key])
    return {"mean_depth": mean, **{k: float(np.mean(v)) for k, v in scores.items()}}
