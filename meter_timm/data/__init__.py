"""Plain readers (no mmengine) of the NYU Depth V2 formats, of image/depth folders and of KITTI
(Eigen split), behind the mmengine datasets that ``meter-timm eval``, ``test`` and ``dissect``
read through."""

from meter_timm.data.folder import (  # noqa: F401
    DepthDataError,
    FolderPair,
    discover_folder_pairs,
    read_depth_map,
    read_folder_pair,
    valid_depth,
)
from meter_timm.data.kitti import (  # noqa: F401
    KITTI_DEPTH_SCALE,
    KITTI_MAX_DEPTH,
    KittiSample,
    read_kitti_depth,
    read_kitti_split,
)
from meter_timm.data.nyu import (  # noqa: F401
    LabeledMat,
    NYUDataError,
    discover_samples,
    load_split_indices,
    read_csv_pairs,
    read_depth_png,
    read_h5_sample,
    read_rgb,
    sanitize_depth,
)
