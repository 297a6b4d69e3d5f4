"""The walls between the rooms of the package (docs/architecture.md), checked in fresh interpreters.

Each room and every module in it is imported in a new Python process; what it pulled in is read
from ``sys.modules``. A second check reads the source: the pure rooms never import the engine
adapters (``meter_timm.mm``), mmengine or mmcv, not even inside a function (budget: ~15 s).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "meter_timm"

# room -> modules that importing it (and every module in it) must not load
WALLS = {
    "meter_timm.selectivity": (
        "mmengine",
        "mmcv",
        "pluggy",
        "meter_timm.mm",
        "meter_timm.strategies",
    ),
    "meter_timm.strategies": ("mmengine", "mmcv", "meter_timm.mm"),
    "meter_timm.data": ("mmengine", "mmcv", "meter_timm.mm"),
    "meter_timm.models": ("mmengine", "mmcv", "meter_timm.mm", "meter_timm.selectivity"),
    "meter_timm.evaluation": ("mmengine", "mmcv", "meter_timm.mm"),
    "meter_timm.losses": ("mmengine", "mmcv", "meter_timm.mm", "meter_timm.selectivity"),
    "meter_timm.checkpoint": ("mmengine", "mmcv", "meter_timm.mm"),
}

_PROBE = """
import importlib, json, pkgutil, sys
room = importlib.import_module({room!r})
for info in pkgutil.walk_packages(getattr(room, "__path__", []), room.__name__ + "."):
    importlib.import_module(info.name)
forbidden = {forbidden!r}
print(json.dumps(sorted(m for m in sys.modules
                        if any(m == f or m.startswith(f + ".") for f in forbidden))))
"""


@pytest.mark.parametrize("room", sorted(WALLS))
def test_importing_a_room_loads_nothing_behind_its_walls(room):
    code = _PROBE.format(room=room, forbidden=WALLS[room])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    leaked = json.loads(proc.stdout.strip().splitlines()[-1])
    assert leaked == [], f"importing {room} (all its modules) loads {leaked}"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno, id(node) in top))
    return found


PURE_ROOMS = ("data", "evaluation", "losses", "models", "selectivity", "strategies")
ENGINE = ("mmengine", "mmcv", "meter_timm.mm", "meter_timm.cli")


def _is(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_pure_rooms_never_import_the_engine_even_inside_functions():
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for room in PURE_ROOMS
        for path in sorted((PACKAGE / room).rglob("*.py"))
        for module, line, _ in _imports(path)
        if _is(module, ENGINE)
    ]
    # data/synthetic.py scores its mean-depth baseline with meter_timm.evaluation, not mm.metrics
    assert bad == []


def test_selectivity_resolves_strategies_only_when_a_loss_or_dissection_is_built():
    top_level = [
        f"{path.name}:{line}"
        for path in sorted((PACKAGE / "selectivity").glob("*.py"))
        for module, line, at_top in _imports(path)
        if at_top and _is(module, ("meter_timm.strategies", "pluggy"))
    ]
    assert top_level == []
