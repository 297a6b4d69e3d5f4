"""Depth data sets for mmengine: NYU Depth V2 (h5 folders, DenseDepth csv, labeled .mat), the
built-in procedural scenes (written on first use), a folder of images and depth maps matched by
name, and KITTI (Eigen split)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from pathlib import Path

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from meter_timm.data.nyu import SampleReader, SampleRef, discover_samples
from meter_timm.mm.registry import DATASETS, TRANSFORMS


@DATASETS.register_module()
class NYUDepthDataset(BaseDataset):
    """NYU Depth V2 frames for depth estimation.

    Each item, before the pipeline, is a dict with ``img`` ``(H, W, 3) uint8`` RGB, ``gt_depth``
    ``(H, W) float32`` metres (0 = invalid; values outside ``(0, max_depth]`` are set to 0),
    ``img_path``, ``depth_path``, ``ori_shape``, ``img_shape``, ``depth_format`` and ``sample_idx``.

    Args:
        data_root (str): folder of sparse-to-dense h5 files (searched recursively), a DenseDepth csv
            (or a folder holding exactly one csv), or a labeled ``.mat`` file.
        subdir (str, optional): sub-folder of ``data_root`` to use, e.g. ``"train"`` or
            ``"val/official"`` for the sparse-to-dense layout. Default: None.
        data_format (str): ``"auto"`` (default), ``"h5"``, ``"csv"`` or ``"mat"``.
        split_file (str, optional): for ``.mat`` data only: ``splits.mat`` (key ``split_key``,
            1-based) or a text file of 1-based indices. Default: None (all frames).
        split_key (str): key in ``splits.mat``: ``"testNdxs"`` (Eigen test, default) or
            ``"trainNdxs"``.
        indices (list[int], optional): 0-based frames to keep (overrides ``split_file``), each
            in ``[0, frames)``; a tuple, range or integer array is taken as a list.
        max_depth (float): depth above this is invalid. Default: 10.0 m.
        pipeline (list): transforms. Other BaseDataset arguments (``test_mode``, ``indices`` as an
            int for a prefix, ``serialize_data``, ``lazy_init``) are passed on.

    Files are opened only when an item is read (h5 per item, .mat once per worker process), so the
    dataset is safe to use with forked DataLoader workers. Missing or broken files raise
    :class:`meter_timm.data.NYUDataError` naming the file.
    """

    METAINFO = dict(dataset="NYU Depth V2", depth_unit="m")

    def __init__(
        self,
        data_root: str,
        subdir: str | None = None,
        data_format: str = "auto",
        split_file: str | None = None,
        split_key: str = "testNdxs",
        indices: Iterable[int] | int | None = None,
        max_depth: float = 10.0,
        pipeline: Sequence = (),
        test_mode: bool = False,
        **kwargs,
    ):
        self.subdir = subdir
        self.data_format = data_format
        self.split_file = split_file
        self.split_key = split_key
        self.max_depth = max_depth
        # an int (first N) is BaseDataset's; a list is not BaseDataset(indices=[...]), which would
        # index the frames left after split_file and keep their original sample_idx: here a list
        # picks frames of the source itself (for a .mat: instead of split_file, before anything
        # is read), an index out of range is an NYUDataError naming the file, and sample_idx
        # counts the frames kept. A tuple, range or integer array is a list too (a range or an
        # array was once ignored, giving every frame).
        if isinstance(indices, (str, bytes)):  # iterable, but its characters are no indices
            raise TypeError(
                f"NYUDepthDataset indices={indices!r}: give an int (first N frames) or a list of "
                "0-based frame indices, not a string"
            )
        prefix = int(indices) if isinstance(indices, numbers.Integral) else None
        self.frame_indices = (
            None if indices is None or prefix is not None else [int(i) for i in indices]
        )
        self._reader = SampleReader(max_depth)
        # build from our registry so the dataset works without a default scope
        pipeline = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        super().__init__(
            data_root=data_root,
            pipeline=pipeline,
            test_mode=test_mode,
            indices=prefix,
            **kwargs,
        )

    def load_data_list(self) -> list[dict]:
        source = Path(self.data_root)
        if self.subdir:
            source = source / self.subdir
        refs = discover_samples(
            source,
            self.data_format,
            split_file=self.split_file,
            split_key=self.split_key,
            indices=self.frame_indices,
        )
        kinds = sorted({r.kind for r in refs})
        print_log(
            f"NYUDepthDataset: {len(refs)} frames ({'/'.join(kinds)}) from {source}",
            logger="current",
        )
        return [dict(**asdict(r), sample_idx=i) for i, r in enumerate(refs)]

    def prepare_data(self, idx: int):
        info = self.get_data_info(idx)
        ref = SampleRef(**{f.name: info[f.name] for f in fields(SampleRef)})
        formats_before = set(self._reader._logged_formats)
        results = self._reader(ref)
        new = self._reader._logged_formats - formats_before
        if new:
            print_log(f"NYUDepthDataset: depth format {', '.join(sorted(new))}", logger="current")
        h, w = results["gt_depth"].shape
        results.update(
            img_path=info["path"],
            depth_path=info["depth_path"] or info["path"],
            frame_index=info["index"],
            sample_idx=info["sample_idx"],
            ori_shape=(h, w),
            img_shape=(h, w),
            max_depth=self.max_depth,
        )
        return self.pipeline(results)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_reader"] = SampleReader(self.max_depth)
        return state


@DATASETS.register_module()
class SyntheticDepthDataset(NYUDepthDataset):
    """The built-in procedural indoor scenes (:mod:`meter_timm.data.synthetic`), written to
    ``data_root`` the first time the data set is built, so that a config trains on a fresh clone
    through ``Runner.from_cfg`` alone.

    The set is written unless ``data_root`` already holds a finished one (its ``synthetic.json``)
    with at least the frames this data set reads: ``num_train`` for ``subdir="train"``,
    ``num_val`` for ``subdir="val/official"``, both otherwise. In a multi-process run the process
    of local rank 0 writes and the others wait. A folder holding a larger set of the same settings
    is read up to the frames asked for (frame i is the same file whatever the count), and one of
    other settings is refused with a ``ValueError``. Items are those of :class:`NYUDepthDataset`.

    Args:
        data_root (str): where the set lives (``train/<room>/*.h5``, ``val/official/*.h5``).
        num_train, num_val (int): frames of each split. Default 800 and 100.
        height, width (int): frame size. Default 240x320.
        seed (int): seed of the whole set. Default 0.
        frames_per_scene (int): training frames per room folder. Default 20.
        workers (int, optional): writing processes (default: the CPUs available, at most 8).
        subdir, pipeline, test_mode, ...: as for :class:`NYUDepthDataset`.
    """

    METAINFO = dict(dataset="procedural indoor scenes (meter_timm.data.synthetic)", depth_unit="m")

    def __init__(
        self,
        data_root: str,
        num_train: int = 800,
        num_val: int = 100,
        height: int = 240,
        width: int = 320,
        seed: int = 0,
        frames_per_scene: int = 20,
        workers: int | None = None,
        **kwargs,
    ):
        self.synthetic = dict(
            num_train=num_train,
            num_val=num_val,
            height=height,
            width=width,
            seed=seed,
            frames_per_scene=frames_per_scene,
            workers=workers,
        )
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self) -> list[dict]:
        from meter_timm.data.synthetic import dataset_is_complete, ensure_dataset, frame_paths

        subdir = (self.subdir or "").strip("/")
        splits = (
            ("train",)
            if subdir == "train"
            else ("val",)
            if subdir.startswith("val")
            else ("train", "val")
        )
        counts = dict(
            num_train=self.synthetic["num_train"] if "train" in splits else None,
            num_val=self.synthetic["num_val"] if "val" in splits else None,
        )
        if not dataset_is_complete(self.data_root, **counts):
            print_log(
                f"SyntheticDepthDataset: writing the built-in procedural data set to "
                f"{self.data_root}",
                logger="current",
            )
        ensure_dataset(self.data_root, splits=splits, **self.synthetic)
        # the folder may hold a larger set of the same settings, whose first N frames are the N
        # asked for: keep frames 0 .. N-1 of each split
        wanted = {
            path.resolve()
            for split, count in (("train", "num_train"), ("val", "num_val"))
            for _, path in frame_paths(
                self.data_root, split, self.synthetic[count], self.synthetic["frames_per_scene"]
            )
        }
        found = super().load_data_list()
        data = [d for d in found if Path(d["path"]).resolve() in wanted]
        for index, item in enumerate(data):
            item["sample_idx"] = index
        if len(data) < len(found):
            print_log(
                f"SyntheticDepthDataset: using the first {len(data)} of them", logger="current"
            )
        return data


class _ImageDepthPairs(BaseDataset):
    """Shared part of the pair data sets: items are ``img_path``/``depth_path`` pairs read by
    :meth:`read_pair`; the item dict is the one of :class:`NYUDepthDataset`."""

    def __init__(
        self,
        data_root: str,
        max_depth: float,
        pipeline: Sequence = (),
        test_mode: bool = False,
        indices: int | None = None,
        **kwargs,
    ):
        self.max_depth = max_depth
        pipeline = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        super().__init__(
            data_root=data_root, pipeline=pipeline, test_mode=test_mode, indices=indices, **kwargs
        )

    def read_pair(self, info: dict):
        raise NotImplementedError

    def prepare_data(self, idx: int):
        info = self.get_data_info(idx)
        rgb, depth = self.read_pair(info)
        h, w = depth.shape
        results = dict(
            img=rgb,
            gt_depth=depth,
            img_path=info["img_path"],
            depth_path=info["depth_path"],
            sample_idx=info["sample_idx"],
            ori_shape=(h, w),
            img_shape=(h, w),
            max_depth=self.max_depth,
            depth_format=self.depth_format,
        )
        return self.pipeline(results)


@DATASETS.register_module()
class DepthFolderDataset(_ImageDepthPairs):
    """A folder of RGB images and depth maps matched by name (see :mod:`meter_timm.data.folder`).

    Args:
        data_root (str): the folder.
        depth_scale (float): metres per stored depth unit (required): 1/1000 for millimetre
            PNGs, 1/256 for KITTI-style PNGs, 1.0 for float metres.
        image_dir, depth_dir (str, optional): sub-folders (default: the first pair present of
            ``rgb``, ``image(s)`` or ``color(s)`` with ``depth(s)``, else ``data_root``).
        image_suffix, depth_suffix (str): name endings before the extension (one folder holding
            both needs a depth suffix; default ``"_depth"`` there).
        min_depth, max_depth (float): depth outside ``(min_depth, max_depth]`` is invalid (0).
            Default 0 and 10 m.
        invalid_value (float, optional): stored value meaning "no measurement", e.g. 0 or 65535.
        skip_unmatched (bool): skip images without a depth map instead of raising. Default False.
        pipeline, test_mode, indices (int: first N), ...: as for ``BaseDataset``.
    """

    METAINFO = dict(dataset="image/depth folder", depth_unit="m")

    def __init__(
        self,
        data_root: str,
        depth_scale: float,
        image_dir: str | None = None,
        depth_dir: str | None = None,
        image_suffix: str = "",
        depth_suffix: str | None = None,
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        invalid_value: float | None = None,
        skip_unmatched: bool = False,
        **kwargs,
    ):
        if depth_scale is None or not float(depth_scale) > 0:
            raise ValueError(
                f"DepthFolderDataset({data_root}): depth_scale must be > 0 (metres "
                f"per stored unit, e.g. 0.001 for mm PNGs), got {depth_scale!r}"
            )
        self.depth_scale, self.min_depth = float(depth_scale), float(min_depth)
        self.invalid_value = invalid_value
        self.layout = dict(
            image_dir=image_dir,
            depth_dir=depth_dir,
            image_suffix=image_suffix,
            depth_suffix=depth_suffix,
            skip_unmatched=skip_unmatched,
        )
        self.depth_format = f"depth maps x {self.depth_scale:g} = metres"
        super().__init__(data_root=data_root, max_depth=max_depth, **kwargs)

    def load_data_list(self) -> list[dict]:
        from meter_timm.data.folder import discover_folder_pairs

        pairs = discover_folder_pairs(self.data_root, **self.layout)
        print_log(
            f"DepthFolderDataset: {len(pairs)} image/depth pairs from {self.data_root} "
            f"(depth x {self.depth_scale:g} = metres)",
            logger="current",
        )
        return [
            dict(img_path=p.image, depth_path=p.depth, key=p.key, sample_idx=i)
            for i, p in enumerate(pairs)
        ]

    def read_pair(self, info: dict):
        from meter_timm.data.folder import FolderPair, read_folder_pair

        pair = FolderPair(info["img_path"], info["depth_path"], info["key"])
        return read_folder_pair(
            pair, self.depth_scale, self.min_depth, self.max_depth, self.invalid_value
        )


@DATASETS.register_module()
class KITTIDepthDataset(_ImageDepthPairs):
    """KITTI frames listed in an Eigen split file (see :mod:`meter_timm.data.kitti`).

    Args:
        data_root (str): root of the raw KITTI images (``2011_09_26/..._sync/image_02/data/``).
        split_file (str): the split list (BTS ``image depth focal`` or Monodepth2
            ``folder frame side`` lines); frames without ground truth are skipped.
        depth_root (str, optional): root of the ground-truth PNGs (``<drive>/proj_depth/
            groundtruth/image_02/``, also looked up in its ``train/`` and ``val/``). Default
            ``data_root``.
        max_depth (float): depth above this is invalid. Default 80 m (the usual cap).
        pipeline, test_mode, indices (int: first N), ...: as for ``BaseDataset``.

    Evaluate with ``dict(type="DepthMetric", crop_type="garg_crop", max_depth_eval=80.0)``
    (or ``"eigen_crop"``).
    """

    METAINFO = dict(dataset="KITTI (Eigen split)", depth_unit="m")
    depth_format = "KITTI uint16 PNG / 256 = metres"

    def __init__(
        self,
        data_root: str,
        split_file: str,
        depth_root: str | None = None,
        max_depth: float = 80.0,
        **kwargs,
    ):
        self.split_file, self.depth_root = split_file, depth_root
        super().__init__(data_root=data_root, max_depth=max_depth, **kwargs)

    def load_data_list(self) -> list[dict]:
        from meter_timm.data.kitti import read_kitti_split

        samples = read_kitti_split(self.split_file, self.data_root, self.depth_root)
        print_log(
            f"KITTIDepthDataset: {len(samples)} frames with ground truth from {self.split_file}",
            logger="current",
        )
        return [
            dict(img_path=s.image, depth_path=s.depth, focal=s.focal, sample_idx=i)
            for i, s in enumerate(samples)
        ]

    def read_pair(self, info: dict):
        from meter_timm.data.folder import DepthDataError
        from meter_timm.data.kitti import read_kitti_depth
        from meter_timm.data.nyu import read_rgb

        rgb = read_rgb(info["img_path"])
        depth = read_kitti_depth(info["depth_path"], self.max_depth)
        if rgb.shape[:2] != depth.shape:
            raise DepthDataError(
                f"{info['depth_path']}: depth shape {depth.shape} does not match "
                f"image {info['img_path']} of shape {rgb.shape[:2]}"
            )
        return rgb, depth


def build_depth_dataset(
    data: str,
    pipeline: Sequence,
    max_depth: float = 10.0,
    depth_scale: float | None = None,
    split_file: str | None = None,
    limit: int | None = None,
    **folder_kwargs,
) -> BaseDataset:
    """The data set behind a command's ``--data``: with ``depth_scale``, a
    :class:`DepthFolderDataset` of the folder ``data``; otherwise NYU (:class:`NYUDepthDataset`:
    a DenseDepth csv or its folder, a folder of h5 files, a labeled .mat)."""
    common = dict(pipeline=pipeline, test_mode=True, max_depth=max_depth, indices=limit)
    if depth_scale is not None:
        if split_file is not None:
            raise ValueError(
                f"{split_file}: a split file selects frames of a labeled .mat, but {data} is "
                "folder data (depth_scale given)"
            )
        return DepthFolderDataset(
            data_root=data, depth_scale=depth_scale, **folder_kwargs, **common
        )
    return NYUDepthDataset(data_root=data, split_file=split_file, **common)


__all__ = [
    "DepthFolderDataset",
    "KITTIDepthDataset",
    "NYUDepthDataset",
    "SyntheticDepthDataset",
    "build_depth_dataset",
]
