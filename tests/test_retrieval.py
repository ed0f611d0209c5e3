"""recjax.retrieval against a float64 NumPy brute force.

Two kinds of oracle checks: on small-integer data every float32 computation is
exact, so the answer must equal the oracle's bit for bit (ties included: lower id
first); on random data it must equal it up to float32 near-ties (the returned items'
exact scores match the oracle's k best within a rounding tolerance).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recjax.retrieval import TopK, kernel_available, recommend, similar_items, topk
from recjax.retrieval._reference import exact_scores, topk_reference

# No skip when recjax._ext.topk is missing: these tests must fail then (see test_kernel_built.py).
topk_mod = sys.modules["recjax.retrieval.topk"]
METRICS = ["dot", "cosine", "l2"]
HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------- helpers


def random_csr(rng, n_q, n_items, density):
    return sp.csr_array(sp.random(n_q, n_items, density=density, format="csr", random_state=rng))


def int_data(rng, n, d, offset=0.0, lo=-3, hi=3, dtype=np.float32):
    return (rng.integers(lo, hi + 1, size=(n, d)) + offset).astype(dtype)


def oracle(q, x, k, metric, exclude=None, exclude_items=None, exclude_self=None, dtype=None):
    """The reference answer for topk's public arguments."""
    k = min(k, x.shape[0])
    indptr = indices = None
    if exclude is not None:
        m = sp.csr_array(exclude)
        m.sort_indices()
        indptr, indices = m.indptr.astype(np.int64), m.indices.astype(np.int64)
    if exclude_self is True:
        exclude_self = np.arange(q.shape[0])
    self_ids = None if exclude_self is None else np.asarray(exclude_self, np.int64)
    out = dtype or np.result_type(q.dtype, x.dtype)
    return topk_reference(q, x, k, metric, exclude_indptr=indptr, exclude_indices=indices,
                          item_mask=exclude_items, self_ids=self_ids, out_dtype=out)


def selection_value(q, x, ids, metric):
    """Exact float64 value that ranks the results (larger is better)."""
    s = exact_scores(q, x, ids, metric)
    return -np.square(s) if metric == "l2" else s


def assert_close_to_oracle(res, q, x, k, metric, **excl):
    """Same shape and padding as the oracle; returned items are valid, sorted, exactly
    scored, and as good as the oracle's k best up to float32 rounding."""
    ref_ids, ref_scores = oracle(q, x, k, metric, **excl)
    ids, scores = res
    assert ids.dtype == np.int64 and ids.shape == ref_ids.shape == scores.shape
    assert scores.dtype == np.result_type(q.dtype, x.dtype)
    assert np.array_equal(ids < 0, ref_ids < 0), "padding differs from the oracle"
    valid = ids >= 0
    # nothing excluded, nothing repeated
    rows = np.nonzero(valid)[0]
    banned = np.zeros((q.shape[0], x.shape[0]), bool)
    if excl.get("exclude") is not None:
        banned |= sp.csr_array(excl["exclude"]).toarray() != 0
    if excl.get("exclude_items") is not None:
        banned[:, excl["exclude_items"]] = True
    if excl.get("exclude_self") is not None:
        s = np.arange(q.shape[0]) if excl["exclude_self"] is True else excl["exclude_self"]
        banned[np.arange(q.shape[0]), s] = True
    assert not banned[rows, ids[valid]].any(), "an excluded item was returned"
    for r in range(ids.shape[0]):
        got = ids[r][ids[r] >= 0]
        assert len(np.unique(got)) == len(got), "an item was returned twice"
    # the scores are the exact scores of the returned ids, best first, ties by id
    exact = exact_scores(q, x, ids, metric).astype(scores.dtype)
    np.testing.assert_allclose(scores[valid], exact[valid], rtol=2e-6, atol=1e-6)
    sign = -1.0 if metric == "l2" else 1.0
    key = sign * scores.astype(np.float64)
    later = key[:, 1:] < key[:, :-1]
    tied = (key[:, 1:] == key[:, :-1]) & valid[:, 1:]
    assert np.all(later | tied | ~valid[:, 1:]), "scores are not sorted best first"
    assert np.all(ids[:, 1:][tied] > ids[:, :-1][tied]), "a tie is not broken by lower id"
    # as good as the oracle, up to float32 rounding of the selection scores
    got_v = np.sort(np.where(valid, selection_value(q, x, ids, metric), 0.0), axis=1)
    ref_v = np.sort(np.where(valid, selection_value(q, x, ref_ids, metric), 0.0), axis=1)
    tol = 1e-6 * q.shape[1] * _scale(q, x, metric)
    np.testing.assert_allclose(got_v, ref_v, rtol=0, atol=tol)


