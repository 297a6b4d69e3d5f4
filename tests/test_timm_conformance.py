"""METER against timm's model conventions: the cases of timm's own tests/test_models.py, on tiny
inputs (TorchScript, FX forward/backward, FX + TorchScript, classifier/default-cfg conventions,
forward_intermediates / prune_intermediate_layers), plus listing and hub-layout loading.
"""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import meter_timm  # noqa: F401

TAGS = ("nyu", "kitti")


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module")
def xxs():
    torch.manual_seed(0)
    return _randomise_bn(timm.create_model("meter_xxs", output_scale=1.0)).eval()


def _fx(model: torch.nn.Module) -> torch.nn.Module:
    """The model traced as timm's test does (its leaf modules and functions)."""
    kwargs = dict(
        leaf_modules=get_notrace_modules(),
        autowrap_functions=get_notrace_functions(),
        param_shapes_constant=True,
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    return create_feature_extractor(
        model,
        train_return_nodes=[train_nodes[-1]],
        eval_return_nodes=[eval_nodes[-1]],
        tracer_kwargs=kwargs,
    )


# 64x64 and 192x256 are sizes the original accepts; 70x90 is padded and cropped, 32x32 is the
# minimum
SIZES = [(64, 64), (70, 90), (32, 32)]


def test_torchscript_depth_output_equals_eager(xxs):
    with timm.set_scriptable(True):
        scripted = torch.jit.script(xxs)
    with torch.no_grad():
        for h, w in SIZES:
            x = torch.randn(2, 3, h, w)
            ref = xxs(x)
            assert ref.shape == (2, 1, math.ceil(h / 4), math.ceil(w / 4))
            torch.testing.assert_close(scripted(x), ref, rtol=1e-5, atol=1e-5)
        with pytest.raises(Exception, match=r"\(B, 3, H, W\)"):
            scripted(torch.randn(1, 4, 64, 64))
    # the getter feature wrapper scripts too (forward_intermediates holds no f-string format)
    getter = timm.create_model("meter_xxs", features_only=True, feature_cls="getter").eval()
    with timm.set_scriptable(True):
        scripted_getter = torch.jit.script(getter)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(scripted_getter(x), getter(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fx_graph_is_size_independent(xxs):
    """One traced graph gives the eager output at sizes that take different padding paths, so no
    size was baked into it."""
    traced = _fx(xxs)
    with torch.no_grad():
        for h, w in SIZES:
            x = torch.randn(1, 3, h, w)
            out = next(iter(traced(x).values()))
            assert torch.equal(out, xxs(x)), (h, w)


def test_fx_then_torchscript(xxs):
    scripted = torch.jit.script(_fx(xxs))
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(next(iter(scripted(x).values())), xxs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fx", [False, True])
def test_classifier_backward_every_parameter_gets_a_gradient(fx):
    torch.manual_seed(0)
    model = timm.create_model("meter_xxs", num_classes=42).train()
    assert model.num_classes == 42 and model.decoder is None
    if fx:
        model = _fx(model)
    out = model(torch.randn(2, 3, 32, 32))
    out = next(iter(out.values())) if isinstance(out, dict) else out
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("tag", TAGS)
def test_default_cfg_conventions(tag):
    model = timm.create_model(f"meter_xxs.{tag}").eval()
    cfg = model.pretrained_cfg
    assert model.num_classes == 0 and model.num_features == model.head_hidden_size == 160
    # the depth model keeps its state dict: the head has no parameters
    assert not [k for k in model.state_dict() if k.startswith("head.")]
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        depth = model(x)
        feats = model.forward_features(x)
        assert depth.shape[1] == 1 and depth.shape[-2:] == (48, {"nyu": 64, "kitti": 160}[tag])
        assert feats.shape[1:] == (160, *cfg["pool_size"])
        assert model.forward_head(feats, pre_logits=True).shape == (1, 160)
        model.reset_classifier(0)
        pooled = model(x)
        assert pooled.shape == (1, 160) and model.decoder is None
        torch.testing.assert_close(pooled, feats.mean((2, 3)))
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
        backbone = timm.create_model(f"meter_xxs.{tag}", num_classes=0, global_pool="").eval()
        assert backbone(x).shape == feats.shape
    assert f"{cfg['first_conv']}.weight" in model.state_dict()


def test_factory_device_and_dtype_as_timm_models():
    """timm's factory arguments (timm >= 1.0.31 tests every model with them): parameters made on
    the meta device (nothing allocated) and in the given dtype; a new classifier joins the
    model's device, dtype and mode; unknown arguments raise."""
    model = timm.create_model("meter_xxs", device="meta", dtype=torch.float64).eval()
    tensors = [*model.parameters(), *model.buffers()]
    assert {t.device.type for t in tensors} == {"meta"}
    assert {t.dtype for t in model.parameters()} == {torch.float64}
    model.reset_classifier(5)
    fc = model.get_classifier()
    assert fc.weight.device.type == "meta" and fc.weight.dtype == torch.float64
    assert not fc.training
    with pytest.raises(TypeError, match="not_a_model_arg"):
        timm.create_model("meter_xxs", not_a_model_arg=1)
    # a real model made in bfloat16 predicts in bfloat16, and converts back after a forward
    model = timm.create_model("meter_xxs", dtype=torch.bfloat16).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model(x.bfloat16()).dtype == torch.bfloat16
        assert model.float()(x).dtype == torch.float32


def test_forward_intermediates_follow_timm(xxs):
    x = torch.randn(1, 3, 70, 90)
    info = xxs.feature_info
    with torch.no_grad():
        final, inter = xxs.forward_intermediates(x)
        assert torch.equal(final, xxs.forward_features(x))
        assert len(inter) == 4
        for level, o in zip(info, inter):
            assert o.shape[1] == level["num_chs"]
            assert o.shape[-2:] == (
                math.ceil(70 / level["reduction"]),
                math.ceil(90 / level["reduction"]),
            )
        # the outputs of the feature_info modules (encoder.4/6/8/11), as features_only returns
        seen = []
        modules = dict(xxs.named_modules())
        hooks = [
            modules[level["module"]].register_forward_hook(lambda m, i, o: seen.append(o))
            for level in info
        ]
        xxs(x[..., :64, :64])
        seen.clear()
        xxs.forward_features(x)
        for h in hooks:
            h.remove()
        assert all(torch.equal(a, b) for a, b in zip(seen, inter)) and len(seen) == 4
        # indices: last n, or a list (negative from the end)
        last2 = xxs.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape[1] for t in last2] == [64, 160]
        picked = xxs.forward_intermediates(x, indices=[0, -2], intermediates_only=True)
        assert torch.equal(picked[0], inter[0]) and torch.equal(picked[1], inter[2])
        early, _ = xxs.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early, inter[1])
        with pytest.raises(ValueError, match="NCHW"):
            xxs.forward_intermediates(x, output_fmt="NHWC")
    # gradient checkpointing gives the same output
    model = timm.create_model("meter_xxs").eval()
    model.load_state_dict(xxs.state_dict())
    model.set_grad_checkpointing()
    ref = xxs.forward_intermediates(x)[0]
    torch.testing.assert_close(model.forward_intermediates(x)[0], ref, rtol=1e-5, atol=1e-6)
    getter = timm.create_model("meter_xxs", features_only=True, feature_cls="getter").eval()
    assert [o.shape[1] for o in getter(x)] == [level["num_chs"] for level in info]


def test_prune_intermediate_layers(xxs):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = xxs.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    model = timm.create_model("meter_xxs", output_scale=1.0).eval()
    model.load_state_dict(xxs.state_dict())
    kept = model.prune_intermediate_layers(indices=[0, 1])
    assert kept == [0, 1]
    assert len(model.encoder) == 7 and model.decoder is None  # stages 0-6, up to encoder.6
    with torch.no_grad():
        out = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    # a depth decoder kept with a shorter encoder cannot run: said plainly, not a conv error
    kept = timm.create_model("meter_xxs")
    kept.prune_intermediate_layers(indices=[0, 1], prune_head=False)
    with pytest.raises(RuntimeError, match="encoder was pruned"):
        kept(x)


def test_depth_weights_give_a_pretrained_classifier_and_backbone_as_timm_does(xxs, tmp_path):
    """timm's idiom ``pretrained=True, num_classes=K``: the encoder gets the depth weights, the
    decoder's are dropped and the new head keeps its initialisation; timm's training script
    arguments drop_rate and drop_path_rate are taken."""
    torch.save(xxs.state_dict(), tmp_path / "depth.pth")
    overlay = dict(file=str(tmp_path / "depth.pth"))
    for num_classes in (0, 10):
        model = timm.create_model(
            "meter_xxs",
            pretrained=True,
            pretrained_cfg_overlay=overlay,
            num_classes=num_classes,
            drop_rate=0.0,
            drop_path_rate=0.1,
        )
        assert model.decoder is None and model.num_classes == num_classes
        for key, value in model.encoder.state_dict().items():
            assert torch.equal(value, xxs.encoder.state_dict()[key])
    x = torch.randn(2, 3, 64, 64)
    model.train()
    assert not torch.equal(model(x), model(x))  # stochastic depth acts in training
    plain = timm.create_model("meter_xxs", num_classes=10).eval()
    plain.load_state_dict(model.state_dict())  # no parameters of its own
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain(x))


def test_list_pretrained_and_missing_weights_error():
    assert set(timm.list_pretrained("meter*")) == {
        f"{m}.{t}" for m in ("meter_xxs", "meter_xs", "meter_s") for t in TAGS
    }
    with pytest.raises(
        ValueError, match=r"meter_xs\.kitti: no published weights.*pretrained_cfg_overlay"
    ):
        timm.create_model("meter_xs.kitti", pretrained=True)


def test_safetensors_and_hub_folder_load(xxs, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in xxs.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architecture": "meter_xxs",
                "pretrained_cfg": {
                    "tag": "nyu",
                    "input_size": [3, 192, 256],
                    "depth_unit": "m",
                    "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225],
                },
            }
        )
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = xxs(x)
        for model in (
            timm.create_model(
                "meter_xxs",
                pretrained=True,
                output_scale=1.0,
                pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors")),
            ),
            timm.create_model(f"local-dir:{tmp_path}", pretrained=True),
        ):
            assert torch.equal(model.eval()(x), ref)
    assert timm.create_model(f"local-dir:{tmp_path}").output_scale == 1.0  # depth_unit "m" kept
    (tmp_path / "bad.safetensors").write_bytes(b"not tensors")
    with pytest.raises(ValueError, match="bad.safetensors"):
        timm.create_model(
            "meter_xxs",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(tmp_path / "bad.safetensors")),
        )


