"""Validation during training for families with their own measure: bag models.

Rating models are validated by their task's metrics
(:func:`recjax.evaluation.metrics.task_metrics`) of their predictions; a bag model
(softmax, Mult-DAE) has no per-rating predictions and is validated by ranking: its
held-out loss and precision / recall at ``k`` of each user's held-out movies, computed
on the device in one jitted call per epoch (:func:`bag_validator`). A family names
its validator in its :class:`recjax.models.ModelSpec` (``validator``).

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

from recjax.data.jsonlines import PAD
from recjax.models.softmax import _NEG, _positives

__all__ = ["bag_validator", "bag_ranking_stats"]


def bag_ranking_stats(logits: jax.Array, bag: jax.Array, targets: jax.Array, k: int = 10) -> dict[str, jax.Array]:
    """Per-user ranking metrics of full logits [B, C] against held-out ``targets`` [B, T].

    Movies in ``bag`` [B, L] are excluded from the ranking. Returns per-user
    arrays [B]: ``hits`` in the top ``k``, ``n_targets``, ``loss_sum`` (sum over
    targets of the cross-entropy of the target against the unrated, non-target
    movies) and ``has`` (1 if the user has targets).
    """
    n_items = logits.shape[1]
    rated = _positives(bag, n_items)
    masked = jnp.where(rated, _NEG, logits)
    _, top = jax.lax.top_k(masked, k)
    valid = targets >= 0
    hits = jnp.sum(jnp.any((top[:, :, None] == targets[:, None, :]) & valid[:, None, :], axis=2), axis=1)
    n_targets = jnp.sum(valid, axis=1)
    others = jnp.where(_positives(targets, n_items), _NEG, masked)
    lse = jax.nn.logsumexp(others, axis=1)[:, None]
    true = jnp.take_along_axis(logits, jnp.clip(targets, 0), axis=1)
    loss = (jnp.logaddexp(lse, true) - true) * valid
    return {"hits": hits, "n_targets": n_targets, "loss_sum": jnp.sum(loss, axis=1),
            "has": (n_targets > 0).astype(jnp.float32)}


def bag_validator(model: Any, inputs: dict[str, dict[str, np.ndarray]], *,
                  k: int = 10, chunk: int = 256) -> Callable[[dict, str, str], dict[str, float]]:
    """``evaluate(params, part, prefix) -> {prefix + "loss", "precision@k", "recall@k"}``
    of a bag model (softmax, Mult-DAE): each user's bag of training movies ranks the
    catalogue, bag movies excluded, against the part's held-out ``targets``; the same
    precision and recall as :func:`recjax.evaluation.metrics.ranking_metrics` (a test
    checks them against it), computed on the device during training.

    ``model`` is a :class:`recjax.train.step.Model`; ``inputs`` the family's examples
    per part (``bag`` [n, L] and ``targets`` [n, T], ``PAD``-padded). Parts without
    ``targets`` give ``{}``. One jitted function, chunked over users.
    """
    device = {name: {key: jnp.asarray(arrays[key]) for key in ("bag", "targets")}
              for name, arrays in inputs.items() if "targets" in arrays}

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

    def evaluate(params: dict, part: str, prefix: str) -> dict[str, float]:
        if part not in device:
            return {}
        stats = jax.device_get(per_user(params, device[part]["bag"], device[part]["targets"]))
        has = stats["has"] > 0
        users = max(int(has.sum()), 1)
        return {
            f"{prefix}loss": float(stats["loss_sum"].sum() / max(stats["n_targets"].sum(), 1)),
            f"{prefix}precision@{k}": float((stats["hits"][has] / k).sum() / users),
            f"{prefix}recall@{k}": float((stats["hits"][has] / stats["n_targets"][has]).sum() / users),
        }

    return evaluate
