"""The Google lab's softmax model (``--model softmax``), made sound.

A user is the bag of movies they rated. The user tower mean-pools three
embedding tables over the bag — movie ids, their genres (every (movie, genre)
pair counts once) and their release years — concatenates the three means, and
maps them through ``hidden_dims`` ReLU layers and a linear layer to a user
embedding ``psi(x)`` of size ``embedding_dim``. The logits are
``psi(x) @ V^T``, where ``V`` is the *same* movie table the bag is pooled from
(as in the lab).

What the lab gets wrong, and what happens here instead:

* the lab's target is a movie of the input bag itself; here each training step
  holds out ``targets_per_user`` random movies of every user's bag, removes them
  from the bag and predicts them (the cross-entropy is averaged over all of them);
* the user's other rated movies are removed from the softmax (they are not
  negatives), in training and evaluation alike;
* evaluation uses movies the model never saw for that user: for validation the
  bag is the user's training movies and the targets their validation movies; for
  test the bag is training + validation movies and the targets the test movies.
  Metrics: ``loss`` (full-softmax cross-entropy per target),
  ``precision@10`` and ``recall@10`` of the top 10 movies the user has not
  rated (averaged over users with at least one target).

The softmax (``negatives``): ``full`` over the catalogue; or sampled, for large
catalogues, with ``uniform`` negatives (``num_sampled`` per step, shared by the
batch) or ``in_batch`` ones (the other rows' targets, drawn in proportion to
training popularity), both with the log-Q correction (each negative's logit minus
the log of its expected count among the candidates, which makes the sampled loss
tend to the full one as samples grow) and with accidental hits (a candidate that
is the row's target or another movie the user rated) removed.

Examples are users: ``--batch-size`` counts users, and one step trains on
``batch_size * targets_per_user`` (user, held-out movie) pairs. The model ignores
rating values (any rated movie is a positive): leave ``--task`` at its default.

Example
-------
>>> import jax.numpy as jnp, numpy as np
>>> from flax import nnx
>>> from recjax.models.softmax import SoftmaxConfig, SoftmaxModel
>>> model = SoftmaxModel(SoftmaxConfig(embedding_dim=4, hidden_dims="8"), n_items=6,
...                      genres=np.array([[0, -1], [1, 2], [0, -1], [2, -1], [1, -1], [0, 1]]),
...                      years=np.array([0, 0, 1, 1, 2, -1]), rngs=nnx.Rngs(0))
>>> model({"bag": jnp.array([[0, 3, -1], [5, -1, -1]])}).shape
(2, 6)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recjax.data.bags import bag_inputs, item_features
from recjax.data.dataset import Ratings
from recjax.data.jsonlines import PAD
from recjax.models.base import EXCLUDED_LOGIT, BagUser, Constant, bag_mask, parse_dims, table
from recjax.models.capabilities import Capabilities

__all__ = ["SoftmaxConfig", "SoftmaxModel"]

NEGATIVES = ("full", "uniform", "in_batch")


@dataclass(frozen=True)
class SoftmaxConfig:
    """Softmax model hyper-parameters (defaults: the recommended ml-100k setting)."""

    embedding_dim: int = field(
        default=32, metadata={"help": "movie embedding size (= the user embedding size)"})
    genre_dim: int = field(
        default=3, metadata={"help": "genre embedding size (0 = no genre input)"})
    year_dim: int = field(
        default=2, metadata={"help": "release-year embedding size (0 = no year input)"})
    hidden_dims: str = field(
        default="64,64",
        metadata={"help": "comma-separated widths of the ReLU dense layers (\"\" = none)"})
    targets_per_user: int = field(
        default=8, metadata={"help": "movies held out of each user's bag per training step"})
    negatives: str = field(
        default="full", metadata={"help": "full softmax, or sampled: \"uniform\" or \"in_batch\""})
    num_sampled: int = field(default=256, metadata={"help": "uniform negatives per step"})
    max_bag: int = field(
        default=0, metadata={"help": "keep each user's latest max_bag movies in the bag; 0 = all"})
    init_std: float = field(
        default=0.05, metadata={"help": "std of the normal initialisation of both tables"})
    l2_table: float = field(
        default=0.0, metadata={"help": "L2 on the whole tables (sum of squares)"})

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        parse_dims(self.hidden_dims)
        if self.negatives not in NEGATIVES:
            raise ValueError(f"unknown negatives {self.negatives!r}; choose one of {', '.join(NEGATIVES)}")
        for name in ("targets_per_user", "num_sampled"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("genre_dim", "year_dim", "max_bag", "init_std", "l2_table"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def _masked_mean(vectors: jax.Array, mask: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    total = jnp.sum(vectors * mask[..., None], axis=axes)
    count = jnp.sum(mask, axis=axes)[..., None]
    return total / jnp.maximum(count, 1.0)


def _sampled_logits(user: jax.Array, table: jax.Array, target: jax.Array, candidates: jax.Array,
                   log_q: jax.Array, hit: jax.Array) -> jax.Array:
    """Sampled-softmax logits with the log-Q correction and accidental hits removed.

    Each sampled logit is lowered by the log of its expected count among the
    candidates, ``log(S q_j)``, so ``sum_j exp(logit_j)`` is an importance-sampling
    estimate of the full softmax's sum over the other movies; the true logit is
    kept as is. The loss thus tends to the full-softmax loss as ``S`` grows.

    Parameters
    ----------
    user : [N, d]
        User embeddings, one row per (user, target) pair.
    table : [C, d]
        Movie embeddings.
    target : [N]
        Each row's true movie.
    candidates : [S]
        The sampled movies, shared by all rows.
    log_q : [C]
        Log expected count of each movie among the candidates.
    hit : [N, S] bool
        Candidates to remove from a row (accidental hits).

    Returns
    -------
    [N, 1 + S]
        Column 0 is the true movie (label 0).
    """
    true = jnp.sum(user * table[target], axis=-1, keepdims=True)
    sampled = user @ table[candidates].T - log_q[candidates][None, :]
    return jnp.concatenate([true, jnp.where(hit, EXCLUDED_LOGIT, sampled)], axis=-1)


class SoftmaxModel(BagUser, nnx.Module):
    """User tower over a bag of movies; logits against the movie table.

    Parameters
    ----------
    cfg : SoftmaxConfig
    n_items : int
    genres : int array [n_items, G]
        Genre indices of each movie, ``PAD``-padded (G may be 0).
    years : int array [n_items]
        Release-year index of each movie (-1 unknown).
    item_counts : array [n_items], optional
        Training frequency of each movie (the in-batch sampler's distribution).
    rngs : nnx.Rngs

    A user is a bag of movies: it ranks the catalogue for a bag
    (``ranking_vectors(bag)``), embeds and folds in a new user (its user tower over
    their movies); it scores no single (user, item) pair (see :mod:`recjax.models.base`).
    """

    capabilities = Capabilities(ranks=True, embeds=True, bag=True, fold_in=True)

    def __init__(self, cfg: SoftmaxConfig, n_items: int, *, genres: np.ndarray, years: np.ndarray,
                 item_counts: np.ndarray | None = None, rngs: nnx.Rngs) -> None:
        self.cfg, self.n_items = cfg, n_items
        genres, years = np.asarray(genres, np.int32).reshape(n_items, -1), np.asarray(years, np.int32)
        init = jax.nn.initializers.normal(cfg.init_std)
        self.movie_embedding = table(init(rngs.params(), (n_items, cfg.embedding_dim)))
        self.use_genres = bool(cfg.genre_dim and genres.size and genres.max() >= 0)
        self.use_years = bool(cfg.year_dim and years.size and years.max() >= 0)
        width = cfg.embedding_dim
        self.genres = Constant(jnp.asarray(genres))
        self.years = Constant(jnp.asarray(years))
        if self.use_genres:
            self.genre_embedding = table(init(rngs.params(), (int(genres.max()) + 1, cfg.genre_dim)))
            width += cfg.genre_dim
        if self.use_years:
            self.year_embedding = table(init(rngs.params(), (int(years.max()) + 1, cfg.year_dim)))
            width += cfg.year_dim
        self.hidden = nnx.List()
        for dim in parse_dims(cfg.hidden_dims):
            self.hidden.append(nnx.Linear(width, dim, rngs=rngs))
            width = dim
        self.project = nnx.Linear(width, cfg.embedding_dim, rngs=rngs)
        counts = np.ones(n_items) if item_counts is None else np.asarray(item_counts, np.float64) + 1.0
        self.log_p = Constant(jnp.asarray(np.log(counts / counts.sum()), jnp.float32))

    # ------------------------------------------------------------------ tower
    def user_embedding(self, bag: jax.Array) -> jax.Array:
        """User embeddings [B, embedding_dim] of bags of movie indices [B, L] (``PAD`` = -1)."""
        mask = (bag >= 0).astype(jnp.float32)
        safe = jnp.clip(bag, 0, self.n_items - 1)
        parts = [_masked_mean(self.movie_embedding[safe], mask, (1,))]
        if self.use_genres:
            genres = self.genres[...][safe]  # [B, L, G]
            genre_mask = (genres >= 0) * mask[..., None]
            parts.append(_masked_mean(self.genre_embedding[jnp.clip(genres, 0)], genre_mask, (1, 2)))
        if self.use_years:
            years = self.years[...][safe]
            parts.append(_masked_mean(self.year_embedding[jnp.clip(years, 0)], (years >= 0) * mask, (1,)))
        h = jnp.concatenate(parts, axis=-1)
        for layer in self.hidden:
            h = jax.nn.relu(layer(h))
        return self.project(h)

    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits: [B, n_items] for bags; in training (after :meth:`augment`) one row per target."""
        user = self.user_embedding(batch["bag"])
        if "target" not in batch:
            return user @ self.movie_embedding[...].T
        target = batch["target"]
        m = target.shape[0] // user.shape[0]
        user = jnp.repeat(user, m, axis=0)
        row_user = jnp.repeat(jnp.arange(batch["bag"].shape[0]), m)
        positives = bag_mask(batch["positives"], self.n_items)  # [B, C]
        table = self.movie_embedding[...]
        if self.cfg.negatives == "full":
            logits = user @ table.T
            hit = positives[row_user] & (jnp.arange(self.n_items)[None, :] != target[:, None])
            return jnp.where(hit, EXCLUDED_LOGIT, logits)
        if self.cfg.negatives == "uniform":
            candidates = batch["candidates"]
            log_q = jnp.full((self.n_items,), math.log(candidates.shape[0] / self.n_items))
            hit = positives[:, candidates][row_user] | (candidates[None, :] == target[:, None])
            return _sampled_logits(user, table, target, candidates, log_q, hit)
        # in_batch: the candidates are the batch's targets; the row's own target is the label
        n = target.shape[0]
        log_q = self.log_p[...] + math.log(n)
        own = jnp.eye(n, dtype=bool)
        logits = user @ table[target].T - jnp.where(own, 0.0, log_q[target][None, :])
        real = batch["weight"] > 0
        hit = (positives[:, target][row_user] | ~real[None, :]) & ~own
        return jnp.where(hit, EXCLUDED_LOGIT, logits)

    def augment(self, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        """Hold out ``targets_per_user`` random movies of each bag as targets.

        Rows keep at least one movie in the bag; picks that cannot be made get
        weight 0. Returns the pruned ``bag``, the full bag as ``positives``, the
        flat ``target`` [B*m], its ``weight`` and the ``label`` the loss reads.
        """
        bag, m = batch["bag"], self.cfg.targets_per_user
        valid = bag >= 0
        n_valid = jnp.sum(valid, axis=1)
        pick_key, sample_key = jax.random.split(key)
        score = jnp.where(valid, jax.random.uniform(pick_key, bag.shape), -1.0)
        _, position = jax.lax.top_k(score, min(m, bag.shape[1]))  # [B, m']
        m_eff = position.shape[1]
        ok = jnp.arange(m_eff)[None, :] < jnp.minimum(m_eff, n_valid - 1)[:, None]
        target = jnp.where(ok, jnp.take_along_axis(bag, position, axis=1), 0)
        rows = jnp.broadcast_to(jnp.arange(bag.shape[0])[:, None], position.shape)
        cut = jnp.where(ok, position, bag.shape[1])  # not-ok picks go to a dropped extra column
        removed = jnp.zeros((bag.shape[0], bag.shape[1] + 1), bool).at[rows, cut].set(True)[:, :-1]
        weight = (batch["weight"][:, None] * ok).reshape(-1)
        out = {"bag": jnp.where(removed, PAD, bag), "positives": bag, "target": target.reshape(-1),
               "weight": weight}
        if self.cfg.negatives == "full":
            out["label"] = out["target"]
        elif self.cfg.negatives == "uniform":
            out["candidates"] = jax.random.randint(sample_key, (self.cfg.num_sampled,), 0, self.n_items)
            out["label"] = jnp.zeros_like(out["target"])
        else:
            out["label"] = jnp.arange(out["target"].shape[0])
        return out

    def penalty(self, batch: dict[str, jax.Array]) -> jax.Array:
        """``l2_table`` times the sum of squares of the embedding tables."""
        if not self.cfg.l2_table:
            return jnp.zeros(())
        total = jnp.sum(self.movie_embedding[...] ** 2)
        if self.use_genres:
            total = total + jnp.sum(self.genre_embedding[...] ** 2)
        if self.use_years:
            total = total + jnp.sum(self.year_embedding[...] ** 2)
        return self.cfg.l2_table * total

    def row_lookups(self) -> dict[tuple, tuple[str, ...]]:
        """None of its tables trains by rows (see :mod:`recjax.models.base`): the logits
        compare targets and candidates with the bag's positives by movie index, the
        genre and year rows come through constant tables, and the full softmax reads
        the whole movie table."""
        return {}

    def embeddings(self, inputs: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
        """(user embeddings of ``inputs["bag"]`` [n, d], movie table [n_items, d])."""
        return self.bag_users(inputs["bag"]), self.movie_embedding[...]


# ----------------------------------------------------------------------------- data
def softmax_inputs(cfg: SoftmaxConfig, splits: dict[str, Ratings]) -> dict[str, dict[str, np.ndarray]]:
    """Per-user examples for each part: :func:`recjax.data.bags.bag_inputs` with ``cfg.max_bag``."""
    return bag_inputs(splits, cfg.max_bag)


def build_softmax(cfg: SoftmaxConfig, train: Ratings, task: str = "regression", seed: int = 0) -> SoftmaxModel:
    """The softmax model for a training part (its movies, genres and years)."""
    genres, years = item_features(train)
    counts = np.bincount(train.item, minlength=train.n_items)
    return SoftmaxModel(cfg, train.n_items, genres=genres, years=years, item_counts=counts,
                        rngs=nnx.Rngs(seed))
