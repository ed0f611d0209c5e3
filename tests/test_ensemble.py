"""Blends of rankers: per-user standardisation, agreement with a per-user reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recjax.evaluation.ensemble import BlendScorer, _standardise_rows, blend
from recjax.evaluation.protocol import RankingTask, evaluate_ranking
from recjax.models.baselines import EASE
from recjax.retrieval import topk
from recjax.scoring import EmbeddingScorer, FunctionScorer


def random_exclusions(rng, n_users: int, n_items: int, density: float) -> sp.csr_matrix:
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    m.data[:] = 1.0
    m.sort_indices()
    return m


def test_standardise_rows_by_hand():
    scores = np.array([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 5.0]])
    candidates = np.array([[True, True, True, False], [True, True, True, True]])
    z = _standardise_rows(scores, candidates)
    # row 0: mean 2, population std sqrt(2/3) over the three candidates; 100 is ignored
    np.testing.assert_allclose(z[0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5), 0.0])
    np.testing.assert_array_equal(z[1], 0.0)  # constant row: no preference
    assert not np.isnan(_standardise_rows(scores, np.zeros_like(candidates))).any()


def test_embedding_scores_match_the_kernel():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(7, 5)), rng.normal(size=(40, 5)) + 0.3
    for metric in ("dot", "cosine", "l2"):
        dense = EmbeddingScorer(users, items, metric).scores(np.arange(7))
        top = topk(users, items, 6, metric=metric)
        picked = np.take_along_axis(dense, top.ids, 1)
        expected = -top.scores ** 2 if metric == "l2" else top.scores
        np.testing.assert_allclose(picked, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.argsort(-dense, 1, kind="stable")[:, :6], top.ids)


def test_blend_matches_a_per_user_reference():
    rng = np.random.default_rng(1)
    n_users, n_items = 30, 50
    a = (rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4)))
    dense_b = rng.normal(size=(n_users, n_items)) * 50 + 7  # another scale entirely
    b = FunctionScorer(lambda users: dense_b[users], n_items)
    exclude = random_exclusions(rng, n_users, n_items, 0.3)
    weights = [0.7, 0.3]
    got = blend([a, b], weights).topk(np.arange(n_users), 8, exclude)
    for u in range(n_users):
        cand = np.setdiff1d(np.arange(n_items), exclude[u].indices)
        total = np.zeros(len(cand))
        for w, s in zip(weights, (a[0][u] @ a[1][cand].T, dense_b[u, cand])):
            total += w * (s - s.mean()) / s.std()
        order = cand[np.argsort(-total, kind="stable")][:8]
        np.testing.assert_array_equal(got.ids[u], order)
        assert not set(got.ids[u]) & set(exclude[u].indices)


def test_one_model_blend_ranks_like_the_model_and_ignores_scale():
    rng = np.random.default_rng(2)
    users, items = rng.normal(size=(20, 6)), rng.normal(size=(60, 6))
    exclude = random_exclusions(rng, 20, 60, 0.2)
    alone = EmbeddingScorer(users, items).topk(np.arange(20), 10, exclude)
    # a positive per-user affine change of the scores changes nothing after standardising
    scaled = FunctionScorer(lambda u: 40.0 * (users[u] @ items.T) + 3.0 * u[:, None], 60)
    for model in ([(users, items)], [scaled], [(users, items), scaled]):
        assert np.array_equal(blend(model).topk(np.arange(20), 10, exclude).ids, alone.ids)
    # a negative weight reverses the preference
    worst = blend([(users, items)], [-1.0]).topk(np.arange(20), 1, None).ids[:, 0]
    np.testing.assert_array_equal(worst, np.argmin(users @ items.T, 1))


def test_blend_of_two_complementary_models_beats_each(small_synthetic):
    """Two noisy views of the planted truth (items are drawn by popularity, so its log
    is the best ranking score): their blend ranks the test items better than either."""
    data, truth = small_synthetic
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(data))
    train, test = data.subset(perm[:9000]), data.subset(perm[9000:])
    task = RankingTask.from_ratings(train, test)
    true_scores = np.broadcast_to(np.log(truth.item_popularity), (data.n_users, data.n_items))
    views = [true_scores + rng.normal(scale=true_scores.std() * 1.5, size=true_scores.shape)
             for _ in range(2)]
    scorers = [FunctionScorer(lambda u, v=v: v[u], data.n_items) for v in views]
    ndcg = [evaluate_ranking(s, task, 10)["ndcg@10"] for s in scorers]
    mixed = evaluate_ranking(blend(scorers), task, 10)["ndcg@10"]
    assert mixed > max(ndcg) + 0.005, (ndcg, mixed)


def test_blend_with_ease_and_batches():
    rng = np.random.default_rng(4)
    from recjax.data import Ratings

    u, i = rng.integers(0, 40, 600), rng.integers(0, 30, 600)
    train = Ratings.from_raw(u, i, np.ones(600, np.float32))
    ease = EASE(10.0).fit(train)
    users = np.arange(train.n_users)
    exclude = train.csr(values=None)
    one = BlendScorer([EmbeddingScorer(*ease.ranking_vectors())], [1.0], batch_size=7)
    assert np.array_equal(one.topk(users, 5, exclude).ids,
                          EmbeddingScorer(*ease.ranking_vectors()).topk(users, 5, exclude).ids)
    assert blend([ease]).topk(users[:0], 5, exclude).ids.shape == (0, 5)


class _NoDenseScores:
    n_items = 5

    def topk(self, users, k, exclude):  # pragma: no cover - never called
        raise AssertionError


def test_blend_errors():
    vecs = (np.ones((3, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="at least one"):
        blend([])
    with pytest.raises(ValueError, match="2 scorers but 1 weights"):
        blend([vecs, vecs], [1.0])
    for bad in ([0.0], [np.nan], [np.inf]):
        with pytest.raises(ValueError, match="finite and not all zero"):
            blend([vecs], bad)
    with pytest.raises(ValueError, match="different sizes"):
        blend([vecs, (np.ones((3, 2)), np.ones((6, 2)))])
    with pytest.raises(TypeError, match="no dense scores"):
        blend([_NoDenseScores()])
    for bad in (np.nan, -np.inf):
        broken = FunctionScorer(lambda u, v=bad: np.full((len(u), 5), v), 5)
        with pytest.raises(ValueError, match="NaN or infinite"):
            blend([broken]).topk(np.arange(2), 2, None)
    with pytest.raises(ValueError, match="expected"):
        FunctionScorer(lambda u: np.zeros((len(u), 4)), 5).scores(np.arange(2))


def test_average_predictions():
    from recjax.evaluation.ensemble import average_predictions

    a, b = np.array([3.0, 4.0, 1.0]), np.array([5.0, 2.0, 2.0])
    np.testing.assert_allclose(average_predictions([a, b]), [4.0, 3.0, 1.5])
    # binary: the logit of the mean probability
    x, y = np.array([0.0, 2.0, -1.0]), np.array([1.0, -3.0, 4.0])
    mean_p = (1 / (1 + np.exp(-x)) + 1 / (1 + np.exp(-y))) / 2
    np.testing.assert_allclose(average_predictions([x, y], "binary"), np.log(mean_p / (1 - mean_p)))
    # stable far out: two confident models stay confident, opposite ones cancel
    far = average_predictions([np.array([800.0, 800.0]), np.array([900.0, -800.0])], "binary")
    assert far[0] > 700 and abs(far[1]) < 1e-9
    with pytest.raises(ValueError, match="no predictions"):
        average_predictions([])
    with pytest.raises(ValueError, match="task"):
        average_predictions([a], "ranking")
    with pytest.raises(ValueError, match="NaN or infinite"):
        average_predictions([a, np.array([1.0, np.nan, 2.0])])
    with pytest.raises(ValueError, match="one length"):
        average_predictions([a, a[:2]])


def test_average_predictions_weighted():
    from recjax.evaluation.ensemble import average_predictions

    a, b = np.array([3.0, 4.0, 1.0]), np.array([5.0, 2.0, 2.0])
    # relative weights 1:3, normalised: 0.25 a + 0.75 b
    np.testing.assert_allclose(average_predictions([a, b], weights=[1, 3]), [4.5, 2.5, 1.75])
    np.testing.assert_allclose(average_predictions([a, b], weights=[2, 2]), average_predictions([a, b]))
    np.testing.assert_allclose(average_predictions([a, b], weights=[0, 1]), b)  # a weight 0 drops a model
    x, y = np.array([0.0, 2.0, -1.0]), np.array([1.0, -3.0, 4.0])
    p = 0.2 / (1 + np.exp(-x)) + 0.8 / (1 + np.exp(-y))
    np.testing.assert_allclose(average_predictions([x, y], "binary", [1, 4]), np.log(p / (1 - p)))
    np.testing.assert_allclose(average_predictions([x, y], "binary", [0, 1]), y)
    for bad, match in (([1.0], "2 models but 1 weights"), ([1.0, -1.0], "non-negative"),
                       ([0.0, 0.0], "not all zero"), ([1.0, np.nan], "finite")):
        with pytest.raises(ValueError, match=match):
            average_predictions([a, b], weights=bad)
