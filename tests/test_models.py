"""METER as timm models: registration, shapes, gradients, features, weights, parity, export.

Budget: about 20 s on 2 cores (tiny inputs; the parity tests run the xxs model at 192x256 /
192x636).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import meter_timm  # noqa: F401
from meter_timm.checkpoint import load_checkpoint_file, load_weights
from meter_timm.models import checkpoint_filter_fn
from meter_timm.models.meter import _aligned_size, _original_accepts
from meter_timm.models.meter_keys import _translate_key

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "meter"
PARAMS = {"meter_xxs": 713_464, "meter_xs": 1_449_760, "meter_s": 3_295_168}


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so that eval-mode checks mean something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


@pytest.fixture(scope="module")
def xxs():
    torch.manual_seed(0)
    return _randomise_bn(timm.create_model("meter_xxs", output_scale=1.0)).eval()


def test_registered_with_exact_parameter_counts():
    assert set(timm.list_models("meter_*")) == set(PARAMS)
    for name, count in PARAMS.items():
        model = timm.create_model(name)
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_layout_contract(xxs):
    assert isinstance(xxs.encoder, torch.nn.Sequential) and len(xxs.encoder) == 12
    names = dict(xxs.named_modules())
    assert "encoder.6" in names and "decoder" in names
    x = torch.randn(1, 3, 64, 64)
    outs = {}
    hooks = [
        xxs.encoder[i].register_forward_hook(lambda m, i, o, k=i: outs.__setitem__(k, o.shape))
        for i in range(12)
    ]
    with torch.no_grad():
        xxs(x)
    for h in hooks:
        h.remove()
    assert outs[6] == (1, 48, 8, 8)  # the seed's "layer 6": 48 units at stride 8
    assert outs[2][1:] == (24, 16, 16) and outs[5][1:] == (48, 8, 8) and outs[7][1:] == (64, 4, 4)
    assert outs[11][1:] == (160, 2, 2)


@pytest.mark.parametrize("name", list(PARAMS))
def test_forward_backward_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = timm.create_model(name).train()
    y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1, 16, 16)
    y.square().mean().backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not no_grad, no_grad
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_units_and_data_config():
    nyu = timm.create_model("meter_xxs.nyu")
    kitti = timm.create_model("meter_xxs.kitti")
    assert nyu.output_scale == pytest.approx(0.01) and nyu.pretrained_cfg["depth_unit"] == "cm"
    assert kitti.output_scale == pytest.approx(0.1) and kitti.pretrained_cfg["depth_unit"] == "dm"
    assert timm.create_model("meter_s", output_scale=1.0).output_scale == 1.0
    cfg = timm.data.resolve_data_config({}, model=nyu)
    assert cfg["input_size"] == (3, 192, 256) and cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406)) and cfg["std"] == pytest.approx(
        (0.229, 0.224, 0.225)
    )
    assert timm.data.resolve_data_config({}, model=kitti)["input_size"] == (3, 192, 636)
    for tag in ("nyu", "kitti"):
        for name in PARAMS:
            assert timm.models.get_pretrained_cfg(f"{name}.{tag}") is not None
    # the scale is a plain multiplication of the raw output
    torch.manual_seed(0)
    raw = timm.create_model("meter_xxs", output_scale=1.0).eval()
    nyu.load_state_dict(raw.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(nyu.eval()(x), raw(x) * 0.01)


def test_size_rules_of_the_original():
    assert (
        _original_accepts(192, 256) and _original_accepts(192, 636) and _original_accepts(190, 634)
    )
    assert not _original_accepts(228, 304) and not _original_accepts(196, 256)
    assert _aligned_size(228) == 253 and _aligned_size(192) == 192


def test_sizes_accepted_by_the_original_and_padded_sizes(xxs):
    with torch.no_grad():
        assert xxs(torch.randn(1, 3, 192, 636)).shape == (
            1,
            1,
            48,
            160,
        )  # original's quirk: 159 + 1
        assert xxs(torch.randn(1, 3, 190, 256)).shape == (1, 1, 48, 64)
        x = torch.randn(1, 3, 70, 90)
        y = xxs(x)
        assert y.shape == (1, 1, 18, 23)
        # padded internally (replicate) to the next aligned size, output cropped back
        padded = F.pad(x, (0, _aligned_size(90) - 90, 0, _aligned_size(70) - 70), mode="replicate")
        torch.testing.assert_close(y, xxs(padded)[:, :, :18, :23])
        assert xxs(torch.randn(1, 3, 32, 33)).shape == (1, 1, 8, 9)


def test_bad_input_raises_clear_errors(xxs):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 4, 64, 64\)"):
        xxs(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"H, W >= 32"):
        xxs(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        xxs(torch.randn(3, 64, 64))


def test_features_only_matches_feature_info():
    model = timm.create_model("meter_xxs", features_only=True)
    assert model.feature_info.channels() == [24, 48, 64, 160]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    feats = model(torch.randn(1, 3, 64, 128))
    for f, c, r in zip(feats, model.feature_info.channels(), model.feature_info.reduction()):
        assert f.shape == (1, c, 64 // r, 128 // r)
    # odd maps (sizes the original rejects) still work: MobileViT blocks pad to whole patches
    assert [f.shape[-1] for f in model(torch.randn(1, 3, 64, 90))] == [23, 12, 6, 3]
    xs = timm.create_model("meter_xs", features_only=True, out_indices=(1, 3))
    assert xs.feature_info.channels() == [64, 192]


def test_grad_checkpointing_gives_the_same_result():
    torch.manual_seed(0)
    model = timm.create_model("meter_xxs").train()
    x = torch.randn(2, 3, 64, 64)
    y0 = model(x)
    y0.sum().backward()
    g0 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    torch.manual_seed(0)
    y1 = model(x)
    y1.sum().backward()
    torch.testing.assert_close(y0, y1)
    for a, p in zip(g0, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)


def test_fuse_keeps_outputs(xxs):
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        y = xxs(x)
        fused = timm.utils.reparameterize_model(xxs)  # a fused deep copy
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        assert sum(p.numel() for p in fused.parameters()) < PARAMS["meter_xxs"]
        torch.testing.assert_close(fused(x), y, rtol=1e-4, atol=1e-4 * y.abs().max().item())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in xxs.modules())  # original untouched
    # fuse(): the same plus channels-last weights; NCHW and odd-sized inputs still work
    fast = timm.create_model("meter_xxs", output_scale=1.0).eval()
    fast.load_state_dict(xxs.state_dict())
    assert fast.fuse() is fast
    # a dense 3x3 kernel: a 1x1 or depthwise one is contiguous in both memory formats
    kernel = next(
        m.weight
        for m in fast.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.weight.shape[1] > 1
    )
    assert not kernel.is_contiguous()
    assert kernel.is_contiguous(memory_format=torch.channels_last)
    odd = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), y, rtol=1e-4, atol=1e-4 * y.abs().max().item())
        y_odd = xxs(odd)
        torch.testing.assert_close(
            fast(odd), y_odd, rtol=1e-4, atol=1e-4 * y_odd.abs().max().item()
        )


def test_weights_round_trip_own_and_mmengine_checkpoints(xxs, tmp_path):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = xxs(x)
    own = tmp_path / "own.pth"
    torch.save(xxs.state_dict(), own)
    model = timm.create_model(
        "meter_xxs", pretrained=True, output_scale=1.0, pretrained_cfg_overlay=dict(file=str(own))
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref)
    existing = timm.create_model("meter_xxs", output_scale=1.0)
    assert load_weights(existing, own) == "backbone"
    existing.eval()
    with torch.no_grad():
        torch.testing.assert_close(existing(x), ref)

    # an mmengine checkpoint of a wrapper: 'backbone.' keys, other modules, runner state with
    # objects a weights-only load refuses (mmengine's HistoryBuffer, numpy values)
    from mmengine.logging import HistoryBuffer

    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    mm = tmp_path / "epoch_1.pth"
    state = {f"backbone.{k}": v for k, v in xxs.state_dict().items()}
    state["selectivity.encoder_6._extra_state"] = torch.zeros(3)
    torch.save(
        dict(
            meta=dict(epoch=1, seed=np.int64(3)),
            state_dict=state,
            message_hub=dict(log_scalars={"train/loss": buffer}),
        ),
        mm,
    )
    model = timm.create_model(
        "meter_xxs", pretrained=True, output_scale=1.0, pretrained_cfg_overlay=dict(file=str(mm))
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref)
    assert "state_dict" not in model.pretrained_cfg
    # features_only models load the same weights
    feats = timm.create_model(
        "meter_xxs", features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=str(own))
    )
    torch.testing.assert_close(feats.encoder_0.spatial.weight, xxs.encoder[0].spatial.weight)


def test_translation_of_the_authors_key_layout():
    expected = {
        "encoder.conv1.0.depthwise.weight": "encoder.0.spatial.weight",
        "encoder.conv1.1.running_var": "encoder.0.bn.running_var",
        "encoder.mv2.0.conv.0.weight": "encoder.1.conv_pw.conv.weight",
        "encoder.mv2.4.conv.4.bias": "encoder.5.conv_dw.bn.bias",
        "encoder.mv2.6.conv.7.num_batches_tracked": "encoder.9.conv_pwl.bn.num_batches_tracked",
        "encoder.mvit.0.conv1.0.pointwise.weight": "encoder.6.conv_kxk.pointwise.weight",
        "encoder.mvit.1.conv2.1.weight": "encoder.8.conv_1x1.bn.weight",
        "encoder.mvit.2.transformer.layers.0.0.fn.to_qkv.weight": (
            "encoder.10.transformer.0.attn.qkv.weight"
        ),
        "encoder.mvit.2.transformer.layers.0.0.fn.to_out.0.bias": (
            "encoder.10.transformer.0.attn.proj.bias"
        ),
        "encoder.mvit.0.transformer.layers.0.1.norm.bias": "encoder.6.transformer.0.norm2.bias",
        "encoder.mvit.0.transformer.layers.0.1.fn.net.3.weight": (
            "encoder.6.transformer.0.mlp.fc2.weight"
        ),
        "encoder.mvit.1.conv4.0.depthwise.weight": "encoder.8.conv_fusion.spatial.weight",
        "encoder.mvit.1.conv3.1.bias": "encoder.8.conv_proj.bn.bias",
        "encoder.conv2.0.weight": "encoder.11.conv.weight",
        "decoder.conv2d_in.weight": "decoder.conv_in.weight",
        "decoder.ups_block_1.conv2d_transpose.weight": "decoder.blocks.0.upconv.weight",
        "decoder.ups_block_3.end_up_layer.0.pointwise.weight": (
            "decoder.blocks.2.conv_fusion.pointwise.weight"
        ),
        "decoder.conv2d_out.weight": "decoder.conv_out.weight",
    }
    for old, new in expected.items():
        assert _translate_key(old, {}) == new


def test_bad_checkpoints_raise_clear_errors(xxs, tmp_path):
    state = xxs.state_dict()
    broken = dict(state)
    del broken["decoder.conv_out.weight"]
    broken["head.fc.weight"] = torch.zeros(1)
    broken["encoder.0.spatial.weight"] = torch.zeros(16, 3, 5, 5)
    with pytest.raises(ValueError) as err:
        checkpoint_filter_fn(broken, xxs)
    msg = str(err.value)
    assert "missing keys (1): decoder.conv_out.weight" in msg
    assert "unexpected keys (1): head.fc.weight" in msg
    assert "encoder.0.spatial.weight: checkpoint (16, 3, 5, 5) vs model (16, 3, 3, 3)" in msg
    # an xs checkpoint into an xxs model
    with pytest.raises(ValueError, match="shape mismatches"):
        checkpoint_filter_fn(timm.create_model("meter_xs").state_dict(), xxs)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_checkpoint_file(tmp_path / "nowhere.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*garbage.pth"):
        timm.create_model(
            "meter_xxs", pretrained=True, pretrained_cfg_overlay=dict(file=str(garbage))
        )
    with pytest.raises(ValueError, match="pretrained_cfg_overlay=dict\\(file=PATH\\)"):
        timm.create_model("meter_xxs.nyu", pretrained=True)


def test_torch_export_and_compile_smoke(xxs):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = xxs(x)
    exported = torch.export.export(xxs, (x,))
    torch.testing.assert_close(exported.module()(x), ref, rtol=1e-4, atol=1e-5)
    # dynamo capture without graph breaks; inductor code generation is exercised by
    # benchmarks/bench_inference.py (it takes ~40 s on 2 CPU cores, too slow for the suite)
    torch._dynamo.reset()
    compiled = torch.compile(xxs, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- parity with the authors' code


def _fingerprint(tag: str, file: str, width: int):
    path = WEIGHTS / file
    if not path.is_file():
        pytest.skip(f"{path} not found (the authors' weights live in ../shared)")
    model = timm.create_model(
        f"meter_xxs.{tag}", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    ).eval()
    x = torch.rand(2, 3, 192, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(
    "tag,file,width,shape,stats",
    [
        # meter-facts.md section 1 (cm for NYU, dm for KITTI), converted to metres
        ("nyu", "build_model_best_nyu_xxs", 256, (2, 1, 48, 64), (2.048547, 1.918300, 2.164422)),
        ("kitti", "build_model_best_kitti_xxs", 256, (2, 1, 48, 64), (6.96084, 3.04866, 8.66175)),
        # KITTI resolution, left zero-padding of the stride-4 skip included; measured with the
        # authors' architecture.py on CPU: mean 71.8025, min 30.3220, max 94.8731 dm
        ("kitti", "build_model_best_kitti_xxs", 636, (2, 1, 48, 160), (7.18025, 3.03220, 9.48731)),
    ],
)
def test_parity_with_the_original_fingerprints(tag, file, width, shape, stats):
    y = _fingerprint(tag, file, width)
    assert y.shape == shape
    for value, expected in zip((y.mean(), y.min(), y.max()), stats):
        assert value.item() == pytest.approx(expected, rel=1e-4)


def test_checkpoints_of_compiled_models_extra_blocks_and_non_tensor_entries(xxs):
    """Keys of a torch.compile'd model (``_orig_mod.``, also inside ``module.``) load; an authors'
    key of a block METER does not have is an unexpected key; entries that are not tensors are
    named."""
    state = xxs.state_dict()
    for prefix in ("_orig_mod.", "module._orig_mod."):
        loaded = checkpoint_filter_fn({prefix + k: v for k, v in state.items()}, xxs)
        assert list(loaded) == list(state) and all(loaded[k] is state[k] for k in state)
    extra = {"encoder.mv2.7.conv.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): encoder\.mv2\.7\.conv"):
        checkpoint_filter_fn(extra, xxs)
    with pytest.raises(ValueError, match=r"not tensors: decoder\.conv_out\.weight"):
        checkpoint_filter_fn(dict(state, **{"decoder.conv_out.weight": [0.0]}), xxs)


def test_model_arguments_checks_and_variant_overrides(xxs):
    """Wrong lengths of the architecture lists, an input narrower than 32, an unknown depth unit
    and a depth forward of a classifier are named errors; keyword arguments override a
    variant's own."""
    from meter_timm.models import Meter

    with pytest.raises(ValueError, match="4 decoder widths, got 11, 3, 3"):
        Meter(channels=[16] * 11, dims=[8] * 3, decoder_widths=[8] * 3)
    with pytest.raises(ValueError, match=r"H, W >= 32.*\(1, 3, 64, 31\)"):
        xxs(torch.randn(1, 3, 64, 31))
    with pytest.raises(ValueError, match="unknown depth_unit 'km'"):
        timm.create_model("meter_xxs", pretrained_cfg_overlay=dict(depth_unit="km"))
    with pytest.raises(RuntimeError, match="no depth decoder"):
        timm.create_model("meter_xxs", num_classes=0).forward_depth(torch.randn(1, 3, 64, 64))
    smaller = timm.create_model("meter_xxs", decoder_widths=(32, 16, 8, 4))
    assert smaller.decoder.conv_in.out_channels == 32
    assert sum(p.numel() for p in smaller.parameters()) < PARAMS["meter_xxs"]


