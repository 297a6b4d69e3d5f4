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


class _Plugin:
    @hookimpl
    def meter_timm_register_strategies(self, register):
        register(_EdgesEqualInFloat32)


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
    bad_config = root / "bad_type.py"
    bad_config.write_text(
        f"_base_ = [{str(QUICKSTART)!r}]\ncustom_hooks = [dict(type='NoSuchHook')]\n"
        f"work_dir = {str(root / 'work')!r}\n"
    )
    return {"root": root, "data": data, "weights": root / "weights.pth"}


def _dissect(inputs, *extra):
    return [
        "dissect",
        "--model",
        "meter_xxs",
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
