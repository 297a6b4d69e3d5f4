"""Deployment helpers: ONNX export with an ONNX Runtime check, and weights in timm's hub layout.

``export_onnx`` needs the ``export`` extra (``pip install -e ".[export]"``: onnx, onnxscript,
onnxruntime); ``save_hub_folder`` needs only timm and safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import meter_timm  # noqa: F401  (registers the models)
from meter_timm.models.meter import DEPTH_UNIT_SCALE, Meter
from meter_timm.models.weights import create_model

__all__ = ["build_model", "export_onnx", "run_onnx", "onnx_relative_error", "save_hub_folder"]

EXPORT_EXTRA_HINT = "pip install 'meter-timm[export]' (onnx, onnxscript, onnxruntime)"


def build_model(name: str, weights: str | Path | None = None) -> Meter:
    """A model (METER or any timm model) in eval mode: ``weights`` loaded by the one checkpoint
    reader (any file or hub folder meter-timm reads), random weights when None."""
    return create_model(name, weights).eval()


def input_size(
    model: torch.nn.Module, height: int | None = None, width: int | None = None
) -> tuple[int, int]:
    """(H, W): the given sizes, else the model's pretrained input size."""
    _, default_h, default_w = model.pretrained_cfg["input_size"]
    return int(height or default_h), int(width or default_w)


def export_onnx(
    model: torch.nn.Module, path: str | Path, height: int, width: int
) -> dict[str, Any]:
    """Write ``model`` as ONNX to ``path``: input ``image`` (batch, 3, height, width), output
    ``depth`` (batch, 1, h, w) in metres, dynamic batch; the opset is the exporter's default.

    Returns ``{"path", "opset", "input_shape", "output_shape"}``. ImportError with the install hint
    when onnx / onnxscript are missing.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs the export extra: {EXPORT_EXTRA_HINT} ({err})"
        ) from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # batch 2 in the example: torch.export would specialise a batch of 1
    example = torch.randn(2, 3, height, width)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["depth"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    proto = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    return {
        "path": path,
        "opset": opset,
        "input_shape": dims(proto.graph.input[0]),
        "output_shape": dims(proto.graph.output[0]),
    }


def run_onnx(path: str | Path, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Run an exported file in ONNX Runtime (CPU) on float32 ``images`` (B, 3, H, W)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError(
            f"running ONNX needs the export extra: {EXPORT_EXTRA_HINT} ({err})"
        ) from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(
        None, {session.get_inputs()[0].name: np.ascontiguousarray(images, np.float32)}
    )[0]


def onnx_relative_error(path: str | Path, model: torch.nn.Module, images: torch.Tensor) -> float:
    """max |ONNX Runtime - PyTorch| / max |PyTorch| on ``images``."""
    with torch.no_grad():
        ref = model(images).numpy()
    out = run_onnx(path, images.numpy())
    if out.shape != ref.shape:
        raise ValueError(
            f"{path}: ONNX output shape {out.shape} differs from PyTorch's {ref.shape}"
        )
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


def save_hub_folder(model: Meter, out_dir: str | Path) -> dict[str, Path]:
    """Write ``model.safetensors`` and ``config.json`` in timm's hub layout (timm's
    ``save_for_hf``).

    The folder loads with ``timm.create_model("local-dir:DIR", pretrained=True)``, from the hub as
    ``hf-hub:ORG/NAME`` once uploaded, or as ``pretrained_cfg_overlay=dict(file=DIR)``. The config
    keeps ``depth_unit``; timm's classifier fields are dropped for depth models so that loading
    builds the depth model again.
    """
    from timm.models import save_for_hf

    out_dir = Path(out_dir)
    save_for_hf(model, str(out_dir), safe_serialization=True)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    cfg = config["pretrained_cfg"]
    for key in ("weights_published", "hf_hub_id", "notes"):
        cfg.pop(key, None)
    if getattr(model, "depth_head", False):
        for section in (config, config.get("model_args", {}), cfg):
            section.pop("num_classes", None)
            section.pop("global_pool", None)
        unit = cfg.get("depth_unit", "m")
        if model.output_scale != DEPTH_UNIT_SCALE.get(unit):
            config.setdefault("model_args", {})["output_scale"] = model.output_scale
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return {"weights": out_dir / "model.safetensors", "config": config_path}
