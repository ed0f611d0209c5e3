"""What a model family can do, declared: :class:`Capabilities` and :func:`capabilities_of`.

The declaration half of the model contract (:mod:`recjax.models.base` holds the
protocols each capability comes with). Plain Python, no JAX: a NumPy model (the
baselines of :mod:`recjax.models.baselines`) declares its capabilities without
importing JAX or Flax.

Example
-------
>>> from recjax.models.capabilities import Capabilities, capabilities_of
>>> class Popular:
...     capabilities = Capabilities(ranks=True)
>>> capabilities_of(Popular()).names(), capabilities_of(object()).names()
(('ranks',), ())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Capabilities", "capabilities_of"]


@dataclass(frozen=True)
class Capabilities:
    """What a model family can do, beyond training (see the module docstring).

    Attributes
    ----------
    pairs : bool
        Scores (user, item) index pairs: ``model({"user", "item"}) -> [B]``.
    ranks : bool
        Gives ranking vectors, ``ranking_vectors()`` (``ranking_vectors(bag)`` for
        bag models); a ``pairs`` model without them is ranked by its dense scores.
    embeds : bool
        Gives user and item vectors, ``embeddings()`` (``embeddings(inputs)`` for bag
        models).
    bag : bool
        Takes a user as a bag of items (``user_embedding(bag)``).
    fold_in : bool
        Folds in users not seen in training: ``fold_in(user_items, ratings)``.
    """

    pairs: bool = False
    ranks: bool = False
    embeds: bool = False
    bag: bool = False
    fold_in: bool = False

    def names(self) -> tuple[str, ...]:
        """The declared capabilities, by name."""
        return tuple(name for name in ("pairs", "ranks", "embeds", "bag", "fold_in") if getattr(self, name))


NOTHING = Capabilities()


def capabilities_of(model: Any) -> Capabilities:
    """The capabilities a model (or model class) declares; none declared: nothing."""
    caps = getattr(model, "capabilities", None)
    return caps if isinstance(caps, Capabilities) else NOTHING
