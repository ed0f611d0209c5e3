"""The ranking protocol against a slow per-user Python reference, and its baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recjax.data import Ratings, Vocabulary
from recjax.evaluation.experiment import Experiment
from recjax.evaluation.protocol import RankingTask, evaluate_ranking
from recjax.models.baselines import EASE, MostPopular
from recjax.scoring import EmbeddingScorer, FunctionScorer, as_scorer


def random_split(seed: int, n_users: int = 40, n_items: int = 60, n: int = 700):
    """Random ratings, split into train and test (same vocabularies; some users lack test)."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(n_users * n_items, n, replace=False)
    users, items = keys // n_items, keys % n_items
    data = Ratings.from_raw(users, items, rng.integers(1, 6, n).astype(float),
                            users=Vocabulary.from_ids(np.arange(n_users), "user"),
                            items=Vocabulary.from_ids(np.arange(n_items), "item"))
    test_rows = rng.random(n) < 0.2
    return data.subset(~test_rows), data.subset(test_rows)


def reference(scores: np.ndarray, train: Ratings, test: Ratings, k: int) -> dict[str, float]:
    """Per user, in plain Python: rank unrated items, score against test items."""
    rated = {u: set() for u in range(train.n_users)}
    for u, i in zip(train.user.tolist(), train.item.tolist()):
        rated[u].add(i)
    relevant = {}
    for u, i in zip(test.user.tolist(), test.item.tolist()):
        relevant.setdefault(u, set()).add(i)
    out = {name: [] for name in ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")}
    recommended = set()
    for u in sorted(relevant):
        candidates = [i for i in range(train.n_items) if i not in rated[u]]
        candidates.sort(key=lambda i: (-scores[u, i], i))
        top = candidates[:k]
        recommended.update(top)
        rel = relevant[u]
        hit = [i in rel for i in top]
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hit) if h)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(k, len(rel))))
        ap, found = 0.0, 0
        for j, h in enumerate(hit):
            if h:
                found += 1
                ap += found / (j + 1)
        first = next((j + 1 for j, h in enumerate(hit) if h), None)
        out["precision"].append(sum(hit) / k)
        out["recall"].append(sum(hit) / len(rel))
        out["ndcg"].append(dcg / idcg)
        out["map"].append(ap / min(k, len(rel)))
        out["mrr"].append(1 / first if first else 0.0)
        out["hit_rate"].append(float(any(hit)))
    result = {f"{name}@{k}": float(np.mean(v)) for name, v in out.items()}
    result[f"coverage@{k}"] = len(recommended) / train.n_items
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 12])
def test_embedding_ranking_matches_reference(seed, k):
    train, test = random_split(seed)
    rng = np.random.default_rng(100 + seed)
    users = rng.normal(size=(train.n_users, 4)).astype(np.float64)
    items = rng.normal(size=(train.n_items, 4)).astype(np.float64)
    task = RankingTask.from_ratings(train, test)
    got = evaluate_ranking((users, items), task, k)
    want = reference(users @ items.T, train, test, k)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert got["users"] == len(np.unique(test.user))


@pytest.mark.parametrize("seed", [3, 4])
def test_function_scorer_matches_reference_and_kernel(seed):
    train, test = random_split(seed)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(train.n_users, train.n_items))
    task = RankingTask.from_ratings(train, test)
    fn = FunctionScorer(lambda u: scores[u], train.n_items, batch_size=7)
    got = evaluate_ranking(fn, task, 10)
    want = reference(scores, train, test, 10)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_ties_and_integer_scores_follow_lower_id():
    train, test = random_split(5)
    scores = np.random.default_rng(5).integers(0, 3, (train.n_users, train.n_items)).astype(float)
    task = RankingTask.from_ratings(train, test)
    got = evaluate_ranking(FunctionScorer(lambda u: scores[u], train.n_items), task, 8)
    want = reference(scores, train, test, 8)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_train_items_are_never_ranked():
    train, test = random_split(6)
    task = RankingTask.from_ratings(train, test)
    rng = np.random.default_rng(0)
    top = task.rank((rng.normal(size=(train.n_users, 3)), rng.normal(size=(train.n_items, 3))), 20)
    rated = task.train[task.users].toarray().astype(bool)
    picked = np.take_along_axis(rated, np.maximum(top.ids, 0), 1) & (top.ids >= 0)
    assert not picked.any()
    unfiltered = task.rank((rng.normal(size=(train.n_users, 3)), rng.normal(size=(train.n_items, 3))),
                           20, exclude_train=False)
    assert (np.take_along_axis(rated, unfiltered.ids, 1)).any()


def test_dense_topk_padding_and_order():
    from recjax.retrieval import dense_topk

    scores = np.array([[0.5, 2.0, 2.0, -1.0], [1.0, 0.0, 3.0, 2.0]])
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 1], [1, 1, 1, 1]]))
    top = dense_topk(scores, 3, exclude=exclude)
    assert top.ids.tolist() == [[1, 2, -1], [-1, -1, -1]]
    assert np.isneginf(top.scores[0, 2])
    with pytest.raises(ValueError, match="NaN"):
        dense_topk(np.array([[np.nan]]), 1)


