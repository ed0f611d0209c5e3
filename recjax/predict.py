"""Inference from a trained run folder, in SageMaker Object2Vec's JSON format.

A request is ``{"instances": [...]}`` (or JSON Lines, one instance per line).
Each instance is a pair ``{"in0": [...], "in1": [...]}`` or one side alone,
``{"in0": [...]}`` or ``{"in1": [...]}``; one request holds one kind.

Responses::

    pairs, regression:          {"predictions": [{"scores": [3.71]}, ...]}
    pairs, binary (softmax):    {"predictions": [{"scores": [0.22, 0.78], "predicted_label": 1}, ...]}
    one side:                   {"predictions": [{"embeddings": [0.1, -0.3, ...]}, ...]}

``scores`` is the predicted rating, or the two class probabilities (class 1 =
"recommend"); ``embeddings`` is the side's encoding (``enc_dim`` numbers).

Tokens: a run trained on Object2Vec JSON Lines takes token ids as in its
files. A run trained on MovieLens takes the raw ids — ``in0 = [user id]``,
``in1 = [movie id]`` — and adds the side-feature tokens itself. Runs of ``pair``,
``mf`` and ``dnn`` (which score (user, movie) pairs) can answer.

Example
-------
>>> from recjax.predict import respond, load_trained            # doctest: +SKIP
>>> trained = load_trained("runs/pair-ml-100k-ua")              # doctest: +SKIP
>>> respond(trained, {"instances": [{"in0": [1], "in1": [50]}]})  # doctest: +SKIP
{'predictions': [{'scores': [4.53]}]}
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recjax.data.dataset import Ratings
from recjax.data.jsonlines import PairData
from recjax.data.movielens import MalformedFileError
from recjax.scoring import module_predictions
from recjax.train.step import Model

__all__ = ["Trained", "load_trained", "predict_pairs", "embed", "respond", "read_requests"]

PAIR_MODELS = ("pair", "mf", "dnn")


@dataclass
class Trained:
    """A run folder's model with its best parameters.

    Attributes
    ----------
    module : nnx.Module
        The model bound to its best parameters.
    train_cfg, model_cfg : dataclass
    data : Ratings or PairData
        The training part (vocabularies for MovieLens runs).
    """

    module: Any
    train_cfg: Any
    model_cfg: Any
    data: Any

    @property
    def movielens(self) -> bool:
        return isinstance(self.data, Ratings)


def load_trained(run_dir: str | os.PathLike) -> Trained:
    """A run's model, as :meth:`recjax.runs.Run.open` verifies and restores it (the refitted
    model of a ``--refit`` run), with the run's own vocabularies: no dataset is read.

    Raises
    ------
    recjax.runs.RunFolderError
        Not a usable run folder.
    ValueError
        A model family that does not score pairs.
    recjax.train.CheckpointError
        A damaged, missing or foreign checkpoint.
    """
    from recjax.runs import Run

    run = Run.open(run_dir)
    if run.train_config.model not in PAIR_MODELS:
        raise ValueError(f"predict answers runs of {', '.join(PAIR_MODELS)}; {run_dir} is a "
                         f"{run.train_config.model!r} run")
    return Trained(run.model(), run.train_config, run.model_config, run.data)


# ----------------------------------------------------------------------------- tokens
def _pad(rows: list[list[int]]) -> np.ndarray:
    return PairData.from_lists(rows, rows).in0


def _movielens_index(trained: Trained, side: int, rows: list[list[int]]) -> np.ndarray:
    """Raw user (side 0) or movie (side 1) ids, one per instance -> indices [n]."""
    bad = [n for n, r in enumerate(rows) if len(r) != 1]
    if bad:
        raise ValueError(f"instance {bad[0]}: a MovieLens run takes one raw id per side, "
                         f"e.g. {{\"in0\": [1], \"in1\": [50]}}; got in{side}={rows[bad[0]]}")
    vocab = trained.data.users if side == 0 else trained.data.items
    return vocab.resolve([r[0] for r in rows], "instances")


def _token_batch(trained: Trained, side: int, rows: list[list[int]]) -> np.ndarray:
    tokens = _pad(rows)
    vocab = trained.module.vocab_sizes[side]
    too_big = tokens >= vocab
    if too_big.any():
        n = int(np.flatnonzero(too_big.any(axis=1))[0])
        raise ValueError(f"instance {n}: in{side} token {int(tokens[too_big].max())} is outside the "
                         f"model's vocabulary ({vocab} tokens)")
    return tokens


def _batch(trained: Trained, in0: list[list[int]], in1: list[list[int]]) -> dict[str, np.ndarray]:
    if trained.movielens:
        return {"user": _movielens_index(trained, 0, in0), "item": _movielens_index(trained, 1, in1)}
    return {"in0": _token_batch(trained, 0, in0), "in1": _token_batch(trained, 1, in1)}


# ----------------------------------------------------------------------------- inference
def predict_pairs(trained: Trained, in0: list[list[int]], in1: list[list[int]]) -> np.ndarray:
    """Scores of (in0, in1) pairs: ratings [n, 1] (regression) or class probabilities [n, 2] (binary)."""
    if len(in0) != len(in1):
        raise ValueError(f"{len(in0)} in0 sequences but {len(in1)} in1 sequences")
    if not in0:
        return np.zeros((0, 1 if trained.train_cfg.task == "regression" else 2), np.float32)
    out = module_predictions(trained.module, _batch(trained, in0, in1))  # compiled once per size
    if trained.train_cfg.task == "regression":
        return out[:, None]
    p1 = 1.0 / (1.0 + np.exp(-out))
    return np.stack([1.0 - p1, p1], axis=1)


def embed(trained: Trained, side: int, tokens: list[list[int]]) -> np.ndarray:
    """Embeddings [n, d] of one side's sequences (0 = in0 / user, 1 = in1 / movie)."""
    module = trained.module
    if not tokens:
        return np.zeros((0, 0), np.float32)
    if trained.movielens and not hasattr(module, "encode"):
        return np.asarray(module.embeddings()[side])[_movielens_index(trained, side, tokens)]
    if trained.movielens:
        table = module.in0_tokens[...] if side == 0 else module.in1_tokens[...]
        batch = table[_movielens_index(trained, side, tokens)]
    else:
        batch = jnp.asarray(_token_batch(trained, side, tokens))
    model, encode = _encoder(module, side)
    return np.asarray(encode(model.params, batch))


