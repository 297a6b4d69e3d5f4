"""Causal unit ablation on a model whose answer is known by construction."""

import pytest
import timm
import torch
from torch import nn

from meter_timm.selectivity import LayerCapture, ablate, ablation_study, per_bin_abs_rel
from meter_timm.selectivity.ablation import AblationResult
from meter_timm.selectivity.bins import eq2_assignment

EDGES = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0], dtype=torch.float64)
CENTRES = (EDGES[:-1] + EDGES[1:]) / 2


class BinIndicators(nn.Module):
    """Two units per depth bin (units 2b and 2b+1 for bin b, as Eq. 2 assigns them): a sharp
    indicator of the bin, read from channel 0 of the input, which carries the true depth."""

    def __init__(self, edges: torch.Tensor, sharpness: float = 200.0) -> None:
        super().__init__()
        self.register_buffer("lower", edges[:-1].float().repeat_interleave(2))
        self.register_buffer("upper", edges[1:].float().repeat_interleave(2))
        self.sharpness = sharpness

    def forward(self, x):
        d = x[:, :1]
        lower, upper = self.lower[None, :, None, None], self.upper[None, :, None, None]
        return torch.sigmoid(self.sharpness * (d - lower)) - torch.sigmoid(
            self.sharpness * (d - upper)
        )


class KnownDepthModel(nn.Module):
    """Depth = sum over bins of (bin centre x indicator): the units of bin b are the only path
    by which pixels of bin b get a depth."""

    def __init__(self) -> None:
        super().__init__()
        self.units = BinIndicators(EDGES)
        self.head = nn.Conv2d(8, 1, 1, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(CENTRES.float().repeat_interleave(2).div(2).view(1, 8, 1, 1))

    def forward(self, x):
        return self.head(self.units(x))


def _batches():
    torch.manual_seed(0)
    out = []
    for _ in range(2):
        depth = torch.rand(2, 1, 16, 16) * 7.8 + 1.1  # every bin, away from the outer edges
        depth[:, :, 0, 0] = 0.0  # invalid pixels are ignored
        out.append((depth.expand(-1, 3, -1, -1).clone(), depth))
    return out


def test_ablate_silences_exactly_the_chosen_units_and_removes_its_hooks():
    model = KnownDepthModel()
    x = _batches()[0][0]
    with ablate(model, "units", [2, 5]), LayerCapture(model, ["units"]) as capture:
        model(x)
        silenced = capture.outputs["units"]
    assert (silenced[:, [2, 5]] == 0).all()
    assert (silenced[:, [0, 1, 3, 4, 6, 7]].abs().sum(dim=(0, 2, 3)) > 0).all()
    with LayerCapture(model, ["units"]) as capture:  # hooks gone: the units are back
        model(x)
        assert capture.outputs["units"][:, [2, 5]].abs().sum() > 0


def test_units_of_a_bin_are_its_only_path():
    model = KnownDepthModel()
    batches = _batches()
    result = ablation_study(
        model, batches, model, "units", eq2_assignment(8, 4), EDGES, random_draws=8, seed=0
    )
    s = result.summary()
    assert result.group_sizes == [2, 2, 2, 2]
    assert all(b < 0.35 for b in result.baseline)  # bin-centre quantisation only
    # silencing bin g's units makes bin g predict ~0 (abs_rel ~1) and leaves the others alone
    for g in range(4):
        assert result.assigned[g][g] > 0.6
        assert all(abs(v) < 5e-3 for d, v in enumerate(result.assigned[g]) if d != g)  # edge leaks
    assert s["own_bin_hit_rate"] == 1.0
    assert s["own_bin_ratio"] > 100 and s["own_bin_excess"] > 0.6
    # as many random units hit the bin only by chance
    assert s["own_bin_increase_random"] < 0.6 * s["own_bin_increase"]


def test_study_measures_against_the_given_assignment():
    model = KnownDepthModel()
    shifted = (eq2_assignment(8, 4) + 1) % 4  # units of bin b labelled as bin b+1
    result = ablation_study(model, _batches(), model, "units", shifted, EDGES, random_draws=1)
    s = result.summary()
    assert s["own_bin_hit_rate"] == 0.0
    assert s["own_bin_excess"] < -0.1  # the other bins (one of them the units' true bin) suffer


def test_per_bin_abs_rel_by_hand():
    pred = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]]])
    gt = torch.tensor([[[[2.5, 4.0], [0.0, 8.0]]]])  # 0 = invalid; 10 clamps to 9
    sums, counts = per_bin_abs_rel(pred, gt, EDGES)
    assert counts.tolist() == [1, 1, 0, 1]
    torch.testing.assert_close(sums, torch.tensor([0.2, 0.0, 0.0, 1 / 8], dtype=torch.float64))


