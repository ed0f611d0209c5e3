"""Validation during training for families with their own measure: bag and ranking models.

Rating models are validated by their task's metrics
(:func:`recjax.metrics.task_metrics`) of their predictions; a bag model
(softmax, Mult-DAE) has no per-rating predictions and is validated by ranking: its
held-out loss and precision / recall at ``k`` of each user's held-out movies, computed
on the device in one jitted call per epoch (:func:`bag_validator`). A family trained
for ranking (iALS, EASE: anything that ``ranks``, :class:`recjax.models.base.Ranker`)
is validated by the ranking protocol's own metrics (:func:`ranking_validator`). A
family's :class:`recjax.families.ModelSpec` hands its validator the model; what a
validator reads of it is the model contract (:mod:`recjax.models.base`: a bag model's
logits ``model({"bag": bag})``, a ranker's ``ranking_vectors()``).

Ranking the whole catalogue for every validation user can cost more than the epoch it
judges (iALS's CG sweep at 300k x 40k, 153k validation users: 2.3x), so each validator's
``evaluate`` takes ``sample``: how many of the part's users to measure, a seeded sample
(:func:`sample_users`, the same users at every call with the same seed). Training
monitors a sample (``RunConfig.val_users``); the run's final metrics are over all.

Example
-------
>>> import jax.numpy as jnp
>>> from recjax.train.validation import bag_ranking_stats
>>> logits = jnp.array([[3.0, 2.0, 1.0, 0.0]])
>>> stats = bag_ranking_stats(logits, bag=jnp.array([[0]]), targets=jnp.array([[2, -1]]), k=2)
>>> int(stats["hits"][0]), int(stats["n_targets"][0])
(1, 1)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from recjax.data.bags import user_item_pattern
from recjax.data.dataset import Ratings, Vocabulary
from recjax.data.jsonlines import PAD
from recjax.metrics import ranking_metrics
from recjax.models.base import EXCLUDED_LOGIT, bag_mask
from recjax.models.capabilities import capabilities_of
from recjax.retrieval import recommend

__all__ = ["bag_validator", "bag_ranking_stats", "ranking_validator", "sample_users"]


def sample_users(users: np.ndarray, sample: int, seed: int) -> np.ndarray:
    """``sample`` of ``users`` (int array [n]) drawn without replacement by a generator
    seeded by ``seed``, in their order: the same for the same seed, so that every epoch
    measures the same users. ``users`` itself when ``sample`` is 0 or at least ``n``."""
    if sample <= 0 or sample >= len(users):
        return users
    return users[np.sort(np.random.default_rng(seed).choice(len(users), sample, replace=False))]


def bag_ranking_stats(logits: jax.Array, bag: jax.Array, targets: jax.Array, k: int = 10) -> dict[str, jax.Array]:
    """Per-user ranking metrics of full logits [B, C] against held-out ``targets`` [B, T].

    Movies in ``bag`` [B, L] are excluded from the ranking. Returns per-user
    arrays [B]: ``hits`` in the top ``k``, ``n_targets``, ``loss_sum`` (sum over
    targets of the cross-entropy of the target against the unrated, non-target
    movies) and ``has`` (1 if the user has targets).
    """
    n_items = logits.shape[1]
    rated = bag_mask(bag, n_items)
    masked = jnp.where(rated, EXCLUDED_LOGIT, logits)
    _, top = jax.lax.top_k(masked, k)
    valid = targets >= 0
    hits = jnp.sum(jnp.any((top[:, :, None] == targets[:, None, :]) & valid[:, None, :], axis=2), axis=1)
    n_targets = jnp.sum(valid, axis=1)
    others = jnp.where(bag_mask(targets, n_items), EXCLUDED_LOGIT, masked)
    lse = jax.nn.logsumexp(others, axis=1)[:, None]
    true = jnp.take_along_axis(logits, jnp.clip(targets, 0), axis=1)
    loss = (jnp.logaddexp(lse, true) - true) * valid
    return {"hits": hits, "n_targets": n_targets, "loss_sum": jnp.sum(loss, axis=1),
            "has": (n_targets > 0).astype(jnp.float32)}


def bag_validator(model: Any, inputs: dict[str, dict[str, np.ndarray]], *,
                  k: int = 10, chunk: int = 256) -> Callable[..., dict[str, float]]:
    """``evaluate(params, part, prefix, sample=0, seed=0) -> {prefix + "loss",
    "precision@k", "recall@k"}`` of a bag model (softmax, Mult-DAE): each user's bag of
    training movies ranks the catalogue, bag movies excluded, against the part's
    held-out ``targets``; the same precision and recall as
    :func:`recjax.metrics.ranking_metrics` (a test checks them against it),
    computed on the device during training.

    ``model`` is a :class:`recjax.train.step.Model`; ``inputs`` the family's examples
    per part (``bag`` [n, L] and ``targets`` [n, T], ``PAD``-padded). Parts without
    ``targets`` give ``{}``. One jitted function, chunked over users. ``sample`` > 0
    measures that many of the users with targets (:func:`sample_users` with ``seed``;
    0, or at least their number: every user).
    """
    device = {name: {key: jnp.asarray(arrays[key]) for key in ("bag", "targets")}
              for name, arrays in inputs.items() if "targets" in arrays}
    samples: dict[tuple[str, int, int], tuple[jax.Array, jax.Array]] = {}  # the same at every call

    @jax.jit
    def per_user(params: dict, bag: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
        module = model.bind(params)
        n = bag.shape[0]
        n_chunks = -(-n // chunk)
        pad = n_chunks * chunk - n
        bag = jnp.pad(bag, ((0, pad), (0, 0)), constant_values=PAD).reshape(n_chunks, chunk, -1)
        targets = jnp.pad(targets, ((0, pad), (0, 0)), constant_values=PAD).reshape(n_chunks, chunk, -1)

        def one(xs):
            b, t = xs
            return bag_ranking_stats(module({"bag": b}), b, t, k)

        out = jax.lax.map(one, (bag, targets))
        return {key: value.reshape(-1)[:n] for key, value in out.items()}

    def rows(part: str, sample: int, seed: int) -> tuple[jax.Array, jax.Array]:
        """The part's bags and targets, of the sampled users only when they are fewer."""
        if (part, sample, seed) not in samples:
            users = np.flatnonzero((np.asarray(inputs[part]["targets"]) >= 0).any(axis=1))
            chosen = sample_users(users, sample, seed)
            whole = len(chosen) == len(users)
            samples[part, sample, seed] = (device[part]["bag"], device[part]["targets"]) if whole \
                else (device[part]["bag"][chosen], device[part]["targets"][chosen])
        return samples[part, sample, seed]

    def evaluate(params: dict, part: str, prefix: str, sample: int = 0, seed: int = 0) -> dict[str, float]:
        if part not in device:
            return {}
        stats = jax.device_get(per_user(params, *rows(part, sample, seed)))
        has = stats["has"] > 0
        users = max(int(has.sum()), 1)
        return {
            f"{prefix}loss": float(stats["loss_sum"].sum() / max(stats["n_targets"].sum(), 1)),
            f"{prefix}precision@{k}": float((stats["hits"][has] / k).sum() / users),
            f"{prefix}recall@{k}": float((stats["hits"][has] / stats["n_targets"][has]).sum() / users),
        }

    return evaluate