def _scale(q, x, metric):
    if metric == "cosine":
        return 1.0
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        c = x64.mean(axis=0)
        q64, x64 = q64 - c, x64 - c
    return (np.abs(q64).max() + np.abs(x64).max()) ** 2 + 1e-30


def assert_same(a: TopK, b: TopK):
    assert a.ids.dtype == b.ids.dtype and a.scores.dtype == b.scores.dtype
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


# ---------------------------------------------------------------------- oracle


@HYPO
@given(
    n_q=st.integers(1, 40),
    n_items=st.integers(1, 90),
    d=st.sampled_from([1, 2, 3, 8, 17, 64, 257]),
    k=st.integers(1, 100),
    metric=st.sampled_from(METRICS),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    block=st.sampled_from([None, 1, 5, 12, 41]),
    seed=st.integers(0, 2**31),
)
def test_integer_data_equals_oracle_exactly(n_q, n_items, d, k, metric, density, block, seed):
    """Small integers: every float32 step is exact for dot and L2, so the answer is the
    oracle's, ties included (cosine normalises, so it is checked with a tolerance)."""
    rng = np.random.default_rng(seed)
    q, x = int_data(rng, n_q, d), int_data(rng, n_items, d)
    excl = random_csr(rng, n_q, n_items, density) if density else None
    res = topk(q, x, k, metric=metric, exclude=excl, block_size=block)
    if metric == "cosine":
        assert_close_to_oracle(res, q, x, k, metric, exclude=excl)
    else:
        assert_same(res, TopK(*oracle(q, x, k, metric, exclude=excl)))


@HYPO
@given(
    n_q=st.integers(1, 40),
    n_items=st.integers(1, 90),
    d=st.sampled_from([1, 2, 5, 16, 33, 257]),
    k=st.integers(1, 100),
    metric=st.sampled_from(METRICS),
    dtype=st.sampled_from([np.float32, np.float64]),
    offset=st.sampled_from([0.0, 1e6]),
    seed=st.integers(0, 2**31),
)
def test_random_data_matches_oracle(n_q, n_items, d, k, metric, dtype, offset, seed):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((n_q, d)) + offset).astype(dtype)
    x = (rng.standard_normal((n_items, d)) + offset).astype(dtype)
    mask = rng.random(n_items) < 0.2
    self_ids = rng.integers(0, n_items, n_q)
    excl = random_csr(rng, n_q, n_items, 0.3)
    res = topk(q, x, k, metric=metric, exclude=excl, exclude_items=mask, exclude_self=self_ids,
               block_size=int(rng.integers(1, 50)))
    assert_close_to_oracle(res, q, x, k, metric, exclude=excl, exclude_items=mask,
                           exclude_self=self_ids)


def test_large_offset_integer_data_is_exact():
    """+1e6 on both sides: the expansion |q|^2 - 2q.x + |x|^2 would cancel in float32;
    centring keeps the neighbours exact (integer grid: exact ties too)."""
    rng = np.random.default_rng(0)
    q, x = int_data(rng, 30, 9, offset=1e6), int_data(rng, 200, 9, offset=1e6)
    res = topk(q, x, 15, metric="l2")
    assert_same(res, TopK(*oracle(q, x, 15, "l2")))
    far = int_data(rng, 5, 9, offset=1e6 + 50)  # queries outside the item cloud
    assert_same(topk(far, x, 15, metric="l2"), TopK(*oracle(far, x, 15, "l2")))


