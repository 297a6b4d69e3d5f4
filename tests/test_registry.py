"""mmengine finds the package's registries under the conventional ``meter_timm.registry``."""

import importlib


def test_scope_registry_module_is_the_packages_registries():
    from meter_timm.mm import registry as mm_registry

    scope_registry = importlib.import_module(
        "meter_timm.registry"
    )  # what mmengine imports for the scope
    for name in ("MODELS", "DATASETS", "TRANSFORMS", "METRICS", "HOOKS", "RUNNERS"):
        assert getattr(scope_registry, name) is getattr(mm_registry, name)
    assert scope_registry.MODELS.scope == "meter_timm"
    assert scope_registry.MODELS.get("DepthEstimator") is not None


def test_child_registries_fall_back_to_the_mmengine_registry_of_their_kind():
    """Each registry of the scope has mmengine's registry of the same kind as its parent, so
    that a config may name mmengine's classes (e.g. ``type="ConcatDataset"``)."""
    import mmengine.registry as root
    from mmengine.dataset import ConcatDataset

    from meter_timm.mm import registry

    names = [name for name in registry.__all__ if name != "SCOPE"]
    assert len(names) == 18
    for name in names:
        child = getattr(registry, name)
        assert child.parent is getattr(root, name) and child.scope == "meter_timm", name
    assert registry.DATASETS.get("ConcatDataset") is ConcatDataset