def test_two_train_parts_are_both_excluded():
    train, test = random_split(7)
    half = len(train) // 2
    task_one = RankingTask.from_ratings(train, test)
    task_two = RankingTask.from_ratings([train.subset(slice(0, half)), train.subset(slice(half, None))], test)
    assert (task_one.train != task_two.train).nnz == 0
    assert task_two.item_counts.tolist() == np.bincount(train.item, minlength=train.n_items).tolist()


def test_most_popular_matches_counts():
    train, test = random_split(8)
    pop = MostPopular().fit(train)
    task = RankingTask.from_ratings(train, test)
    counts = np.bincount(train.item, minlength=train.n_items).astype(float)
    got = evaluate_ranking(pop, task, 5)
    want = reference(np.tile(counts, (train.n_users, 1)), train, test, 5)
    assert got["ndcg@5"] == pytest.approx(want["ndcg@5"])
    assert pop.predict(np.array([0]), np.array([3])).tolist() == [counts[3]]


def test_ease_closed_form_by_hand():
    # 3 users x 3 items; B = I - P diag(1/diag(P)), P = (X^T X + lam I)^-1
    data = Ratings.from_raw([0, 0, 1, 1, 2], [0, 1, 1, 2, 0], [5.0] * 5)
    ease = EASE(l2=1.0).fit(data)
    x = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], float)
    p = np.linalg.inv(x.T @ x + np.eye(3))
    b = np.eye(3) - p / np.diag(p)
    np.testing.assert_allclose(np.diag(ease.b_), 0.0, atol=1e-7)
    np.testing.assert_allclose(ease.b_, b, atol=1e-6)
    users, items = ease.ranking_vectors()
    np.testing.assert_allclose(users @ items.T, x @ b, atol=1e-6)
    np.testing.assert_allclose(ease.predict(np.array([0, 2]), np.array([2, 1])), (x @ b)[[0, 2], [2, 1]],
                               atol=1e-6)
    with pytest.raises(ValueError, match="l2"):
        EASE(0)


def test_ease_beats_popularity_on_clustered_data():
    # two taste groups: users 0-29 rate items 0-19 only, users 30-59 items 20-39 (more ratings)
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(60):
        pool = np.arange(20) if u < 30 else np.arange(20, 40)
        chosen = rng.choice(pool, 8 if u < 30 else 14, replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    data = Ratings.from_raw(users, items, np.ones(len(users)))
    test_rows = rng.random(len(data)) < 0.25
    train, test = data.subset(~test_rows), data.subset(test_rows)
    task = RankingTask.from_ratings(train, test)
    results = Experiment(task, {"pop": MostPopular().fit(train), "ease": EASE(5).fit(train)}, k=5).run().table
    assert results["ease"]["ndcg@5"] > results["pop"]["ndcg@5"] + 0.1
    assert 0 < results["pop"]["coverage@5"] < results["ease"]["coverage@5"]
    assert results["pop"]["diversity@5"] == pytest.approx(0.0)  # 1-D vectors: all alike


def test_mf_vectors_rank_like_the_model():
    import jax.numpy as jnp
    from flax import nnx

    from recjax.models.mf import MF, MFConfig

    model = MF(MFConfig(embedding_dim=3, init_std=0.5), n_users=4, n_items=7, global_mean=3.0,
               rngs=nnx.Rngs(0))
    model.item_bias[...] = jnp.arange(7.0) / 3
    model.user_bias[...] = jnp.arange(4.0)
    users, items = model.ranking_vectors()
    u, i = np.meshgrid(np.arange(4), np.arange(7), indexing="ij")
    full = np.asarray(model({"user": jnp.asarray(u.ravel()), "item": jnp.asarray(i.ravel())})).reshape(4, 7)
    dot = users @ items.T
    np.testing.assert_allclose(full - full[:, :1], dot - dot[:, :1], atol=1e-5)  # same per-user order
    assert isinstance(as_scorer(model), EmbeddingScorer)


def test_task_and_scorer_errors():
    train, test = random_split(9)
    other = Ratings.from_raw([1], [1], [1.0])
    with pytest.raises(ValueError, match="different vocabularies"):
        RankingTask.from_ratings(other, test)
    with pytest.raises(ValueError, match="empty"):
        RankingTask.from_ratings(train, test.subset(slice(0, 0)))
    task = RankingTask.from_ratings(train, test)
    with pytest.raises(ValueError, match="scores 5 items"):
        task.rank((np.ones((train.n_users, 2)), np.ones((5, 2))), 3)
    with pytest.raises(ValueError, match="d=2"):
        EmbeddingScorer(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(TypeError, match="cannot rank"):
        as_scorer("popularity")
    with pytest.raises(ValueError, match="expected"):
        task.rank(FunctionScorer(lambda u: np.zeros((len(u), 3)), train.n_items), 2)


@pytest.mark.parametrize("comparators, layers, activation, task, linear, token_bias", [
    ("hadamard,concat", 1, "linear", "regression", True, False),
    ("hadamard", 0, "relu", "binary", True, False),
    ("hadamard,concat", 0, "relu", "regression", True, True),
    ("hadamard", 0, "relu", "binary", True, True),
    ("hadamard,abs_diff", 0, "linear", "regression", False, False),
    ("hadamard", 1, "relu", "regression", False, False),
])
def test_pair_vectors_rank_like_the_model(comparators, layers, activation, task, linear, token_bias):
    import jax
    import jax.numpy as jnp

    from recjax.models.pair import PairConfig, build_pair
    from recjax.scoring import FunctionScorer

    train, _ = random_split(10, n_users=6, n_items=9, n=40)
    cfg = PairConfig(enc_dim=4, enc0_token_embedding_dim=3, enc1_token_embedding_dim=3, mlp_dim=5,
                     comparator_list=comparators, mlp_layers=layers, mlp_activation=activation,
                     token_bias=token_bias)
    model = build_pair(cfg, train, task, 0)
    if token_bias:  # the biases start at zero: give them values that change the order
        for table, seed in zip(model.biases, (1, 2)):
            table.embedding[...] = jax.random.normal(jax.random.key(seed), table.embedding.shape)
    vectors = model.ranking_vectors()
    assert (vectors is not None) == linear
    if not linear:
        assert isinstance(as_scorer(model), FunctionScorer)  # ranked by its dense scores
        return
    assert isinstance(as_scorer(model), EmbeddingScorer)
    u, i = np.meshgrid(np.arange(6), np.arange(9), indexing="ij")
    full = np.asarray(model({"user": jnp.asarray(u.ravel()), "item": jnp.asarray(i.ravel())})).reshape(6, 9)
    dot = vectors[0] @ vectors[1].T
    np.testing.assert_allclose(full - full[:, :1], dot - dot[:, :1], atol=1e-4)


def _train_val_test_by_hand():
    """2 users x 5 items, one Ratings split into train / validation / test parts.

    user 0: train {0}, validation {1}, test {2, 4};  user 1: train {3}, validation {4}, test {2}.
    """
    rows = [(0, 0, "train"), (0, 1, "val"), (0, 2, "test"), (0, 4, "test"),
            (1, 3, "train"), (1, 4, "val"), (1, 2, "test")]
    users, items, parts = (np.array(c) for c in zip(*rows))
    data = Ratings.from_raw(users, items, np.full(len(rows), 4.0),
                            users=Vocabulary.from_ids(np.arange(2), "user"),
                            items=Vocabulary.from_ids(np.arange(5), "item"))
    return [data.subset(parts == name) for name in ("train", "val", "test")]


@pytest.mark.parametrize("kind", ["embedding", "function"])
def test_validation_items_are_excluded_like_train_items(kind):
    """The protocol ranks what a user rated in neither train nor validation: here each
    user's best-scored unrated item is a validation item, which must not take a slot."""
    train, val, test = _train_val_test_by_hand()
    task = RankingTask.from_ratings([train, val], test)
    user_vectors = np.array([[1.0], [-1.0]])  # user 0 prefers low item ids, user 1 high ones
    item_vectors = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
    model = ((user_vectors, item_vectors) if kind == "embedding" else
             FunctionScorer(lambda u: user_vectors[u] @ item_vectors.T, 5))
    # without validation excluded the lists would be [[1, 2], [4, 2]], with MRR@2 0.5
    assert task.rank(model, 2).ids.tolist() == [[2, 3], [2, 1]]
    assert task.train.toarray().tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert task.item_counts.tolist() == [1, 1, 0, 1, 1]
    got = evaluate_ranking(model, task, 2)
    assert got["mrr@2"] == 1.0 and got["hit_rate@2"] == 1.0 and got["precision@2"] == 0.5
    assert got["recall@2"] == pytest.approx(0.75)  # user 0: 1 of 2 test items; user 1: 1 of 1
    assert got["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 1) / 2)
    assert got["coverage@2"] == pytest.approx(3 / 5)  # items 1, 2, 3


def test_a_runs_ranking_task_excludes_its_train_and_validation_parts(tmp_path_factory):
    from _tiny_run import tiny_run

    from recjax.explore import load_run

    run = load_run(tiny_run(tmp_path_factory))
    pattern = RankingTask.from_run(run).train.tocoo()
    ranked_out = set(zip(pattern.row.tolist(), pattern.col.tolist()))

    def pairs(part):
        return set(zip(run.splits[part].user.tolist(), run.splits[part].item.tolist()))

    assert pairs("val"), "the run has no validation part to check"
    assert ranked_out == pairs("train") | pairs("val")
    assert not ranked_out & pairs("test")