@pytest.mark.parametrize("metric", METRICS)
def test_large_offset_random_data(metric):
    rng = np.random.default_rng(1)
    q = (rng.standard_normal((25, 16)) + 1e6).astype(np.float32)
    x = (rng.standard_normal((300, 16)) + 1e6).astype(np.float32)
    res = topk(q, x, 10, metric=metric)
    assert_close_to_oracle(res, q, x, 10, metric)
    if metric == "l2":  # the neighbours themselves, not just near-equal distances
        overlap = np.mean([len(set(a) & set(b)) for a, b in zip(res.ids, oracle(q, x, 10, "l2")[0])])
        assert overlap >= 9


# ---------------------------------------------------------------------- semantics


@pytest.mark.parametrize("metric", METRICS)
def test_duplicates_tie_to_lower_ids(metric):
    rng = np.random.default_rng(2)
    base = int_data(rng, 4, 6, lo=1)
    x = np.repeat(base, 5, axis=0)  # items 5g .. 5g + 4 are copies of base[g]
    res = topk(base, x, 12, metric=metric)
    for row in res.ids:
        for group in np.unique(row // 5):
            members = row[row // 5 == group]  # in result order
            assert members.tolist() == list(range(5 * group, 5 * group + len(members)))
    assert_close_to_oracle(res, base, x, 12, metric)
    same = np.ones((1, 3), np.float32)
    assert topk(same, np.ones((50, 3), np.float32), 7, metric=metric).ids.tolist() == [list(range(7))]


@pytest.mark.parametrize("metric", METRICS)
def test_padding_when_few_candidates(metric):
    rng = np.random.default_rng(3)
    q, x = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)
    rated = sp.csr_array(np.array([[1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1], [0] * 6, [1, 1, 1, 1, 1, 0]]))
    res = topk(q, x, 10, metric=metric, exclude=rated)
    assert res.ids.shape == (4, 6)  # k clipped to N
    worst = np.inf if metric == "l2" else -np.inf
    assert res.ids[0].tolist() == [-1] * 6 and np.all(res.scores[0] == worst)
    assert sorted(res.ids[1][:2]) == [1, 3] and np.all(res.ids[1][2:] == -1)
    assert sorted(res.ids[2]) == list(range(6))
    assert res.ids[3].tolist() == [5] + [-1] * 5 and np.all(res.scores[3][1:] == worst)
    everything = np.ones(6, bool)
    assert np.all(topk(q, x, 3, metric=metric, exclude_items=everything).ids == -1)
    assert_close_to_oracle(res, q, x, 10, metric, exclude=rated)


def test_metrics_values():
    q = np.array([[3.0, 4.0]], np.float32)
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-3.0, -4.0], [6.0, 8.0]], np.float32)
    dot = topk(q, x, 4)
    assert dot.ids.tolist() == [[3, 0, 1, 2]] and dot.scores.tolist() == [[50.0, 25.0, 0.0, -25.0]]
    cos = topk(q, x, 4, metric="cosine")  # zero vector: cosine 0
    assert cos.ids.tolist() == [[0, 3, 1, 2]] and cos.scores.tolist() == [[1.0, 1.0, 0.0, -1.0]]
    l2 = topk(q, x, 4, metric="l2")  # the distance itself, smallest first
    assert l2.ids.tolist() == [[0, 1, 3, 2]] and l2.scores.tolist() == [[0.0, 5.0, 5.0, 10.0]]


def test_zero_queries_and_single_query():
    x = np.eye(4, dtype=np.float32)
    empty = topk(np.zeros((0, 4), np.float32), x, 2)
    assert empty.ids.shape == (0, 2) and empty.scores.shape == (0, 2)
    one = topk(np.array([0.0, 2.0, 1.0, 0.0], np.float32), x, 2)
    assert one.ids.tolist() == [1, 2] and one.scores.shape == (2,)


