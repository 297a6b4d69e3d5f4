"""Child registries of mmengine's root registries, scope ``meter_timm``.

Configs that set ``default_scope = "meter_timm"`` build from these; names not found here fall back
to mmengine's root registries (e.g. ``type="AdamW"``, ``type="CheckpointHook"``).
"""

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

SCOPE = "meter_timm"
_LOCATIONS = ["meter_timm.mm"]


def _child(name: str, parent: Registry) -> Registry:
    return Registry(name, parent=parent, scope=SCOPE, locations=_LOCATIONS)


RUNNERS = _child("runner", MMENGINE_RUNNERS)
LOOPS = _child("loop", MMENGINE_LOOPS)
HOOKS = _child("hook", MMENGINE_HOOKS)
DATASETS = _child("dataset", MMENGINE_DATASETS)
DATA_SAMPLERS = _child("data sampler", MMENGINE_DATA_SAMPLERS)
TRANSFORMS = _child("transform", MMENGINE_TRANSFORMS)
MODELS = _child("model", MMENGINE_MODELS)
MODEL_WRAPPERS = _child("model wrapper", MMENGINE_MODEL_WRAPPERS)
OPTIMIZERS = _child("optimizer", MMENGINE_OPTIMIZERS)
OPTIM_WRAPPERS = _child("optim wrapper", MMENGINE_OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(
    "optim wrapper constructor", MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
)
PARAM_SCHEDULERS = _child("parameter scheduler", MMENGINE_PARAM_SCHEDULERS)
METRICS = _child("metric", MMENGINE_METRICS)
EVALUATOR = _child("evaluator", MMENGINE_EVALUATOR)
VISUALIZERS = _child("visualizer", MMENGINE_VISUALIZERS)
VISBACKENDS = _child("vis backend", MMENGINE_VISBACKENDS)
LOG_PROCESSORS = _child("log processor", MMENGINE_LOG_PROCESSORS)
FUNCTIONS = _child("function", MMENGINE_FUNCTIONS)

__all__ = [
    "SCOPE",
    "RUNNERS",
    "LOOPS",
    "HOOKS",
    "DATASETS",
    "DATA_SAMPLERS",
    "TRANSFORMS",
    "MODELS",
    "MODEL_WRAPPERS",
    "OPTIMIZERS",
    "OPTIM_WRAPPERS",
    "OPTIM_WRAPPER_CONSTRUCTORS",
    "PARAM_SCHEDULERS",
    "METRICS",
    "EVALUATOR",
    "VISUALIZERS",
    "VISBACKENDS",
    "LOG_PROCESSORS",
    "FUNCTIONS",
]