@pytest.mark.parametrize("in_chans", [1, 4])
def test_rgb_weights_load_into_other_input_channels(in_chans, tmp_path):
    # as timm does for its own models: the first conv's RGB kernels are adapted (summed for 1
    # channel, repeated and rescaled for more), through timm's loader and through load_weights
    from timm.models import adapt_input_conv

    from meter_timm.checkpoint import load_weights

    rgb = timm.create_model("meter_xxs.nyu")
    torch.save(rgb.state_dict(), tmp_path / "rgb.pth")
    adapted = adapt_input_conv(in_chans, rgb.state_dict()["encoder.0.spatial.weight"])
    through_timm = timm.create_model(
        "meter_xxs.nyu",
        in_chans=in_chans,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "rgb.pth")),
    )
    through_load_weights = timm.create_model("meter_xxs.nyu", in_chans=in_chans)
    load_weights(through_load_weights, tmp_path / "rgb.pth")
    for model in (through_timm, through_load_weights):
        state = model.state_dict()
        assert torch.equal(state["encoder.0.spatial.weight"], adapted)
        assert torch.equal(
            state["decoder.conv_out.weight"], rgb.state_dict()["decoder.conv_out.weight"]
        )
    # any other shape of the first conv still does not fit
    wrong = dict(rgb.state_dict())
    wrong["encoder.0.spatial.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="encoder.0.spatial.weight: checkpoint \\(8, 3, 3, 3\\)"):
        load_weights(timm.create_model("meter_xxs.nyu", in_chans=in_chans), tmp_path / "wrong.pth")
