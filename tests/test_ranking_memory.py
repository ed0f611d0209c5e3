"""The ranking protocol in bounded memory: blocked top-k equals the one-piece answer, k
above the catalogue is the catalogue (keys keep the k asked for), and k=5000 on an
ml-100k-sized problem stays far below the memory the one-piece formulas needed."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from recjax.data import Ratings, Vocabulary
from recjax.evaluation.protocol import RankingTask, evaluate_ranking
from recjax.retrieval import TopK, dense_topk, topk
from recjax.scoring import EmbeddingScorer, FunctionScorer, batched_topk


def _reference_topk(scores, k, exclude_rows=None):
    """ranking.topk_from_scores as it was (before dense top-k moved to recjax.retrieval), on
    the whole matrix at once."""
    s = np.array(scores, dtype=np.float64)
    k = int(min(k, s.shape[1]))
    if exclude_rows is not None and exclude_rows.nnz:
        ex = sp.csr_matrix(exclude_rows)
        s[np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr)), ex.indices] = -np.inf
    if k < s.shape[1]:
        kth = -np.partition(-s, k - 1, axis=1)[:, k - 1:k]
        above, equal = s > kth, s == kth
        room = k - above.sum(1, keepdims=True)
        chosen = above | (equal & (np.cumsum(equal, axis=1) <= room))
        part = np.nonzero(chosen)[1].reshape(s.shape[0], k)
    else:
        part = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    vals = np.take_along_axis(s, part, 1)
    order = np.lexsort((part, -vals), axis=1)
    ids = np.take_along_axis(part, order, 1).astype(np.int64)
    vals = np.take_along_axis(vals, order, 1)
    ids[np.isneginf(vals)] = -1
    return TopK(ids, vals)


def _scores_with_ties(seed, n_rows=97, n_items=31):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (n_rows, n_items)).astype(np.float32)  # many ties
    exclude = rng.random((n_rows, n_items)) < 0.3
    exclude[3] = True  # a row with nothing left: all -1
    return scores, sp.csr_matrix(exclude)


@pytest.mark.parametrize("block_size", [1, 7, 41, None])
@pytest.mark.parametrize("k", [1, 5, 31, 5000])
def test_blocked_dense_topk_equals_the_one_piece_answer(block_size, k):
    scores, exclude = _scores_with_ties(0)
    want = _reference_topk(scores, k, exclude)
    got = dense_topk(scores, k, exclude=exclude, block_size=block_size)
    assert got.ids.shape == (97, min(k, 31))
    assert np.array_equal(got.ids, want.ids) and np.array_equal(got.scores, want.scores)
    assert np.array_equal(dense_topk(scores, k, block_size=block_size).ids, _reference_topk(scores, k).ids)


@pytest.mark.parametrize("k", [1, 4, 13])
def test_dense_topk_ranks_as_the_kernel_and_the_reference_do(k):
    """Dense scores of vectors rank as recjax.retrieval.topk ranks the vectors (the compiled
    kernel and the NumPy reference): exact integer ties go to the lower id, exclusions
    and a row with nothing left pad with -1, -inf scores count as left out."""
    rng = np.random.default_rng(4)
    queries = rng.integers(-2, 3, (23, 3)).astype(np.float32)
    items = rng.integers(-2, 3, (13, 3)).astype(np.float32)  # many exact ties
    excluded = rng.random((23, 13)) < 0.3
    excluded[5] = True  # nothing left for query 5
    exclude = sp.csr_matrix(excluded)
    scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    got = dense_topk(scores, k, exclude=exclude, block_size=7)
    for backend in ("cython", "numpy"):
        want = topk(queries, items, k, exclude=exclude, backend=backend)
        assert np.array_equal(got.ids, want.ids), backend
        valid = want.ids >= 0
        np.testing.assert_allclose(got.scores[valid], want.scores[valid])
        assert np.isneginf(got.scores[~valid]).all()
    # -inf scores are left out like exclusions; a read-only, Fortran-ordered input changes nothing
    masked = np.where(exclude.toarray() > 0, -np.inf, scores)
    frozen = np.asfortranarray(masked)
    frozen.setflags(write=False)
    again = dense_topk(frozen, k)
    assert np.array_equal(again.ids, got.ids) and np.array_equal(again.scores, got.scores)


@pytest.mark.parametrize("batch_size", [1, 7, 41, None])
def test_batched_topk_is_independent_of_the_batch(batch_size):
    scores, exclude = _scores_with_ties(1)
    users = np.random.default_rng(2).permutation(97)[:60]
    got = batched_topk(lambda batch, rows: scores[batch], 31, users, 8, exclude, batch_size)
    want = _reference_topk(scores[users], 8, exclude[users])
    assert np.array_equal(got.ids, want.ids) and np.array_equal(got.scores, want.scores)
    empty = batched_topk(lambda batch, rows: scores[batch], 31, np.zeros(0, np.int64), 5000, None)
    assert empty.ids.shape == (0, 31)


def test_topk_refuses_bad_k_and_mismatched_exclusions():
    scores, exclude = _scores_with_ties(3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        dense_topk(scores, 0)
    with pytest.raises(ValueError, match=r"exclude has shape \(5, 31\), expected \(97, 31\)"):
        dense_topk(scores, 3, exclude=exclude[:5])
    with pytest.raises(ValueError, match="returned shape \\(2, 4\\), expected \\(2, 31\\)"):
        batched_topk(lambda batch, rows: np.zeros((len(batch), 4)), 31, np.array([0, 1]), 3, None)


def _ml100k_sized_task(d, seed=0):
    """943 users x 1682 items, 100k random ratings (90k train), random d-dim vectors."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 943, 1682
    keys = rng.choice(n_users * n_items, 100_000, replace=False)
    data = Ratings.from_raw(keys // n_items, keys % n_items, rng.integers(1, 6, len(keys)).astype(float),
                            users=Vocabulary.from_ids(np.arange(n_users), "user"),
                            items=Vocabulary.from_ids(np.arange(n_items), "item"))
    task = RankingTask.from_ratings(data.subset(slice(0, 90_000)), data.subset(slice(90_000, None)))
    scorer = EmbeddingScorer(rng.normal(size=(n_users, d)).astype(np.float32),
                             rng.normal(size=(n_items, d)).astype(np.float32))
    return task, scorer


