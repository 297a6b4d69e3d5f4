"""NYU Depth V2 as an mmengine dataset (h5 folders, DenseDepth csv, labeled .mat)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

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
        split_file (str, optional): for ``.mat`` data: ``splits.mat`` (key ``split_key``, 1-based)
            or a text file of 1-based indices. Default: None (all frames).
        split_key (str): key in ``splits.mat``: ``"testNdxs"`` (Eigen test, default) or ``"trainNdxs"``.
        indices (list[int], optional): 0-based frames to keep (overrides ``split_file``).
        max_depth (float): depth above this is invalid. Default: 10.0 m.
        pipeline (list): transforms. Other BaseDataset arguments (``test_mode``, ``indices`` as an
            int for a prefix, ``serialize_data``, ``lazy_init``) are passed on.

    Files are opened only when an item is read (h5 per item, .mat once per worker process), so the
    dataset is safe to use with forked DataLoader workers. Missing or broken files raise
    :class:`meter_timm.data.NYUDataError` naming the file.
    """

    METAINFO = dict(dataset="NYU Depth V2", depth_unit="m")

    def __init__(self, data_root: str, subdir: str | None = None, data_format: str = "auto",
                 split_file: str | None = None, split_key: str = "testNdxs",
                 indices: Sequence[int] | int | None = None, max_depth: float = 10.0,
                 pipeline: Sequence = (), test_mode: bool = False, **kwargs):
        self.subdir = subdir
        self.data_format = data_format
        self.split_file = split_file
        self.split_key = split_key
        self.max_depth = max_depth
        # a list of indices is ours; an int (first-N) is BaseDataset's
        self.frame_indices = list(indices) if isinstance(indices, (list, tuple)) else None
        self._reader = SampleReader(max_depth)
        # build from our registry so the dataset works without a default scope
        pipeline = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        super().__init__(data_root=data_root, pipeline=pipeline, test_mode=test_mode,
                         indices=indices if isinstance(indices, int) else None, **kwargs)

    def load_data_list(self) -> list[dict]:
        source = Path(self.data_root)
        if self.subdir:
            source = source / self.subdir
        refs = discover_samples(source, self.data_format, split_file=self.split_file,
                                split_key=self.split_key, indices=self.frame_indices)
        kinds = sorted({r.kind for r in refs})
        print_log(f"NYUDepthDataset: {len(refs)} frames ({'/'.join(kinds)}) from {source}",
                  logger="current")
        return [dict(**asdict(r), sample_idx=i) for i, r in enumerate(refs)]

    def prepare_data(self, idx: int):
        info = self.get_data_info(idx)
        ref = SampleRef(kind=info["kind"], path=info["path"], depth_path=info["depth_path"],
                        index=info["index"])
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


__all__ = ["NYUDepthDataset"]
