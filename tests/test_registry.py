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
