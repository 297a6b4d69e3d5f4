"""Any timm backbone, transformers included, in the light decoder, in layer capture and in the
selectivity loss: one test per family at 192x256 (random weights, batch 2)."""

import pytest
import timm
import torch

import meter_timm.mm  # noqa: F401  (registers the mmengine modules)
from meter_timm.checkpoint import CheckpointReadError
from meter_timm.mm.model import DepthEstimator
from meter_timm.mm.structures import DepthDataSample
from meter_timm.models import create_model
from meter_timm.selectivity import LayerCapture, token_grid

H, W = 192, 256

# family: (timm name, extra timm kwargs, captured layer, index of the features_only output that
# the layer produces (None: no reference), expected captured (K, h, w))
FAMILIES = {
    "resnet": ("resnet18", {}, "layer3", 3, (256, 12, 16)),
    "convnext": ("convnext_atto", {}, "stages_2", 2, (160, 12, 16)),
    "efficientnet": ("efficientnet_b0", {}, "blocks.4", 3, (112, 12, 16)),
    "mobilenetv3": ("mobilenetv3_small_050", {}, "blocks.3", 3, (24, 12, 16)),
    "regnet": ("regnety_002", {}, "s3", 3, (152, 12, 16)),
    "fastvit": ("fastvit_t8", {}, "stages_2", 2, (192, 12, 16)),
    "mobilevitv2": ("mobilevitv2_050", {}, "stages_3", 3, (192, 12, 16)),
    # token outputs (B, 1 + 192, 192): class token dropped, 12x16 patch grid
    "vit": ("vit_tiny_patch16_224", dict(img_size=(H, W)), "model.blocks.9", 0, (192, 12, 16)),
    # two prefix tokens (class + distillation)
    "deit": (
        "deit_tiny_distilled_patch16_224",
        dict(img_size=(H, W)),
        "model.blocks.10",
        1,
        (192, 12, 16),
    ),
    # NHWC stage outputs (one block per stage keeps it fast)
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=(H, W), depths=(1, 1, 1, 1)),
        "layers_2",
        2,
        (384, 12, 16),
    ),
    "mambaout": ("mambaout_femto", {}, "stages_2", 2, (192, 12, 16)),
    # METER: a depth model (no features_only), the seed's layer 6
    "meter": ("meter_xxs", {}, "encoder.6", None, (48, 24, 32)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_backbone_family_decoder_capture_and_selectivity(family):
    name, kwargs, layer, feature_index, expected = FAMILIES[family]
    torch.manual_seed(0)
    features_only = family != "meter"
    backbone = dict(name=name, pretrained=False, **kwargs)
    if features_only:
        backbone["features_only"] = True
    model = DepthEstimator(
        backbone=backbone,
        selectivity=dict(
            type="SelectivityLoss",
            lam=1.0,
            layers=[dict(name=layer, num_bins=8, strategy="uniform")],
        ),
    )
    model.train()
    images = torch.randn(2, 3, H, W)

    # the captured layer is (B, K, h, w), and equals timm's own features_only output for it
    with LayerCapture(model.backbone, [layer], detach_outputs=True) as capture:
        model.eval()
        with torch.no_grad():
            pred = model.predict_depth(images)
            captured = capture.outputs[layer]
            if feature_index is not None:
                reference = model.backbone(images)[feature_index]
                if model.channels_last_features:
                    reference = reference.permute(0, 3, 1, 2)
    assert pred.shape == (2, 1, H // 4, W // 4)
    assert torch.isfinite(pred).all()
    assert tuple(captured.shape) == (2, *expected)
    if feature_index is not None:
        torch.testing.assert_close(captured, reference, rtol=1e-5, atol=1e-5)

    # the decoder reads channels on the right axis: the head sees the backbone's stride-16 map
    # and the selectivity loss trains the layer
    model.train()
    depth = torch.rand(2, 1, H, W) * 9.5 + 0.5
    samples = [DepthDataSample(gt_depth=d) for d in depth]
    losses = model.loss(images, samples)
    assert torch.isfinite(losses["loss_selectivity"])
    assert losses["loss_selectivity"].item() != 0.0
    losses["loss_selectivity"].backward()
    layer_module = model.backbone.get_submodule(layer)
    grads = [p.grad for p in layer_module.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_token_grid():
    assert token_grid(192, (192, 256), 16) == (12, 16)
    assert token_grid(192, (192, 256)) == (12, 16)
    assert token_grid(13 * 18, (192, 256), 14) == (13, 18)  # floor of 192/14, ceil of 256/14
    assert token_grid(16 * 16, (192, 256)) is None  # a square grid does not fit 3:4


def test_token_layer_with_wrong_prefix_count_is_an_error():
    import timm

    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=(H, W), depth=2, num_classes=0
    )
    model.num_prefix_tokens = 5  # lies about its tokens: 193 - 5 is no 12x16 grid
    with LayerCapture(model, ["blocks.1"]):
        with pytest.raises(ValueError, match=r"blocks\.1.*patch grid"):
            model(torch.randn(1, 3, H, W))


def test_light_decoder_levels_initial_depth_and_output_size():
    """Features at stride >= 4 are used, the finest included; a fresh decoder predicts its
    ``init_depth`` everywhere; the output is ceil(H/4) x ceil(W/4); no usable level is an
    error."""
    from meter_timm.models.decoder import LightDepthDecoder

    torch.manual_seed(0)
    decoder = LightDepthDecoder([8, 16, 24], reductions=[2, 4, 8], channels=8, init_depth=2.5)
    decoder.eval()
    assert decoder.indices == [1, 2]
    feats = [torch.randn(1, 8, 35, 45), torch.randn(1, 16, 18, 23), torch.randn(1, 24, 9, 12)]
    with torch.no_grad():
        out = decoder(feats, (70, 90))
        assert out.shape == (1, 1, 18, 23) and torch.equal(out, torch.full_like(out, 2.5))
        torch.nn.init.normal_(decoder.head.weight)
        finer = [feats[0], feats[1] + 1.0, feats[2]]
        assert not torch.allclose(decoder(finer, (70, 90)), decoder(feats, (70, 90)))
    with pytest.raises(ValueError, match="no backbone feature at stride >= 4"):
        LightDepthDecoder([8, 16], reductions=[1, 2])


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_any_backbone_weights_file_goes_through_the_one_reader(tmp_path):
    # a timm backbone's pretrained_cfg_overlay file is read by meter-timm's reader (timm's own
    # would be given the file otherwise), loaded exactly, and a planted payload never runs
    torch.manual_seed(0)
    trained = timm.create_model("resnet18", num_classes=3)
    torch.save({"state_dict": trained.state_dict(), "meta": {"epoch": 1}}, tmp_path / "r18.pth")
    loaded = create_model("resnet18", tmp_path / "r18.pth", num_classes=3)
    assert all(
        torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), loaded.state_dict().values())
    )
    backbone = dict(
        name="resnet18",
        features_only=True,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "r18.pth")),
    )
    model = DepthEstimator(backbone=backbone)
    assert torch.equal(model.backbone.layer3[0].conv1.weight, trained.layer3[0].conv1.weight)
    # a file whose keys do not fit is an error naming it, not a partial load
    with pytest.raises(ValueError, match=r"r18\.pth: the weights do not fit resnet34"):
        create_model("resnet34", tmp_path / "r18.pth", num_classes=3)
    marker = tmp_path / "created_by_payload"
    torch.save({"w": torch.ones(1), "x": _CreatesFile(marker)}, tmp_path / "payload.pth")
    backbone["pretrained_cfg_overlay"] = dict(file=str(tmp_path / "payload.pth"))
    with pytest.raises(CheckpointReadError, match=r"refused checkpoint .*payload\.pth.*io\.open"):
        DepthEstimator(backbone=backbone)
    assert not marker.exists()


def test_channels_last_part_of_an_nchw_model_is_permuted():
    """ConvNeXt blocks without conv_mlp run their MLP channels-last inside a model that declares
    NCHW: the captured fc1 has its 4 x dim hidden units on axis 1, not the image rows."""
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", features_only=True, conv_mlp=False).eval()
    assert not model.stages_2.blocks[0].use_conv_mlp
    layer = "stages_2.blocks.0.mlp.fc1"
    raw = {}
    model.get_submodule(layer).register_forward_hook(lambda m, a, out: raw.setdefault("fc1", out))
    with torch.no_grad(), LayerCapture(model, [layer, "stages_2"]) as capture:
        model(torch.randn(1, 3, 64, 96))
        captured = dict(capture.outputs)
    assert tuple(raw["fc1"].shape) == (1, 4, 6, 640)  # NHWC: 4x6 grid, 640 hidden units
    assert tuple(captured[layer].shape) == (1, 640, 4, 6)
    assert torch.equal(captured[layer], raw["fc1"].permute(0, 3, 1, 2))
    assert tuple(captured["stages_2"].shape) == (1, 160, 4, 6)  # NCHW stays as it is