@functools.lru_cache(maxsize=16)
def _encoder(module: Any, side: int) -> tuple[Model, Any]:
    """(split model, jitted ``encode(params, tokens)`` of one side), made once per module."""
    model = Model.split(module)
    return model, jax.jit(lambda params, t: model.bind(params).encode(side, t))


def _valid_side(value: Any, raw_ids: bool) -> bool:
    """A side of an instance: one raw id (int or str) for runs with vocabularies, else tokens."""
    if not isinstance(value, list) or not value:
        return False
    if raw_ids:
        return len(value) == 1 and isinstance(value[0], (int, str)) and not isinstance(value[0], bool)
    return all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _round(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, np.float64)]


def respond(trained: Trained, request: dict[str, Any]) -> dict[str, Any]:
    """Answer an Object2Vec request dict (see the module docstring for the formats).

    Raises
    ------
    ValueError
        No ``instances`` list, an instance with neither side, a mix of kinds, or
        ids/tokens the model does not know.
    """
    instances = request.get("instances") if isinstance(request, dict) else None
    if not isinstance(instances, list):
        raise ValueError('a request is {"instances": [{"in0": [...], "in1": [...]}, ...]}')
    kinds = set()
    for n, inst in enumerate(instances):
        if not isinstance(inst, dict) or not ({"in0", "in1"} & set(inst)):
            raise ValueError(f"instance {n}: expected an object with 'in0' and/or 'in1'")
        for key in ("in0", "in1"):
            if key in inst and not _valid_side(inst[key], trained.movielens):
                kind = ("a list of one raw id (integer or string)" if trained.movielens
                        else "a non-empty list of non-negative integers")
                raise ValueError(f"instance {n}: {key!r} must be {kind}")
        kinds.add(tuple(k for k in ("in0", "in1") if k in inst))
    if len(kinds) > 1:
        raise ValueError("a request holds pairs only, or in0 only, or in1 only; split it")
    kind = kinds.pop() if kinds else ("in0", "in1")
    if kind == ("in0", "in1"):
        scores = predict_pairs(trained, [i["in0"] for i in instances], [i["in1"] for i in instances])
        if trained.train_cfg.task == "regression":
            return {"predictions": [{"scores": _round(row)} for row in scores]}
        return {"predictions": [{"scores": _round(row), "predicted_label": int(np.argmax(row))}
                                for row in scores]}
    side = 0 if kind == ("in0",) else 1
    vectors = embed(trained, side, [i[kind[0]] for i in instances])
    return {"predictions": [{"embeddings": _round(row)} for row in vectors]}


def read_requests(path: str | os.PathLike) -> dict[str, Any]:
    """A request from a file: one JSON object ``{"instances": [...]}``, or JSON Lines of instances.

    Raises
    ------
    MalformedFileError
        Neither form, naming the file and line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "instances" in whole:
        return whole
    instances = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            instances.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise MalformedFileError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
    return {"instances": instances}
