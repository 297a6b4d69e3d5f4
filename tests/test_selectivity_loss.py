"""SelectivityLoss, LayerCapture and strategy state. Time budget: a few seconds."""

import io

import pytest
import torch
from torch import nn

from meter_timm.selectivity import LayerCapture, SelectivityLoss


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_capture_attach_detach_and_context():
    net = TinyNet()
    x = torch.rand(2, 3, 16, 16)
    capture = LayerCapture(net, ["encoder.1", "encoder.3"])
    net(x)
    assert capture.outputs == {}  # not attached yet
    with capture:
        net(x)
        assert capture.outputs["encoder.1"].shape == (2, 8, 8, 8)
        assert capture.outputs["encoder.3"].shape == (2, 8, 4, 4)
        assert capture.outputs["encoder.3"].requires_grad
    assert not capture.attached and capture.outputs == {}
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    capture.attach()
    capture.attach()  # idempotent
    assert len(net.encoder[1]._forward_hooks) == 1
    capture.detach()
    assert len(net.encoder[1]._forward_hooks) == 0


def test_unknown_layer_lists_close_names():
    with pytest.raises(KeyError, match="encoder.1") as info:
        LayerCapture(TinyNet(), ["encoder.11"])
    assert "close valid names" in str(info.value)
    with pytest.raises(KeyError, match="encoder"):
        SelectivityLoss(["encodr"]).attach(TinyNet())


def test_hooks_on_wrapped_model():
    net = TinyNet()
    wrapped = nn.DataParallel(net)  # CPU: behaves like the plain module, like DDP wraps it
    loss = SelectivityLoss([{"name": "encoder.3", "num_bins": 4}], lam=1.0).attach(wrapped)
    wrapped(torch.rand(2, 3, 16, 16))
    out = loss(torch.rand(2, 1, 16, 16) * 10)
    assert torch.isfinite(out["loss_selectivity"])


