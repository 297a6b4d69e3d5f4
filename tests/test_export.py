"""Deployment: ONNX export run in ONNX Runtime against PyTorch, and weights in timm's hub layout.

The ONNX tests need the ``export`` extra (CI installs it) and use the authors' NYU xxs weights when
../shared holds them, random weights otherwise. About 25 s on 2 cores (two exports).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from meter_timm.cli import main
from meter_timm.deploy import build_model, export_onnx, run_onnx, save_hub_folder

NYU_WEIGHTS = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "weights"
    / "meter"
    / "build_model_best_nyu_xxs"
)


@pytest.fixture
def weights_file(tmp_path) -> Path:
    """The authors' NYU xxs file, or a state dict of random weights (non-trivial BN statistics)."""
    if NYU_WEIGHTS.is_file():
        return NYU_WEIGHTS
    torch.manual_seed(0)
    model = timm.create_model("meter_xxs.nyu")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "random_xxs.pth"
    torch.save(model.state_dict(), path)
    return path


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_export_cli_onnx_runtime_matches_pytorch(weights_file, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "meter_xxs_nyu.onnx"
    assert (
        main(["export", "meter_xxs.nyu", "--weights", str(weights_file), "--onnx", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "['batch', 3, 192, 256]" in printed and "(ok 1e-4)" in printed
    model = build_model("meter_xxs.nyu", weights_file)
    g = torch.Generator().manual_seed(1)
    for batch in (1, 4):  # the batch is dynamic
        x = torch.randn(batch, 3, 192, 256, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        got = run_onnx(out, x.numpy())
        assert got.shape == (batch, 1, 48, 64)
        assert _relative(got, ref) <= 1e-4
    if weights_file == NYU_WEIGHTS:  # real depth in metres, not a degenerate output
        assert 0.5 < float(np.median(got)) < 10.0


def test_export_fused_model_at_a_padded_size(weights_file, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = build_model("meter_xxs.nyu", weights_file)
    fused = build_model("meter_xxs.nyu", weights_file).fuse(channels_last=False)
    info = export_onnx(
        fused, tmp_path / "fused.onnx", 70, 90
    )  # padded to 93x125 inside, cropped back
    assert info["input_shape"] == ["batch", 3, 70, 90] and info["output_shape"] == [
        "batch",
        1,
        18,
        23,
    ]
    assert info["opset"] >= 17
    x = torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x).numpy()  # the unfused eager model
    assert _relative(run_onnx(info["path"], x.numpy()), ref) <= 1e-4


def test_convert_writes_timm_hub_layout(weights_file, tmp_path, capsys):
    out = tmp_path / "hub"
    assert main(["convert", str(weights_file), "--model", "meter_xxs.nyu", "--out", str(out)]) == 0
    assert "local-dir:" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "meter_xxs"
    assert (
        config["pretrained_cfg"]["depth_unit"] == "cm" and config["pretrained_cfg"]["tag"] == "nyu"
    )
    assert "num_classes" not in config  # would turn the depth model into a backbone on loading
    # safetensors: a JSON header and raw tensors, no pickle
    raw = (out / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_len])["encoder.0.spatial.weight"]["shape"] == [16, 3, 3, 3]
    original = build_model("meter_xxs.nyu", weights_file)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref = original(x)
        for model in (
            timm.create_model(f"local-dir:{out}", pretrained=True),
            build_model("meter_xxs.nyu", out),  # the folder
            build_model("meter_xxs.nyu", out / "model.safetensors"),
        ):  # the file
            assert model.output_scale == 0.01
            assert torch.equal(model.eval()(x), ref)
    # the folder's unit (cm) is not the .kitti tag's (dm): refused, not 10x the depth
    for load in (
        lambda: build_model("meter_xxs.kitti", out),
        lambda: timm.create_model(
            "meter_xxs.kitti", pretrained=True, pretrained_cfg_overlay=dict(file=str(out))
        ),
    ):
        with pytest.raises(ValueError, match=r"depth in 'cm', but meter_xxs.kitti .* 'dm'"):
            load()
    # a hub folder without weights names what it expected
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        build_model("meter_xxs.nyu", tmp_path / "empty")


def test_save_hub_folder_keeps_a_custom_output_scale(tmp_path):
    model = timm.create_model("meter_xxs.nyu", output_scale=0.5).eval()
    save_hub_folder(model, tmp_path)
    assert timm.create_model(f"local-dir:{tmp_path}", pretrained=True).output_scale == 0.5


def test_input_size_defaults_to_the_pretrained_one_side_by_side():
    from meter_timm.deploy import input_size

    model = timm.create_model("meter_xxs.nyu")
    assert input_size(model) == (192, 256)
    assert input_size(model, 100) == (100, 256) and input_size(model, None, 320) == (192, 320)


def test_mmengine_load_checkpoint_reads_safetensors(tmp_path):
    """``load_from`` / mmengine's load_checkpoint go through the same reader: .safetensors works."""
    from mmengine.runner.checkpoint import load_checkpoint
    from safetensors.torch import save_file

    import meter_timm.mm.checkpoint  # noqa: F401  (installs the reader)

    torch.manual_seed(0)
    source = timm.create_model("meter_xxs")
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors"
    )
    target = timm.create_model("meter_xxs")
    load_checkpoint(target, str(tmp_path / "w.safetensors"), map_location="cpu", strict=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.state_dict().values(), target.state_dict().values())
    )


def test_convert_defaults_to_the_nyu_tag(weights_file, tmp_path):
    out = tmp_path / "hub"
    assert main(["convert", str(weights_file), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert (config["tag"], config["depth_unit"]) == ("nyu", "cm")


def test_export_options_reach_the_exporter_and_the_runtime_check(
    weights_file, tmp_path, monkeypatch, capsys
):
    """``--fuse``, ``--height``/``--width``, ``--no-check``, the 1e-4 tolerance and the exit codes,
    with the ONNX steps replaced by fakes (the real ones are tested above)."""
    from meter_timm import deploy

    calls = {}

    def fake_export(model, path, height, width):
        calls["fused"] = not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        calls["size"] = (height, width)
        shape = ["batch", 3, height, width]
        return dict(path=str(path), opset=18, input_shape=shape, output_shape=["batch", 1])

    def fake_check(path, model, batch):
        calls["batch"] = tuple(batch.shape)
        return calls["error"]

    monkeypatch.setattr(deploy, "export_onnx", fake_export)
    monkeypatch.setattr(deploy, "onnx_relative_error", fake_check)
    args = ["export", "meter_xxs.nyu", "--weights", str(weights_file), "--onnx", "m.onnx"]
    calls["error"] = 5e-5
    assert main([*args, "--fuse", "--height", "64", "--width", "96"]) == 0
    assert calls == dict(error=5e-5, fused=True, size=(64, 96), batch=(3, 3, 64, 96))
    assert "(ok 1e-4)" in capsys.readouterr().out
    calls.clear()
    calls["error"] = 1e-3
    assert main(args) == 1
    assert calls["fused"] is False and calls["size"] == (192, 256)
    assert "(ABOVE 1e-4)" in capsys.readouterr().out
    calls.clear()
    assert main([*args, "--no-check"]) == 0 and "batch" not in calls

    def no_exporter(*args):
        raise ImportError("pip install 'meter-timm[export]'")

    monkeypatch.setattr(deploy, "export_onnx", no_exporter)
    capsys.readouterr()
    assert main(args) == 2
    assert "meter-timm export: error: pip install" in capsys.readouterr().err
