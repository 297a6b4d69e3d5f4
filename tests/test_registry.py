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


def test_every_hook_class_is_registered_under_its_own_name():
    """A decorator separated from its class by an inserted function registers the function:
    every Hook subclass defined in meter_timm.mm.hooks must be found by name."""
    import inspect

    from mmengine.hooks import Hook

    import meter_timm.mm.hooks as hooks
    from meter_timm.mm.registry import HOOKS

    defined = [
        name
        for name, obj in vars(hooks).items()
        if inspect.isclass(obj) and issubclass(obj, Hook) and obj.__module__ == hooks.__name__
    ]
    assert "SelectivityHook" in defined
    for name in defined:
        assert HOOKS.get(name) is getattr(hooks, name)
    registered = {n for n, obj in HOOKS.module_dict.items() if obj.__module__ == hooks.__name__}
    assert registered == set(defined)


def test_every_runner_and_loop_class_is_registered_under_its_own_name():
    """The same slip as for hooks: a function inserted between a decorator and its class."""
    import inspect

    from mmengine.runner import BaseLoop, Runner

    import meter_timm.mm.runner as runner_module
    from meter_timm.mm.registry import LOOPS, RUNNERS

    for registry, base in ((RUNNERS, Runner), (LOOPS, BaseLoop)):
        defined = {
            name
            for name, obj in vars(runner_module).items()
            if inspect.isclass(obj)
            and issubclass(obj, base)
            and obj.__module__ == runner_module.__name__
        }
        assert defined
        registered = {
            n for n, obj in registry.module_dict.items() if obj.__module__ == runner_module.__name__
        }
        assert registered == defined
        assert all(registry.get(name) is getattr(runner_module, name) for name in defined)