def test_exclude_forms_agree():
    rng = np.random.default_rng(4)
    q, x = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((20, 4)).astype(np.float32)
    m = random_csr(rng, 6, 20, 0.4)
    base = topk(q, x, 5, exclude=m)
    assert_close_to_oracle(base, q, x, 5, "dot", exclude=m)
    assert_same(base, topk(q, x, 5, exclude=(m.indptr, m.indices)))
    assert_same(base, topk(q, x, 5, exclude=sp.coo_matrix(m)))
    rows = np.repeat(np.arange(6), np.diff(m.indptr))
    reversed_rows = m.indices[np.lexsort((-m.indices, rows))]  # unsorted within rows
    assert_same(base, topk(q, x, 5, exclude=(m.indptr, reversed_rows)))
    assert_same(base, topk(q, x, 5, exclude=(2 * m.indptr, np.repeat(m.indices, 2))))  # repeats


def test_exclude_self_true():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 3)).astype(np.float32)
    res = topk(x, x, 4, metric="l2", exclude_self=True)
    assert not np.any(res.ids == np.arange(30)[:, None])
    assert_close_to_oracle(res, x, x, 4, "l2", exclude_self=True)


# ---------------------------------------------------------------------- invariance


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(6)
    q = rng.standard_normal((70, 19)).astype(np.float32)
    x = rng.standard_normal((333, 19)).astype(np.float32)
    x[50:60] = x[40:50]  # some exact ties
    return q, x, random_csr(rng, 70, 333, 0.2), rng.random(333) < 0.1


@pytest.mark.parametrize("metric", METRICS)
def test_invariant_to_blocks_threads_layout_and_runs(problem, metric):
    q, x, excl, mask = problem
    kw = dict(metric=metric, exclude=excl, exclude_items=mask)
    base = topk(q, x, 17, **kw)
    assert_close_to_oracle(base, q, x, 17, metric, exclude=excl, exclude_items=mask)
    for block in (1, 7, 12, 41, 333, 10_000):
        assert_same(base, topk(q, x, 17, block_size=block, **kw))
    for threads in (1, 2, 3, 8):
        assert_same(base, topk(q, x, 17, num_threads=threads, **kw))
    assert_same(base, topk(np.asfortranarray(q), np.asfortranarray(x), 17, **kw))
    wide_q = np.zeros((70, 38), np.float32)
    wide_q[:, ::2] = q
    ro = x.copy()
    ro.flags.writeable = False
    assert_same(base, topk(wide_q[:, ::2], ro, 17, **kw))  # strided and read-only
    assert_same(base, topk(q, x, 17, **kw))  # run to run


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_invariant_to_dtype_on_exact_data(metric):
    rng = np.random.default_rng(7)
    q, x = int_data(rng, 20, 7), int_data(rng, 120, 7)
    r32 = topk(q, x, 9, metric=metric)
    r64 = topk(q.astype(np.float64), x.astype(np.float64), 9, metric=metric)
    mixed = topk(q, x.astype(np.float64), 9, metric=metric)
    assert r64.scores.dtype == mixed.scores.dtype == np.float64 and r32.scores.dtype == np.float32
    np.testing.assert_array_equal(r32.ids, r64.ids)
    np.testing.assert_array_equal(r32.scores, r64.scores.astype(np.float32))
    assert_same(r64, mixed)
    assert_same(r64, TopK(*oracle(q.astype(np.float64), x, 9, metric)))


@pytest.mark.parametrize("metric", METRICS)
def test_kernel_threads_chunks_and_blocks_agree(problem, metric):
    """topk() runs problems this small on one thread: drive the kernel directly."""
    from recjax._ext import topk as kernel

    q, x, excl, mask = problem
    kw = dict(exclude_indptr=excl.indptr, exclude_indices=excl.indices, item_mask=mask,
              self_ids=np.arange(70) % 333)
    base = kernel.search(q, x, 13, metric, num_threads=1, **kw)
    for threads, chunk, block, centre in [(2, 65536, 4096, None), (3, 7, 41, None),
                                          (8, 32, 1, None), (2, 33, 333, np.zeros(19))]:
        # a zero centre makes L2 copy the item blocks instead of reading them in place
        got = kernel.search(q, x, 13, metric, centre, num_threads=threads, chunk_queries=chunk,
                            block_size=block, **kw)
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])


