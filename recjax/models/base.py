"""The model contract: what a recjax model is, what it can do, and how it says so.

Every model family is a Flax NNX module that trains through one step function
(:mod:`recjax.train.step`): ``model(batch, train=..., rngs=...)`` gives predictions
and ``model.penalty(batch)`` its regularisation. What else it can do, it
**declares** in a class attribute ``capabilities`` (a
:class:`~recjax.models.capabilities.Capabilities`, plain Python: a NumPy model declares
it without JAX), and each capability comes with the methods of one protocol:

=============  ======================  ==================================================
capability     protocol                methods
=============  ======================  ==================================================
``pairs``      :class:`PairScorer`     ``model({"user": [B], "item": [B]}) -> [B]``:
                                       ratings (regression) or logits (binary)
``ranks``      :class:`Ranker`         ``ranking_vectors() -> (users [U, d'], items
                                       [I, d'])`` whose dot products order the catalogue
                                       as the model does (``None`` where this instance's
                                       settings do not allow it: then its dense scores)
``embeds``     :class:`Embedder`       ``embeddings() -> (users [U, d], items [I, d])``
``bag``        :class:`BagModel`       a user is a bag of items [B, L] (``PAD`` = -1):
                                       ``user_embedding(bag)``, ``embeddings(inputs)``
                                       and ``ranking_vectors(bag)``
``fold_in``    :class:`FoldIn`         ``fold_in(user_items CSR [n, I], ratings) -> users
                                       [n, d']`` scored against the ranking vectors'
                                       items: users unseen in training, without
                                       retraining
=============  ======================  ==================================================

Callers ask the declaration (:func:`~recjax.models.capabilities.capabilities_of`),
never the type of a model or the signature of its methods. A family is registered in
:data:`recjax.families.MODELS` (a :class:`recjax.families.ModelSpec` naming its module
class); the contract test (``tests/test_model_contract.py``) then checks every declared
capability of it.

Embedding tables are marked with :func:`table` (an ``nnx.Param`` with
``row_sharded=True`` metadata), which :mod:`recjax.train.sharding` splits by rows
over a device mesh; the marking lives here, below the models, so that models never
import the training package.

A model declares which batch fields index the rows of which tables in
``row_lookups() -> {table path (key tuple of its params): (field, ...)}``, e.g. MF's
``{("user_embedding",): ("user",), ("user_bias",): ("user",), ...}``; such tables
can train by rows (:mod:`recjax.train.sparse`): the train step replaces them by the
distinct rows those fields look up (after ``augment``) and each declared field by
positions into those rows (``PAD``, negative, stays negative). So a declared field
may be used only as row indices of the tables declared with it (the model may clip
it to its table or mask where it is negative), and a table is declared only while
the model reads nothing but those rows of it: tables it reads whole (a softmax over
the catalogue, an L2 on the whole table) are left out and train densely. An
optional ``lookup_fields(batch) -> batch`` adds index fields derived from others
(the pair model's token sequences of its users and items) before the step reads them.

Example
-------
>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recjax.models.base import FoldIn, Ranker
>>> from recjax.models.capabilities import capabilities_of
>>> from recjax.models.mf import MF, MFConfig
>>> model = MF(MFConfig(embedding_dim=2), n_users=3, n_items=4, rngs=nnx.Rngs(0))
>>> caps = capabilities_of(model)
>>> caps.pairs, caps.ranks, caps.bag, caps.fold_in
(True, True, False, True)
>>> isinstance(model, Ranker) and isinstance(model, FoldIn)
True
>>> users, items = model.ranking_vectors()   # [U_u, 1] . [V_i, b_i]
>>> users.shape, items.shape
((3, 3), (4, 3))
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np
from flax import nnx

from recjax.models.capabilities import capabilities_of

__all__ = ["PairScorer", "Ranker", "Embedder", "BagModel", "EXCLUDED_LOGIT", "bag_mask", "FoldIn", "fold_in_items", "BagUser", "Constant", "rating_inputs", "parse_dims", "TABLE", "table", "is_table"]


@runtime_checkable
class PairScorer(Protocol):
    """Scores (user, item) pairs: predictions [B] of a batch ``{"user": [B], "item": [B]}``
    (ratings for regression, logits of the positive class for binary); ``n_items`` is the
    catalogue's size (what the model is ranked over, by its dense scores)."""

    n_items: int

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array: ...


@runtime_checkable
class Ranker(Protocol):
    """Ranks the catalogue: ``ranking_vectors()`` -> (users [U, d'], items [I, d']) float32,
    whose dot products order each user's items as the model's own scores do; ``None``
    where this instance cannot give them (then a ``pairs`` model is ranked by its dense
    scores)."""

    def ranking_vectors(self) -> tuple[np.ndarray, np.ndarray] | None: ...


@runtime_checkable
class Embedder(Protocol):
    """User and item vectors: ``embeddings()`` -> (users [U, d], items [I, d])."""

    def embeddings(self) -> tuple[jax.Array, jax.Array]: ...