def _ideal_features(num_units=8, num_bins=4):
    """Depth = bin index + 0.5 in vertical stripes; unit k responds only where depth is in its
    Eq. 2 bin (k // 2), with amplitude k + 1; returns the loss' inputs."""
    depth = (torch.arange(16) // 4).float().add(0.5).repeat(2, 1, 16, 1)  # (2, 1, 16, 16), 4 bins
    bins = torch.arange(num_units) // (num_units // num_bins)
    act = torch.stack([(depth[:, 0].floor() == b).float() * (k + 1) for k, b in enumerate(bins)], 1)
    return act, depth


def test_loss_sign_and_scale():
    act, depth = _ideal_features()
    loss = SelectivityLoss(
        [{"name": "layer", "num_bins": 4, "strategy": "uniform"}], lam=0.5, max_depth=4.0
    )
    out = loss(depth, features={"layer": act})
    assert out["sel/layer"].item() == pytest.approx(1.0, abs=1e-6)  # perfectly selective
    assert out["loss_selectivity"].item() == pytest.approx(-0.5, abs=1e-6)  # -lambda * 1
    flat = torch.ones_like(act)
    out = loss(depth, features={"layer": flat})
    assert out["sel/layer"].item() == pytest.approx(0.0, abs=1e-6)
    # two layers add up; relative weighting scales with the detached base loss
    two = SelectivityLoss(
        [{"name": "a", "num_bins": 4}, {"name": "b", "num_bins": 4}],
        lam=0.5,
        relative=True,
        max_depth=4.0,
    )
    base = torch.tensor(3.0, requires_grad=True)
    out = two(depth, base_loss=base, features={"a": act, "b": act})
    assert out["loss_selectivity"].item() == pytest.approx(-0.5 * 3.0 * 2.0, abs=1e-5)
    assert not out["loss_selectivity"].requires_grad or base.grad is None
    assert all("loss" not in k for k in out if k != "loss_selectivity")


def test_documented_defaults_and_invalid_arguments():
    loss = SelectivityLoss(["l"])
    assert loss.lam == 0.1 and loss.use_abs is True  # the ICCV 2021 code's lambda, |activation|
    for bad, message in (
        (dict(layers=["l"], lam=-0.1), "lam must be >= 0"),
        (dict(layers=["l"], min_depth=5.0, max_depth=5.0), "min_depth < max_depth"),
        (dict(layers=[{"name": "l", "num_bins": 0}]), "num_bins must be >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            SelectivityLoss(**bad)


def test_default_averages_absolute_activations():
    # depth 0.5 m on the left half (bin 0), 1.5 m on the right (bin 1); each unit is a +-1
    # checkerboard in its own Eq. 2 bin and 0 elsewhere, at the depth's resolution
    depth = torch.tensor([0.5, 0.5, 1.5, 1.5]).repeat(1, 1, 4, 1)
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 2.0 - 1.0
    left = (depth[0, 0] < 1).float()
    act = torch.stack([checker * left, checker * (1 - left)])[None]  # (1, 2, 4, 4)
    layer = [{"name": "l", "num_bins": 2}]
    # |a| has mean 1 in the unit's bin and 0 elsewhere: perfectly selective
    out = SelectivityLoss(layer, max_depth=2.0)(depth, features={"l": act})
    assert out["sel/l"].item() == pytest.approx(1.0, abs=1e-6)
    # the raw activation averages to 0 in every bin
    raw = SelectivityLoss(layer, max_depth=2.0, use_abs=False)(depth, features={"l": act})
    assert raw["sel/l"].item() == pytest.approx(0.0, abs=1e-6)


def test_relative_weight_sends_no_gradient_into_the_base_loss():
    act, depth = _ideal_features()
    act = act.requires_grad_()
    loss = SelectivityLoss([{"name": "a", "num_bins": 4}], relative=True, max_depth=4.0)
    base = torch.tensor(3.0, requires_grad=True)
    loss(depth, base_loss=base, features={"a": act})["loss_selectivity"].backward()
    assert act.grad is not None and base.grad is None


def test_loss_gradient_increases_selectivity():
    torch.manual_seed(0)
    act = torch.rand(2, 8, 8, 8, requires_grad=True)
    depth = torch.rand(2, 1, 16, 16) * 10
    loss = SelectivityLoss([{"name": "l", "num_bins": 4}], lam=1.0)
    opt = torch.optim.SGD([act], lr=20.0)
    first = loss(depth, features={"l": act})
    for _ in range(20):
        opt.zero_grad()
        loss(depth, features={"l": act})["loss_selectivity"].backward()
        opt.step()
    last = loss(depth, features={"l": act})
    assert first["loss_selectivity"].item() == pytest.approx(-first["sel/l"].item())
    assert last["sel/l"] > first["sel/l"] + 0.05


def test_dead_units_and_empty_batches_are_finite():
    loss = SelectivityLoss([{"name": "l", "num_bins": 4}], lam=1.0)
    act = torch.zeros(2, 8, 4, 4, requires_grad=True)
    out = loss(torch.rand(2, 1, 8, 8) * 10, features={"l": act})
    assert out["sel/l"].item() == 0.0
    out["loss_selectivity"].backward()
    assert torch.isfinite(act.grad).all()
    act2 = torch.rand(2, 8, 4, 4, requires_grad=True)
    out = loss(torch.zeros(2, 1, 8, 8), features={"l": act2})  # no valid depth at all
    assert out["loss_selectivity"].item() == 0.0
    out["loss_selectivity"].backward()
    assert torch.isfinite(act2.grad).all()
    # only bin 0 present: units of other bins are excluded, not counted as 0
    depth = torch.full((2, 1, 8, 8), 1.0)
    act3 = torch.rand(2, 8, 4, 4)
    out = loss(depth, features={"l": act3})
    assert torch.isfinite(out["loss_selectivity"])


def test_missing_capture_and_relative_without_base_loss():
    loss = SelectivityLoss(["encoder.3"], relative=True)
    with pytest.raises(RuntimeError, match="attach"):
        loss(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="base_loss"):
        loss(torch.rand(1, 1, 8, 8), features={"encoder.3": torch.rand(1, 8, 2, 2)})
    with pytest.raises(ValueError, match="unknown key"):
        SelectivityLoss([{"name": "x", "bins": 3}])
    with pytest.raises(ValueError, match="'x'"):
        SelectivityLoss([{"name": "x", "strategy": "no-such-strategy"}])


def test_strategy_state_round_trip_before_lazy_creation():
    layers = [{"name": "encoder.3", "num_bins": 4, "strategy": "learned"}]
    net = TinyNet()
    loss = SelectivityLoss(layers, lam=1.0).attach(net)
    torch.manual_seed(0)
    for _ in range(3):
        net(torch.rand(2, 3, 16, 16))
        loss(torch.rand(2, 1, 16, 16) * 10)
    loss.refit()
    saved = loss.strategy("encoder.3").state_dict()
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh = SelectivityLoss(layers, lam=1.0)
    fresh.load_state_dict(state)  # built while loading, from the saved unit count
    assert fresh.strategy("encoder.3").num_units == 8
    resaved = fresh.state_dict()
    assert resaved["_extra_state"]["strategies"]["encoder.3"]["num_units"] == 8
    fresh.attach(net)
    net(torch.rand(2, 3, 16, 16))
    fresh(torch.rand(2, 1, 16, 16) * 10)  # created now, with the loaded state
    restored = fresh.strategy("encoder.3").state_dict()
    assert torch.equal(restored["assignment"], saved["assignment"])
    assert torch.equal(restored["edges"], saved["edges"])  # fitted to the depths before saving
    assert int(restored["stage"]) == int(saved["stage"]) == 1  # profiling: responses accumulate
    assert float(restored["count_sum"].sum()) > float(saved["count_sum"].sum())

    # a state that does not fit fails while loading, naming the layer
    wrong = SelectivityLoss([{"name": "encoder.3", "num_bins": 4, "strategy": "uniform"}])
    with pytest.raises(ValueError, match="encoder.3.*saved strategy 'learned'"):
        wrong.load_state_dict(state)
    finer = SelectivityLoss(
        [dict(layers[0], params={"resolution": 2048})]
    )  # the learned histogram was saved with 4096 slots
    with pytest.raises(ValueError, match="selectivity layer 'encoder.3'.*histogram"):
        finer.load_state_dict(state)
    renamed = SelectivityLoss([dict(layers[0], name="encoder.2")])
    with pytest.warns(UserWarning, match="'encoder.3', which is not configured"):
        renamed.load_state_dict(state)
    assert renamed.strategies == {}


def test_deepcopy_of_hooked_model_gets_its_own_capture():
    import copy

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = TinyNet()
            self.selectivity = SelectivityLoss([{"name": "encoder.3", "num_bins": 4}]).attach(
                self.backbone
            )

    model = Wrapper()
    twin = copy.deepcopy(model)  # e.g. an EMA copy
    twin.backbone(torch.rand(1, 3, 16, 16))
    assert "encoder.3" in twin.selectivity._capture.outputs
    assert model.selectivity._capture.outputs == {}  # the original is untouched
    twin.selectivity.detach()
    assert len(twin.backbone.encoder[3]._forward_hooks) == 0
    assert len(model.backbone.encoder[3]._forward_hooks) == 1


def test_any_timm_model_layer():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    loss = SelectivityLoss(
        [
            {"name": "layer3", "num_bins": 16, "strategy": "log"},
            {"name": "layer2.0.conv1", "num_bins": 8},
        ],
        lam=0.1,
    ).attach(model)
    model(torch.rand(2, 3, 64, 64)).sum()
    out = loss(torch.rand(2, 1, 64, 64) * 10)
    assert set(out) == {"loss_selectivity", "sel/layer3", "sel/layer2.0.conv1"}
    out["loss_selectivity"].backward()
    assert model.layer3[0].conv1.weight.grad is not None
    assert loss.strategy("layer3").num_units == 256


def test_refit_into_invalid_assignment_is_an_error_naming_layer_and_strategy():
    from meter_timm.strategies import DepthBinStrategy, create_strategy
    from meter_timm.strategies.plugins import hookimpl, new_plugin_manager

    class Collapsing(DepthBinStrategy):
        """Valid at first; its refit puts every unit in bin 0, leaving the other bins empty."""

        name, description, learnable = "collapsing", "test", True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._bins = torch.arange(self.num_units) * self.num_bins // self.num_units

        def edges(self):
            return torch.linspace(
                self.min_depth, self.max_depth, self.num_bins + 1, dtype=torch.float64
            )

        def assignment(self):
            return self._bins

        def refit(self):
            self._bins = torch.zeros(self.num_units, dtype=torch.long)
            return True

    loss = SelectivityLoss([{"name": "encoder.3", "num_bins": 4}])
    pm = new_plugin_manager(autoload=False)
    loss.strategies["encoder.3"] = create_strategy(
        "collapsing", 8, 4, pm=_register(pm, Collapsing, hookimpl)
    )
    with pytest.raises(ValueError, match=r"encoder\.3.*collapsing.*bin"):
        loss.refit()


def _register(pm, cls, hookimpl):
    class Plugin:
        @hookimpl
        def meter_timm_register_strategies(self, register):
            register(cls)

    pm.register(Plugin(), name="test-collapsing")
    return pm


def test_a_strategy_that_cannot_refit_is_named_with_its_layer():
    from meter_timm.strategies.learned import LearnedStrategy

    class Broken(LearnedStrategy):
        def refit(self):
            raise ValueError("cost matrix is infeasible")

    net = TinyNet()
    loss = SelectivityLoss(
        [{"name": "encoder.3", "num_bins": 4, "strategy": "learned"}], lam=1.0
    ).attach(net)
    net(torch.rand(2, 3, 16, 16))
    loss(torch.rand(2, 1, 16, 16) * 10)
    loss.strategies["encoder.3"].__class__ = Broken
    with pytest.raises(
        ValueError, match=r"layer 'encoder.3': strategy 'learned' could not refit: .*cost matrix"
    ):
        loss.refit()


def _learned_loss(net):
    """SelectivityLoss on TinyNet's encoder.3: 4 bins, the learned strategy with uniform edges."""
    return SelectivityLoss(
        [{"name": "encoder.3", "num_bins": 4, "strategy": "learned:edges=uniform"}], lam=1.0
    ).attach(net)


def test_nan_activations_do_not_reach_the_learned_matching():
    net = TinyNet()
    loss = _learned_loss(net)
    torch.manual_seed(0)
    clean = [(torch.rand(2, 3, 16, 16), torch.rand(2, 1, 16, 16) * 10) for _ in range(3)]
    poisoned = torch.rand(2, 3, 16, 16)
    poisoned[0, :, 0, 0] = float("nan")  # one NaN pixel: NaN activations in its batch
    loss.calibrate(net, clean + [(poisoned, torch.rand(2, 1, 16, 16) * 10)])
    strategy = loss.strategy("encoder.3")
    assert strategy.frozen and bool(torch.isfinite(strategy.response_sum).all())


def test_layers_sharing_bins_are_scored_together_exactly_as_alone():
    """Layers with the same edges share one index computation (units concatenated, per-layer
    segment means); every per-layer score, the total and the gradients equal separate losses."""
    from meter_timm.selectivity import SelectivityLoss

    gen = torch.Generator().manual_seed(3)
    depth = torch.rand(2, 1, 32, 32, generator=gen) * 9 + 0.5
    depth[:, :, :4] = 0.0
    acts = {
        f"l{i}": torch.randn(
            2, 8 * (i + 1), 16 // 2**i, 16 // 2**i, generator=gen, dtype=torch.float64
        ).requires_grad_()
        for i in range(3)
    }
    layers = [dict(name=name, num_bins=6) for name in acts]
    joint = SelectivityLoss(layers, lam=0.5)(depth, features=acts)
    joint["loss_selectivity"].backward()
    grads = {name: a.grad.clone() for name, a in acts.items()}
    total = 0.0
    for name, act in acts.items():
        act.grad = None
        alone = SelectivityLoss([dict(name=name, num_bins=6)], lam=0.5)(depth, features={name: act})
        torch.testing.assert_close(joint[f"sel/{name}"], alone[f"sel/{name}"])
        alone["loss_selectivity"].backward()
        torch.testing.assert_close(act.grad, grads[name])
        total = total + alone["loss_selectivity"]
    torch.testing.assert_close(joint["loss_selectivity"], total)


@pytest.mark.parametrize("other_bins", ["nonempty", "all"])
def test_layer_scores_backward_equals_autograd_of_the_index(other_bins):
    """The loss's hand-derived backward (layer_scores) against autograd of the composition it
    replaces: selectivity_index, then per-layer means over units whose bin holds pixels. Dead
    units (responses 0: the sign's zero) and empty bins (own bin empty, bins left out of R_other)
    are included, for one layer and for three layers scored together."""
    from meter_timm.selectivity.index import layer_scores, selectivity_index

    gen = torch.Generator().manual_seed(5)
    counts = torch.tensor([4.0, 0.0, 7.0, 1.0, 0.0, 9.0], dtype=torch.float64)
    responses = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    responses[3] = 0.0  # a dead unit
    responses[7, 2] = 0.0  # a unit whose own response is exactly 0
    bins = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2, 1, 3, 5, 4])
    segment = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2])

    def reference(r, seg, num_layers):
        index = selectivity_index(r, bins, 1e-8, counts, other_bins)
        keep = (counts[bins] > 0).to(r.dtype)
        sums = r.new_zeros(2, num_layers).index_add_(1, seg, torch.stack([index * keep, keep]))
        return sums[0] / sums[1].clamp(min=1.0)

    for seg, num_layers in ((None, 1), (segment, 3)):
        ref_seg = torch.zeros(12, dtype=torch.long) if seg is None else seg
        weights = torch.randn(num_layers, generator=gen, dtype=torch.float64)
        r1 = responses.clone().requires_grad_()
        r2 = responses.clone().requires_grad_()
        got = layer_scores(r1, bins, counts, seg, num_layers, 1e-8, other_bins)
        want = reference(r2, ref_seg, num_layers)
        torch.testing.assert_close(got, want)
        (got * weights).sum().backward()
        (want * weights).sum().backward()
        torch.testing.assert_close(r1.grad, r2.grad)
        assert r1.grad.abs().sum() > 0 and torch.all(r1.grad[3] == 0)
        # and against finite differences (away from the kinks of |.| at 0)
        smooth = (responses + 3.0).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda r: layer_scores(r, bins, counts, seg, num_layers, 1e-8, other_bins), (smooth,)
        )