def test_instruction_sets_agree(problem):
    from recjax._ext import topk as kernel

    q, x, excl, _ = problem
    best = kernel.cpu_isa()
    order = ["portable", "avx2", "avx512"]
    for metric, centre in [("dot", None), ("cosine", None), ("l2", None), ("l2", np.zeros(19))]:
        results = [kernel.search(q, x, 11, metric, centre, isa=isa, block_size=29)
                   for isa in order[: order.index(best) + 1]]
        for ids, scores in results[1:]:
            np.testing.assert_array_equal(ids, results[0][0])
            np.testing.assert_array_equal(scores, results[0][1])


# ---------------------------------------------------------------------- convenience


def test_similar_items_and_recommend_ranks():
    rng = np.random.default_rng(8)
    users = rng.standard_normal((12, 5)).astype(np.float32)
    items = rng.standard_normal((40, 5)).astype(np.float32)
    sim_one = similar_items(items, 3, 6)
    sim_many = similar_items(items, np.array([3, 7, 3]), 6)
    assert sim_one.ids.shape == (6,) and sim_many.ids.shape == (3, 6)
    assert 3 not in sim_one.ids and np.array_equal(sim_many.ids[0], sim_one.ids)
    assert_close_to_oracle(sim_many, items[[3, 7, 3]], items, 6, "cosine", exclude_self=[3, 7, 3])
    assert similar_items(items, [5], 2, metric="l2").ids.shape == (1, 2)

    rated = random_csr(rng, 12, 40, 0.3)
    rec_one = recommend(users, items, np.int64(4), 8, exclude=rated)
    rec_many = recommend(users, items, [4, 0, 4], 8, exclude=rated)
    assert rec_one.ids.shape == (8,) and rec_many.ids.shape == (3, 8)
    np.testing.assert_array_equal(rec_many.ids[0], rec_one.ids)
    assert_close_to_oracle(rec_many, users[[4, 0, 4]], items, 8, "dot",
                           exclude=rated[[4, 0, 4]])
    pair = recommend(users, items, [4, 0, 4], 8, exclude=(rated.indptr, rated.indices))
    assert_same(rec_many, pair)
    assert recommend(users, items, [], 3).ids.shape == (0, 3)


# ---------------------------------------------------------------------- bad input