def test_k_above_the_catalogue_ranks_the_whole_catalogue_under_the_asked_key():
    task, scorer = _ml100k_sized_task(4)
    top = task.rank(scorer, 5000)
    assert top.ids.shape == (len(task.users), task.n_items)
    assert np.array_equal(top.ids, task.rank(scorer, task.n_items).ids)
    with pytest.raises(ValueError, match="k must be >= 1"):
        task.rank(scorer, 0)
    at_n = evaluate_ranking(scorer, task, task.n_items)
    at_big = evaluate_ranking(scorer, task, 5000)
    assert sorted(at_big) == sorted(key.replace(f"@{task.n_items}", "@5000") for key in at_n)
    for key, value in at_n.items():
        assert at_big[key.replace(f"@{task.n_items}", "@5000")] == value
    # the whole catalogue (train items excluded) holds every test item
    assert at_big["recall@5000"] == 1.0 and at_big["hit_rate@5000"] == 1.0


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_evaluate_ranking_at_k_5000_runs_in_bounded_memory():
    """Before: ~1.6 GB of NumPy temporaries (diversity's [943, 1682, 64] float64 vectors,
    812 MB, three times over); the budget is a few blocks of WORKING_MEMORY (64 MiB)."""
    task, scorer = _ml100k_sized_task(64)
    out, peak = _peak(lambda: evaluate_ranking(scorer, task, 5000))
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"
    assert {"precision@5000", "ndcg@5000", "diversity@5000", "coverage@5000"} <= set(out)
    assert out["coverage@5000"] == 1.0

    # dense scores (a pair model, EASE, an ensemble) ranked in blocks too
    dense = FunctionScorer(scorer.scores, task.n_items)
    ranked, peak = _peak(lambda: task.rank(dense, 5000))
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"
    assert ranked.ids.shape == (len(task.users), task.n_items)
