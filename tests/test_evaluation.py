"""Metrics, each against a small example computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recjax.evaluation import (
    accuracy,
    auc,
    binary_metrics,
    catalogue_coverage,
    diversity,
    hit_rate,
    hits,
    log_loss,
    mae,
    map_at_k,
    mrr,
    mse,
    ndcg_at_k,
    norm_popularity_correlation,
    novelty,
    precision_at_k,
    rating_metrics,
    ranking_metrics,
    recall_at_k,
    rmse,
)
from recjax.retrieval import TopK


# ----------------------------------------------------------------------------- rating / binary
def test_rating_metrics_by_hand():
    p, t = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0])
    # errors -1, 0, 3: squares 1, 0, 9
    assert mse(p, t) == pytest.approx(10 / 3)
    assert rmse(p, t) == pytest.approx(math.sqrt(10 / 3))
    assert mae(p, t) == pytest.approx(4 / 3)
    assert rating_metrics(p, t, "test_") == {"test_mse": mse(p, t), "test_rmse": rmse(p, t),
                                             "test_mae": mae(p, t)}


def test_binary_metrics_by_hand():
    logits, labels = np.array([2.0, -1.0, 0.5, -3.0]), np.array([1, 0, 0, 1])
    assert accuracy(logits, labels) == 0.5  # right: 2.0/1, -1.0/0
    # positives 2.0, -3.0; negatives -1.0, 0.5: pairs won 2 of 4
    assert auc(logits, labels) == 0.5
    expected = np.mean([math.log1p(math.exp(-2.0)), math.log1p(math.exp(-1.0)),
                        math.log1p(math.exp(0.5)), math.log1p(math.exp(3.0))])
    assert log_loss(logits, labels) == pytest.approx(expected)
    assert set(binary_metrics(logits, labels, "v_")) == {"v_accuracy", "v_auc", "v_log_loss"}


def test_auc_ties_and_one_class():
    assert auc([1.0, 1.0], [1, 0]) == 0.5
    assert math.isnan(auc([1.0, 2.0], [1, 1]))


def test_rating_errors():
    with pytest.raises(ValueError, match="differ in length"):
        mse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no predictions"):
        mae([], [])


# ----------------------------------------------------------------------------- ranking
# Two users, 6 items. User 0 relevant {1, 4, 5}, user 1 relevant {0}, user 2 none.
RELEVANT = sp.csr_array(([1.0, 1.0, 1.0, 1.0], ([0, 0, 0, 1], [1, 4, 5, 0])), shape=(3, 6))
RECS = np.array([[4, 2, 1, 3],    # hits at ranks 1 and 3
                 [3, 2, 5, 0],    # hit at rank 4
                 [0, 1, 2, 3]])   # no relevant items: left out of every mean


def test_hits_matrix():
    hit, n_rel = hits(RECS, RELEVANT)
    assert hit.tolist() == [[True, False, True, False], [False, False, False, True],
                            [False, False, False, False]]
    assert n_rel.tolist() == [3, 1, 0]


def test_ranking_metrics_at_4_by_hand():
    log2 = math.log2
    # user 0: hits at 1, 3 of |rel| = 3
    p0, r0 = 2 / 4, 2 / 3
    dcg0 = 1 / log2(2) + 1 / log2(4)
    idcg0 = 1 / log2(2) + 1 / log2(3) + 1 / log2(4)  # min(4, 3) = 3 ideal hits
    ap0 = (1 / 1 + 2 / 3) / 3
    # user 1: hit at 4 of |rel| = 1
    p1, r1 = 1 / 4, 1.0
    dcg1, idcg1 = 1 / log2(5), 1.0
    ap1 = (1 / 4) / 1
    assert precision_at_k(RECS, RELEVANT) == pytest.approx((p0 + p1) / 2)
    assert recall_at_k(RECS, RELEVANT) == pytest.approx((r0 + r1) / 2)
    assert ndcg_at_k(RECS, RELEVANT) == pytest.approx((dcg0 / idcg0 + dcg1 / idcg1) / 2)
    assert map_at_k(RECS, RELEVANT) == pytest.approx((ap0 + ap1) / 2)
    assert mrr(RECS, RELEVANT) == pytest.approx((1 + 1 / 4) / 2)
    assert hit_rate(RECS, RELEVANT) == 1.0
    m = ranking_metrics(TopK(RECS, np.zeros(RECS.shape)), RELEVANT, prefix="t_")
    assert m["t_ndcg@4"] == pytest.approx(ndcg_at_k(RECS, RELEVANT))
    assert m["t_users"] == 2


def test_ranking_metrics_at_2_by_hand():
    log2 = math.log2
    # user 0: top-2 = [4, 2]: one hit at rank 1; ideal over min(2, 3) = 2 positions
    ndcg0 = 1 / (1 + 1 / log2(3))
    # user 1: top-2 = [3, 2]: nothing
    assert ndcg_at_k(RECS, RELEVANT, 2) == pytest.approx(ndcg0 / 2)
    assert precision_at_k(RECS, RELEVANT, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(RECS, RELEVANT, 2) == pytest.approx((1 / 3 + 0) / 2)
    assert map_at_k(RECS, RELEVANT, 2) == pytest.approx((1 / 2 + 0) / 2)  # (1/1) / min(2, 3)
    assert mrr(RECS, RELEVANT, 2) == pytest.approx(0.5)
    assert hit_rate(RECS, RELEVANT, 2) == 0.5
    assert set(ranking_metrics(RECS, RELEVANT, 2)) == {
        "precision@2", "recall@2", "ndcg@2", "map@2", "mrr@2", "hit_rate@2", "users"}


def test_perfect_ranking_scores_one():
    rel = sp.csr_array(([1.0, 1.0], ([0, 0], [2, 3])), shape=(1, 5))
    m = ranking_metrics(np.array([[3, 2, 0]]), rel)
    assert m["ndcg@3"] == pytest.approx(1.0)
    assert m["map@3"] == pytest.approx(1.0)
    assert m["recall@3"] == 1.0 and m["mrr@3"] == 1.0


def test_padding_and_users_mapping():
    recs = np.array([[0, -1, -1]])  # one item left, then padding
    hit, _ = hits(recs, RELEVANT, users=[1])
    assert hit.tolist() == [[True, False, False]]
    assert precision_at_k(recs, RELEVANT, users=[1]) == pytest.approx(1 / 3)
    # explicit zeros in the relevant matrix do not count
    rel = sp.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 0]), np.array([0, 1]))), shape=(1, 2))
    assert hits(np.array([[0, 1]]), rel)[0].tolist() == [[False, True]]


def test_ranking_errors():
    with pytest.raises(ValueError, match="k=5 exceeds"):
        precision_at_k(RECS, RELEVANT, 5)
    with pytest.raises(ValueError, match="pass users="):
        precision_at_k(RECS[:2], RELEVANT)
    with pytest.raises(ValueError, match="no items"):
        precision_at_k(RECS[2:], RELEVANT, users=[2])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k(RECS, RELEVANT, 0)
    with pytest.raises(ValueError, match="below 6"):
        hits(np.array([[6]]), RELEVANT, users=[0])
    with pytest.raises(ValueError, match="scipy.sparse"):
        hits(RECS, np.ones((3, 6)))


def test_catalogue_coverage():
    assert catalogue_coverage(RECS, 6) == 1.0
    assert catalogue_coverage(RECS, 6, k=1) == pytest.approx(3 / 6)  # {4, 3, 0}
    assert catalogue_coverage(np.array([[1, -1]]), 4) == 0.25
    with pytest.raises(ValueError, match="n_items"):
        catalogue_coverage(RECS, 5)


# ----------------------------------------------------------------------------- beyond accuracy
def test_diversity_by_hand():
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    # user 0: items 0, 1, 2: cosines 0 (0,1), 1/sqrt2 (0,2), 1/sqrt2 (1,2): mean sqrt2/3
    # user 1: items 0, 3: the zero vector has cosine 0: diversity 1
    # user 2: one item (and padding): left out
    recs = np.array([[0, 1, 2], [0, 3, -1], [2, -1, -1]])
    expected = ((1 - math.sqrt(2) / 3) + 1.0) / 2
    assert diversity(recs, emb) == pytest.approx(expected)
    assert diversity(np.array([[0, 0]]), emb) == pytest.approx(0.0)  # identical items
    with pytest.raises(ValueError, match="at least two"):
        diversity(np.array([[0], [1]]), emb)


def test_diversity_matches_pairwise_loop():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 5))
    recs = np.stack([rng.choice(30, 6, replace=False) for _ in range(8)])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    per_user = []
    for row in recs:
        sims = [unit[a] @ unit[b] for i, a in enumerate(row) for b in row[i + 1:]]
        per_user.append(1 - np.mean(sims))
    assert diversity(recs, emb) == pytest.approx(np.mean(per_user))


def test_novelty_by_hand():
    counts = np.array([8, 4, 2, 0])
    recs = np.array([[0, 1], [2, 3]])
    # p = count / 8 users, an unrated item counts once: p = [1, 1/2, 1/4, 1/8]
    out = novelty(recs, counts, n_users=8)
    assert out["popularity"] == pytest.approx(((1 + 0.5) / 2 + (0.25 + 0.125) / 2) / 2)
    assert out["self_information"] == pytest.approx(((0 + 1) / 2 + (2 + 3) / 2) / 2)
    assert out["ratings"] == pytest.approx(((8 + 4) / 2 + (2 + 0) / 2) / 2)
    # padding is ignored
    assert novelty(np.array([[3, -1]]), counts, 8)["self_information"] == pytest.approx(3.0)


def test_norm_popularity_correlation():
    counts = np.array([1, 10, 100, 1000, 0])
    emb = np.array([[0.1, 0], [0, 0.5], [1.0, 0], [0, 3.0], [9.0, 9.0]])  # last: unrated, ignored
    out = norm_popularity_correlation(emb, counts)
    assert out["spearman"] == pytest.approx(1.0)
    assert 0.9 < out["pearson_log"] <= 1.0
    reversed_ = norm_popularity_correlation(emb[::-1][1:], counts[:4])
    assert reversed_["spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="disagree"):
        norm_popularity_correlation(emb, counts[:3])
