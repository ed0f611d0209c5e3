"""The model families a run can train: :data:`MODELS` maps a ``--model`` name to its
:class:`ModelSpec`: the config class, the module class (which declares its
:class:`~recjax.models.capabilities.Capabilities`, the contract of
:mod:`recjax.models.base`), a builder from (config, training ratings, run config) to
the module, the tasks it supports, what it optimises (its :attr:`ModelSpec.objective`),
and the functions that train and validate it.

A layer above :mod:`recjax.models` and :mod:`recjax.train`: it imports both (the
trainers and validators by reference), and neither imports it. A family's recommended
training settings (optimizer, learning rate, batch size, epochs, patience) are
:data:`recjax.config.FAMILY_SETTINGS`, below it, so that a :class:`RunConfig` knows
them; a new family is an entry here and one there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from flax import nnx

from recjax.config import RunConfig, from_dict
from recjax.data.dataset import Ratings
from recjax.models.als import ALS, IALS, ALSConfig, IALSConfig, build_als, build_ials
from recjax.models.base import rating_inputs
from recjax.models.capabilities import Capabilities, capabilities_of
from recjax.models.dae import DAE, DAEConfig, build_dae, dae_inputs
from recjax.models.dnn import DNN, DNNConfig
from recjax.models.ease import EASEConfig, EASEModel, build_ease
from recjax.models.mf import MF, MFConfig
from recjax.models.pair import PairConfig, PairModel, build_pair, load_jsonl_splits, pair_inputs
from recjax.models.softmax import SoftmaxConfig, SoftmaxModel, build_softmax, softmax_inputs
from recjax.train import alternating, loop
from recjax.train.validation import bag_validator, ranking_validator

__all__ = ["MODELS", "ModelSpec", "OBJECTIVES", "make_configs"]

#: what a family with its own objective optimises, instead of the run's task (the
#: ``RunConfig.task`` it records is the default, which it does not optimise)
OBJECTIVES = {
    # a softmax over the catalogue of each user's held-out movies (sampled softmax,
    # Mult-DAE's multinomial likelihood): the integer-label cross-entropy of
    # :data:`recjax.train.losses.TASK_LOSSES`
    "multinomial": "classification",
    # least squares on the user-item pattern (iALS's weighted preferences, EASE's
    # ridge), solved exactly by the family's own trainer: no task loss
    "implicit": None,
}


@dataclass(frozen=True)
class ModelSpec:
    """How the training core builds one model family.

    Attributes
    ----------
    config : type
        The model's frozen config dataclass.
    build : callable
        ``build(model_cfg, train, *, task, seed) -> nnx.Module``: the module for a
        training part (its vocabularies and statistics), a task and a seed; never the
        run's configuration.
    tasks : tuple of str
        Supported ``RunConfig.task`` values: the user's task, which the family optimises
        unless it declares its own :attr:`objective` (then only the default,
        ``"regression"``, is accepted, and recorded in its runs as before).
    inputs : callable
        ``inputs(part, *, task, binary_threshold) -> dict`` of NumPy arrays with a
        leading example axis, holding ``label``: what the module's ``__call__`` reads
        from a batch.
    load : callable, optional
        ``load(model_cfg, *, task, val_fraction, seed) -> {"train", "val", "test"} or
        None``: the model's own data source (e.g. Object2Vec JSON Lines); ``None``
        falls back to the dataset split. ``build`` and ``inputs`` then receive its parts.
    prepare : callable, optional
        ``prepare(model_cfg, parts) -> {part: arrays}``: replaces ``inputs`` when a
        part's examples depend on the model config or on other parts (the softmax
        model's validation bags are the training movies).
    objective : str, optional
        What the family optimises when it is not the run's task (a key of
        :data:`OBJECTIVES`: ``"multinomial"``, ``"implicit"``); ``None``: the run's task
        (squared error of ratings, or the logistic loss of binary labels).
    validator : callable, optional
        The family's validation function,
        ``validator(model, inputs) -> evaluate(params, part, prefix, sample, seed) -> metrics``
        (e.g. :func:`recjax.train.validation.bag_validator`; ``sample``: how many of the
        part's users to measure, seeded, 0 for all), replacing the task's
        rating or binary metrics of its predictions.
    monitor : (str, bool), optional
        Validation metric driving early stopping and whether higher is better,
        instead of the task's.
    module : type
        The family's module class; its ``capabilities`` attribute declares what the
        family can do (:attr:`capabilities`).
    trainer : callable
        The family's training function, with :func:`recjax.train.loop.fit`'s parameters
        and result (the default: SGD epochs; :func:`recjax.train.alternating.fit`:
        exact sweeps); :meth:`fit` calls it.
    """

    config: type
    build: Callable[..., nnx.Module]
    tasks: tuple[str, ...]
    inputs: Callable[..., dict[str, np.ndarray]] = rating_inputs
    load: Callable[..., dict[str, Any] | None] | None = None
    prepare: Callable[[Any, dict[str, Any]], dict[str, dict[str, np.ndarray]]] | None = None
    objective: str | None = None
    validator: Callable[..., Callable[..., dict[str, float]]] | None = None
    monitor: tuple[str, bool] | None = None
    module: type | None = None
    trainer: Callable[..., loop.FitResult] = loop.fit

    def __post_init__(self) -> None:
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")

    def fit(self, *args: Any, **kwargs: Any) -> loop.FitResult:
        """Train with the family's :attr:`trainer` (its parameters and
        :class:`recjax.train.loop.FitResult`)."""
        return self.trainer(*args, **kwargs)

    @property
    def loss(self) -> str | None:
        """The :data:`recjax.train.losses.TASK_LOSSES` entry the family trains with
        instead of the run's task's (its :attr:`objective`'s; ``None``: the task's)."""
        return None if self.objective is None else OBJECTIVES[self.objective]

    @property
    def predicts_ratings(self) -> bool:
        """Whether the family's pair scores are its task's labels (ratings, or binary
        logits): it scores pairs and optimises the run's task. A family with its own
        :attr:`objective` scores pairs for ranking only (iALS's preferences, EASE's
        scores); no rating metric or rating scale applies to them."""
        return self.capabilities.pairs and self.objective is None

    def make_validator(self, model: Any, inputs: dict[str, dict[str, np.ndarray]]) -> Any:
        """The family's :attr:`validator` of ``model`` on ``inputs`` (None without one)."""
        return None if self.validator is None else self.validator(model, inputs)

    @property
    def capabilities(self) -> Capabilities:
        """What the family's models can do (:class:`recjax.models.base.Capabilities`),
        as its module class declares."""
        return capabilities_of(self.module)

    def examples(self, model_cfg: Any, parts: dict[str, Any], *, task: str = "regression",
                 binary_threshold: float = 3.0) -> dict[str, dict[str, np.ndarray]]:
        """The training examples of every part: ``prepare(model_cfg, parts)``, or
        ``inputs`` of each part."""
        if self.prepare is not None:
            return self.prepare(model_cfg, parts)
        return {name: self.inputs(part, task=task, binary_threshold=binary_threshold)
                for name, part in parts.items()}


