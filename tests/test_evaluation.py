"""Metrics, each against a small example computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from recjax.metrics import (
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
    ranking_metrics,
    rating_metrics,
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
    with pytest.raises(ValueError, match="k must be >= 1"):
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


# ----------------------------------------------------------------------------- bounded memory
# The formulas as they were before the metrics were blocked over users: [U, k] (and
# diversity's [U, k, d]) temporaries in one piece. The blocked code must agree with them.
def _reference_per_user(ids, relevant, users):
    rel = sp.csr_matrix(relevant)
    rel.eliminate_zeros()
    dense = rel.toarray() > 0
    hit = (ids >= 0) & dense[users[:, None], np.maximum(ids, 0)]
    n_rel = dense[users].sum(1)
    keep = n_rel > 0
    hit, n_rel = hit[keep].astype(np.float64), n_rel[keep]
    k = hit.shape[1]
    positions = np.arange(1, k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(positions + 1.0)
    n_hits = hit.sum(1)
    first = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    return {
        "precision": n_hits / k,
        "recall": n_hits / n_rel,
        "ndcg": (hit * discount).sum(1) / np.cumsum(discount)[np.minimum(n_rel, k) - 1],
        "map": (np.cumsum(hit, 1) / positions * hit).sum(1) / np.minimum(n_rel, k),
        "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0),
        "hit_rate": (n_hits > 0).astype(np.float64),
    }


def _reference_diversity(ids, emb):
    emb = np.asarray(emb, np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    valid = ids >= 0
    vectors = unit[np.where(valid, ids, 0)] * valid[..., None]
    m = valid.sum(1)
    pair_sum = (vectors.sum(1) ** 2).sum(1) - (vectors**2).sum((1, 2))
    keep = m >= 2
    return float(np.mean(1.0 - pair_sum[keep] / (m[keep] * (m[keep] - 1))))


def _reference_novelty(ids, counts, n_users):
    valid = ids >= 0
    keep = valid.any(1)
    c = np.asarray(counts, np.float64)[np.where(valid, ids, 0)]
    p = np.maximum(c, 1.0) / n_users
    m = valid.sum(1)[keep]
    return {name: float(np.mean((v * valid).sum(1)[keep] / m))
            for name, v in (("popularity", p), ("self_information", -np.log2(p)), ("ratings", c))}


def _random_lists(seed, n_users=97, n_items=50, k=23):
    """Top-k lists with -1 padding tails, some users without relevant items, int32 ids."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)]).astype(np.int32)
    tail = rng.integers(0, k + 1, n_users)
    ids[np.arange(k)[None, :] >= tail[:, None]] = -1
    dense = rng.random((n_users + 5, n_items)) < 0.15
    dense[rng.integers(0, n_users + 5, 10)] = False  # users with nothing relevant
    users = rng.permutation(n_users + 5)[:n_users]
    return ids, sp.csr_matrix(dense.astype(np.float64)), users, rng


@pytest.mark.parametrize("block_size", [1, 7, 41, None])
@pytest.mark.parametrize("seed", [0, 1])
def test_blocked_ranking_metrics_equal_the_unblocked_formulas(seed, block_size):
    ids, relevant, users, _ = _random_lists(seed)
    want = _reference_per_user(ids.astype(np.int64), relevant, users)
    for k in (1, 5, 23):
        ref = _reference_per_user(ids[:, :k].astype(np.int64), relevant, users)
        got = ranking_metrics(ids, relevant, k, users=users, block_size=block_size)
        for name, values in ref.items():
            assert got[f"{name}@{k}"] == pytest.approx(values.mean(), rel=1e-12, abs=1e-15), (name, k)
        assert got["users"] == len(ref["precision"])
    hit, n_rel = hits(ids, relevant, users=users, block_size=block_size)
    dense = relevant.toarray() > 0
    assert np.array_equal(hit, (ids >= 0) & dense[users[:, None], np.maximum(ids, 0)])
    assert np.array_equal(n_rel, dense[users].sum(1))
    assert precision_at_k(ids, relevant, users=users, block_size=block_size) == pytest.approx(
        want["precision"].mean(), rel=1e-12)
    assert map_at_k(ids, relevant, users=users, block_size=block_size) == pytest.approx(
        want["map"].mean(), rel=1e-12)


