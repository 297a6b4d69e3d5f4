"""Every user mistake ends in one line ``meter-timm CMD: error: ...`` naming what is at fault, with
exit code 2; programming errors keep their traceback (budget: ~40 s on 2 cores)."""

from __future__ import annotations

import builtins
import logging

import numpy as np
import pytest
import torch
from _training import QUICKSTART, make_tiny_data
from PIL import Image

from meter_timm.cli import main
from meter_timm.strategies import DepthBinStrategy, plugins
from meter_timm.strategies.plugins import hookimpl


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


class _EdgesEqualInFloat32(DepthBinStrategy):
    """Edges strictly increasing in float64, two of them equal in float32."""

    name = "test-float32-edges"

    def edges(self):
        edges = torch.linspace(
            self.min_depth, self.max_depth, self.num_bins + 1, dtype=torch.float64
        )
        edges[2] = edges[1] + 1e-9
        return edges

    def assignment(self):
        return torch.arange(self.num_units) * self.num_bins // self.num_units


class _Raises(DepthBinStrategy):
    """A plugin strategy with explicit parameters whose edges() or assignment() raises."""

    name = "test-raises"

    def __init__(self, num_units, num_bins, min_depth=0.0, max_depth=10.0, which="edges"):
        super().__init__(num_units, num_bins, min_depth, max_depth)
        self.which = which

    def edges(self):
        if self.which == "edges":
            return 1 / 0
        return torch.linspace(self.min_depth, self.max_depth, self.num_bins + 1).double()

    def assignment(self):
        raise RuntimeError("the plugin's own bug")


