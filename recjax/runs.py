"""Run folders opened and queried: :class:`Run`.

:class:`Run` reads a run folder (``Run.open(path)``; :mod:`recjax.run_folder` holds its
format and writer): the CLI's ``evaluate``, ``recommend``,
``neighbors``, ``plot`` and ``predict`` and research code use nothing else. Queries
take raw ids and return raw ids, a scalar or an array (the output's rank follows
the input's), as implicit's and Surprise's recommenders do.


Example
-------
>>> import tempfile
>>> import numpy as np, pandas as pd
>>> from recjax.config import RunConfig
>>> from recjax.data import Ratings, split_ratings
>>> from recjax.experiment import run
>>> from recjax.models.mf import MFConfig
>>> from recjax.runs import Run
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"user": [f"u{u}" for u in rng.integers(0, 30, 900)],
...                    "item": [f"i{i}" for i in rng.integers(0, 20, 900)],
...                    "rating": rng.integers(1, 11, 900)}).drop_duplicates(["user", "item"])
>>> splits = split_ratings(Ratings.from_pandas(df, rating_scale=(1, 10)), "random", seed=0)
>>> out = tempfile.mkdtemp() + "/run"
>>> _ = run(RunConfig(epochs=2, quiet=True, out=out), MFConfig(embedding_dim=4), splits=splits)
>>> r = Run.open(out)
>>> top = r.recommend("u3", N=3)
>>> top.ids.shape, str(top.ids[0])[0]
((3,), 'i')
>>> [len(ids) for ids in r.recommend(["u3", "u4"], N=3).ids]
[3, 3]
>>> float(r.predict("u3", "i7")) <= 10.0
True
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from recjax._checks import positive_int
from recjax.data.bags import user_item_pattern
from recjax.data.dataset import Ratings, UnknownIdError
from recjax.data.splits import PARTS
from recjax.retrieval import TopK, dense_topk
from recjax.run_folder import (
    Embeddings,
    RunFolderError,
    fingerprint_digest,
    load_embeddings,
    load_parts,
    read_metrics,
    verify,
)
from recjax.scoring import EmbeddingScorer, as_scorer, module_predictions

__all__ = ["Run", "RunFolderError", "Embeddings", "MEASURES", "QUERIES"]

MEASURES = ("dot", "cosine", "l2")  # how a run's vectors score items: Run.scorer, Run.similar_items
QUERIES = ("recommend", "fold_in", "similar_items", "predict")  # what Run.refusal answers for


@dataclass(eq=False)
class Run:
    """A finished run folder, opened and verified (:meth:`open`).

    Attributes
    ----------
    path : Path
    train_config : RunConfig
    model_config : the model family's config dataclass
    splits : dict
        ``train`` (the part the model was first fitted on), ``val`` and ``test``, as
        stored in the folder: :class:`~recjax.data.Ratings` sharing one vocabulary, or
        :class:`~recjax.data.PairData` for runs trained on Object2Vec token files.
    user_embeddings : float32 [n_users, d]
    item_embeddings : float32 [n_items, d]
        Rows in vocabulary order (index ``i`` is raw id ``data.items.ids[i]``).
    metrics : list of dict
        ``metrics.jsonl``: one record per epoch, then the ``final`` one.
    fingerprint : dict
        :func:`recjax.run_folder.fingerprint` of the data the run was trained on.
    dataset, split : str
        The data in words: ``ml-100k`` and ``ua``; a file's name and ``random``; or the
        parts' name and ``given`` for parts passed to :func:`recjax.experiment.run`.
    """

    path: Path
    train_config: Any
    model_config: Any
    splits: dict[str, Any]
    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    metrics: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    split: str = ""
    # the model and scorers built so far: on the Run itself, so they go with it
    _built: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    # -- opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        """Open a finished run folder, verifying every file against run.json's sha256.

        Raises
        ------
        RunFolderError
            Not a run folder; one being trained (locked) or interrupted (continue it
            with ``--resume``); written by another recjax format; a file missing or
            damaged.
        """
        from recjax.config import RunConfig, from_dict
        from recjax.families import MODELS

        path = Path(path)
        status, config = verify(path)
        try:
            train_cfg = from_dict(RunConfig, config["train"])
            spec = MODELS[train_cfg.model]
            model_cfg = from_dict(spec.config, config["model"])
        except (KeyError, TypeError, ValueError) as err:
            raise RunFolderError(f"{path}/config.json does not describe a run of this recjax "
                                 f"({type(err).__name__}: {err})") from None
        users, items = load_embeddings(path, status)
        data = status["data"]
        return cls(path, train_cfg, model_cfg, load_parts(path, status), users, items,
                   read_metrics(path / "metrics.jsonl"), data["fingerprint"], data["dataset"],
                   data["split"])

    # -- what the run holds
    @property
    def data(self) -> Ratings:
        """The training part: vocabularies, ``item_info`` and ``user_info``."""
        return self.splits["train"]

    @property
    def has_vocabulary(self) -> bool:
        """Whether the run was trained on ratings with raw user / item ids (not on token files)."""
        return isinstance(self.data, Ratings)

    @property
    def name(self) -> str:
        """``model`` (``model-binary`` for the binary task)."""
        cfg = self.train_config
        return cfg.model + ("-binary" if cfg.task == "binary" else "")

    @property
    def refit(self) -> bool:
        """Whether the model was refitted on train + validation (``--refit``)."""
        return "refit_epochs" in self.final_metrics

    @functools.cached_property
    def item_titles(self) -> np.ndarray:
        """Title of every item index (its raw id as text without metadata)."""
        return np.asarray(self.data.item_titles(np.arange(self.data.n_items)), dtype=object)

    @functools.cached_property
    def item_genres(self) -> np.ndarray:
        """Genres of every item index as ``"A-B-C"`` (the lab's format), '' if unknown."""
        info = self.data.item_info
        if info is None or "genres" not in info:
            return np.full(self.data.n_items, "", dtype=object)
        return np.asarray([_genres_text(g) for g in info["genres"]], dtype=object)

    @functools.cached_property
    def rated(self) -> sp.csr_matrix:
        """Every rating the run's data holds (train, validation and test) as a user x
        item pattern: what a user has already seen."""
        return user_item_pattern([self.splits[p] for p in PARTS])

    @functools.cached_property
    def final_metrics(self) -> dict[str, Any]:
        """The ``final`` record of ``metrics.jsonl``."""
        finals = [m for m in self.metrics if m.get("event") == "final"]
        return finals[-1] if finals else {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch records of the validated phase (refit epochs excluded)."""
        by_epoch = {m["epoch"]: m for m in self.metrics if "epoch" in m and m.get("phase") != "refit"}
        return [by_epoch[e] for e in sorted(by_epoch)]

    def embeddings(self) -> Embeddings:
        """Raw ids and vectors (``embeddings.npz``)."""
        self._need_vocabulary("embeddings")
        return Embeddings(self.data.users.ids, self.user_embeddings, self.data.items.ids,
                          self.item_embeddings)

    # -- the model
    def model(self) -> Any:
        """The trained model whose test metrics the run reports: the best parameters
        (``checkpoints/best``), or, for a ``--refit`` run, the refitted model
        (``checkpoints/refit/best``, built on train + validation as it was trained).
        The checkpoint is verified (manifest sha256, format, data fingerprint, table
        sizes) before it is read.

        Raises
        ------
        recjax.train.CheckpointError
            A damaged, missing or foreign checkpoint.
        """
        if "model" not in self._built:
            self._built["model"] = self._restore_model()
        return self._built["model"]

    def _restore_model(self) -> Any:
        """The model of :meth:`model`, restored from its verified checkpoint."""
        from recjax.families import MODELS
        from recjax.train.checkpoint import Checkpoints, param_shapes
        from recjax.train.step import Model

        spec = MODELS[self.train_config.model]
        train, folder = self.splits["train"], self.path / "checkpoints"
        if self.refit:
            train, folder = train.concat(self.splits["val"]), folder / "refit"
        model = Model.split(spec.build(self.model_config, train, task=self.train_config.task,
                                       seed=self.train_config.seed))
        expect = {"param_shapes": param_shapes(model.params),
                  "data_fingerprint": fingerprint_digest(self.fingerprint)}
        params, _ = Checkpoints(folder).restore_best(model.params, expect)
        return model.bind(params)

    def module(self) -> Any:
        """The trained model (:meth:`model`)."""
        return self.model()

    def rating_predictions(self, part: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """(predictions, labels), float64 [n] each, for every example of a split part:
        predicted ratings (regression) or logits of the positive class (binary), as the
        run's own metrics score them.

        Raises
        ------
        RunFolderError
            The model predicts no per-rating values (softmax, Mult-DAE).
        """
        from recjax.families import MODELS

        spec = MODELS[self.train_config.model]
        if not spec.capabilities.pairs:
            raise RunFolderError(f"{self.path}: a {self.train_config.model} model scores items "
                                 f"for users, not single ratings")
        inputs = spec.inputs(self.splits[part], **self._labels)
        return module_predictions(self.model(), inputs), np.asarray(inputs["label"], np.float64)

    def scorer(self, measure: str = "dot") -> Any:
        """How this run ranks items for its users (built once per measure).

        ``dot``: the model's own ranking, through the model contract
        (:func:`recjax.scoring.as_scorer`): its ranking vectors (MF: ``[U_u, 1] . [V_i,
        b_i]``, the item bias included), for a bag model its user tower over each user's
        train + validation movies (the bags its test metrics use), or else its full
        network over all items; ``cosine`` / ``l2``: the raw embeddings of
        ``embeddings.npz``.
        """
        _check_measure(measure)
        self._need_vocabulary("ranking")
        if ("scorer", measure) not in self._built:
            self._built["scorer", measure] = self._build_scorer(measure)
        return self._built["scorer", measure]

    def _build_scorer(self, measure: str) -> Any:
        """The scorer of :meth:`scorer` for a checked ``measure``."""
        from recjax.families import MODELS

        if measure != "dot":
            return EmbeddingScorer(self.user_embeddings, self.item_embeddings, measure)
        spec = MODELS[self.train_config.model]
        bags = None
        if spec.capabilities.bag:
            bags = spec.prepare(self.model_config, self.splits)["test"]["bag"]
        return as_scorer(self.model(), bags=bags)

    # -- queries: raw ids in, raw ids out
    def refusal(self, query: str) -> str | None:
        """Why this run cannot answer ``query``, or None when it can, without running it:
        read from what its family declares (:class:`recjax.models.capabilities.Capabilities`)
        and what its folder holds. The query itself refuses with this message (a
        ``ValueError``); a server answers requests for it so (422).

        Parameters
        ----------
        query : {"recommend", "fold_in", "similar_items", "predict"}
            :meth:`recommend` for the run's users, :meth:`fold_in` (``recommend`` for new
            users), :meth:`similar_items`, :meth:`predict`.
        """
        from recjax.families import MODELS

        if query not in QUERIES:
            raise ValueError(f"unknown query {query!r}; choose one of {', '.join(QUERIES)}")
        family = self.train_config.model
        caps = MODELS[family].capabilities
        if query == "fold_in" and not caps.fold_in:
            able = [name for name, spec in MODELS.items() if spec.capabilities.fold_in]
            return (f"a {family} run cannot fold in a new user: its users are tokens learned in "
                    f"training (retrain with the user's data, or use {', '.join(able[:-1])} or "
                    f"{able[-1]})")
        if query == "predict" and not caps.pairs:
            return f"a {family} run scores items for users, not (user, item) pairs; use recommend"
        if not self.has_vocabulary:
            return self._no_vocabulary("fold-in" if query == "fold_in" else query)
        if query == "similar_items" and self.data.n_items < 2:
            return "the catalogue has a single item: it has no similar items"
        return None

    def _require(self, query: str) -> None:
        """Raise :meth:`refusal`'s reason, if any, as a ValueError."""
        reason = self.refusal(query)
        if reason is not None:
            raise ValueError(reason)

    def recommend(self, users: Any = None, N: int = 10, *, filter_already_liked_items: bool = True,
                  items: Any = None, new_user_items: Any = None,
                  new_user_ratings: Any = None) -> TopK:
        """The top ``N`` items for raw user ids, or for a new user (fold-in).

        Parameters
        ----------
        users : raw id or array of raw ids [n]
            Users of the training data. Omit it when giving ``new_user_items``.
        N : int
            Items per user (at most the number of candidates).
        filter_already_liked_items : bool
            Leave out the items the user rated anywhere in the run's data (train,
            validation, test), or the new user's own items.
        items : array of raw item ids, optional
            Rank only these candidates.
        new_user_items : array of raw item ids, or a list of such arrays, optional
            A user who was not in the training data, given by the items they
            interacted with (or many such users, one list each); folded in without
            retraining, all in one batched call (see :meth:`fold_in`).
        new_user_ratings : array of float (a list of arrays for many users), optional
            Their ratings of ``new_user_items`` (needed by rating models).

        Returns
        -------
        TopK
            ``ids`` raw item ids and ``scores`` (higher is better), best first. Users of
            the training data get only real candidates, as the CLI and the server answer:
            arrays [m] for a scalar user, ``m = min(N, candidates left)``; for an array of
            ``n`` users, ``ids`` and ``scores`` are lists of ``n`` such arrays, row ``u``
            user ``u``'s (shorter than ``N`` where that user has fewer candidates left: the
            rows may differ in length). New users alike: arrays for one, lists of arrays
            for a list of them.

        Raises
        ------
        ValueError
            Unknown raw ids, or ids of the wrong type (:class:`recjax.data.UnknownIdError`,
            naming the argument and position: ``users[3]: unknown user id 99999 (the run has
            943 users)``), ``N`` not a positive
            integer, both or neither of ``users`` and ``new_user_items``, a model family
            that cannot fold in a user.
        """

        self._require("recommend")
        n = positive_int(N, "N")
        if (users is None) == (new_user_items is None):
            raise ValueError("give exactly one of users and new_user_items")
        candidates = None if items is None else np.unique(self._index("item", items, "items"))
        if new_user_items is not None:
            many = _many_users(new_user_items)
            users, own = self.fold_in(new_user_items, new_user_ratings)
            folded = EmbeddingScorer(users, self._fold_in_items)
            exclude = own if filter_already_liked_items else None
            if candidates is None:
                top = folded.topk(np.arange(len(users)), min(n, self.data.n_items), exclude)
            else:
                top = self._top(folded.scores(np.arange(len(users))), n, exclude, candidates)
            ids, scores = self._rows(top)
            return TopK(ids, scores) if many else TopK(ids[0], scores[0])
        index = self._index("user", users, "users").ravel()
        exclude = self.rated if filter_already_liked_items else None
        if candidates is None:
            k = min(n, self.data.n_items)
            top = self.scorer("dot").topk(index, k, exclude)
        else:
            scores = self.scorer("dot").scores(index)
            top = self._top(scores, n, exclude[index] if exclude is not None else None, candidates)
        ids, scores = self._rows(top)
        return TopK(ids[0], scores[0]) if np.ndim(users) == 0 else TopK(ids, scores)

    def similar_items(self, items: Any, N: int = 10, *, measure: str = "cosine") -> TopK:
        """The ``N`` items nearest to each raw item id in the item embedding space
        (the item itself left out).

        Returns
        -------
        TopK
            Raw item ids and similarities (dot, cosine; minus the squared distance for
            ``l2``), shape [N] for a scalar item, [n, N] for an array.
        """
        from recjax.retrieval import topk

        _check_measure(measure)
        self._require("similar_items")
        n = positive_int(N, "N")
        index = self._index("item", items, "items").ravel()
        k = min(n, self.data.n_items - 1)
        self_only = sp.csr_matrix((np.ones(len(index)), (np.arange(len(index)), index)),
                                  shape=(len(index), self.data.n_items))
        top = topk(self.item_embeddings[index], self.item_embeddings, k, metric=measure,
                   exclude=self_only)
        ids, scores = self._raw_top(top)
        return TopK(ids[0], scores[0]) if np.ndim(items) == 0 else TopK(ids, scores)

    def predict(self, users: Any, items: Any, *, clip: bool = True) -> np.ndarray:
        """Predictions for (user, item) pairs of raw ids, float64 with the inputs'
        broadcast shape: ratings for regression runs (clipped to the rating scale
        unless ``clip=False``), probabilities of the positive class for binary runs;
        for a family that ranks by its own scores (iALS's preferences, EASE's ``X B``:
        :attr:`recjax.families.ModelSpec.predicts_ratings` is false) its raw scores,
        never clipped to a rating scale they are not on.

        Raises
        ------
        ValueError
            Unknown ids; a model that scores items for users rather than pairs
            (softmax, Mult-DAE: use :meth:`recommend`).
        """
        from recjax.families import MODELS

        self._require("predict")
        spec = MODELS[self.train_config.model]
        u, i = np.broadcast_arrays(self._index("user", users, "users"),
                                   self._index("item", items, "items"))
        user, item = u.ravel().astype(np.int32), i.ravel().astype(np.int32)
        part = dataclasses.replace(self.data, user=user, item=item,
                                   rating=np.zeros(len(user), np.float32),
                                   timestamp=np.zeros(len(user), np.int64))
        out = module_predictions(self.model(), spec.inputs(part, **self._labels)) if len(user) else \
            np.zeros(0)
        if not spec.predicts_ratings:
            pass  # scores, not ratings
        elif self.train_config.task == "binary":
            out = 1.0 / (1.0 + np.exp(-out))
        elif clip:
            out = np.clip(out, *self.data.rating_scale)
        return out.reshape(u.shape)

    def fold_in(self, items: Any, ratings: Any = None) -> tuple[np.ndarray, sp.csr_matrix]:
        """User vectors for users not seen in training, from their items (and ratings),
        without retraining: one batched call for any number of users.

        The family folds the users in itself, as it declares (the ``fold_in`` capability
        of :mod:`recjax.models.base`):

        * MF, regression, and ALS: each user's factors and bias by ridge regression
          against the frozen item table and biases; need ``ratings``.
        * MF, binary: L2-regularised logistic regression of the user's positive items
          against every other item as a sampled negative would weigh it; ``ratings``
          above the binary threshold count as positives when given.
        * iALS: the exact solve of the user's row against the item factors.
        * EASE: the user's 0/1 row (times ``B`` when scored).
        * softmax and Mult-DAE: the model's user tower over the bag of items.
        * pair and dnn: cannot (their users are tokens learned in training): a
          ``ValueError`` says so.

        Parameters
        ----------
        items : raw item ids [m] (one user), or a list of such lists (many users)
        ratings : floats of the same shape, optional

        Returns
        -------
        (user vectors float32 [n, d'], the users' items CSR [n, n_items]): user ``u``'s
        scores are ``item_vectors @ users[u]``, ``item_vectors`` being the item side of
        the model's ranking vectors (what :meth:`recommend` scores them against).
        """
        self._require("fold_in")
        user_items, flat = self.new_user_rows(items, ratings)
        users = self.model().fold_in(user_items, flat, binary_threshold=self.train_config.binary_threshold)
        return users, user_items

    def new_user_rows(self, items: Any, ratings: Any = None) -> tuple[sp.csr_matrix, np.ndarray | None]:
        """New users' raw item ids (and ratings) checked and resolved, without folding
        them in: (their items CSR [n, n_items], their ratings float64 [nnz] in its entry
        order, or None). What :meth:`fold_in` folds in; a server checks each request
        with it before batching requests together.

        Raises
        ------
        ValueError
            No items, an unknown id, an item listed twice, ratings not one per item,
            NaN or outside the rating scale: naming the user's list
            (``new_user_items[3]`` for the fourth of many users).
        """
        self._need_vocabulary("fold-in")
        many = _many_users(items)
        lists = [np.asarray(raw).ravel() for raw in (items if many else [items])]
        if not lists:
            raise ValueError("new_user_items is empty: give at least one user's items")
        names = [f"new_user_items[{u}]" if many else "new_user_items" for u in range(len(lists))]
        for raw, name in zip(lists, names):
            if raw.size == 0:
                raise ValueError(f"{name} is empty: give at least one item")
        try:  # every user's ids in one call; an unknown one is then named in its own user's list
            index = self._index("item", np.concatenate(lists), "new_user_items")
        except UnknownIdError:
            for raw, name in zip(lists, names):
                self._index("item", raw, name)
            raise
        lengths = np.array([len(raw) for raw in lists])
        row = np.repeat(np.arange(len(lists)), lengths)
        _, first = np.unique(row * np.int64(self.data.n_items) + index, return_index=True)
        if len(first) != len(index):
            twice = row[np.setdiff1d(np.arange(len(index)), first)[0]]
            raise ValueError(f"{names[twice]} lists an item twice")
        flat = None if ratings is None else self._new_ratings(ratings, lengths, many)
        user_items = sp.csr_matrix((np.ones(len(index), np.float32), index, np.r_[0, np.cumsum(lengths)]),
                                   shape=(len(lists), self.data.n_items))
        return user_items, flat

    def _new_ratings(self, ratings: Any, lengths: np.ndarray, many: bool) -> np.ndarray:
        """New users' ratings float64 [sum(lengths)], flat: one per item, finite, on the
        run's scale; a bad one named in its own user's list."""
        lists = [np.asarray(r, np.float64).ravel() for r in (ratings if many else [ratings])]
        names = [f"new_user_ratings[{u}]" if many else "new_user_ratings" for u in range(len(lists))]
        if len(lists) != len(lengths):
            raise ValueError(f"new_user_ratings has {len(lists)} users' ratings for {len(lengths)} users")
        for rating, n, name in zip(lists, lengths, names):
            if rating.size != n:
                raise ValueError(f"{name} has {rating.size} values for {n} items")
        flat = np.concatenate(lists)
        low, high = self.data.rating_scale
        bad = ~np.isfinite(flat) | (flat < low) | (flat > high)
        if bad.any():
            first = int(np.argmax(bad))
            name = names[int(np.repeat(np.arange(len(lists)), lengths)[first])]
            if not np.isfinite(flat[first]):
                raise ValueError(f"{name} holds NaN or infinite values")
            raise ValueError(f"{name} must lie in the rating scale [{low:g}, {high:g}]")
        return flat

    @functools.cached_property
    def _fold_in_items(self) -> np.ndarray:
        """The item side float32 [n_items, d'] that folded-in users are scored against,
        made once."""
        from recjax.models.base import fold_in_items

        return np.ascontiguousarray(fold_in_items(self.model()), np.float32)

    # -- helpers
    @property
    def _labels(self) -> dict[str, Any]:
        """What a family's ``inputs`` needs of the run's configuration: the task's labels."""
        return {"task": self.train_config.task, "binary_threshold": self.train_config.binary_threshold}

    def with_test(self, test: Ratings) -> "Run":
        """This run with ``test`` as its test part: ``test``'s raw ids are resolved
        through the run's vocabulary (an id it does not know is an
        :class:`~recjax.data.UnknownIdError`), so the run's model is evaluated on data
        it has never seen (:func:`recjax.evaluation.evaluate_run`)."""
        self._need_vocabulary("evaluate")
        if not isinstance(test, Ratings):
            raise TypeError(f"test must be a recjax.data.Ratings, got {type(test).__name__}")
        user = self._index("user", test.users.ids[test.user], "test.user").astype(np.int32)
        item = self._index("item", test.items.ids[test.item], "test.item").astype(np.int32)
        part = dataclasses.replace(self.data, user=user, item=item,
                                   rating=np.asarray(test.rating, np.float32),
                                   timestamp=np.asarray(test.timestamp, np.int64))
        return dataclasses.replace(self, splits={**self.splits, "test": part})

    def _index(self, side: str, raw: Any, field: str | None = None) -> np.ndarray:
        """Indices int64 (the shape of ``raw``) of raw ``side`` ids given in the argument
        ``field`` (default ``users`` / ``items``), through
        :meth:`recjax.data.Vocabulary.resolve`: an unknown id, or one of the wrong type, is
        an :class:`~recjax.data.UnknownIdError` naming ``field`` and its position."""
        vocab = self.data.users if side == "user" else self.data.items
        return vocab.resolve(raw, field or f"{side}s")

    def _rows(self, top: TopK) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each row of ``top`` [n, k] as raw item ids [m <= k] and scores [m], the places
        that could not be filled (``top.ids < 0``: fewer candidates than k) left out."""
        ids, scores = np.asarray(top.ids), np.asarray(top.scores)
        valid = ids >= 0
        raw = self.data.items.ids[np.where(valid, ids, 0)]
        return [r[v] for r, v in zip(raw, valid)], [s[v] for s, v in zip(scores, valid)]

    def _raw_top(self, top: TopK) -> tuple[np.ndarray, np.ndarray]:
        valid = top.ids >= 0
        ids = self.data.items.ids[np.where(valid, top.ids, 0)]
        scores = np.where(valid, top.scores, -np.inf)
        return ids, scores

    def _top(self, scores: np.ndarray, n: int, exclude: sp.csr_matrix | None,
             candidates: np.ndarray | None) -> TopK:
        """Top-n of dense scores [u, n_items], excluded and non-candidate items left out."""
        scores = np.array(scores, np.float64)
        if candidates is not None:
            keep = np.zeros(scores.shape[1], bool)
            keep[candidates] = True
            scores[:, ~keep] = -np.inf
        if exclude is not None:
            scores[exclude.nonzero()] = -np.inf
        top = dense_topk(scores, n)
        ids = np.where(np.isfinite(top.scores), top.ids, -1)
        return TopK(ids, top.scores)

    def _need_vocabulary(self, what: str) -> None:
        if not self.has_vocabulary:
            raise ValueError(self._no_vocabulary(what))

    def _no_vocabulary(self, what: str) -> str:
        return (f"{self.path} was trained on Object2Vec token files, which have no user or item "
                f"ids: {what} is not available (use predict)")


def _many_users(new_user_items: Any) -> bool:
    """Whether ``new_user_items`` lists many users' items (a list of lists or arrays) rather
    than one user's."""
    if isinstance(new_user_items, np.ndarray):
        return new_user_items.ndim == 2 or (new_user_items.dtype == object and len(new_user_items) > 0
                                            and isinstance(new_user_items[0], (list, tuple, np.ndarray)))
    return (isinstance(new_user_items, (list, tuple)) and len(new_user_items) > 0
            and isinstance(new_user_items[0], (list, tuple, np.ndarray)))



def _genres_text(genres: Any) -> str:
    """``("Animation", "Children's")`` -> ``"Animation-Children's"``."""
    if genres is None or (isinstance(genres, float) and np.isnan(genres)):
        return ""
    if isinstance(genres, str):
        return genres
    return "-".join(str(g) for g in genres)


def _check_measure(measure: str, allowed: Sequence[str] = MEASURES) -> None:
    if measure not in allowed:
        raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(allowed)}")