def ranking_validator(model: Any, inputs: dict[str, dict[str, np.ndarray]], *,
                      k: int = 10) -> Callable[..., dict[str, float]]:
    """``evaluate(params, part, prefix, sample=0, seed=0)``: the ranking metrics at ``k``
    (:func:`recjax.metrics.ranking_metrics`: ``ndcg@k``, ``recall@k``, ...)
    of a model that ranks, as the ranking protocol scores a run
    (:func:`recjax.evaluation.protocol.evaluate_ranking`; a test checks they agree).

    The part's users are those with an item in it, their items in it the relevant ones;
    the training items (for ``test``, the validation items too) are never recommended.
    Lists come from :func:`recjax.retrieval.recommend` over the model's
    ``ranking_vectors()``. ``train`` (and an empty or missing part) gives ``{}``.
    ``sample`` > 0 measures that many of the part's users (:func:`sample_users` with
    ``seed``; 0, or at least their number: every user, and ``users`` says how many).

    Parameters
    ----------
    model : recjax.train.step.Model
        A split module whose family declares ``ranks``.
    inputs : dict
        Examples per part, each with ``user`` and ``item`` index arrays [n].
    k : int
        List length.

    Raises
    ------
    TypeError
        The family does not rank, or this instance gives no ranking vectors.
    """
    initial = model.bind(model.params)
    if not capabilities_of(initial).ranks:
        raise TypeError(f"{type(initial).__name__} does not rank (no ranking_vectors()): "
                        f"validate it by its task's metrics instead")
    users, items = _vectors(initial)
    vocabularies = (Vocabulary(np.arange(len(users), dtype=np.int64), "user"),
                    Vocabulary(np.arange(len(items), dtype=np.int64), "item"))

    def pattern(*names: str) -> Any:
        parts = [Ratings(np.asarray(inputs[n]["user"]), np.asarray(inputs[n]["item"]),
                         np.ones(len(inputs[n]["user"]), np.float32), np.zeros(len(inputs[n]["user"]), np.int64),
                         *vocabularies) for n in names]
        return user_item_pattern(parts)

    fixed: dict[str, tuple[Any, Any, np.ndarray]] = {}  # per part, built at its first call

    def evaluate(params: dict, part: str, prefix: str, sample: int = 0, seed: int = 0) -> dict[str, float]:
        if part == "train" or part not in inputs or len(inputs[part]["user"]) == 0:
            return {}
        if part not in fixed:  # what is excluded, what is relevant, who has relevant items
            seen = pattern("train", "val") if part == "test" and "val" in inputs else pattern("train")
            relevant = pattern(part)
            fixed[part] = (seen, relevant, np.flatnonzero(np.diff(relevant.indptr) > 0))
        seen, relevant, who = fixed[part]
        who = sample_users(who, sample, seed)
        user_vectors, item_vectors = _vectors(model.bind(params))
        top = recommend(user_vectors, item_vectors, who, min(k, len(item_vectors)), exclude=seen)
        return ranking_metrics(top.ids, relevant, k, users=who, prefix=prefix)

    return evaluate


def _vectors(module: Any) -> tuple[np.ndarray, np.ndarray]:
    vectors = module.ranking_vectors()
    if vectors is None:
        raise TypeError(f"this {type(module).__name__} gives no ranking vectors (its settings): "
                        f"it cannot be validated by ranking")
    return vectors
