"""The model side of the server: one :class:`ServedRun` per run, no HTTP in here.

Each query kind has two halves:

* a ``*_job`` method, run on the event loop: checks a decoded JSON body (types,
  keys, sizes, ids against the run's vocabularies) and returns a
  :class:`~recjax.serve.batching.Job` whose ``key`` says which other requests it
  may share a model call with; a bad request raises :class:`RequestError` naming
  the field;
* a ``*_batch`` method, run in a worker thread: one call of the run's own query
  for a group of jobs (:meth:`recjax.runs.Run.recommend`, ``similar_items``,
  ``predict``, or :func:`recjax.predict.respond` for Object2Vec requests), cut
  back into one answer per job. Nothing here scores: the run does.

Batches are padded to a power of two rows (copies of their first row, dropped
from the answers) so that the compiled JAX programs behind ``Run.predict`` and
the network scorers see a bounded set of shapes.

Capabilities are what the run declares: at load, :meth:`recjax.runs.Run.refusal`
says which queries its family cannot answer (fold-in for pair and dnn runs, pair
predictions for softmax and Mult-DAE runs, ...: read from
:class:`recjax.models.capabilities.Capabilities`, nothing is run); such requests are
answered 422 with that message.
:meth:`ServedRun.warm` then calls each query the run answers once on a known user
and item, which compiles it.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recjax.data.dataset import UnknownIdError
from recjax.runs import MEASURES
from recjax.serve.batching import Job

__all__ = ["DEFAULT_LIMITS", "KINDS", "Limits", "RequestError", "ServedRun"]

KINDS = ("recommend", "fold_in", "similar", "predict", "invocations", "embeddings")
RECOMMEND_KEYS = ("users", "N", "filter_already_liked_items", "items", "new_user_items",
                  "new_user_ratings")
SIMILAR_KEYS = ("items", "title", "N", "measure")
PREDICT_KEYS = ("users", "items")
QUERIES = {"recommend": "recommend", "fold_in": "fold_in", "similar": "similar_items",
           "predict": "predict"}  # endpoint kind -> the Run query behind it (Run.refusal)
MAX_SEQLEN = 5000  # Object2Vec's infer_max_seqlens bound


class RequestError(ValueError):
    """A request the server refuses: HTTP ``status`` (4xx), the message, and the JSON
    ``field`` at fault (``None`` when no single field is)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (every one checked before any model work).

    max_instances : users, items, pairs or Object2Vec instances in one request
    max_n : the largest ``N``
    """

    max_instances: int = 1000
    max_n: int = 1000


DEFAULT_LIMITS = Limits()


# ----------------------------------------------------------------------------- checks
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(body: Any, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object with keys among {', '.join(allowed)}; "
                           f"got {type(body).__name__}", "body")
    extra = [k for k in body if k not in allowed]
    if extra:
        raise RequestError(f"unknown key {extra[0]!r} for {what}; allowed: {', '.join(allowed)}",
                           extra[0])
    return body


def _check_list(body: dict[str, Any], key: str, limit: int) -> list[Any]:
    value = body[key]
    if not isinstance(value, list):
        raise RequestError(f"{key} must be a list, got {type(value).__name__}", key)
    if not value:
        raise RequestError(f"{key} is empty: give at least one", key)
    if len(value) > limit:
        raise RequestError(f"{key} holds {len(value)} entries; at most {limit} per request", key)
    return value


def _check_count(body: dict[str, Any], key: str, default: int, limit: int) -> int:
    value = body.get(key, default)
    if not _is_int(value):
        raise RequestError(f"{key} must be an integer, got {value!r}", key)
    if not 1 <= value <= limit:
        raise RequestError(f"{key} must be in 1..{limit}, got {value}", key)
    return value


def _check_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false, got {value!r}", key)
    return value


def _padded_size(n: int) -> int:
    """The power of two >= n that a batch of n rows is padded to."""
    return 1 << max(n - 1, 0).bit_length()


def _pad(values: np.ndarray) -> np.ndarray:
    """``values`` extended to a power-of-two length with copies of its first row."""
    n = len(values)
    size = _padded_size(n)
    if size == n:
        return values
    return np.concatenate([values, np.repeat(values[:1], size - n, axis=0)])


def _offsets(sizes: list[int]) -> list[tuple[int, int]]:
    ends = list(itertools.accumulate(sizes))
    return [(end - size, end) for size, end in zip(sizes, ends)]


def field_of(err: ValueError, keys: tuple[str, ...]) -> str | None:
    """The request field a library error is about: an unknown id's own field and position
    (:class:`~recjax.data.UnknownIdError`); else, read from the message, Object2Vec's
    ``instance N`` and ``in0``/``in1``, or the first request key the message names."""
    if isinstance(err, UnknownIdError) and err.where is not None:
        return err.where
    message = str(err)
    found = re.search(r"instance (\d+)", message)
    side = re.search(r"\b(in[01])\b", message)
    if found:
        return f"instances[{found.group(1)}]" + (f".{side.group(1)}" if side else "")
    for key in sorted(keys, key=len, reverse=True):  # new_user_items before items
        if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", message):
            return key
    return None


# ----------------------------------------------------------------------------- one run
class ServedRun:
    """One run behind the server: its queries, checks and batch calls.

    Parameters
    ----------
    name : str
        The run's name in URLs (``/models/{name}/...``).
    run : recjax.runs.Run, str or os.PathLike
        An open run, or a run folder opened by :meth:`load` (through ``Run.open``).
    limits : Limits
    """

    def __init__(self, name: str, run: Any, limits: Limits = DEFAULT_LIMITS) -> None:
        self.name = name
        self.limits = limits
        self._source = run
        self.run: Any = None if isinstance(run, (str, os.PathLike)) else run
        self.trained: Any = None
        self.unsupported: dict[str, str] = {}
        self.loaded = False
        self._fold_in_ids = itertools.count()

    # -- loading and warming (worker thread)
    def load(self) -> None:
        """Open the run (``Run.open``) if given as a path, and bind its model."""
        from recjax.predict import PAIR_MODELS, Trained
        from recjax.runs import Run

        if self.run is None:
            self.run = Run.open(Path(self._source))
        run = self.run
        for kind, query in QUERIES.items():
            reason = run.refusal(query)
            if reason is not None:
                self.unsupported[kind] = reason
        if run.train_config.model in PAIR_MODELS:  # what predict.load_trained builds
            self.trained = Trained(run.model(), run.train_config, run.model_config, run.data)
        else:
            self.unsupported["invocations"] = self.unsupported["embeddings"] = (
                f"/invocations answers runs of {', '.join(PAIR_MODELS)} (Object2Vec-style pair "
                f"scores); {self.name} is a {run.train_config.model!r} run: use /recommend")
        self.loaded = True

    def warm(self) -> None:
        """Call every query the run answers once (compiling it)."""
        run = self.run
        user = item = 0  # a run without vocabularies answers none of the four (Run.refusal)
        high = 1.0
        if self.has_vocabulary:
            user, item = run.data.users.ids[0], run.data.items.ids[0]
            high = float(run.data.rating_scale[1])
        calls: dict[str, Any] = {
            "recommend": lambda: run.recommend(np.asarray([user]), N=1),
            "fold_in": lambda: run.recommend(new_user_items=[item], new_user_ratings=[high], N=1),
            "similar": lambda: run.similar_items(np.asarray([item]), N=1),
            "predict": lambda: run.predict(np.asarray([user]), np.asarray([item])),
        }
        if self.trained is not None:
            from recjax.predict import respond

            in0, in1 = self._probe_tokens()
            pair = {"instances": [{"in0": in0, "in1": in1}]}
            calls["invocations"] = lambda: respond(self.trained, pair)
            calls["embeddings"] = lambda: (respond(self.trained, {"instances": [{"in0": in0}]}),
                                           respond(self.trained, {"instances": [{"in1": in1}]}))
        for kind, call in calls.items():
            if kind not in self.unsupported:
                call()
        if "fold_in" not in self.unsupported:
            self._warm_fold_in(high)
        if self.has_titles:
            run.item_titles  # noqa: B018 - built now, not by the first request

    def _warm_fold_in(self, rating: float) -> None:
        """Compile the batched fold-in at the shapes a server meets most
        (:data:`recjax.models.fold_in.SHAPES`: batches of new users with up to 32 items)."""
        from recjax.models.fold_in import SHAPES

        ids = self.run.data.items.ids
        for users, entries in SHAPES:
            if entries <= len(ids):
                items = [ids[:entries]] * users
                self.run.recommend(new_user_items=items, new_user_ratings=[[rating] * entries] * users, N=1)

    def _probe_tokens(self) -> tuple[list[Any], list[Any]]:
        if self.has_vocabulary:
            return [_plain(self.run.data.users.ids[0])], [_plain(self.run.data.items.ids[0])]
        v0, v1 = self.trained.module.vocab_sizes
        return [min(1, v0 - 1)], [min(1, v1 - 1)]

    # -- what the run is
    @property
    def has_vocabulary(self) -> bool:
        return bool(self.run.has_vocabulary)

    @property
    def has_titles(self) -> bool:
        info = self.run.data.item_info if self.has_vocabulary else None
        return info is not None and "title" in info

    def describe(self) -> dict[str, Any]:
        """The run in a few JSON fields (``GET /models``)."""
        cfg = self.run.train_config
        out: dict[str, Any] = {"name": self.name, "path": str(self.run.path), "model": cfg.model,
                               "task": cfg.task, "dataset": self.run.dataset, "split": self.run.split}
        if self.has_vocabulary:
            out.update(users=int(self.run.data.n_users), items=int(self.run.data.n_items),
                       rating_scale=[float(x) for x in self.run.data.rating_scale])
        out["endpoints"] = {kind: self.unsupported.get(kind, "ok") for kind in KINDS}
        return out

    def require(self, kind: str, field: str | None = None) -> None:
        """Refuse (422, with the run's own reason) a query this run cannot answer."""
        if kind in self.unsupported:
            raise RequestError(self.unsupported[kind], field, status=422)

    # -- ids
    def _ids(self, values: Any, side: str, field: str) -> np.ndarray:
        """The run's raw ids (of its own dtype) for decoded JSON ``values``: a list [n], or
        one id; each must be one the run knows, of its type (a JSON string is no id of a
        run with integer ids). Otherwise a RequestError naming ``field[position]`` (through
        :meth:`recjax.data.Vocabulary.resolve`, as every query path)."""
        vocab = self.run.data.users if side == "user" else self.run.data.items
        try:
            return vocab.ids[vocab.resolve(values, field)]
        except UnknownIdError as err:
            raise RequestError(str(err), err.where) from None

    def _titles(self, ids: np.ndarray) -> list[str]:
        return self.run.item_titles[self.run.data.items.index(ids)].tolist()

    def _item_list(self, ids: np.ndarray, scores: np.ndarray, titles: list[str] | None,
                   key: str = "items") -> dict[str, Any]:
        out = {key: ids.tolist(), "scores": scores.tolist()}
        if titles is not None:
            out["titles"] = titles
        return out

    # -- /recommend
    def recommend_job(self, body: Any) -> Job:
        body = _check_keys(body, RECOMMEND_KEYS, "/recommend")
        self.require("recommend")
        if ("users" in body) == ("new_user_items" in body):
            raise RequestError("give exactly one of users (known users) and new_user_items "
                               "(a new user, folded in)", "users")
        n = _check_count(body, "N", 10, self.limits.max_n)
        skip = _check_bool(body, "filter_already_liked_items", True)
        items = None
        if "items" in body and body["items"] is not None:
            items = self._ids(_check_list(body, "items", max(self.limits.max_instances,
                                                             self.run.data.n_items)), "item", "items")
        if "new_user_ratings" in body and "new_user_items" not in body:
            raise RequestError("new_user_ratings goes with new_user_items", "new_user_ratings")
        candidates = None if items is None else tuple(items.tolist())
        if "users" in body:
            users = self._ids(_check_list(body, "users", self.limits.max_instances), "user", "users")
            return Job(("users", skip, candidates), (users, n), rows=len(users))
        self.require("fold_in", "new_user_items")
        new = self._ids(_check_list(body, "new_user_items", self.limits.max_instances), "item",
                        "new_user_items")
        ratings = body.get("new_user_ratings")
        if ratings is not None:
            ratings = _check_list(body, "new_user_ratings", self.limits.max_instances)
            for k, r in enumerate(ratings):
                if isinstance(r, bool) or not isinstance(r, (int, float)):
                    raise RequestError(f"new_user_ratings[{k}] must be a number, got {r!r}",
                                       f"new_user_ratings[{k}]")
        try:  # checked alone, so that a bad request never fails the batch it would join
            self.run.new_user_rows(new, ratings)
        except ValueError as err:
            raise RequestError(str(err), field_of(err, RECOMMEND_KEYS)) from None
        # new users with the same flags and candidates are folded in together (one batched solve)
        return Job(("new", skip, candidates, ratings is None), (new, ratings, n), rows=1)

    def recommend_batch(self, key: Hashable, payloads: list[Any]) -> list[dict[str, Any]]:
        run = self.run
        kind, skip, candidates = key[0], key[1], key[2]
        items = None if candidates is None else np.asarray(candidates, dtype=run.data.items.ids.dtype)
        if kind == "new":
            n = max(p[2] for p in payloads)
            if len(payloads) == 1:  # alone (or retried alone): the request's own field names
                (new, ratings, _), = payloads
            else:
                new = [p[0] for p in payloads]
                ratings = None if payloads[0][1] is None else [p[1] for p in payloads]
            top = run.recommend(new_user_items=new, new_user_ratings=ratings, N=n,
                                filter_already_liked_items=skip, items=items)
            ids, scores = ([top.ids], [top.scores]) if len(payloads) == 1 else (top.ids, top.scores)
            return [{"recommendations": [{"user": None, **self._top_entry(ids[k][: p[2]], scores[k][: p[2]])}]}
                    for k, p in enumerate(payloads)]
        users = np.concatenate([p[0] for p in payloads])
        top = run.recommend(_pad(users), N=max(p[1] for p in payloads),
                            filter_already_liked_items=skip, items=items)
        sizes = [len(p[0]) for p in payloads]
        # each user's row holds only real candidates (Run.recommend trims): cut to its N
        cut = [(top.ids[row][:n], np.asarray(top.scores[row][:n], np.float64))
               for (start, end), (_, n) in zip(_offsets(sizes), payloads) for row in range(start, end)]
        titles = None
        if self.has_titles:  # one vocabulary look-up for the whole batch
            every = np.concatenate([ids for ids, _ in cut])
            titles = np.split(run.item_titles[run.data.items.index(every)],
                              np.cumsum([len(ids) for ids, _ in cut])[:-1])
        entries = [{"user": u, **self._item_list(ids, scores, None if titles is None else titles[k].tolist())}
                   for k, (u, (ids, scores)) in enumerate(zip(users.tolist(), cut))]
        return [{"recommendations": entries[start:end]} for start, end in _offsets(sizes)]

    def _top_entry(self, ids: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
        keep = np.isfinite(scores)  # places the run could not fill (too few candidates)
        ids, scores = ids[keep], scores[keep]
        return self._item_list(ids, np.asarray(scores, np.float64),
                               self._titles(ids) if self.has_titles else None)

    # -- /similar
    def similar_job(self, body: Any) -> Job:
        body = _check_keys(body, SIMILAR_KEYS, "/similar")
        self.require("similar")
        if ("items" in body) == ("title" in body):
            raise RequestError("give exactly one of items (raw ids) and title (a substring)", "items")
        n = _check_count(body, "N", 10, self.limits.max_n)
        measure = body.get("measure", "cosine")
        if measure not in MEASURES:
            raise RequestError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}",
                               "measure")
        if "title" in body:
            title = body["title"]
            if not isinstance(title, str) or not title.strip():
                raise RequestError(f"title must be a non-empty string, got {title!r}", "title")
            return Job(("similar", measure), ("title", title, n), rows=1)
        items = self._ids(_check_list(body, "items", self.limits.max_instances), "item", "items")
        return Job(("similar", measure), ("items", items, n), rows=len(items))

    def similar_batch(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        from recjax.explore import find_titles

        run, measure = self.run, key[1]
        queries: list[Any] = []  # per payload: (raw item ids, title match) or an error
        for kind, value, _ in payloads:
            if kind == "items":
                queries.append((value, None))
                continue
            match = find_titles(run.item_titles, value)
            if len(match.indices) == 0:
                hint = f"; did you mean: {'; '.join(match.suggestions)}?" if match.suggestions else ""
                queries.append(RequestError(f"no title contains {value!r}{hint}", "title"))
            else:
                queries.append((run.data.items.ids[match.indices[:1]], match))
        asked = [q for q in queries if not isinstance(q, RequestError)]
        if not asked:
            return queries
        items = np.concatenate([q[0] for q in asked])
        n_max = max(p[2] for p, q in zip(payloads, queries) if not isinstance(q, RequestError))
        top = run.similar_items(_pad(items), N=n_max, measure=measure)
        ids, scores = top.ids[: len(items)], top.scores[: len(items)]
        out, row = [], 0
        for (kind, value, n), query in zip(payloads, queries):
            if isinstance(query, RequestError):
                out.append(query)
                continue
            mine, match = query
            entries = []
            for item in mine:
                keep = np.isfinite(scores[row, :n])  # a catalogue smaller than N
                found, near = ids[row, :n][keep], np.asarray(scores[row, :n][keep], np.float64)
                entry = {"item": _plain(item)}
                if self.has_titles:
                    entry["title"] = self._titles(np.asarray([item]))[0]
                entry.update(self._item_list(found, near, self._titles(found) if self.has_titles
                                             else None, key="similar"))
                entries.append(entry)
                row += 1
            answer: dict[str, Any] = {"similar": entries}
            if kind == "title":  # the first title containing the query, the others listed
                answer = {"query": value, "other_matches": match.titles[1:11], **answer}
            out.append(answer)
        return out

    # -- /predict
    def predict_job(self, body: Any) -> Job:
        body = _check_keys(body, PREDICT_KEYS, "/predict")
        self.require("predict")
        for key in PREDICT_KEYS:
            if key not in body:
                raise RequestError(f"missing key {key!r}: /predict takes users and items, one "
                                   f"pair per position", key)
        users = self._ids(_check_list(body, "users", self.limits.max_instances), "user", "users")
        items = self._ids(_check_list(body, "items", self.limits.max_instances), "item", "items")
        if len(users) != len(items):
            raise RequestError(f"{len(users)} users but {len(items)} items: one pair per position",
                               "items")
        return Job(("predict",), (users, items), rows=len(users))

    def predict_batch(self, key: Hashable, payloads: list[Any]) -> list[dict[str, Any]]:
        users = np.concatenate([p[0] for p in payloads])
        items = np.concatenate([p[1] for p in payloads])
        scores = self.run.predict(_pad(users), _pad(items))[: len(users)]
        titles = self._titles(items) if self.has_titles else None
        out = []
        for start, end in _offsets([len(p[0]) for p in payloads]):
            rows = []
            for k in range(start, end):
                row = {"user": _plain(users[k]), "item": _plain(items[k]), "score": float(scores[k])}
                if titles is not None:
                    row["title"] = titles[k]
                rows.append(row)
            out.append({"predictions": rows})
        return out

    # -- /invocations (Object2Vec)
    def invocation_job(self, instances: Any, seqlens: tuple[int, int] | None) -> Job:
        """``instances`` decoded from JSON or JSON Lines; ``seqlens`` from the content
        type's ``infer_max_seqlens`` (in0 and in1 sequences are cut to these lengths)."""
        if not isinstance(instances, list):
            raise RequestError('the body must be {"instances": [{"in0": [...], "in1": [...]}, ...]}',
                               "instances")
        if not instances:
            raise RequestError("instances is empty: give at least one", "instances")
        if len(instances) > self.limits.max_instances:
            raise RequestError(f"instances holds {len(instances)} entries; at most "
                               f"{self.limits.max_instances} per request", "instances")
        self.require("invocations")
        kinds = set()
        out = []
        for n, inst in enumerate(instances):
            if not isinstance(inst, dict) or not inst:
                raise RequestError(f"instance {n} must be an object with in0 and/or in1",
                                   f"instances[{n}]")
            extra = [k for k in inst if k not in ("in0", "in1")]
            if extra:
                raise RequestError(f"instance {n}: unknown key {extra[0]!r}; an instance holds "
                                   f"in0 and/or in1", f"instances[{n}].{extra[0]}")
            clean = {}
            for side, key in enumerate(("in0", "in1")):
                if key in inst:
                    clean[key] = self._side(inst[key], n, side, seqlens)
            kinds.add(tuple(clean))
            out.append(clean)
        if len(kinds) > 1:  # predict.respond names the problem: a call of its own
            return Job(("mixed", next(self._fold_in_ids)), out, rows=len(out))
        kind = kinds.pop()
        if kind != ("in0", "in1"):
            self.require("embeddings")
        return Job(("instances", kind), out, rows=len(out))

    def _side(self, value: Any, n: int, side: int, seqlens: tuple[int, int] | None) -> list[Any]:
        field = f"instances[{n}].in{side}"
        if not isinstance(value, list) or not value:
            raise RequestError(f"instance {n}: in{side} must be a non-empty list", field)
        if self.has_vocabulary:
            word = "user" if side == 0 else "item"
            if len(value) != 1:
                raise RequestError(f"instance {n}: in{side} holds one raw {word} id for this run, "
                                   f"e.g. [{_plain(self._probe_tokens()[side][0])!r}]; got "
                                   f"{len(value)} values", field)
            self._ids(value[0], word, field)
            return value
        vocab = self.trained.module.vocab_sizes[side]
        for t in value:
            if not _is_int(t) or t < 0:
                raise RequestError(f"instance {n}: in{side} holds token ids (non-negative "
                                   f"integers), got {t!r}", field)
            if t >= vocab:
                raise RequestError(f"instance {n}: in{side} token {t} is outside the model's "
                                   f"vocabulary ({vocab} tokens)", field)
        return value[: seqlens[side]] if seqlens else value

    def invocations_batch(self, key: Hashable, payloads: list[Any]) -> list[dict[str, Any]]:
        from recjax.predict import respond

        if key[0] == "mixed":
            (instances,) = payloads
            return [respond(self.trained, {"instances": instances})]
        instances = [inst for p in payloads for inst in p]
        padded = instances + [instances[0]] * (_padded_size(len(instances)) - len(instances))
        predictions = respond(self.trained, {"instances": padded})["predictions"]
        return [{"predictions": predictions[start:end]}
                for start, end in _offsets([len(p) for p in payloads])]


def _plain(value: Any) -> Any:
    """A NumPy scalar as the JSON-ready Python value."""
    return value.item() if isinstance(value, np.generic) else value
