"""Causal unit ablation on a model whose answer is known by construction."""

import pytest
import timm
import torch
from torch import nn

from meter_timm.selectivity import LayerCapture, ablate, ablation_study, per_bin_abs_rel
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
    assert s["own_bin_ratio"] > 100
    # as many random units hit the bin only by chance
    assert s["own_bin_increase_random"] < 0.6 * s["own_bin_increase"]


def test_study_measures_against_the_given_assignment():
    model = KnownDepthModel()
    shifted = (eq2_assignment(8, 4) + 1) % 4  # units of bin b labelled as bin b+1
    result = ablation_study(model, _batches(), model, "units", shifted, EDGES, random_draws=1)
    s = result.summary()
    assert s["own_bin_hit_rate"] == 0.0
    assert s["own_bin_ratio"] < 0.01


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