@pytest.mark.parametrize(
    "name, kwargs, layer",
    [
        (
            "vit_tiny_patch16_224",
            dict(img_size=(64, 96), depth=2, num_classes=0),
            "blocks.0",
        ),  # tokens
        ("mambaout_femto", dict(features_only=True), "stages_1"),  # NHWC
    ],
)
def test_ablate_token_and_channels_last_layers(name, kwargs, layer):
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad(), ablate(model, layer, [3, 5]), LayerCapture(model, [layer]) as capture:
        model(x)
        act = capture.outputs[layer]  # (B, K, h, w) after the layout conversion
    assert (act[:, [3, 5]] == 0).all()
    assert (act[:, [0, 1, 2, 4, 6]].abs().sum(dim=(0, 2, 3)) > 0).all()


def test_ablate_unit_out_of_range_names_the_layer():
    model = KnownDepthModel()
    with pytest.raises(ValueError, match=r"'units' has 8 units; unit 8"):
        with ablate(model, "units", [8]):
            model(_batches()[0][0])
    with pytest.raises(KeyError, match="unit"):
        ablate(model, "unitz", [0]).__enter__()


def test_per_bin_abs_rel_bins_are_open_below_and_closed_above():
    # a pixel counts in bin d when edges[d] < gt <= edges[d + 1]: gt = 1 (the lowest edge) is out
    gt = torch.tensor([[[[1.0, 3.0, 5.0, 9.0]]]])
    sums, counts = per_bin_abs_rel(gt.clone(), gt, EDGES)
    assert counts.tolist() == [1, 1, 0, 1]  # 3 -> bin 0, 5 -> bin 1, 9 -> bin 3; 1 is left out
    assert sums.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_per_bin_abs_rel_upsamples_bilinearly_with_half_pixel_centres_and_clamps_to_max_depth():
    pred = torch.tensor([[[[2.0, 4.0]]]])  # bilinear, align_corners=False: 2, 2.5, 3.5, 4
    gt = torch.tensor([[[[2.0, 2.5, 3.5, 4.0]]]])
    sums, counts = per_bin_abs_rel(pred, gt, EDGES)
    assert counts.tolist() == [2, 2, 0, 0]
    torch.testing.assert_close(sums, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    ten, eight = torch.tensor([[[[10.0]]]]), torch.tensor([[[[8.0]]]])
    assert per_bin_abs_rel(ten, eight, EDGES, max_depth=8.0)[0].tolist() == [0, 0, 0, 0]


class _OnesLayer(nn.Module):
    def forward(self, x):
        return torch.ones(x.shape[0], 8, *x.shape[2:])


class _CountsSilencedUnits(nn.Module):
    """Predicts gt * (1 + 0.01 * number of silenced units): abs_rel rises by 0.01 per unit."""

    def __init__(self) -> None:
        super().__init__()
        self.units = _OnesLayer()

    def forward(self, x):
        silenced = (self.units(x) == 0).float().sum(1, keepdim=True)
        return x[:, :1] * (1 + 0.01 * silenced)


def test_random_control_silences_as_many_units_as_the_group_and_reports_each_pass():
    model = _CountsSilencedUnits()
    assignment = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])  # bin 3 has no unit
    depth = torch.tensor([1.5, 2.0, 4.0, 6.0]).view(1, 1, 2, 2)  # no pixel in bin 3
    passes = []
    result = ablation_study(
        model,
        [(depth.expand(-1, 3, -1, -1), depth)],
        model,
        "units",
        assignment,
        EDGES,
        random_draws=2,
        progress=passes.append,
    )
    assert passes == [1] * (1 + 3 * (1 + 2))  # baseline, then each group and its random draws
    assert result.group_sizes == [3, 1, 4, 0] and result.pixel_counts == [2, 1, 1, 0]
    assert result.baseline == [0.0, 0.0, 0.0, None]  # None: bin without pixels
    assert result.assigned[3] is None and result.random[3] is None
    for g, size in enumerate([3, 1, 4]):
        assert result.assigned[g][3] is None and result.random[g][3] is None
        assert result.assigned[g][:3] == pytest.approx([0.01 * size] * 3)
        assert result.random[g][:3] == pytest.approx([0.01 * size] * 3)
    assert result.summary()["chance_hit_rate"] == pytest.approx(1 / 3)  # bins with pixels