@runtime_checkable
class BagModel(Protocol):
    """A user is a bag of item indices [B, L], padded with ``PAD`` (-1).

    ``model({"bag": bag})`` -> logits [B, n_items] over the catalogue (what training
    validates: :func:`bag_mask` takes the bag's own items out of them, as
    :data:`EXCLUDED_LOGIT`); ``user_embedding(bag)`` -> [B, d];
    ``embeddings({"bag": bag})`` -> (users [B, d'], items [I, d']) as stored in a run
    folder; ``ranking_vectors(bag)`` the same as float32 arrays, whose dot products are
    the model's scores of every item.
    """

    n_items: int

    def user_embedding(self, bag: jax.Array) -> jax.Array: ...

    def embeddings(self, inputs: dict[str, Any]) -> tuple[jax.Array, jax.Array]: ...

    def ranking_vectors(self, bag: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


EXCLUDED_LOGIT = -1e9  # the logit of a candidate taken out of a softmax or a ranking


def bag_mask(bag: jax.Array, n_items: int) -> jax.Array:
    """Bool [B, n_items]: the items in each row of ``bag`` [B, L] (``PAD`` ignored)."""
    import jax.numpy as jnp

    rows = jnp.broadcast_to(jnp.arange(bag.shape[0])[:, None], bag.shape)
    cols = jnp.where(bag >= 0, bag, n_items)  # PAD goes to a dropped extra column
    return jnp.zeros((bag.shape[0], n_items + 1), bool).at[rows, cols].set(True)[:, :n_items]


@runtime_checkable
class FoldIn(Protocol):
    """Users unseen in training, from the items they rated, without retraining.

    ``fold_in(user_items, ratings, binary_threshold=...)`` -> user vectors float32 [n,
    d']: ``user_items`` a CSR matrix [n, n_items] (row ``u``: the items of new user
    ``u``; values ignored), ``ratings`` float [nnz] in its entry order or None. A user's
    scores are their vector's dot products with the item side of the model's ranking
    vectors (:func:`fold_in_items`), held once by the caller: many users are one
    batched call (:mod:`recjax.models.fold_in`). Raises ``ValueError`` when the family
    needs what is missing (e.g. the ratings of a rating model).
    """

    def fold_in(self, user_items: Any, ratings: np.ndarray | None = None, *,
                binary_threshold: float = 3.0) -> np.ndarray: ...


def fold_in_items(model: Any) -> np.ndarray:
    """The item side float32 [n_items, d'] that a :class:`FoldIn` model's folded-in user
    vectors are scored against: its ranking vectors' (a bag model's are the same for
    every bag)."""
    from recjax.data.jsonlines import PAD

    if capabilities_of(model).bag:
        return model.ranking_vectors(np.full((1, 1), PAD, np.int32))[1]
    return model.ranking_vectors()[1]


class BagUser:
    """The :class:`BagModel` and :class:`FoldIn` methods of a bag model, from its
    ``user_embedding(bag)`` and ``embeddings(inputs)`` (a mixin of the softmax and
    Mult-DAE modules)."""

    def bag_users(self, bag: Any, chunk: int = 1024) -> jax.Array:
        """``user_embedding`` of bags [n, L], ``chunk`` bags at a time."""
        import jax.numpy as jnp

        bag = jnp.asarray(bag)
        return jnp.concatenate([self.user_embedding(bag[i: i + chunk]) for i in range(0, bag.shape[0], chunk)])

    def ranking_vectors(self, bag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(users [n, d'], items [n_items, d']) float32 of bags [n, L]: ``embeddings``,
        whose dot products are the model's logits."""
        users, items = self.embeddings({"bag": bag})
        return np.asarray(users, np.float32), np.asarray(items, np.float32)

    def fold_in(self, user_items: Any, ratings: np.ndarray | None = None, *,
                binary_threshold: float = 3.0) -> np.ndarray:
        """The user tower over each row's bag of items (ratings are not used: any item is
        a positive): float32 [n, d'], the user side of :meth:`ranking_vectors`."""
        from recjax.data.bags import check_user_items
        from recjax.models.fold_in import bag_users

        check_user_items(user_items, ratings, self.n_items)
        return bag_users(self, user_items)


def rating_inputs(part: Any, *, task: str = "regression", binary_threshold: float = 3.0) -> dict[str, np.ndarray]:
    """One example per rating of a :class:`recjax.data.Ratings` part: ``user``, ``item``
    indices and the task's ``label`` (the rating, or ``rating > binary_threshold``)."""
    label = part.rating if task == "regression" else part.binary_labels(binary_threshold)
    return {"user": part.user, "item": part.item, "label": label.astype(np.float32, copy=False)}


class Constant(nnx.Variable):
    """A constant of a model (token sequences, feature indices, log-frequencies, a
    regularisation weight): part of its state, never trained; an input of the compiled
    train step (:func:`recjax.train.step.make_train_step`), not a constant of it."""


def parse_dims(text: str, name: str = "hidden_dims") -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; ``""`` -> ``()``.

    Raises
    ------
    ValueError
        A part that is not a positive integer, naming ``name``.
    """
    dims = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{name} must be comma-separated positive integers, got {text!r}")
        dims.append(int(part))
    return tuple(dims)


# ----------------------------------------------------------------------------- tables
TABLE = {"row_sharded": True}  # nnx.Param metadata marking an embedding table


def table(value: jax.Array) -> nnx.Param:
    """An embedding table ``[rows, ...]``: a parameter row-sharded over the model axis."""
    return nnx.Param(value, **TABLE)


def is_table(path: Any, variable: Any) -> bool:
    """An ``nnx`` filter selecting the parameters made by :func:`table`."""
    return isinstance(variable, nnx.Param) and bool(variable.get_metadata().get("row_sharded"))