@pytest.mark.parametrize("block_size", [1, 7, 41, None])
def test_blocked_beyond_accuracy_metrics_equal_the_unblocked_formulas(block_size):
    ids, _, _, rng = _random_lists(3)
    emb = rng.normal(size=(50, 6)).astype(np.float32)
    emb[4] = 0.0  # a zero vector: cosine 0
    counts = rng.integers(0, 30, 50)
    assert diversity(ids, emb, block_size=block_size) == pytest.approx(
        _reference_diversity(ids.astype(np.int64), emb), rel=1e-12)
    got = novelty(ids, counts, 40, block_size=block_size)
    for name, value in _reference_novelty(ids.astype(np.int64), counts, 40).items():
        assert got[name] == pytest.approx(value, rel=1e-12)
    valid = ids[ids >= 0]
    assert catalogue_coverage(ids, 50, block_size=block_size) == np.unique(valid).size / 50
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        diversity(ids, emb, block_size=0)


def test_diversity_normalises_a_large_table_in_item_blocks(monkeypatch):
    """With a working memory smaller than the unit table, the table is normalised a block
    of items at a time (and the users go one by one): the same answer."""
    import recjax.metrics as evaluation

    ids, _, _, rng = _random_lists(4, n_users=13, k=23)
    ids[0, :3] = [7, 7, 7]  # a repeated item counts each time, as in the formula
    emb = rng.normal(size=(50, 9))
    emb[7] = 0.0
    want = _reference_diversity(ids.astype(np.int64), emb)
    monkeypatch.setattr(evaluation, "WORKING_MEMORY", 24 * 9 * 6)  # 6 items per block
    assert diversity(ids, emb) == pytest.approx(want, rel=1e-12)


def test_k_above_the_catalogue_counts_as_the_catalogue():
    """A list holds at most n_items items: metrics@k for k > n_items are metrics@n_items
    (precision divides by n_items), and the keys keep the k asked for."""
    ids, relevant, users, rng = _random_lists(5, n_items=50, k=50)
    at_n = ranking_metrics(ids, relevant, 50, users=users)
    at_big = ranking_metrics(ids, relevant, 5000, users=users)
    assert sorted(at_big) == sorted(key.replace("@50", "@5000") for key in at_n)
    for key, value in at_n.items():
        assert at_big[key.replace("@50", "@5000")] == value
    assert precision_at_k(ids, relevant, 5000, users=users) == at_n["precision@50"]
    emb, counts = rng.normal(size=(50, 4)), rng.integers(0, 9, 50)
    assert diversity(ids, emb, 5000) == diversity(ids, emb)
    assert novelty(ids, counts, 10, 5000) == novelty(ids, counts, 10)
    assert catalogue_coverage(ids, 50, 5000) == catalogue_coverage(ids, 50)
    # a k within the catalogue but beyond the lists is still an error
    with pytest.raises(ValueError, match="k=5000 exceeds the 10 recommendations"):
        ranking_metrics(ids[:, :10], relevant, 5000, users=users)


