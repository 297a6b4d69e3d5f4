"""The plugin manager: built-ins through the hooks, in-memory and entry-point plugins, broken ones.

Time budget: ~5 s.
"""

from __future__ import annotations

import importlib
import importlib.util
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torch

from meter_timm.cli import main as cli_main
from meter_timm.strategies import (
    DepthBinStrategy,
    create_strategy,
    list_strategies,
    plugins,
    strategy_table,
    validate_strategy,
)
from meter_timm.strategies.plugins import (
    PluginError,
    PluginLoadWarning,
    hookimpl,
    new_plugin_manager,
)


class ConstantStrategy(DepthBinStrategy):
    """Every unit in bin 0 (valid only with one bin)."""

    name = "test-constant"
    description = "test strategy"

    def edges(self):
        return torch.linspace(
            self.min_depth, self.max_depth, self.num_bins + 1, dtype=torch.float64
        )

    def assignment(self):
        return torch.arange(self.num_units) * self.num_bins // self.num_units


class InMemoryPlugin:
    __version__ = "9.9"

    def __init__(self, *classes):
        self.classes = classes

    @hookimpl
    def meter_timm_register_strategies(self, register):
        for cls in self.classes:
            register(cls)


def test_builtins_come_through_the_hooks():
    pm = new_plugin_manager(autoload=False)
    table = strategy_table(pm)
    assert {"uniform", "log", "learned"} <= set(table)
    assert "quantile" not in table  # no entry points loaded
    info = table["log"]
    assert info.plugin == "meter_timm.strategies.builtin"
    assert info.distribution == "meter-timm" and info.version == metadata.version("meter-timm")
    assert table["learned"].learnable and not table["uniform"].learnable
    assert pm.hook.meter_timm_register_strategies.get_hookimpls()  # registered as a real hookimpl


def test_in_memory_plugin_registered_and_unregistered():
    pm = plugins.get_plugin_manager()
    plugin = InMemoryPlugin(ConstantStrategy)
    pm.register(plugin, name="test-in-memory")
    try:
        s = create_strategy("test-constant", 6, 3)
        assert s.assignment().tolist() == [0, 0, 1, 1, 2, 2]
        info = {i.name: i for i in list_strategies()}["test-constant"]
        assert (info.plugin, info.version) == ("test-in-memory", "9.9")
    finally:
        pm.unregister(plugin)
    with pytest.raises(ValueError, match="unknown depth-bin strategy 'test-constant'"):
        create_strategy("test-constant", 6, 3)


def test_example_plugin_found_through_its_entry_point():
    try:
        dist = metadata.distribution("meter-timm-quantile")
    except metadata.PackageNotFoundError:
        pytest.skip(
            "example plugin not installed (pip install -e plugins/meter_timm_quantile) not found"
        )
    assert any(ep.group == "meter_timm" and ep.name == "quantile" for ep in dist.entry_points)
    pm = new_plugin_manager(autoload=True)  # real entry-point loading, fresh manager
    info = strategy_table(pm)["quantile"]
    assert info.distribution == "meter-timm-quantile" and info.version == dist.version
    assert info.learnable
    # equal-frequency edges fitted from observed depths: half the pixels at 1 m, half at 9 m
    q = create_strategy("quantile", 8, 2, pm=pm, mix=0.001)
    q.observe_depth(torch.tensor([1.0] * 500 + [9.0] * 500 + [0.0, float("nan"), 12.0]))
    assert q.refit() is True
    edges = q.edges()
    assert edges[0] == 0 and edges[-1] == 10
    assert 0.9 < edges[1] < 1.1  # the median sits at the top of the 1 m cluster
    restored = create_strategy("quantile", 8, 2, pm=pm, mix=0.001)
    restored.load_state_dict(q.state_dict())
    assert torch.equal(restored.edges(), edges)