def test_a_frozen_learned_strategy_is_kept_between_steps_until_a_state_is_loaded():
    """Once calibrated (frozen), a learned strategy's edges and assignment are cached like a
    fixed strategy's, and it observes nothing more; a loaded state replaces the cached ones."""
    net = TinyNet()
    loss = _learned_loss(net)
    torch.manual_seed(0)
    batches = [(torch.rand(2, 3, 16, 16), torch.rand(2, 1, 16, 16) * 10) for _ in range(3)]
    loss.calibrate(net, batches)
    strategy = loss.strategy("encoder.3")
    assert strategy.frozen
    images, depth = batches[0]
    net(images)
    loss(depth)
    state = {k: v.clone() for k, v in strategy.state_dict().items()}
    calls = []
    strategy.assignment = lambda: calls.append("assignment") or state["assignment"].clone()
    strategy.edges = lambda: calls.append("edges") or state["edges"].clone()
    net(images)
    before = loss(depth)["sel/encoder.3"]
    assert calls == []  # cached: neither asked again
    # a loaded state (units moved to other bins) is used from the next step on
    saved = loss.get_extra_state()
    moved = saved["strategies"]["encoder.3"]["state"]["assignment"]
    saved["strategies"]["encoder.3"]["state"]["assignment"] = (moved + 1) % 4
    loss.set_extra_state(saved)
    del strategy.assignment, strategy.edges  # back to the class's methods
    net(images)
    after = loss(depth)["sel/encoder.3"]
    fresh = _learned_loss(net)
    fresh.set_extra_state(saved)
    net(images)
    torch.testing.assert_close(after, fresh(depth)["sel/encoder.3"])
    assert not torch.equal(after, before)


