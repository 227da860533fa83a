"""The package's layout holds: every module name is unique, and no module imports a folder (or top
module) of a higher layer than its own (the rule the README's layout table states, in this order)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "inheritune"
# bottom up; a unit may import its own layer and the layers below it
LAYERS = [
    {"errors"},
    {"error_lines", "specs", "packaged", "leftovers", "result"},
    {"atomic"},
    {"options"},
    {"models"},
    {"data"},
    {"evaluation"},
    {"reporting"},
    {"analysis", "training"},
    {"growth", "pruning"},
    {"recipe", "recipe_checks", "arms"},
    {"yardstick"},
    {"commands"},
    {"cli"},
    {"__init__", "__main__"},
]


def _unit(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "inheritune":
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "inheritune" and len(parts) > 1:
                if (ROOT / parts[1]).is_dir() or (ROOT / f"{parts[1]}.py").is_file():
                    found.add(parts[1])
    return found


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in ROOT.rglob("*.py")}
    assert units == set().union(*LAYERS), units ^ set().union(*LAYERS)


def test_nothing_imports_a_higher_layer():
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    upward = [
        f"{p.relative_to(ROOT)} imports {other}"
        for p in sorted(ROOT.rglob("*.py"))
        for other in _imported_units(p)
        if layer[other] > layer[_unit(p)]
    ]
    assert not upward, upward


def test_module_names_are_unique():
    names = Counter(p.stem for p in ROOT.rglob("*.py") if p.stem != "__init__")
    assert not [n for n, k in names.items() if k > 1], [n for n, k in names.items() if k > 1]


def test_no_command_imports_another():
    """A command is a thin edge over components: what two commands share lives below them."""
    commands = ROOT / "commands"
    names = {p.stem for p in commands.glob("*.py")} - {"__init__"}
    found = []
    for path in sorted(commands.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                modules = [parts[2]] if parts[:2] == ["inheritune", "commands"] and len(parts) > 2 else []
                if node.module == "inheritune.commands":
                    modules = [a.name for a in node.names]
                found += [f"{path.stem} imports {m}" for m in modules if m in names and m != path.stem]
    assert not found, found