def test_metrics_at_k_5000_run_in_bounded_memory():
    """943 users x 1682 items (the whole catalogue in each list, as k=5000 gives), d=64:
    diversity's old [U, k, d] float64 array alone was 943 * 1682 * 64 * 8 = 812 MB (and
    three times that at its peak; 2.4 GB per array had the list been 5000 wide)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n_users, n_items, d = 943, 1682, 64
    ids = np.argsort(rng.random((n_users, n_items)), axis=1)  # int64 [943, 1682], 12.7 MB
    ids[:, -100:] = -1  # excluded train items pad the tail
    relevant = (sp.random(n_users, n_items, density=0.01, format="csr", random_state=1)
                + sp.csr_matrix((np.ones(n_users), (np.arange(n_users), ids[:, 0])), (n_users, n_items)))
    emb = rng.normal(size=(n_items, d)).astype(np.float32)
    counts = rng.integers(0, 500, n_items)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        div = diversity(ids, emb, 5000)
        ranking = ranking_metrics(ids, relevant, 5000)
        nov = novelty(ids, counts, n_users, 5000)
        cov = catalogue_coverage(ids, n_items, 5000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"
    print(f"peak {peak / 1e6:.0f} MB")
    assert 0.9 < div < 1.1 and ranking["hit_rate@5000"] == 1.0 and cov == 1.0
    assert nov["ratings"] == pytest.approx(counts.mean(), rel=0.05)


# ----------------------------------------------------------------------------- paired bootstrap
# The bootstrap of a mean over n users: its standard error tends to s / sqrt(n) (s the
# per-user differences' plug-in std), its percentile interval to mean -+ 1.96 s / sqrt(n),
# moved by the skew gamma of the differences by gamma (1.96^2 - 1) / (6 sqrt(n)) standard
# errors (Cornish-Fisher; 0.02 for the NDCG differences below, gamma -0.9, n = 400).
# With 20 000 resamples the Monte Carlo error of a 2.5% percentile is about
# sqrt(0.025 * 0.975 / 20000) / phi(1.96) = 0.019 standard errors: the tolerance, 0.1
# standard errors, is five of them (over 10 data seeds the largest deviation was 0.06).
RESAMPLES = 20_000


def _check_normal_interval(result, differences):
    n = len(differences)
    mean, sd = differences.mean(), differences.std()
    se, skew = sd / math.sqrt(n), np.mean((differences - mean) ** 3) / sd ** 3
    shift = skew * (1.96 ** 2 - 1) / (6 * math.sqrt(n))
    assert result["users"] == n
    assert result["difference"] == pytest.approx(mean, abs=1e-12)
    assert result["low"] == pytest.approx(mean + (shift - 1.96) * se, abs=0.1 * se)
    assert result["high"] == pytest.approx(mean + (shift + 1.96) * se, abs=0.1 * se)


def test_paired_bootstrap_interval_is_mean_plus_minus_1_96_standard_errors():
    from recjax.evaluation import paired_bootstrap

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 400)  # between-user spread, shared by both models
    differences = rng.normal(0.05, 0.1, 400)
    result = paired_bootstrap(base + differences, base, n_resamples=RESAMPLES, seed=0)
    _check_normal_interval(result, differences)


def test_paired_bootstrap_removes_the_between_user_spread():
    """Two models whose per-user values move together (a constant 0.02 apart, noise 0.01):
    the paired interval excludes 0 and is a tenth as wide (or less) as the unpaired one
    (1.96 sqrt(var a + var b) / sqrt(n) either side, about 0.057 here: it would include 0)."""
    from recjax.evaluation import paired_bootstrap

    rng = np.random.default_rng(1)
    n = 200
    b = rng.uniform(0, 1, n)
    a = b + 0.02 + rng.normal(0, 0.01, n)
    result = paired_bootstrap(a, b, n_resamples=RESAMPLES, seed=0)
    unpaired_half_width = 1.96 * math.sqrt(a.var() + b.var()) / math.sqrt(n)
    assert unpaired_half_width > 0.05  # unpaired, the difference would not be significant
    assert 0 < result["low"] < result["difference"] < result["high"]
    assert result["high"] - result["low"] < 0.1 * 2 * unpaired_half_width
    assert result["share_a_better"] == 1.0


def _planted_ranking_task(n_users=400, n_items=30, seed=0):
    """(task, scores A, scores B, per-user NDCG@10 of B): every user has 1-4 relevant items;
    A ranks them first (NDCG 1), B ranks p_u in 0..5 other items above them, so that B's
    NDCG is sum_j 1/log2(p_u + j + 1) / sum_j 1/log2(j + 1), j = 1..m_u, by hand."""
    from recjax.evaluation import RankingTask

    rng = np.random.default_rng(seed)
    m, p = rng.integers(1, 5, n_users), rng.integers(0, 6, n_users)
    relevant = np.zeros((n_users, n_items))
    a, b = rng.uniform(0, 1, (n_users, n_items)), rng.uniform(0, 1, (n_users, n_items))
    for u in range(n_users):
        order = rng.permutation(n_items)
        rel, above = order[:m[u]], order[m[u]:m[u] + p[u]]
        relevant[u, rel] = 1.0
        a[u, rel] += 2.0
        b[u, rel] += 2.0
        b[u, above] += 4.0
    ndcg_b = np.array([sum(1 / math.log2(p[u] + j + 1) for j in range(1, m[u] + 1))
                       / sum(1 / math.log2(j + 1) for j in range(1, m[u] + 1)) for u in range(n_users)])
    task = RankingTask(sp.csr_matrix((n_users, n_items), dtype=np.float32), sp.csr_matrix(relevant),
                       np.arange(n_users, dtype=np.int64), np.zeros(n_items, np.int64))
    return task, (a, np.eye(n_items)), (b, np.eye(n_items)), ndcg_b


def test_compare_pair_resamples_users_not_their_relevant_items():
    """Users with 1 to 4 relevant items: the bootstrap is over the 400 users' NDCG
    differences (by hand), each user once, not over their 1000 relevant items."""
    from recjax.evaluation import compare_pair

    task, a, b, ndcg_b = _planted_ranking_task()
    result = compare_pair(a, b, task, "ndcg", 10, n_resamples=RESAMPLES, seed=0)
    _check_normal_interval(result, 1.0 - ndcg_b)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The shared tiny MF run and an EASE run on the same synthetic split."""
    from _tiny_run import tiny_run

    from recjax.config import RunConfig
    from recjax.experiment import run
    from recjax.models.ease import EASEConfig

    ease = tmp_path_factory.mktemp("ease") / "run"
    run(RunConfig(dataset="synthetic", split="random", model="ease", quiet=True, out=str(ease)), EASEConfig())
    return tiny_run(tmp_path_factory), ease


