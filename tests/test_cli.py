"""The ``meter-timm`` dispatcher: sub-commands, and bad input reported as one clear line."""

import os
import subprocess
import sys

import pytest

from meter_timm.cli import COMMANDS, main
from meter_timm.cli._errors import load_config, one_line, user_error_message
from meter_timm.selectivity.capture import LayerNotFoundError


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert f"meter-timm {name}" in capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "depth selectivity" in out and "``" not in out  # says what the tool is, no rst markup
    assert all(name in out for name in COMMANDS)


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    not_weights = tmp_path / "notes.txt"
    not_weights.write_text("not a checkpoint\n")
    code = main(["eval", "meter_xxs.nyu", "--weights", str(not_weights), "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("meter-timm eval: error: ") and str(not_weights) in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_debug_variable_shows_the_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meter_timm",
            "eval",
            "meter_xxs.nyu",
            "--weights",
            str(tmp_path / "missing.pth"),
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, METER_TIMM_DEBUG="1"),
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "missing.pth" in proc.stderr


def _raise_in(filename: str, exc: BaseException) -> BaseException:
    """``exc`` raised by code whose file is ``filename`` (as in a traceback from that file)."""
    try:
        exec(compile("raise exc", filename, "exec"), {"exc": exc})
    except BaseException as raised:
        return raised


def test_user_error_messages_are_one_line_and_programming_errors_are_not_user_errors():
    assert one_line("one line\n") == "one line" and one_line("a\n b \n\nc") == "a b; c"
    # an unknown type= is a KeyError of mmengine's registry; other KeyErrors are bugs
    registry = _raise_in("/x/mmengine/registry/build_functions.py", KeyError("Foo is not in"))
    assert user_error_message(registry) == "Foo is not in (check the config's type= names)"
    assert user_error_message(_raise_in("/x/mmengine/config/config.py", KeyError("a"))) is None
    assert user_error_message(_raise_in("/x/meter_timm/cli/train.py", KeyError("a"))) is None
    # an error that is a KeyError and a ValueError is a user mistake, without KeyError's quotes
    assert user_error_message(LayerNotFoundError("no layer 'x'")) == "no layer 'x'"

    class _Both(KeyError, ValueError):
        pass

    assert user_error_message(_Both("bad key k")) == "bad key k"
    assert user_error_message(ValueError()) == "ValueError"
    assert user_error_message(PermissionError("out: permission denied")) == (
        "out: permission denied"
    )
    assert user_error_message(TypeError("a bug")) is None


def test_error_from_a_data_loader_worker_is_its_last_exception():
    text = (
        "Caught ValueError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "reader.py", line 3, in read\n'
        "ValueError: the first error\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n"
        '  File "reader.py", line 5, in read\n'
        "ValueError: x.h5: cannot read h5 file\n"
    )
    assert user_error_message(ValueError(text)) == "x.h5: cannot read h5 file"


def test_syntax_error_in_a_base_named_by_a_string_names_that_file(tmp_path):
    (tmp_path / "base.py").write_text("model = dict(\n    lam=0.1,\n    lam=,\n)\n")
    (tmp_path / "child.py").write_text("_base_ = 'base.py'\n")
    with pytest.raises(ValueError, match=r"base\.py:3: syntax error in the config"):
        load_config(tmp_path / "child.py")


def test_device_error_of_a_torch_built_without_cuda_names_the_device():
    """A CPU-only torch raises AssertionError ("Torch not compiled with CUDA enabled") on
    .to("cuda"): a user error naming the device, as the RuntimeError of a missing driver."""
    from meter_timm.cli._model import to_device

    class CpuOnly:
        def to(self, device):
            raise AssertionError("Torch not compiled with CUDA enabled")

    with pytest.raises(ValueError, match="cannot use device 'cuda': Torch not compiled"):
        to_device(CpuOnly(), "cuda")


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    """``make-data FILE`` (and ``predict --out FILE``, ``dissect --out FILE``) raised a bare
    FileExistsError; ``eval --json FILE/x.json`` fails before the evaluation."""
    import timm
    import torch

    import meter_timm.cli.evaluate as evaluate

    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    assert main(["make-data", str(taken), "--train", "1", "--val", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("meter-timm make-data: error: ") and "taken" in err[0]
    )
    torch.save(timm.create_model("meter_xxs").state_dict(), tmp_path / "w.pth")
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    argv = ["eval", "meter_xxs", "--weights", str(tmp_path / "w.pth"), "--data", str(tmp_path)]
    assert main([*argv, "--json", str(taken / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "meter-timm eval: error: " in err[0] and "taken" in err[0]
    assert user_error_message(FileExistsError("out: exists")) == "out: exists"
