"""The family registry (recjax.families): its trainers, validators and objectives, named
by reference. (That it is the layer above models and train, which never import it, is
tests/test_layers.py's.)"""

from __future__ import annotations

import pytest

from recjax.families import MODELS, OBJECTIVES, ModelSpec
from recjax.models.mf import MF, MFConfig
from recjax.train import alternating, loop
from recjax.train.validation import bag_validator, ranking_validator


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