def test_autoload_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    monkeypatch.setattr(
        plugins.metadata,
        "entry_points",
        lambda **kw: pytest.fail("entry points read although autoload is off"),
    )
    pm = new_plugin_manager()
    assert "uniform" in strategy_table(pm) and "quantile" not in strategy_table(pm)


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """A distribution on sys.path whose entry points are one broken and one working plugin."""
    dist_info = tmp_path / "meter_timm_fake_plugins-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: meter-timm-fake-plugins\nVersion: 1.2.3\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent("""\
        [meter_timm]
        broken = meter_timm_fake_missing_module
        raising = meter_timm_fake_raising
        working = meter_timm_fake_working
        misspelt = meter_timm_fake_misspelt
        """)
    )
    (tmp_path / "meter_timm_fake_misspelt.py").write_text(
        textwrap.dedent("""\
        from meter_timm.strategies import hookimpl

        @hookimpl
        def meter_timm_register_strategy(register):
            pass
        """)
    )
    (tmp_path / "meter_timm_fake_raising.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "meter_timm_fake_working.py").write_text(
        textwrap.dedent("""\
        import torch
        from meter_timm.strategies import hookimpl
        from meter_timm.strategies import DepthBinStrategy

        class Working(DepthBinStrategy):
            name = "fake-working"
            description = "works"
            def edges(self):
                return torch.linspace(0, 10, self.num_bins + 1, dtype=torch.float64)
            def assignment(self):
                return torch.arange(self.num_units) * self.num_bins // self.num_units

        @hookimpl
        def meter_timm_register_strategies(register):
            register(Working)
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for module in (
        "meter_timm_fake_working",
        "meter_timm_fake_raising",
        "meter_timm_fake_misspelt",
    ):
        monkeypatch.delitem(__import__("sys").modules, module, raising=False)