def _build_mf(cfg: MFConfig, train: Ratings, task: str = "regression", seed: int = 0) -> MF:
    return MF(cfg, train.n_users, train.n_items, global_mean=float(np.mean(train.rating)),
              rating_scale=train.rating_scale, task=task, rngs=nnx.Rngs(seed))


def _build_dnn(cfg: DNNConfig, train: Ratings, task: str = "regression", seed: int = 0) -> DNN:
    return DNN(cfg, train.n_users, train.n_items, global_mean=float(np.mean(train.rating)), task=task,
               rngs=nnx.Rngs(seed))


MODELS: dict[str, ModelSpec] = {
    # (each family's recommended training settings: recjax.config.FAMILY_SETTINGS)
    "mf": ModelSpec(MFConfig, _build_mf, ("regression", "binary"), module=MF),
    # dropout 0.7 and side features chosen on validation (ua.base minus 5%)
    "pair": ModelSpec(PairConfig, build_pair, ("regression", "binary"), inputs=pair_inputs,
                      load=load_jsonl_splits, module=PairModel),
    "dnn": ModelSpec(DNNConfig, _build_dnn, ("regression", "binary"), module=DNN),
    "softmax": ModelSpec(SoftmaxConfig, build_softmax, ("regression",), prepare=softmax_inputs,
                         objective="multinomial", validator=bag_validator,
                         monitor=("val_loss", False), module=SoftmaxModel),
    # Mult-DAE: its dropout and width chosen on ub (ranking NDCG@10 0.301 there, EASE 0.310)
    "dae": ModelSpec(DAEConfig, build_dae, ("regression",), prepare=dae_inputs, objective="multinomial",
                     validator=bag_validator, monitor=("val_loss", False), module=DAE),
    # alternating least squares: an epoch is one sweep (users, then items)
    "ials": ModelSpec(IALSConfig, build_ials, ("regression",), objective="implicit", validator=ranking_validator,
                      monitor=("val_ndcg@10", True), module=IALS, trainer=alternating.fit),
    # explicit ALS regresses the ratings (the run's task)
    "als": ModelSpec(ALSConfig, build_als, ("regression",), module=ALS, trainer=alternating.fit),
    # EASE's closed form is one "sweep": B solved exactly from the training pattern
    "ease": ModelSpec(EASEConfig, build_ease, ("regression",), objective="implicit", validator=ranking_validator,
                      monitor=("val_ndcg@10", True), module=EASEModel, trainer=alternating.fit),
}


def make_configs(model: str = "mf", train: dict[str, Any] | None = None,
                 model_values: dict[str, Any] | None = None) -> tuple[RunConfig, Any]:
    """(RunConfig, model config) of a ``model`` family from plain values: the family's
    own defaults wherever ``train`` and ``model_values`` say nothing.

    Example
    -------
    >>> run_cfg, mf_cfg = make_configs("mf", {"split": "u1"})
    >>> run_cfg.optimizer, run_cfg.split, mf_cfg.embedding_dim
    ('sgd', 'u1', 1024)
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return (from_dict(RunConfig, {**(train or {}), "model": model}),
            from_dict(MODELS[model].config, model_values or {}))