Q = np.ones((3, 4), np.float32)
X = np.ones((5, 4), np.float32)
GOOD_CSR = sp.csr_array((3, 5))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(queries=np.ones((3, 4), np.int64)), TypeError, "queries must be float32 or float64"),
        (dict(items=np.ones((5, 4), np.float16)), TypeError, "items must be float32 or float64"),
        (dict(items=X.astype(bool)), TypeError, "items must be float"),
        (dict(queries="abc"), TypeError, "queries must be a dense float array"),
        (dict(items=None), TypeError, "items must be a dense float array"),
        (dict(items=sp.csr_array(X)), TypeError, "items must be a dense float array"),
        (dict(queries=np.ones((3, 4, 1), np.float32)), ValueError, "queries must be 2-D"),
        (dict(items=np.ones(4, np.float32)), ValueError, "items must be 2-D"),
        (dict(items=np.ones((5, 3), np.float32)), ValueError, "d=4 columns but items have d=3"),
        (dict(queries=np.ones((3, 0), np.float32), items=np.ones((5, 0), np.float32)),
         ValueError, "at least one dimension"),
        (dict(items=np.ones((0, 4), np.float32)), ValueError, "items is empty"),
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(k=-3), ValueError, "k must be >= 1"),
        (dict(k=2.0), TypeError, "k must be an integer"),
        (dict(k=True), TypeError, "k must be an integer"),
        (dict(k=None), TypeError, "k must be an integer"),
        (dict(queries=np.full((3, 4), np.nan, np.float32)), ValueError, "queries holds NaN"),
        (dict(items=np.where(np.eye(5, 4) > 0, np.inf, 1.0)), ValueError, "items holds NaN"),
        (dict(items=np.full((5, 4), -np.inf)), ValueError, "items holds NaN"),
        (dict(items=np.full((5, 4), 1e30, np.float32)), ValueError, "too large"),
        (dict(metric="euclid"), ValueError, "metric must be one of"),
        (dict(backend="gpu"), ValueError, "backend must be one of"),
        (dict(num_threads=0), ValueError, "num_threads must be >= 1"),
        (dict(num_threads=1.5), TypeError, "num_threads must be an integer"),
        (dict(block_size=0), ValueError, "block_size must be >= 1"),
        (dict(exclude=sp.csr_array((3, 6))), ValueError, r"shape \(3, 6\), expected \(3, 5\)"),
        (dict(exclude=sp.csr_array((4, 5))), ValueError, "expected"),
        (dict(exclude=np.zeros((3, 5))), TypeError, "scipy.sparse matrix or an"),
        (dict(exclude=([0, 1, 1], [2])), ValueError, "indptr must be 1-D of length 4"),
        (dict(exclude=([0, 1, 1, 1, 1], [2])), ValueError, "indptr must be 1-D of length 4"),
        (dict(exclude=([0, 2, 1, 2], [2, 3])), ValueError, "never decrease"),
        (dict(exclude=([1, 1, 1, 1], [2])), ValueError, "start at 0"),
        (dict(exclude=([0, 1, 1, 3], [2, 3])), ValueError, "end at len"),
        (dict(exclude=([0, 1, 1, 1], [5])), ValueError, r"item ids in \[0, 5\)"),
        (dict(exclude=([0, 1, 1, 1], [-1])), ValueError, r"item ids in \[0, 5\)"),
        (dict(exclude=([0, 1, 1, 1], [1.5])), TypeError, "must hold integers"),
        (dict(exclude=([0, 1, 1, 1], [[1]])), ValueError, "indices must be 1-D"),
        (dict(exclude=([0, 1, 1, 1],)), TypeError, "scipy.sparse matrix or an"),
        (dict(exclude_items=np.ones(5)), TypeError, "bool mask"),
        (dict(exclude_items=np.ones(4, bool)), ValueError, r"shape \(5,\)"),
        (dict(exclude_self=True), ValueError, "Q == N"),
        (dict(exclude_self=[0, 1]), ValueError, "one item id per query"),
        (dict(exclude_self=[0, 1, 5]), ValueError, r"in \[0, 5\)"),
        (dict(exclude_self=[0.0, 1.0, 2.0]), TypeError, "must hold integers"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    args = dict(queries=Q, items=X, k=2) | kwargs
    with pytest.raises(error, match=match):
        topk(args.pop("queries"), args.pop("items"), args.pop("k"), **args)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: recommend(Q, X, 3, 2), ValueError, r"user_ids must be in \[0, 3\)"),
        (lambda: recommend(Q, X, -1, 2), ValueError, r"user_ids must be in \[0, 3\)"),
        (lambda: recommend(Q, X, [[0]], 2), ValueError, "scalar or 1-D"),
        (lambda: recommend(Q, X, 0.0, 2), TypeError, "user_ids must hold integers"),
        (lambda: recommend(Q, X, True, 2), TypeError, "bool"),
        (lambda: recommend(Q, X, 0, 2, exclude=sp.csr_array((2, 5))), ValueError, "expected"),
        (lambda: similar_items(X, 5, 2), ValueError, r"item_ids must be in \[0, 5\)"),
        (lambda: similar_items(X.astype(int), 0, 2), TypeError, "item_vectors must be float"),
    ],
)
def test_bad_ids_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_kernel_checks_its_own_bounds():
    """The compiled search rejects sizes it would index with, whatever the caller."""
    from recjax._ext import topk as kernel

    c = np.zeros(4)
    with pytest.raises(ValueError, match="k=6"):
        kernel.search(Q, X, 6, "dot", c)
    with pytest.raises(ValueError, match="center"):
        kernel.search(Q, X, 2, "dot", np.zeros(3))
    with pytest.raises(ValueError, match="exclude_indptr must be 1-D of length 4"):
        kernel.search(Q, X, 2, "dot", c, exclude_indptr=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="outside"):
        kernel.search(Q, X, 2, "dot", c, exclude_indptr=np.array([0, 1, 2, 9]),
                      exclude_indices=np.array([0, 1]))
    with pytest.raises(ValueError, match="non-decreasing"):
        kernel.search(Q, X, 2, "dot", c, exclude_indptr=np.array([0, 2, 1, 2]),
                      exclude_indices=np.array([0, 1]))
    with pytest.raises(ValueError, match="item_mask"):
        kernel.search(Q, X, 2, "dot", c, item_mask=np.zeros(4, bool))
    with pytest.raises(ValueError, match="self_ids"):
        kernel.search(Q, X, 2, "dot", c, self_ids=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="isa"):
        kernel.search(Q, X, 2, "dot", c, isa="sse9")
    with pytest.raises(ValueError, match="metric"):
        kernel.search(Q, X, 2, "cos", c)
    with pytest.raises(ValueError):
        kernel.search(Q, X, 2, "dot", c, block_size=0)
    # garbage values (not sizes) cannot make it read out of bounds: it just runs
    ids, _ = kernel.search(Q, X, 2, "dot", c, exclude_indptr=np.array([0, 2, 2, 2]),
                           exclude_indices=np.array([99, -7]), self_ids=np.array([-1, 9, 3]))
    assert ids.shape == (3, 2) and ids.min() >= 0