def test_study_refuses_an_assignment_beyond_the_last_bin():
    model = _CountsSilencedUnits()
    depth = torch.full((1, 1, 2, 2), 2.0)
    with pytest.raises(ValueError, match=r"'units'.*outside \[0, 4\)"):
        ablation_study(model, [(depth, depth)], model, "units", torch.arange(8) % 5, EDGES)


def _result(assigned, random=None):
    n = len(assigned)
    return AblationResult(
        layer="units",
        edges=list(range(n + 1)),
        assignment=list(range(n)),
        group_sizes=[1] * n,
        pixel_counts=[1] * n,
        baseline=[0.1] * n,
        assigned=assigned,
        random=random or [None] * n,
        random_draws=1,
    )


def test_summary_hit_is_strict_and_keeps_the_sign_of_the_increase():
    s = _result([[0.2, 0.2], [-0.1, -0.3]]).summary()
    assert s["own_bin_hit_rate"] == 0.0  # group 0 ties with bin 1; group 1's own bin falls most
    assert s["own_bin_increase"] == pytest.approx(-0.05)  # (0.2 - 0.3) / 2, signed
    assert s["other_bins_increase"] == pytest.approx(0.05)
    assert s["own_bin_excess"] == pytest.approx(-0.1)
    assert s["own_bin_ratio"] is None  # a decrease over an increase is no "how much more"


def test_summary_ratio_is_none_when_the_other_bins_do_not_change():
    s = _result([[0.2, 0.0], [0.0, 0.4]]).summary()
    assert s["own_bin_ratio"] is None and s["own_bin_hit_rate"] == 1.0
    assert s["own_bin_increase"] == pytest.approx(0.3)
    assert s["own_bin_excess"] == pytest.approx(0.3)


def test_summary_own_bin_improving_least_is_no_hit_and_has_no_ratio():
    """Silencing improves every bin, the own bin most (own -0.04, others -0.01): no group is
    hurt, the excess is negative, and the ratio (4.0 by plain division) is not reported; with the
    others improving and the own bins hurt, the ratio (negative) is not reported either."""
    s = _result([[-0.04, -0.01], [-0.01, -0.04]]).summary()
    assert s["own_bin_hit_rate"] == 0.0
    assert s["own_bin_excess"] == pytest.approx(-0.03)
    assert s["own_bin_ratio"] is None
    s = _result([[0.02, -0.01], [-0.01, 0.04]]).summary()
    assert s["own_bin_hit_rate"] == 1.0 and s["own_bin_ratio"] is None
    assert s["own_bin_excess"] == pytest.approx(0.04)
    s = _result([[0.3, 0.1], [0.1, 0.3]]).summary()
    assert s["own_bin_ratio"] == pytest.approx(3.0) and s["own_bin_excess"] == pytest.approx(0.2)


class _NHWCModel(nn.Module):
    """Declares NHWC (as timm's Swin does) but its patch projection is a conv: NCHW output."""

    output_fmt = "NHWC"

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class _TupleOutput(nn.Module):
    def forward(self, x):
        return "aux", x.expand(-1, 8, -1, -1).clone()


def test_ablate_a_conv_inside_an_nhwc_model_and_a_layer_returning_a_tuple():
    torch.manual_seed(0)
    model = _NHWCModel()
    x = torch.randn(1, 3, 64, 96)  # proj gives (1, 8, 16, 24): channels on axis 1
    with torch.no_grad(), ablate(model, "proj", [3]):
        out = model(x)  # NHWC: units on the last axis
    assert (out[..., 3] == 0).all() and (out[..., [0, 1, 2, 4]] != 0).all()
    wrapper = nn.Sequential(_TupleOutput())
    with ablate(wrapper, "0", [1, 6]):
        aux, act = wrapper(torch.ones(1, 1, 2, 3))
    assert aux == "aux" and (act[:, [1, 6]] == 0).all() and (act[:, [0, 2, 7]] == 1).all()
