"""recjax's layers: every import points down.

The package is a stack of units (a top-level module, or a subpackage taken whole):
:data:`LAYERS`, bottom to top, which README's "Code layout" table shows (and
:func:`test_readme_shows_the_layers` keeps it so).

A unit imports only units of lower layers (and itself). The scan reads every module's
syntax tree, so it sees imports at any depth (deferred ones inside functions),
relative imports, ``from recjax import data``, and strings naming a recjax module (what
a lazy namespace or ``importlib`` would import); ``importlib`` itself is used only by
:mod:`recjax._lazy`, whose callers name their modules in such strings.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "recjax"

LAYERS = [
    ("_checks", "_ext", "_lazy", "_version"),
    ("_blocks", "data"),
    ("config", "models", "retrieval", "metrics"),
    ("train",),
    ("families", "scoring", "run_folder"),
    ("runs", "experiment"),
    ("evaluation", "explore", "predict"),
    ("serve", "tuning", "plots", "report"),
    ("cli",),
    ("recjax", "__main__"),
]
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """Whether ``name`` (dotted) is a recjax module or package in the source tree."""
    if name != "recjax" and not name.startswith("recjax."):
        return False
    path = ROOT.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file() or any(path.parent.glob(path.name + ".*.so"))


def _unit(module: str) -> str:
    """The unit of a recjax module: its top-level module or subpackage."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "recjax"


def imported_modules(source: str, module: str, *, package: bool = False) -> list[str]:
    """Every recjax module ``source`` (the text of ``module``; ``package``: an
    ``__init__.py``) imports, at any depth of its code, or names in a string; absolute
    dotted names."""
    anchor = module if package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                parts = anchor.split(".")[: len(anchor.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            # ``from recjax import data`` imports recjax.data: a name may be a submodule
            found += [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            found.append(node.value)  # a dotted module name (the bare "recjax" is a program name)
    return [name for name in found if _is_module(name)]


def _imports_of(path: Path) -> list[str]:
    return imported_modules(path.read_text(), _module_name(path), package=path.name == "__init__.py")


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_readme_shows_the_layers():
    """README's Code layout table lists LAYERS, top to bottom."""
    text = (ROOT.parent / "README.md").read_text().split("## Code layout", 1)[1]
    rows = [line.split("|") for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    shown = {int(row[1]): set(re.findall(r"`(\w+)`", row[2])) for row in rows}
    assert shown == {level: set(units) for level, units in enumerate(LAYERS)}


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(path)) for path in _sources()}
    assert units - set(LAYER) == set(), "a new unit needs its place in LAYERS"
    assert set(LAYER) - units == set(), "LAYERS names a unit that is gone"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_every_import_points_down(path):
    unit = _unit(_module_name(path))
    upward = sorted({name for name in _imports_of(path)
                     if _unit(name) != unit and LAYER[_unit(name)] >= LAYER[unit]})
    assert upward == [], f"{unit} (layer {LAYER[unit]}) imports its own layer or above"


def test_train_sees_models_only_through_the_contract():
    """train reads a model through its contract (models.base, models.capabilities),
    never a family's module nor the models package: families, above train, pair them."""
    names = {name for path in (ROOT / "train").glob("*.py") for name in _imports_of(path)
             if _unit(name) == "models" and name != "recjax.models"}
    assert names <= {"recjax.models.base", "recjax.models.capabilities"}, names
    bare = [path.name for path in (ROOT / "train").glob("*.py")
            if any(isinstance(node, ast.ImportFrom) and node.module == "recjax.models"
                   for node in ast.walk(ast.parse(path.read_text())))]
    assert bare == []


def test_only_the_lazy_helper_imports_by_name():
    """``importlib`` (whose imports an AST scan sees only as strings) is used by
    recjax._lazy alone; everything else imports with the import statement, or names its
    modules to recjax._lazy in strings the scan reads."""
    users = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "importlib" for n in names):
                users.append(str(path.relative_to(ROOT.parent)))
    assert sorted(set(users)) == ["recjax/_lazy.py"]


def test_the_scan_sees_every_kind_of_import():
    """The scan itself, on planted source: each way of importing it must catch."""
    source = (
        "import numpy\n"
        "import recjax.data.splits\n"
        "from recjax import runs\n"                      # a submodule by from-import
        "from . import cli\n"                            # relative, from the package
        "from ..train import step\n"                     # relative, from a subpackage
        "def f():\n"
        "    from recjax.tuning.study import tune\n"     # deferred
        "    return 'recjax.serve.app'\n"                # a module named in a string
        "DOC = 'see :mod:`recjax.plots`'\n"              # prose, not a module name
    )
    found = imported_modules(source, "recjax.metrics")
    assert set(found) >= {"recjax.data.splits", "recjax.runs", "recjax.cli", "recjax.tuning.study",
                          "recjax.serve.app"}
    assert "numpy" not in found and "recjax.plots" not in found
    assert imported_modules("PROG = 'recjax'\n", "recjax.cli") == []  # a program name
    in_package = imported_modules(source, "recjax.models.mf")
    assert "recjax.models.cli" not in in_package and "recjax.train.step" in in_package
    # and it flags them: metrics sits in layer 2
    assert {_unit(n) for n in found if LAYER[_unit(n)] >= LAYER["metrics"]} >= {"runs", "cli", "tuning", "serve"}