class _FakeViT(nn.Module):
    """timm's transformer conventions: a class token, then a 2 x 3 grid of patch tokens (token t
    carries 4t + k in unit k) for a 32 x 48 input."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.patch_size = (16, 16)
        self.block = nn.Identity()

    def forward(self, x):
        patches = torch.arange(24.0).view(1, 6, 4).expand(x.shape[0], -1, -1)
        return self.block(torch.cat([torch.full((x.shape[0], 1, 4), -1.0), patches], 1))


class _DeclaresNCHW(nn.Module):
    output_fmt = "NCHW"

    def forward(self, x):
        return torch.arange(24.0).view(1, 2, 3, 4)  # NCHW, though (2, 3) is a grid too


class _FakeNHWC(nn.Module):
    """An NHWC model (as timm's Swin declares) with an NHWC stage and an NCHW-declaring child."""

    output_fmt = "NHWC"

    def __init__(self):
        super().__init__()
        self.stage = nn.Identity()
        self.nchw = _DeclaresNCHW()

    def forward(self, x):  # x: (1, 3, 8, 12)
        self.nchw(x)
        return self.stage(torch.arange(30.0).view(1, 2, 3, 5) * x.mean())


def test_capture_token_and_channels_last_layouts_exactly():
    from meter_timm.selectivity import token_grid

    vit = _FakeViT()
    with LayerCapture(vit, ["block", "block"]) as capture:
        assert capture.names == ["block"]
        vit(torch.zeros(2, 3, 32, 48))
        grid = torch.arange(24.0).view(2, 3, 4).permute(2, 0, 1)  # unit k at (i, j): 4(3i+j)+k
        assert torch.equal(capture.outputs["block"], grid.expand(2, -1, -1, -1))
    model = _FakeNHWC()
    x = torch.ones(1, 3, 8, 12, requires_grad=True)
    with LayerCapture(model, ["stage", "nchw"], detach_outputs=True) as capture:
        out = model(x)
        assert torch.equal(capture.outputs["stage"], out.permute(0, 3, 1, 2))
        assert torch.equal(capture.outputs["nchw"], torch.arange(24.0).view(1, 2, 3, 4))
        assert out.requires_grad and not capture.outputs["stage"].requires_grad
    assert token_grid(24, (2, 3)) is None  # no grid has more cells than the image has pixels


class _PairOutput(nn.Module):
    def forward(self, x):
        return "aux", x, x + 1


def test_capture_of_a_tuple_output_takes_its_first_tensor():
    model = nn.Sequential(_PairOutput())
    with LayerCapture(model, ["0"]) as capture:
        model(torch.zeros(1, 2, 3, 4))
        assert torch.equal(capture.outputs["0"], torch.zeros(1, 2, 3, 4))


def test_meter_maps_of_a_padded_input_are_cropped_to_the_image():
    """At 96x128 METER runs as 128x128 (padded bottom); captured maps keep only the rows that see
    the image, so Eq. 1 pairs them with the right depth pixels."""
    import copy

    timm = pytest.importorskip("timm")
    import meter_timm  # noqa: F401  (registers METER)
    from meter_timm.selectivity import LayerCapture

    torch.manual_seed(0)
    model = timm.create_model("meter_xxs").eval()
    names = ["encoder.2", "encoder.6", "encoder.10", "decoder.blocks.0"]
    image = torch.randn(1, 3, 96, 128)
    full = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda m, a, out, n=n: full.__setitem__(n, out)
        )
        for n in names
    ]
    with torch.no_grad(), LayerCapture(model, names) as capture:
        model(image)
        captured = dict(capture.outputs)
    for hook in hooks:
        hook.remove()
    expected = {"encoder.2": (24, 32), "encoder.6": (12, 16), "encoder.10": (3, 4)}
    for name, size in expected.items():
        assert full[name].shape[-2] > size[0]  # the padded map the model computed
        assert tuple(captured[name].shape[-2:]) == size
        assert torch.equal(captured[name], full[name][..., : size[0], : size[1]])
    decoder = captured["decoder.blocks.0"]  # stride 16 of 96x128: 6x8
    assert tuple(decoder.shape[-2:]) == (6, 8)

    # Eq. 1 on the capture equals Eq. 1 on the image's part of the model's own map
    depth = torch.linspace(0.5, 9.5, 96)[None, None, :, None].expand(1, 1, 96, 128)
    loss = SelectivityLoss([{"name": "encoder.6", "num_bins": 8}])
    got = loss(depth, features={"encoder.6": captured["encoder.6"]})["sel/encoder.6"]
    ref = loss(depth, features={"encoder.6": full["encoder.6"][..., :12, :16]})["sel/encoder.6"]
    padded = loss(depth, features={"encoder.6": full["encoder.6"]})["sel/encoder.6"]
    assert torch.equal(got, ref) and not torch.allclose(got, padded, atol=1e-3)

    # an EMA-style copy of the hooked model crops its own captures too
    hooked = SelectivityLoss([{"name": "encoder.6", "num_bins": 8}]).attach(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin(image)
    twin_loss = [m for m in twin._forward_pre_hooks.values()][0].capture
    assert tuple(twin_loss.outputs["encoder.6"].shape[-2:]) == (12, 16)
    hooked.detach()

    # sizes the original accepts are not padded, and the classifier never pads
    with torch.no_grad(), LayerCapture(model, ["encoder.6"]) as capture:
        model(torch.randn(1, 3, 64, 64))
        assert tuple(capture.outputs["encoder.6"].shape[-2:]) == (8, 8)
    assert model.feature_region((16, 16), (96, 128)) == (12, 16)
    classifier = timm.create_model("meter_xxs", num_classes=0)
    assert classifier.feature_region((16, 16), (96, 128)) == (16, 16)


def _two_depth_halves():
    return torch.tensor([0.5, 0.5, 1.5, 1.5]).repeat(1, 1, 4, 1)  # (1,1,4,4): bins 0 | 1


# other_bins must reach the index
def test_loss_other_bins_all_counts_empty_bins_as_zero():
    from meter_timm.selectivity import SelectivityLoss

    depth, act = _two_depth_halves(), torch.ones(1, 3, 4, 4)  # 3 bins over (0, 3]: bin 2 empty
    layer = [{"name": "l", "num_bins": 3}]
    nonempty = SelectivityLoss(layer, max_depth=3.0)(depth, features={"l": act})
    all_bins = SelectivityLoss(layer, max_depth=3.0, other_bins="all")(depth, features={"l": act})
    assert nonempty["sel/l"].item() == pytest.approx(0.0, abs=1e-6)
    assert all_bins["sel/l"].item() == pytest.approx(1 / 3, abs=1e-6)  # R_other = (1 + 0) / 2


# min_depth must reach the strategy
def test_loss_min_depth_reaches_the_strategy_edges():
    from meter_timm.selectivity import SelectivityLoss

    loss = SelectivityLoss([{"name": "l", "num_bins": 2}], min_depth=1.0, max_depth=3.0)
    loss(torch.rand(1, 1, 4, 4) * 3, features={"l": torch.rand(1, 2, 2, 2)})
    assert loss.strategy("l").edges().tolist() == [1.0, 2.0, 3.0]


# a learnable (not frozen) strategy's changed assignment is used next step
def test_changed_assignment_of_a_learning_strategy_is_used_at_the_next_step():
    from meter_timm.selectivity import SelectivityLoss
    from meter_timm.strategies.fixed import UniformStrategy

    class Flipping(UniformStrategy):
        learnable = True
        flipped = False

        def assignment(self):
            a = super().assignment()
            return a.flip(0) if self.flipped else a

        def refit(self):
            self.flipped = True
            return True

    depth = _two_depth_halves()
    left = (depth[0, 0] < 1).float()
    act = torch.stack([left, 1 - left])[None]  # unit 0 fires in bin 0, unit 1 in bin 1
    loss = SelectivityLoss([{"name": "l", "num_bins": 2}], max_depth=2.0)
    loss.strategies["l"] = Flipping(2, 2, 0.0, 2.0)
    assert loss(depth, features={"l": act})["sel/l"].item() == pytest.approx(1.0, abs=1e-6)
    loss.strategy("l").refit()  # called on the strategy itself
    assert loss(depth, features={"l": act})["sel/l"].item() == pytest.approx(-1.0, abs=1e-6)


# use_abs means |a|, also for negative activations
def test_default_abs_makes_negative_activations_selective():
    from meter_timm.selectivity import SelectivityLoss

    depth = _two_depth_halves()
    left = (depth[0, 0] < 1).float()
    act = -torch.stack([left, 1 - left])[None]  # -1 in the unit's own bin, 0 elsewhere
    out = SelectivityLoss([{"name": "l", "num_bins": 2}], max_depth=2.0)(depth, features={"l": act})
    assert out["sel/l"].item() == pytest.approx(1.0, abs=1e-6)


def test_a_layer_inside_a_mobilevit_transformer_is_named_with_the_reason():
    """The transformer of a MobileViT block sees the patches as a batch 4x the images': the loss
    and the dissection accumulator name the layer and say why, not just the shapes."""
    from meter_timm.selectivity import ResponseAccumulator

    act = torch.rand(8, 64, 4, 4)  # 2 images x 4 patch positions
    depth = torch.rand(2, 1, 16, 16) * 10
    loss = SelectivityLoss([{"name": "encoder.6.transformer.0", "num_bins": 4}])
    message = r"layer 'encoder.6.transformer.0': .* its batch is 4x the images'"
    with pytest.raises(ValueError, match=message):
        loss(depth, features={"encoder.6.transformer.0": act})
    accumulator = ResponseAccumulator({"encoder.6.transformer.0": torch.linspace(0, 10, 5)})
    with pytest.raises(ValueError, match=message):
        accumulator.update({"encoder.6.transformer.0": act}, depth)
    with pytest.raises(ValueError, match=r"layer 'x': output of shape \(2, 5, 4\)"):
        loss_x = SelectivityLoss(["x"])
        loss_x(depth, features={"x": torch.rand(2, 5, 4)})
