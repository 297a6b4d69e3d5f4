"""The ``meter-timm`` dispatcher: sub-commands, and bad input reported as one clear line."""

import os
import subprocess
import sys

from meter_timm.cli import COMMANDS, main


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert f"meter-timm {name}" in capsys.readouterr().out


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
