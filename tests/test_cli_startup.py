"""The command line starts without torch: ``import meter_timm`` is light, the models register as
soon as timm is imported (in either order), and ``python -m meter_timm`` alone prints the help.
(Start-up time itself is measured by benchmarks/bench_cli.py, not here.)"""

import subprocess
import sys


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_import_and_help_do_not_import_torch():
    out = _python(
        "import sys, meter_timm\n"
        "from meter_timm.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules, 'timm' in sys.modules)"
    )
    assert out.splitlines()[-1] == "TORCH False False"
    assert "export" in out and "convert" in out


def test_models_register_when_timm_is_imported_later():
    # timm imported after meter_timm, through a submodule: the hook registers the models
    out = _python(
        "import sys, meter_timm\n"
        "assert 'meter_timm.models' not in sys.modules\n"
        "from timm.models import list_models\n"
        "print(sorted(list_models('meter*')), meter_timm.models.Meter.__name__)"
    )
    assert out == "['meter_s', 'meter_xs', 'meter_xxs'] Meter"


def test_python_m_alone_prints_help():
    proc = subprocess.run([sys.executable, "-m", "meter_timm"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: meter-timm") and "predict" in proc.stdout


def test_listing_strategies_does_not_import_torch():
    # built-ins and the installed example plugin are listed from their classes alone
    out = _python(
        "import sys\n"
        "from meter_timm.cli import main\n"
        "main(['strategies'])\n"
        "print('TORCH', 'torch' in sys.modules)"
    )
    assert out.splitlines()[-1] == "TORCH False"
    assert "learned" in out and "uniform" in out