# ---------------------------------------------------------------------- backends


def test_numpy_backend_and_fallback(monkeypatch):
    rng = np.random.default_rng(9)
    q, x = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((30, 3)).astype(np.float32)
    ref = TopK(*oracle(q, x, 4, "dot"))
    assert_same(topk(q, x, 4, backend="numpy"), ref)
    monkeypatch.setattr(topk_mod, "_kernel", lambda: None)
    with pytest.warns(RuntimeWarning, match="not built"):
        assert_same(topk(q, x, 4), ref)
    with pytest.raises(RuntimeError, match="compiled extension"):
        topk(q, x, 4, backend="cython")
    assert not kernel_available()


def test_import_does_not_import_jax():
    code = "import sys, recjax.retrieval; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("metric", METRICS)
def test_jax_backend_matches_oracle(metric):
    from recjax.retrieval import _jax

    rng = np.random.default_rng(10)
    q, x = rng.standard_normal((37, 6)).astype(np.float32), rng.standard_normal((301, 6)).astype(np.float32)
    x[20:25] = x[10:15]
    excl = random_csr(rng, 37, 301, 0.2).tolil()
    excl[3, :] = 1.0  # an all-excluded row
    excl = sp.csr_array(excl)
    mask = rng.random(301) < 0.1
    kw = dict(metric=metric, exclude=excl, exclude_items=mask, exclude_self=np.arange(37),
              backend="jax", block_size=128)
    res = topk(q, x, 12, **kw)
    assert np.all(res.ids[3] == -1)
    assert_close_to_oracle(res, q, x, 12, metric, exclude=excl, exclude_items=mask,
                           exclude_self=np.arange(37))
    compiled = _jax._scan._cache_size()
    assert_same(res, topk(q, x, 12, **kw))
    assert _jax._scan._cache_size() == compiled  # same shapes: no recompilation


def test_jax_backend_exact_data_and_device_arrays():
    import jax.numpy as jnp

    rng = np.random.default_rng(11)
    q, x = int_data(rng, 9, 4, offset=1e6), int_data(rng, 50, 4, offset=1e6)
    res = topk(jnp.asarray(q), jnp.asarray(x), 60, metric="l2", backend="jax")
    assert_same(res, TopK(*oracle(q, x, 60, "l2")))
    with pytest.raises(ValueError, match="queries holds NaN"):
        topk(jnp.full((2, 4), jnp.nan), x, 2, backend="jax")
    with pytest.raises(TypeError, match="float32 or float64"):
        topk(jnp.ones((2, 4), jnp.int32), x, 2, backend="jax")
    one = similar_items(jnp.asarray(x), 3, 5, backend="jax")
    assert one.ids.shape == (5,) and 3 not in one.ids
