"""Plain readers of the NYU Depth V2 formats (no mmengine), behind the mmengine dataset that
``meter-timm eval``, ``test`` and ``dissect`` read through."""
from meter_timm.data.nyu import (  # noqa: F401
    NYUDataError,
    LabeledMat,
    discover_samples,
    load_split_indices,
    read_csv_pairs,
    read_depth_png,
    read_h5_sample,
    read_rgb,
    sanitize_depth,
)
