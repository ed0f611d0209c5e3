"""The public surface: recjax's curated namespace, imported lazily, and the ``__all__``
of the public modules (Optax's ``optax_test.py`` is the model)."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import recjax

# The curated namespace, pinned: adding or removing a name is a decision, made here.
PUBLIC_API = sorted([
    "ALSConfig", "DAEConfig", "DNNConfig", "EASE", "EASEConfig", "Embeddings", "Experiment", "IALSConfig",
    "MFConfig", "MODELS", "MostPopular", "PREDEFINED_SPLITS", "PairConfig", "RankingTask", "Ratings", "Run",
    "RunConfig", "RunFolderError", "RunResult", "SoftmaxConfig", "Splits", "TopK", "TuneResult",
    "UnknownIdError", "Vocabulary", "average_predictions", "blend", "evaluate_ranking", "evaluate_run",
    "load_movielens", "paired_bootstrap", "predefined_split", "read_ratings", "run", "similar_items",
    "split_ratings", "strong_generalization", "synthetic_ratings", "topk", "tune",
])

ROOT = Path(recjax.__file__).resolve().parent

# Public modules whose __all__ is checked: each lists names defined there (packages:
# names their public submodules export), none private. Every public module of these
# packages is checked, new ones included.
PUBLIC_MODULES = sorted(
    [f"recjax.{package}" for package in ("data", "evaluation", "retrieval", "train")]
    + [f"recjax.{package}.{path.stem}" for package in ("data", "evaluation", "retrieval", "train")
       for path in (ROOT / package).glob("*.py") if not path.name.startswith("_")]
    + ["recjax.scoring", "recjax.plots", "recjax.predict", "recjax.report"]
)

HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "recjax._ext")


def test_all_is_pinned():
    assert sorted(recjax.__all__) == PUBLIC_API
    assert len(set(recjax.__all__)) == len(recjax.__all__)


def test_every_name_resolves_to_its_module_object():
    mapping = recjax._MODULE_OF
    assert set(mapping) == set(recjax.__all__)
    for name in recjax.__all__:
        module = importlib.import_module(mapping[name])
        assert getattr(recjax, name) is getattr(module, name), name
        if hasattr(module, "__all__"):
            assert name in module.__all__, f"{name} is not public in {mapping[name]}"


def test_dir_lists_the_public_names():
    listed = dir(recjax)
    assert set(recjax.__all__) <= set(listed)
    assert "__version__" in listed
    assert not [n for n in listed if n.startswith("_") and n != "__version__"]


def test_unknown_attribute_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_name"):
        recjax.no_such_name  # noqa: B018
    with pytest.raises(ImportError, match="no_such_name"):
        from recjax import no_such_name  # noqa: F401


def test_submodules_still_import_through_the_package():
    from recjax import data, evaluation

    assert evaluation.__name__ == "recjax.evaluation"
    assert data.__name__ == "recjax.data"


def _fresh_modules(code: str) -> list[str]:
    """The modules loaded after running ``code`` in a fresh interpreter."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent)
    return json.loads(out.stdout.splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_recjax_imports_nothing_heavy():
    modules = _fresh_modules("import recjax\nrecjax.__all__, dir(recjax), recjax.__version__")
    assert _heavy(modules) == []
    # no submodule but the lazy-namespace helper (it imports importlib alone) and the version
    assert sorted(m for m in modules if m.startswith("recjax.")) == ["recjax._lazy", "recjax._version"]


def test_data_names_need_no_jax():
    modules = _fresh_modules("import recjax\nrecjax.Ratings, recjax.split_ratings, "
                             "recjax.load_movielens, recjax.synthetic_ratings")
    assert _heavy(modules) == []


def test_numpy_baselines_need_no_jax():
    """recjax.models is a lazy namespace: the NumPy baselines (EASE, MostPopular) and the
    capability declaration import neither JAX nor Flax, nor any JAX model module."""
    modules = _fresh_modules("from recjax.models.baselines import EASE, MostPopular\n"
                             "from recjax.models import Capabilities")
    assert _heavy(modules) == []
    assert "recjax.models.baselines" in modules and "recjax.models.mf" not in modules


def test_every_public_name_is_documented():
    """Classes and functions carry their own docstring; constants are described in
    recjax's module docstring."""
    for name in recjax.__all__:
        obj = getattr(recjax, name)
        if inspect.isclass(obj) or callable(obj):
            doc = obj.__doc__ or ""
            # dataclasses and NamedTuples without one get a generated "Name(field, ...)"
            assert doc.strip() and not doc.startswith(f"{obj.__name__}("), name
        else:
            assert f":data:`{name}`" in recjax.__doc__, name


def test_module_docstring_example_runs():
    result = doctest.testmod(recjax, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _defined_names(statements: list[ast.stmt]) -> set[str]:
    """Names a module body binds itself (def, class, assignment), not by importing."""
    names: set[str] = set()
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):
            for body in (node.body, node.orelse, getattr(node, "finalbody", []),
                         *[h.body for h in getattr(node, "handlers", [])]):
                names |= _defined_names(body)
    return names


def _source(module: str) -> tuple[Path, bool]:
    path = ROOT.parent.joinpath(*module.split("."))
    return (path / "__init__.py", True) if path.is_dir() else (path.with_suffix(".py"), False)


def _static_all(path: Path) -> list[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no literal __all__")


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_module_all_lists_only_its_public_definitions(module):
    path, package = _source(module)
    names = _static_all(path)
    assert len(set(names)) == len(names), f"{module}.__all__ repeats a name"
    assert not [n for n in names if n.startswith("_")], module
    if package:  # a package re-exports what its public submodules export
        exported = set()
        for sub in sorted(path.parent.glob("*.py")):
            if not sub.name.startswith("_"):
                exported |= set(_static_all(sub))
        defined = _defined_names(ast.parse(path.read_text()).body) | exported
    else:
        defined = _defined_names(ast.parse(path.read_text()).body)
    assert set(names) <= defined, f"{module}.__all__ lists {sorted(set(names) - defined)}, " \
                                  f"not defined there"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_module_all_names_resolve(module):
    if module == "recjax.plots":
        pytest.importorskip("matplotlib")
    mod = importlib.import_module(module)
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []
