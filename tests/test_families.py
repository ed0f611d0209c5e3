"""The family registry (recjax.families) is the layer above models and train: they never
import it, train reads a family only through the model contract, and the registry names
its trainers, validators and objectives by reference, not by dotted strings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from recjax.families import MODELS, OBJECTIVES, ModelSpec
from recjax.models.mf import MF, MFConfig
from recjax.train import alternating, loop
from recjax.train.validation import bag_validator, ranking_validator

ROOT = Path(__file__).resolve().parents[1] / "recjax"
# what each lower layer may import of recjax (prefixes); train sees models only as the contract
LOWER = {
    "models": ("recjax.data", "recjax.models", "recjax._lazy"),
    "train": ("recjax.data", "recjax.models.base", "recjax.models.capabilities", "recjax.train",
              "recjax.config", "recjax.metrics", "recjax.retrieval"),
}


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (at any depth of its code), absolute names."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(LOWER))
def test_lower_layers_import_nothing_above_them(layer):
    allowed = LOWER[layer]
    wrong = {f"{path.name}: {name}" for path in sorted((ROOT / layer).glob("*.py")) for name in _imports(path)
             if (name == "recjax" or name.startswith("recjax."))
             and not any(name == a or name.startswith(a + ".") for a in allowed)}
    assert wrong == set()
    # no import by a name in a string, which an import scan cannot see
    assert not any("importlib" in _imports(path) for path in (ROOT / layer).glob("*.py") if path.name != "__init__.py")
    assert "importlib" not in _imports(ROOT / "families.py")


def test_objectives_say_what_each_family_optimises():
    """Rating families optimise the run's task; the bag models a multinomial over the
    catalogue, iALS and EASE least squares on the implicit pattern, ALS the ratings."""
    objectives = {name: spec.objective for name, spec in MODELS.items()}
    assert objectives == {"mf": None, "pair": None, "dnn": None, "als": None,
                          "softmax": "multinomial", "dae": "multinomial", "ials": "implicit", "ease": "implicit"}
    losses = {name: spec.loss for name, spec in MODELS.items() if spec.loss is not None}
    assert losses == {"softmax": "classification", "dae": "classification"}
    # what they train and validate with, by reference
    assert {name for name, spec in MODELS.items() if spec.trainer is alternating.fit} == {"ials", "als", "ease"}
    assert all(spec.trainer in (loop.fit, alternating.fit) for spec in MODELS.values())
    validators = {name: spec.validator for name, spec in MODELS.items() if spec.validator is not None}
    assert validators == {"softmax": bag_validator, "dae": bag_validator,
                          "ials": ranking_validator, "ease": ranking_validator}
    # a family with its own objective accepts only the default task, which runs record
    assert all(spec.tasks == ("regression",) for spec in MODELS.values() if spec.objective is not None)


def test_an_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="unknown objective 'ranking'; choose one of multinomial, implicit"):
        ModelSpec(MFConfig, MF, ("regression",), objective="ranking")
    assert set(OBJECTIVES) == {"multinomial", "implicit"}