class _Plugin:
    @hookimpl
    def meter_timm_register_strategies(self, register):
        register(_EdgesEqualInFloat32)
        register(_Raises)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    data = make_tiny_data(root / "data", train=4, val=2) / "val"
    import timm

    import meter_timm  # noqa: F401

    state = timm.create_model("meter_xxs").state_dict()
    torch.save(state, root / "weights.pth")
    nan_state = {
        k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()
    }
    torch.save(nan_state, root / "nan.pth")
    raw = (root / "weights.pth").read_bytes()
    (root / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    (root / "notes.pth").write_text("not a checkpoint\n")
    (root / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({**state, "note": _CreatesFile(root / "created_by_payload")}, root / "payload.pth")
    # a DenseDepth csv with its columns swapped: depth first, then rgb
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "0_colors.png")
    Image.fromarray(np.full((48, 64), 2000, dtype=np.uint16)).save(root / "0_depth.png")
    (root / "swapped.csv").write_text("0_depth.png,0_colors.png\n")
    torch.save({"conv.weight": torch.zeros(1)}, root / "wrong_keys.pth")
    (root / "hub").mkdir()
    (root / "hub" / "model.safetensors").write_bytes(b"")
    # a bad h5 file, read in a DataLoader worker process
    import shutil

    shutil.copytree(data, root / "bad_h5")
    first = sorted((root / "bad_h5").rglob("*.h5"))[0]
    first.write_text("not an h5 file\n")
    (root / "syntax.py").write_text("model = dict(\n    lam=0.1,\n    lam=,\n)\n")
    (root / "child.py").write_text("_base_ = ['syntax.py']\n")
    bad_config = root / "bad_type.py"
    bad_config.write_text(
        f"_base_ = [{str(QUICKSTART)!r}]\ncustom_hooks = [dict(type='NoSuchHook')]\n"
        f"work_dir = {str(root / 'work')!r}\n"
    )
    return {"root": root, "data": data, "weights": root / "weights.pth"}


def _tiny_run(inputs):
    """What dissect and ablate share here: the tiny weights and data, one 64x64 frame, 4 bins."""
    return [
        "--weights",
        str(inputs["weights"]),
        "--data",
        str(inputs["data"]),
        "--input-size",
        "64",
        "64",
        "--limit",
        "1",
        "--bins",
        "4",
    ]


def _dissect(inputs, *extra):
    return [
        "dissect",
        "--model",
        "meter_xxs",
        *_tiny_run(inputs),
        "--no-plots",
        "--out",
        str(inputs["root"] / "dissect"),
        *extra,
    ]


def _eval(inputs, weights="weights.pth", *extra, data=None):
    return [
        "eval",
        "meter_xxs",
        "--weights",
        str(inputs["root"] / weights),
        "--data",
        str(data or inputs["data"]),
        "--input-size",
        "64",
        "64",
        *extra,
    ]


def _ablate(inputs, *extra):
    return [
        "ablate",
        "meter_xxs",
        *_tiny_run(inputs),
        "--random-draws",
        "0",
        "--out",
        str(inputs["root"] / "ablate"),
        *extra,
    ]


def _train(inputs, *options, extra=()):
    work_dir = str(inputs["root"] / "train_work")
    return ["train", str(QUICKSTART), "--work-dir", work_dir, *extra, "--cfg-options", *options]


# (id, argv from the fixture, words the error line must hold)
CASES = [
    ("unknown command", lambda i: ["trian"], ["unknown command 'trian'", "did you mean 'train'"]),
    (
        "model typo in eval",
        lambda i: ["eval", "meter_xx", "--weights", "w.pth", "--data", "d"],
        ["unknown model 'meter_xx'", "did you mean 'meter_xxs'"],
    ),
    (
        "model typo in dissect",
        lambda i: ["dissect", "--model", "metr_xxs", "--data", "d", "--out", "o"],
        ["unknown model 'metr_xxs'", "did you mean 'meter_xxs'"],
    ),
    (
        "tag typo in predict",
        lambda i: ["predict", "x.png", "--model", "meter_xxs.nyux", "--weights", "w", "--out", "o"],
        ["unknown pretrained tag 'nyux' of meter_xxs", "did you mean 'nyu'"],
    ),
    (
        "config typo",
        lambda i: ["train", "mm_configs/quickstar.py"],
        [
            "config file not found: mm_configs/quickstar.py",
            "did you mean 'mm_configs/quickstart.py'",
        ],
    ),
    (
        "unknown type= in a config",
        lambda i: ["train", str(i["root"] / "bad_type.py")],
        ["NoSuchHook is not in the", "registry", "check the config's type= names"],
    ),
    (
        "missing checkpoint (SystemExit path)",
        lambda i: ["test", str(QUICKSTART), "--checkpoint", str(i["root"] / "nowhere.pth")],
        ["checkpoint not found", "nowhere.pth"],
    ),
    (
        "layer typo",
        lambda i: _dissect(i, "--layers", "encoder.66"),
        ["layer 'encoder.66' not found", "close valid names", "encoder.6"],
    ),
    (
        "strategy typo",
        lambda i: _dissect(i, "--strategy", "unifrom"),
        ["unknown depth-bin strategy 'unifrom'", "did you mean 'uniform'"],
    ),
    (
        "unknown strategy parameter",
        lambda i: _dissect(i, "--strategy-param", "gamma=2"),
        ["strategy 'uniform' got unknown parameters ['gamma']"],
    ),
    (
        "unknown parameter of a strategy with explicit parameters",
        lambda i: _dissect(i, "--strategy", "log", "--strategy-param", "alpah=0.5"),
        [
            "layer 'encoder.6'",
            "strategy 'log' got unknown parameters ['alpah']",
            "did you mean 'alpha'",
            "accepted: alpha, beta",
        ],
    ),
    (
        "unknown strategy parameter in ablate",
        lambda i: _ablate(i, "--strategy", "log", "--strategy-param", "alpah=0.5"),
        ["strategy 'log' got unknown parameters ['alpah']", "did you mean 'alpha'"],
    ),
    (
        "unknown parameter of a plugin strategy",
        lambda i: _dissect(i, "--strategy", "test-raises", "--strategy-param", "whihc=edges"),
        ["'test-raises' got unknown parameters ['whihc']", "did you mean 'which'"],
    ),
    (
        "unknown strategy parameter in a config",
        lambda i: _train(
            i,
            "model.selectivity.layers.0.strategy=log",
            "model.selectivity.layers.0.params.alpah=1",
        ),
        ["layer 'encoder.6'", "'log' got unknown parameters ['alpah']", "did you mean 'alpha'"],
    ),
    (
        "plugin strategy whose edges() raises",
        lambda i: _dissect(i, "--strategy", "test-raises"),
        [
            "layer 'encoder.6'",
            "'test-raises' of plugin 'test-bad-inputs'",
            "edges() raised ZeroDivisionError",
        ],
    ),
    (
        "plugin strategy whose assignment() raises",
        lambda i: _dissect(i, "--strategy", "test-raises", "--strategy-param", "which=none"),
        ["layer 'encoder.6'", "plugin 'test-bad-inputs'", "assignment() raised RuntimeError"],
    ),
    (
        "unknown backbone in a config",
        lambda i: _train(i, "model.backbone.name=meter_xxxs"),
        ["unknown model 'meter_xxxs'", "did you mean 'meter_xxs'"],
    ),
    (
        "--launcher pytorch outside torchrun",
        lambda i: _train(i, "train_cfg.max_epochs=1", extra=("--launcher", "pytorch")),
        ["--launcher pytorch needs torchrun", "RANK", "WORLD_SIZE"],
    ),
    (
        "--launcher pytorch outside torchrun in test",
        lambda i: [
            "test",
            str(QUICKSTART),
            "--checkpoint",
            str(i["weights"]),
            "--launcher",
            "pytorch",
        ],
        ["--launcher pytorch needs torchrun", "RANK", "WORLD_SIZE"],
    ),
    (
        "syntax error in a config",
        lambda i: ["train", str(i["root"] / "syntax.py")],
        ["syntax.py:3: syntax error in the config", "lam=,"],
    ),
    (
        "syntax error in a config's base",
        lambda i: _dissect(i, "--model", str(i["root"] / "child.py")),
        ["syntax.py:3: syntax error in the config"],
    ),
    (
        "edges equal in float32",
        lambda i: _dissect(i, "--strategy", "test-float32-edges"),
        ["'test-float32-edges'", "not strictly increasing in float32", "edges[1]"],
    ),
    (
        "text file as weights",
        lambda i: _eval(i, "notes.pth"),
        ["cannot read checkpoint", "notes.pth"],
    ),
    (
        "random bytes as weights",
        lambda i: _eval(i, "random.pth"),
        ["cannot read checkpoint", "random.pth", "not a PyTorch checkpoint"],
    ),
    (
        "truncated weights",
        lambda i: _eval(i, "truncated.pth"),
        ["cannot read checkpoint", "truncated.pth", "not a complete PyTorch checkpoint"],
    ),
    (
        "weights that do not fit",
        lambda i: _eval(i, "wrong_keys.pth"),
        ["wrong_keys.pth: checkpoint does not fit meter_xxs", "missing keys"],
    ),
    (
        "folder as weights",
        lambda i: _eval(i, "hub"),
        [
            "is a folder, not a checkpoint file",
            "give the weights file inside it",
            "model.safetensors",
        ],
    ),
    (
        "device without a GPU in eval",
        lambda i: _eval(i, "weights.pth", "--device", "cuda:99"),
        ["cannot use device 'cuda:99'"],
    ),
    (
        "device without a GPU in dissect",
        lambda i: _dissect(i, "--device", "cuda:99"),
        ["cannot use device 'cuda:99'"],
    ),
    (
        "bad h5 file read by a DataLoader worker",
        lambda i: _eval(i, "weights.pth", "--num-workers", "1", data=i["root"] / "bad_h5"),
        ["bad_h5/official/00000.h5", "cannot read h5 file"],
    ),
    (
        "unreadable and missing images to predict",
        lambda i: [
            "predict",
            str(i["root"] / "notes.pth"),
            str(i["root"] / "missing.png"),
            "--model",
            "meter_xxs.nyu",
            "--weights",
            str(i["weights"]),
            "--out",
            str(i["root"] / "predicted"),
        ],
        ["cannot read 2 of 2 image(s)", "notes.pth (cannot identify", "missing.png (no such file)"],
    ),
    (
        "no frames to make",
        lambda i: ["make-data", str(i["root"] / "made"), "--train", "0", "--val", "0"],
        ["--train and --val are both 0"],
    ),
    (
        "all-NaN weights",
        lambda i: _eval(i, "nan.pth"),
        ["refused weights", "nan.pth", "tensor 'encoder.0.spatial.weight'", "non-finite"],
    ),
    (
        "pickled payload in weights",
        lambda i: _eval(i, "payload.pth"),
        ["refused checkpoint", "payload.pth", "io.open", "nothing in it was run"],
    ),
    (
        "pickled payload in weights of a timm model to export",
        lambda i: [
            "export",
            "resnet18",
            "--weights",
            str(i["root"] / "payload.pth"),
            "--onnx",
            str(i["root"] / "r.onnx"),
            "--no-check",
        ],
        ["refused checkpoint", "payload.pth", "io.open", "nothing in it was run"],
    ),
    (
        "pickled payload in weights of a timm model to convert",
        lambda i: [
            "convert",
            str(i["root"] / "payload.pth"),
            "--model",
            "resnet18",
            "--out",
            str(i["root"] / "hub_out"),
        ],
        ["refused checkpoint", "payload.pth", "io.open"],
    ),
    (
        "METER weights for another timm model",
        lambda i: [
            "convert",
            str(i["weights"]),
            "--model",
            "resnet18",
            "--out",
            str(i["root"] / "hub_out"),
        ],
        ["weights.pth: the weights do not fit resnet18", "Missing key(s)"],
    ),
    (
        "no valid depth pixel",
        lambda i: _eval(
            i,
            "weights.pth",
            "--min-depth",
            "50",
            "--max-depth",
            "60",
            "--json",
            str(i["root"] / "metrics.json"),
        ),
        ["no metric could be computed", "no image has a valid ground-truth pixel"],
    ),
    (
        "swapped csv columns",
        lambda i: _eval(i, data=i["root"] / "swapped.csv"),
        ["swapped.csv:1", "columns look swapped", "rgb_path,depth_path"],
    ),
    (
        "unknown torch.compile backend",
        lambda i: [
            "train",
            str(QUICKSTART),
            "--work-dir",
            str(i["root"] / "w"),
            "--compile",
            "network",
            "--cfg-options",
            "model.compile_network.backend=inductr",
        ],
        ["model.compile_network.backend='inductr' is not a torch.compile backend", "'inductor'"],
    ),
    (
        "truncated file to --resume",
        lambda i: [
            "train",
            str(QUICKSTART),
            "--work-dir",
            str(i["root"] / "w"),
            "--resume",
            str(i["root"] / "truncated.pth"),
        ],
        ["cannot read checkpoint", "truncated.pth"],
    ),
    (
        "text file to --resume",
        lambda i: [
            "train",
            str(QUICKSTART),
            "--work-dir",
            str(i["root"] / "w"),
            "--resume",
            str(i["root"] / "notes.pth"),
        ],
        ["cannot read checkpoint", "notes.pth"],
    ),
]


@pytest.mark.parametrize("argv, expected", [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_user_mistake_is_one_line_with_exit_code_2(inputs, argv, expected, capsys, monkeypatch):
    monkeypatch.delenv("METER_TIMM_DEBUG", raising=False)
    # mmengine loggers made by earlier tests write to those tests' closed capture streams
    monkeypatch.setattr(logging, "raiseExceptions", False)
    monkeypatch.chdir(QUICKSTART.parents[1])  # the repository: relative config paths
    pm = plugins.get_plugin_manager()
    pm.register(_Plugin(), name="test-bad-inputs")
    try:
        code = main(argv(inputs))
    finally:
        pm.unregister(name="test-bad-inputs")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert len(lines) == 1, err[-2000:]
    command = argv(inputs)[0]
    prefix = "meter-timm: error: " if command == "trian" else f"meter-timm {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    for words in expected:
        assert words in lines[0], (words, lines[0])
    assert len(lines[0]) < 600, lines[0]
    assert not (inputs["root"] / "created_by_payload").exists()


def test_undefined_metrics_are_written_as_null(inputs, capsys):
    import json

    assert (
        main(
            _eval(
                inputs,
                "weights.pth",
                "--min-depth",
                "50",
                "--max-depth",
                "60",
                "--json",
                str(inputs["root"] / "null.json"),
            )
        )
        == 2
    )
    metrics = json.loads(
        (inputs["root"] / "null.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"),
    )
    assert set(metrics) >= {"abs_rel", "d1"} and all(v is None for v in metrics.values())


def test_programming_errors_keep_their_traceback(inputs, monkeypatch):
    import meter_timm.cli.evaluate as evaluate

    def broken(args):
        return {}["a key our own code forgot"]

    monkeypatch.setattr(evaluate, "run", broken)
    with pytest.raises(KeyError, match="a key our own code forgot"):
        main(_eval(inputs))
    monkeypatch.setattr(evaluate, "run", lambda args: None + 1)
    with pytest.raises(TypeError):
        main(_eval(inputs))


def test_debug_variable_shows_the_traceback_of_a_user_mistake(inputs, monkeypatch):
    monkeypatch.setenv("METER_TIMM_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown model 'meter_xx'"):
        main(["eval", "meter_xx", "--weights", "w.pth", "--data", "d"])


def test_dissection_without_valid_depth_fails_and_writes_strict_json(inputs, capsys, monkeypatch):
    import json

    monkeypatch.setattr(logging, "raiseExceptions", False)
    out = inputs["root"] / "dissect_empty"
    argv = _dissect(inputs, "--min-depth", "50", "--max-depth", "60")
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv) == 2
    assert "every bin is empty" in capsys.readouterr().err
    report = json.loads(
        (out / "report.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"bare {c} in report.json"),
    )
    assert sum(report["layers"]["encoder.6"]["counts"]) == 0


@pytest.mark.parametrize(
    "option, expected",
    [
        ('model.selectivity.layers=[dict(name="encoder.6",num_bins=8)]', "not dict(...)"),
        ("model.lam=[1,2", "unbalanced brackets"),
        ("model.lam", "expected KEY=VALUE, got 'model.lam'"),
    ],
)
def test_unreadable_cfg_options_are_a_usage_error(option, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(QUICKSTART), "--cfg-options", option])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("meter-timm train: error: argument --cfg-options: ")
    assert expected in err.splitlines()[-1]


def test_resume_without_a_checkpoint_warns_that_training_starts_afresh(inputs, capsys, monkeypatch):
    from meter_timm.mm.runner import MeterRunner

    def stop(cfg):
        raise ValueError("stopped before training")

    monkeypatch.setattr(MeterRunner, "from_cfg", stop)
    work_dir = inputs["root"] / "empty_work_dir"
    assert main(["train", str(QUICKSTART), "--work-dir", str(work_dir), "--resume"]) == 2
    err = capsys.readouterr().err
    assert (
        f"meter-timm train: warning: --resume found no checkpoint in {work_dir} "
        "(no last_checkpoint file): training starts from scratch"
    ) in err


@pytest.mark.parametrize("name, argument", [("resnet18", "img_sise"), ("meter_xxs", "output_scal")])
def test_a_model_argument_the_model_does_not_take_is_named(name, argument):
    from meter_timm.models import create_model

    with pytest.raises(ValueError, match=rf"{name} does not take the argument '{argument}'"):
        create_model(name, **{argument: 1})


def test_weights_of_which_nothing_fits_a_network_without_a_filter_are_refused(tmp_path):
    """A non-strict load (load_from) of a file none of whose tensors fit: a ValueError naming
    it, instead of a model left as it was."""
    import timm

    from meter_timm.checkpoint import load_weights

    net = timm.create_model("resnet10t", num_classes=0)
    torch.save({"head.fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other.pth: none of its 1 tensors fit the model"):
        load_weights(net, tmp_path / "other.pth", strict=False)
    torch.save({"conv1.0.weight": net.conv1[0].weight.detach() + 1}, tmp_path / "part.pth")
    load_weights(net, tmp_path / "part.pth", strict=False)  # one tensor fits: loaded