def test_fuse_folds_every_batchnorm_and_chooses_the_memory_format(xxs):
    """fuse() folds the BatchNorms into the convs; its conv weights are channels-last unless
    ``channels_last=False``; pruning the feature levels with ``prune_head=False`` keeps the
    depth decoder."""
    for channels_last in (True, False):
        model = timm.create_model("meter_xxs", output_scale=1.0).eval()
        model.load_state_dict(xxs.state_dict())
        model.fuse(channels_last=channels_last)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        # dense k x k kernels (a depthwise or 1x1 kernel is contiguous in both formats)
        conv_weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        kernels = [w for w in conv_weights if w.shape[1] > 1 and w.shape[-1] > 1]
        assert kernels and all(w.is_contiguous() != channels_last for w in kernels)
    kept = timm.create_model("meter_xxs")
    kept.prune_intermediate_layers(indices=[0, 1], prune_head=False)
    assert kept.decoder is not None and kept.depth_head and len(kept.encoder) == 7


def test_translation_of_authors_mv2_blocks_with_and_without_expansion():
    """An authors' MV2 block without the expand conv (expansion 1: entries 0-4 of its
    Sequential) maps to the depthwise and projection convs; with it (entries 0-7), 0 is the
    expand conv."""
    from meter_timm.models.meter_keys import _translate_original

    keys = [f"encoder.mv2.0.conv.{i}.weight" for i in (0, 1, 3, 4)]
    keys += [f"encoder.mv2.1.conv.{i}.weight" for i in (0, 1, 3, 4, 6, 7)]
    translated = list(_translate_original(dict.fromkeys(keys)))
    assert translated[:4] == [
        "encoder.1.conv_dw.conv.weight",
        "encoder.1.conv_dw.bn.weight",
        "encoder.1.conv_pwl.conv.weight",
        "encoder.1.conv_pwl.bn.weight",
    ]
    assert translated[4] == "encoder.2.conv_pw.conv.weight"
    assert translated[-1] == "encoder.2.conv_pwl.bn.weight"
