"""mmengine adapters (wiring only): registries, datasets, transforms, depth metric, model wrapper,
losses registered by name, hooks, runner and checkpoint loading/saving.

Importing this package registers everything in the ``meter_timm`` scope; configs set
``default_scope = "meter_timm"``.
"""

from meter_timm.mm import (
    amp,  # noqa: F401  (training part: MixedPrecisionOptimWrapper)
    checkpoint,  # noqa: F401  (training part: weights_only-safe checkpoint loader)
    datasets,  # noqa: F401
    hooks,  # noqa: F401  (training part: SelectivityHook, RandomStateHook)
    losses,  # noqa: F401  (BalancedLoss, SiLogLoss, L1DepthLoss, SelectivityLoss)
    metrics,  # noqa: F401
    model,  # noqa: F401
    registry,  # noqa: F401
    runner,  # noqa: F401  (training part: MeterRunner)
    structures,  # noqa: F401
    transforms,  # noqa: F401
)
from meter_timm.mm.datasets import (  # noqa: F401
    DepthFolderDataset,
    KITTIDepthDataset,
    NYUDepthDataset,
    SyntheticDepthDataset,
)
from meter_timm.mm.metrics import DepthMetric  # noqa: F401
from meter_timm.mm.model import DepthDataPreprocessor, DepthEstimator  # noqa: F401
from meter_timm.mm.structures import DepthDataSample  # noqa: F401