def test_cli_evaluate_bootstrap(two_runs, tmp_path, capsys):
    """``recjax evaluate MF EASE --bootstrap N``: the interval row after the table; its
    difference is the table's NDCG of EASE minus MF's (a mean over the same test users)."""
    from recjax.cli import main

    mf, ease = two_runs
    path = tmp_path / "eval.json"
    status = main(["evaluate", str(mf), str(ease), "--k", "5", "--bootstrap", "300", "--no-baselines",
                   "--json", str(path)])
    out, err = capsys.readouterr()
    assert status == 0, err
    saved = json.loads(path.read_text())
    results, (name, interval) = saved["results"], *saved["bootstrap"].items()
    first = next(row for row in results if row != name)
    users = results[first]["users"]
    assert f"paired bootstrap over {users} users (300 resamples, seed 0)" in out
    assert interval["users"] == users and interval["resamples"] == 300
    assert interval["difference"] == pytest.approx(results[name]["ndcg@5"] - results[first]["ndcg@5"], abs=1e-9)
    assert interval["low"] < interval["difference"] < interval["high"]
    after = out.split("paired bootstrap over", 1)[1].splitlines()
    assert after[1].split() == ["model", "ΔNDCG@5", "95%", "low", "95%", "high", "share", "better"]
    row = next(line.split() for line in after if line.startswith(f"{name} "))
    assert [float(x) for x in row[1:]] == pytest.approx(
        [interval["difference"], interval["low"], interval["high"], interval["share_a_better"]], abs=6e-5)