def test_failing_plugins_are_skipped_with_a_warning(fake_distribution):
    with pytest.warns(PluginLoadWarning) as caught:
        pm = new_plugin_manager(autoload=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
    assert any(
        "'broken'" in m and "meter-timm-fake-plugins" in m and "ModuleNotFoundError" in m
        for m in messages
    ), messages
    assert any("'raising'" in m and "boom at import" in m for m in messages), messages
    misspelt = [m for m in messages if "'misspelt'" in m]
    assert any(
        "implements 'meter_timm_register_strategy', which is not a meter-timm hook; did you "
        "mean 'meter_timm_register_strategies'?" in m
        for m in misspelt
    ), messages
    assert any("implements no meter-timm hook" in m for m in misspelt), messages
    assert not any("'working'" in m for m in messages), messages
    table = strategy_table(pm)
    assert table["fake-working"].distribution == "meter-timm-fake-plugins"
    assert table["fake-working"].version == "1.2.3"
    assert "uniform" in table  # built-ins unaffected


def test_a_plugin_shadowing_a_builtin_is_reported_once_and_ignored():
    class FakeUniform(ConstantStrategy):
        name = "uniform"

    # the plugin registered before the built-ins: the built-in still wins
    pm = plugins.PluginManager()
    pm.register(InMemoryPlugin(FakeUniform, ConstantStrategy), name="shadowing-plugin")
    pm.register(
        importlib.import_module("meter_timm.strategies.builtin"),
        name="meter_timm.strategies.builtin",
    )
    with pytest.warns(
        PluginLoadWarning,
        match=r"ignoring strategy 'uniform' of plugin 'shadowing-plugin'.*"
        r"meter_timm\.strategies\.builtin.*kept",
    ) as caught:
        table = strategy_table(pm)
    assert len([w for w in caught if "shadowing-plugin" in str(w.message)]) == 1
    assert table["uniform"].plugin == "meter_timm.strategies.builtin"
    assert table["test-constant"].plugin == "shadowing-plugin"  # its other strategy is kept
    # unrelated runs are unaffected, and the warning is not repeated
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strategy = create_strategy("log", 8, 4, pm=pm)
        assert strategy_table(pm)["uniform"].cls is not FakeUniform
    assert strategy.name == "log"


def test_registering_a_non_strategy_skips_the_plugin_with_a_warning_naming_it():
    # skipped whole (its valid strategy too), like a plugin that fails to import; the built-ins
    # and other plugins still work
    pm = new_plugin_manager(autoload=False)
    pm.register(InMemoryPlugin(ConstantStrategy, dict), name="confused-plugin")
    pm.register(InMemoryPlugin(_ForwardsKwargs), name="fine-plugin")
    with pytest.warns(PluginLoadWarning, match="skipping plugin 'confused-plugin'.*not a Depth"):
        table = strategy_table(pm)
    assert "uniform" in table and "test-forwards" in table and "test-constant" not in table


def _bad(name, edges=None, assignment=None):
    def make_edges(self):
        return (
            edges(self) if edges else torch.linspace(0, 10, self.num_bins + 1, dtype=torch.float64)
        )

    def make_assignment(self):
        return (
            assignment(self)
            if assignment
            else torch.arange(self.num_units) * self.num_bins // self.num_units
        )

    return type(
        name,
        (DepthBinStrategy,),
        {"name": name, "edges": make_edges, "assignment": make_assignment},
    )


BAD_STRATEGIES = [
    (
        _bad("bad-count", assignment=lambda s: torch.zeros(s.num_units - 1, dtype=torch.long)),
        r"'bad-count'.*assignment\(\) returned 5 values",
    ),
    (
        _bad("bad-range", assignment=lambda s: torch.arange(s.num_units) % (s.num_bins + 1)),
        r"'bad-range'.*unit 3 in bin 3, outside \[0, 3\)",
    ),
    (
        _bad("bad-empty", assignment=lambda s: torch.arange(s.num_units) % 2),
        r"'bad-empty'.*bin\(s\) \[2\] without units",
    ),
    (
        _bad("bad-edges", edges=lambda s: torch.tensor([0.0, 5.0, 5.0, 10.0], dtype=torch.float64)),
        r"'bad-edges'.*not strictly increasing: edges\[1\]=5.0 >= edges\[2\]=5.0",
    ),
    (
        _bad("bad-edge-count", edges=lambda s: torch.tensor([0.0, 10.0], dtype=torch.float64)),
        r"'bad-edge-count'.*expected \(4,\) for num_bins=3",
    ),
    (
        _bad("bad-dtype", assignment=lambda s: torch.zeros(s.num_units)),
        r"'bad-dtype'.*integer bins",
    ),
]


@pytest.mark.parametrize("cls,message", BAD_STRATEGIES, ids=[c.name for c, _ in BAD_STRATEGIES])
def test_invalid_outputs_raise_value_error_naming_the_strategy(cls, message):
    pm = new_plugin_manager(autoload=False)
    pm.register(InMemoryPlugin(cls), name="bad-plugin")
    with pytest.raises(ValueError, match=message):
        create_strategy(cls.name, 6, 3, pm=pm)


def test_fewer_units_than_bins_may_leave_bins_empty():
    s = create_strategy("uniform", 3, 8)
    assert s.assignment().tolist() == [0, 2, 5]


def test_cli_lists_strategies(capsys):
    assert cli_main(["strategies"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["name", "plugin", "version", "learned"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert by_name["log"][1:4] == ["meter-timm", metadata.version("meter-timm"), "no"]
    assert by_name["learned"][3] == "yes"


def test_hook_that_raises_is_skipped_with_a_warning_naming_the_plugin():
    class Exploding:
        @hookimpl
        def meter_timm_register_strategies(self, register):
            raise KeyError("oops")

    pm = new_plugin_manager(autoload=False)
    pm.register(Exploding(), name="exploding-plugin")
    with pytest.warns(PluginLoadWarning, match="'exploding-plugin'.*raised KeyError"):
        table = strategy_table(pm)
    assert {"uniform", "log", "learned"} <= set(table)
    assert create_strategy("uniform", 6, 3, pm=pm).num_bins == 3  # lookups still work


class _ForwardsKwargs(ConstantStrategy):
    """Takes ``scale`` and passes any other keyword on to its base class."""

    name = "test-forwards"

    def __init__(self, num_units, num_bins, min_depth=0.0, max_depth=10.0, scale=1.0, **kw):
        super().__init__(num_units, num_bins, min_depth, max_depth, **kw)
        self.scale = scale


@pytest.mark.parametrize(
    "cls, params, message",
    [
        (ConstantStrategy, {"gamma": 2}, r"'test-constant' got unknown parameters \['gamma'\] "),
        (_ForwardsKwargs, {"scael": 2}, r"\['scael'\]; did you mean 'scale'\? \(accepted: scale\)"),
        (_ForwardsKwargs, {"num_bins": 2}, r"\['num_bins'\] \(accepted: scale\)"),
    ],
)
def test_unknown_parameters_of_any_plugin_strategy_name_the_accepted_ones(cls, params, message):
    from meter_timm.strategies import create_layer_strategy
    from meter_timm.strategies.base import StrategyParameterError

    pm = new_plugin_manager(autoload=False)
    pm.register(InMemoryPlugin(cls), name="params-plugin")
    spec = f"{cls.name}:" + ",".join(f"{k}={v}" for k, v in params.items())
    with pytest.raises(StrategyParameterError, match=message):
        create_strategy(spec, 6, 3, pm=pm)
    layer = dict(name="encoder.6", strategy=cls.name, params=params)
    with pytest.raises(StrategyParameterError, match="layer 'encoder.6'.*" + message):
        create_layer_strategy(layer, 6, pm=pm)
    assert create_strategy(cls.name, 6, 3, pm=pm).num_bins == 3


def test_unknown_parameter_of_the_example_plugin():
    pytest.importorskip("meter_timm_quantile")
    pm = new_plugin_manager(autoload=True)
    with pytest.raises(ValueError, match=r"'quantile'.*\['warmup'\]; did you mean 'warmup_pixels'"):
        create_strategy("quantile", 8, 4, pm=pm, warmup=5)


def test_a_strategy_method_that_raises_names_the_plugin():
    broken = _bad("test-broken", edges=lambda s: [][0])
    pm = new_plugin_manager(autoload=False)
    pm.register(InMemoryPlugin(broken), name="broken-plugin")
    with pytest.raises(
        PluginError,
        match=r"'test-broken' of plugin 'broken-plugin' \(\(in memory\) "
        r"9.9\): edges\(\) raised IndexError",
    ):
        create_strategy("test-broken", 6, 3, pm=pm)


def _raising_init(name, error):
    def __init__(self, *args, **kwargs):
        raise error

    return type(name, (_bad(name),), {"__init__": __init__})


def test_a_strategy_constructor_that_raises_names_the_plugin_and_the_layer():
    import json

    from meter_timm.strategies import create_layer_strategy

    try:
        json.loads("{bad")
    except ValueError as exc:  # a ValueError subclass that cannot be built from a message alone
        decode_error = exc
    pm = new_plugin_manager(autoload=False)
    pm.register(
        InMemoryPlugin(
            _raising_init("test-init-runtime", RuntimeError("no device")),
            _raising_init("test-init-json", decode_error),
        ),
        name="init-plugin",
    )
    with pytest.raises(
        PluginError,
        match=r"'test-init-runtime' of plugin 'init-plugin' .*__init__\(\) raised RuntimeError: "
        "no device",
    ):
        create_strategy("test-init-runtime", 6, 3, pm=pm)
    with pytest.raises(ValueError) as info:
        create_layer_strategy(dict(name="encoder.6", strategy="test-init-json"), 6, pm=pm)
    message = str(info.value)
    assert message.startswith("selectivity layer 'encoder.6': depth-bin strategy 'test-init-json'")
    assert "plugin 'init-plugin'" in message and "Expecting property name" in message


def test_restoring_a_plugin_strategy_that_raises_names_the_file_and_the_layer():
    from meter_timm.strategies import trained_strategies

    broken = _bad("test-broken-restore", edges=lambda s: {}["edges"])
    pm = plugins.get_plugin_manager()
    pm.register(InMemoryPlugin(broken), name="restore-plugin")
    saved = {"strategy": "test-broken-restore", "num_units": 6, "num_bins": 3, "state": {}}
    state = {"selectivity._extra_state": {"strategies": {"encoder.6": saved}}}
    try:
        with pytest.raises(PluginError) as info:
            trained_strategies(state, source="run/epoch_1.pth")
    finally:
        pm.unregister(name="restore-plugin")
    message = str(info.value)
    assert message.startswith("run/epoch_1.pth: layer 'encoder.6': cannot restore")
    assert "plugin 'restore-plugin'" in message and "edges() raised KeyError" in message


def test_load_entry_points_reports_what_it_registered_and_honours_blocked_names(
    fake_distribution,
):
    """The working entry point is returned and recorded with its "module:attr"; a name the
    manager has blocked is skipped with a warning, as a taken one is."""
    pm = new_plugin_manager(autoload=False)
    with pytest.warns(PluginLoadWarning):
        loaded = plugins.load_entry_points(pm)
    assert "working" in loaded and not {"broken", "raising"} & set(loaded)
    record = pm.records["working"]
    assert (record.distribution, record.version) == ("meter-timm-fake-plugins", "1.2.3")
    assert record.entry_point == "meter_timm_fake_working"
    assert plugins.plugin_record(pm, pm.get_plugin("working")) == record

    blocked = new_plugin_manager(autoload=False)
    blocked.set_blocked("working")
    with pytest.warns(PluginLoadWarning) as caught:
        assert "working" not in plugins.load_entry_points(blocked)
    assert any("'working'" in str(w.message) and "already taken" in str(w.message) for w in caught)
    assert "working" not in blocked.records
    assert "fake-working" not in strategy_table(blocked)


def test_cli_lists_in_memory_plugins_by_name_as_json_and_as_a_table(capsys):
    import json

    pm = plugins.get_plugin_manager()
    plugin = InMemoryPlugin(ConstantStrategy)
    pm.register(plugin, name="test-in-memory")
    try:
        assert cli_main(["strategies", "--json"]) == 0
        rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
        assert cli_main(["strategies"]) == 0
        table = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    finally:
        pm.unregister(plugin)
    mine = rows["test-constant"]
    assert (mine["plugin"], mine["version"], mine["learned"]) == ("test-in-memory", "9.9", False)
    assert mine["module"] == "test-in-memory" and mine["description"] == "test strategy"
    assert rows["learned"]["learned"] is True and rows["log"]["plugin"] == "meter-timm"
    assert table["test-constant"][1:4] == ["test-in-memory", "9.9", "no"]


class StatefulStrategy(DepthBinStrategy):
    """Edges kept in its state, as a learned strategy's; one parameter."""

    name = "test-stateful"
    description = "test strategy with state"
    learnable = True

    def __init__(self, num_units, num_bins, min_depth=0.0, max_depth=10.0, scale=1.0):
        super().__init__(num_units, num_bins, min_depth, max_depth)
        self.scale = float(scale)
        self._edges = torch.linspace(
            self.min_depth, self.max_depth, self.num_bins + 1, dtype=torch.float64
        )

    def edges(self):
        return self._edges.clone()

    def assignment(self):
        return torch.arange(self.num_units) * self.num_bins // self.num_units

    def state_dict(self):
        return {"edges": self._edges.clone()}

    def load_state_dict(self, state):
        self._edges = torch.as_tensor(state["edges"], dtype=torch.float64)


def test_trained_strategies_restore_parameters_range_and_state_under_any_prefix():
    """The strategy saved under ``<prefix>_extra_state`` comes back with its parameters, depth
    range and learned state; a state that does not validate, or a saved entry missing a field, is
    a ValueError naming the file and the layer."""
    from meter_timm.strategies import trained_strategies

    saved = {
        "strategy": "test-stateful",
        "num_units": 6,
        "num_bins": 3,
        "min_depth": 1.0,
        "max_depth": 7.0,
        "params": {"scale": 2.0},
        "state": {"edges": torch.tensor([1.0, 2.0, 4.0, 7.0])},
    }

    def checkpoint(entry):
        return {"model.selectivity._extra_state": {"strategies": {"encoder.6": entry}}}

    pm = plugins.get_plugin_manager()
    pm.register(InMemoryPlugin(StatefulStrategy), name="stateful-plugin")
    try:
        restored = trained_strategies(checkpoint(saved), prefix="model.selectivity.")
        assert trained_strategies(checkpoint(saved)) == {}  # nothing under "selectivity."
        bad_state = dict(saved, state={"edges": torch.tensor([1.0, 4.0, 2.0, 7.0])})
        with pytest.raises(ValueError, match=r"w.pth: layer 'encoder.6'.*strictly increasing"):
            trained_strategies(checkpoint(bad_state), "model.selectivity.", source="w.pth")
        no_bins = {k: v for k, v in saved.items() if k != "num_bins"}
        with pytest.raises(ValueError, match=r"w.pth: layer 'encoder.6': cannot restore"):
            trained_strategies(checkpoint(no_bins), "model.selectivity.", source="w.pth")
    finally:
        pm.unregister(name="stateful-plugin")
    strategy = restored["encoder.6"]
    assert list(restored) == ["encoder.6"] and strategy.scale == 2.0
    assert (strategy.num_units, strategy.num_bins) == (6, 3)
    assert (strategy.min_depth, strategy.max_depth) == (1.0, 7.0)
    assert strategy.edges().tolist() == [1.0, 2.0, 4.0, 7.0]


PLUGIN_SOURCE = (
    Path(__file__).resolve().parents[1]
    / "plugins"
    / "meter_timm_quantile"
    / "meter_timm_quantile"
    / "__init__.py"
)


def _quantile_plugin_source():
    """The example plugin's module from this checkout, whether or not it is installed."""
    spec = importlib.util.spec_from_file_location("_quantile_plugin_source", PLUGIN_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quantile_plugin_range_warm_up_blend_and_state():
    """The example plugin's "quantile" strategy, by hand: uniform edges over the depth range and
    Eq. 2 units before the warm-up; then equal-frequency edges blended with the uniform ones
    (``mix``); a refit without new depths changes nothing; a saved state is a copy; ``mix`` is in
    (0, 1]."""
    quantile = _quantile_plugin_source().QuantileStrategy
    q = quantile(8, 4, min_depth=2.0, max_depth=10.0, mix=0.5, warmup_pixels=1001)
    validate_strategy(q)
    assert q.edges().tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert q.assignment().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    q.observe_depth(torch.tensor([3.0] * 500 + [9.0] * 500))
    saved = q.state_dict()
    assert q.refit() is False  # 1000 pixels seen, 1001 needed
    q.observe_depth(torch.tensor([3.0] * 500 + [9.0] * 500))
    assert saved["histogram"].sum() == 1000  # not the live histogram
    assert q.refit() is True and q.refit() is False
    # quantiles at about 3, 3 and 9 m (cell width 8/4096), half-way to the uniform 4, 6, 8
    assert q.edges().tolist() == pytest.approx([2.0, 3.5, 4.5, 8.5, 10.0], abs=2e-3)
    validate_strategy(q)
    assert quantile(4, 2, mix=1.0).mix == 1.0
    with pytest.raises(ValueError, match=r"mix must be in \(0, 1\]"):
        quantile(4, 2, mix=0.0)


class _Learnable(DepthBinStrategy):
    """A learnable plugin strategy whose methods can be made to fail one at a time."""

    name = "test-learnable"
    learnable = True
    fail = ""  # the method that raises

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.blob = None

    def _maybe_fail(self, method):
        if method == self.fail:
            raise RuntimeError(f"{method} exploded")

    def edges(self):
        self._maybe_fail("edges")
        return torch.linspace(0, 10, self.num_bins + 1, dtype=torch.float64)

    def assignment(self):
        self._maybe_fail("assignment")
        return torch.arange(self.num_units) * self.num_bins // self.num_units

    def observe_depth(self, depth):
        self._maybe_fail("observe_depth")

    def observe(self, responses, counts):
        self._maybe_fail("observe")

    def refit(self):
        self._maybe_fail("refit")
        return False

    def state_dict(self):
        return {"calls": torch.tensor(self.calls), "blob": self.blob}


@pytest.mark.parametrize("method", ["edges", "assignment", "observe_depth", "observe", "refit"])
def test_a_plugin_strategy_failing_during_training_names_the_layer_and_the_plugin(method):
    from meter_timm.selectivity import SelectivityLoss

    pm = plugins.get_plugin_manager()
    pm.register(InMemoryPlugin(_Learnable), name="learnable-plugin")
    try:
        loss = SelectivityLoss([{"name": "encoder.6", "num_bins": 4, "strategy": "test-learnable"}])
        features = {"encoder.6": torch.rand(2, 8, 4, 4)}
        depth = torch.rand(2, 1, 16, 16) * 10
        loss(depth, features=features)  # created and valid
        loss.strategy("encoder.6").fail = method
        with pytest.raises(PluginError) as info:
            loss.refit() if method == "refit" else loss(depth, features=features)
    finally:
        pm.unregister(name="learnable-plugin")
    message = str(info.value)
    assert message.startswith("selectivity layer 'encoder.6': depth-bin strategy 'test-learnable'")
    assert f"plugin 'learnable-plugin' ((in memory) 9.9): {method}() raised RuntimeError" in message


def test_a_plugin_state_that_a_checkpoint_could_not_load_is_refused_when_saved():
    from meter_timm.selectivity import SelectivityLoss

    pm = plugins.get_plugin_manager()
    pm.register(InMemoryPlugin(_Learnable), name="learnable-plugin")
    try:
        loss = SelectivityLoss([{"name": "encoder.6", "num_bins": 4, "strategy": "test-learnable"}])
        loss(torch.rand(2, 1, 16, 16) * 10, features={"encoder.6": torch.rand(2, 8, 4, 4)})
        loss.strategy("encoder.6").blob = [1.5, {"ok": None}]  # plain values: saved
        assert loss.state_dict()["_extra_state"]["strategies"]["encoder.6"]["state"]["blob"]
        loss.strategy("encoder.6").blob = {"stats": [object()]}
        with pytest.raises(PluginError, match=r"state\['blob'\]\['stats'\]\[0\] \(builtins.object"):
            loss.state_dict()
    finally:
        pm.unregister(name="learnable-plugin")


def test_a_plugin_taking_its_own_parameters_through_kwargs():
    """A strategy that pops its own options from **kwargs and passes the rest on: the catalog
    leaves the check to its constructor, whose base class still refuses what is left."""

    class Gamma(ConstantStrategy):
        name = "test-gamma"

        def __init__(self, num_units, num_bins, min_depth=0.0, max_depth=10.0, **options):
            self.gamma = float(options.pop("gamma", 1.0))
            super().__init__(num_units, num_bins, min_depth, max_depth, **options)

    pm = new_plugin_manager(autoload=False)
    pm.register(InMemoryPlugin(Gamma), name="gamma-plugin")
    assert create_strategy("test-gamma", 8, 4, pm=pm, gamma=2.0).gamma == 2.0
    with pytest.raises(ValueError, match=r"'test-gamma' of plugin 'gamma-plugin'.*\['gama'\]"):
        create_strategy("test-gamma", 8, 4, pm=pm, gama=2.0)
