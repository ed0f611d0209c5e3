"""Exact blocked top-k retrieval: the compiled CPU kernel behind ``recjax.retrieval``.

Call it through :func:`recjax.retrieval.topk`, which validates and normalises every
argument; :func:`search` re-checks the sizes it indexes with, so no input can make it
read or write out of bounds, but it does not check values (finiteness, sortedness).

How it works (``microkernel.h`` and ``select.h`` hold the C parts):

* Queries are packed into panels of ``RJ_LANES`` (32), transformed for the metric
  (normalised for cosine, centred and doubled for L2).  Groups of up to 8 panels are
  the units of work, handed out to the OpenMP threads dynamically; a unit is
  searched against every item and finished by one thread, so threads share nothing
  they write and never wait for each other (a thread the OS slows down just takes
  fewer units).
* Items are visited in blocks of ``block_size`` rows, so that a block stays in the
  core's cache while every panel of the unit passes over it.  float32 items are read
  in place: cosine scales each score by a precomputed ``1/|x|``, L2 subtracts a
  precomputed ``|x|^2``.  float64 items, and L2 items that must be centred, are
  first written into the thread's own float32 block buffer.  A panel is scored
  against the block tile by tile in SIMD registers and only scores above the query's
  running threshold leave the registers, into a per-query reservoir (select.h).
  Memory: per-item factors (N floats), the per-thread buffers (``block_size * d``
  floats), the packed queries and the reservoirs (``2k + 16`` keys per query), never
  a queries x items matrix.
* Last, each query's k best candidates are re-scored exactly in float64 from the
  caller's arrays (difference form for L2, so large offsets do not cancel), rounded
  to the output precision and sorted best first, ties by lower item id.

Selection scores: dot ``q.x``; cosine ``(q/|q|).x * (1/|x|)``; L2
``2(q-c).(x-c) - |x-c|^2`` (``c`` is a centre passed by the caller, or 0: the
ranking by ``-|q-x|^2`` is unchanged and, when the data share a large offset, the
centred values keep float32 precision).  Each score is computed in the same order
(fused multiply-adds over the coordinates, then the per-item factor) whatever the
block size, thread count or instruction set, so the answer is identical run to
run.  The kernel calls no BLAS, so its OpenMP threads never compete with a BLAS
thread pool.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, sqrt
from libc.stdint cimport int64_t, uint8_t, uint64_t

import numpy as np

cdef extern from "select.h" nogil:
    unsigned int RJ_MAX_ITEMS
    ctypedef struct rj_state:
        int64_t nq, k, cap, n_items
        uint64_t *res
        int64_t *count
        float *thr
        const uint8_t *item_mask
        const int64_t *self_id
        const int64_t *indptr
        const int64_t *indices
        int64_t *cursor
    int64_t rj_take(rj_state *st, int64_t q, int64_t *out_ids)
    void rj_f64_sort(double *key, int64_t *id, int64_t n)

cdef extern from "microkernel.h" nogil:
    int RJ_LANES
    int RJ_NR
    int RJ_ISA_PORTABLE
    int RJ_ISA_AVX2
    int RJ_ISA_AVX512
    int rj_cpu_isa()
    void rj_prefetch(const void *p, int64_t bytes)
    void rj_panel(int isa, const float *qp, const float *items, int64_t ld, int64_t d,
                  int64_t count, const float *scale, const float *bias, rj_state *st,
                  int64_t q0, int lanes, int64_t item0)

ctypedef fused real:
    float
    double

cdef enum:
    DOT = 0
    COSINE = 1
    L2 = 2

cdef enum:
    _AHEAD = 6  # candidate rows prefetched ahead of their exact re-scoring
    _UNIT_PANELS = 8  # most panels per unit of work (256 queries)

METRICS = {"dot": DOT, "cosine": COSINE, "l2": L2}
LANES = RJ_LANES
TILE = RJ_NR
ISAS = {"portable": RJ_ISA_PORTABLE, "avx2": RJ_ISA_AVX2, "avx512": RJ_ISA_AVX512}
_ISA_NAMES = {v: k for k, v in ISAS.items()}


def cpu_isa():
    """Name of the best instruction set the kernel can use here ("avx512", ...)."""
    return _ISA_NAMES[rj_cpu_isa()]


cdef inline double _dot(const real *a, const real *b, int64_t d) noexcept nogil:
    """Sum of a[j] * b[j] in float64 (four partial sums: no serial add chain)."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef int64_t j = 0
    while j + 4 <= d:
        s0 += <double>a[j] * <double>b[j]
        s1 += <double>a[j + 1] * <double>b[j + 1]
        s2 += <double>a[j + 2] * <double>b[j + 2]
        s3 += <double>a[j + 3] * <double>b[j + 3]
        j += 4
    while j < d:
        s0 += <double>a[j] * <double>b[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _sqdist(const real *a, const real *b, int64_t d) noexcept nogil:
    """Sum of (a[j] - b[j])^2 in float64, from the differences."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, v0, v1, v2, v3
    cdef int64_t j = 0
    while j + 4 <= d:
        v0 = <double>a[j] - <double>b[j]
        v1 = <double>a[j + 1] - <double>b[j + 1]
        v2 = <double>a[j + 2] - <double>b[j + 2]
        v3 = <double>a[j + 3] - <double>b[j + 3]
        s0 += v0 * v0
        s1 += v1 * v1
        s2 += v2 * v2
        s3 += v3 * v3
        j += 4
    while j < d:
        v0 = <double>a[j] - <double>b[j]
        s0 += v0 * v0
        j += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _norm(const real *x, int64_t d) noexcept nogil:
    return sqrt(_dot(x, x, d))


cdef void _pack_row(const real *x, int64_t d, int metric, const double *center,
                    double scale, float *dst, int64_t stride, float *norm2) noexcept nogil:
    """Write row x, transformed for the metric, to dst[j * stride] (float32); for L2
    also its squared norm to norm2 (when stride is 1 and scale 1, i.e. items)."""
    cdef int64_t j
    cdef double n
    if metric == COSINE:
        n = _norm(x, d)
        for j in range(d):
            dst[j * stride] = <float>(x[j] / n) if n > 0.0 else 0.0
    elif metric == L2:
        for j in range(d):
            dst[j * stride] = <float>(scale * <float>(<double>x[j] - center[j]))
        if norm2 != NULL:
            norm2[0] = <float>_dot(dst, dst, d)
    else:
        for j in range(d):
            dst[j * stride] = <float>x[j]


cdef double _exact(const real *q, const real *x, int64_t d, int metric,
                   double qnorm) noexcept nogil:
    """The final score of item x for query q, in float64 (L2: the distance)."""
    cdef double s, xn
    if metric == L2:
        return sqrt(_sqdist(q, x, d))
    s = _dot(q, x, d)
    if metric == COSINE:
        xn = _norm(x, d)
        return s / (qnorm * xn) if qnorm > 0.0 and xn > 0.0 else 0.0
    return s


cdef void _finish(rj_state *st, int64_t q, const real *query, const real *items, int64_t d,
                  int metric, bint round_f32, int64_t *ids, double *scores) noexcept nogil:
    """Row q of the result: exact scores of the k candidates, sorted, padded."""
    cdef int64_t i, n
    cdef double v, sign = -1.0 if metric == L2 else 1.0
    cdef double qnorm = _norm(query, d) if metric == COSINE else 0.0
    n = rj_take(st, q, ids)
    for i in range(min(n, _AHEAD)):
        rj_prefetch(items + ids[i] * d, d * sizeof(real))
    for i in range(n):
        if i + _AHEAD < n:  # the rows are scattered: fetch a few ahead
            rj_prefetch(items + ids[i + _AHEAD] * d, d * sizeof(real))
        v = _exact(query, items + ids[i] * d, d, metric, qnorm)
        if round_f32:
            v = <float>v
        scores[i] = sign * v  # sort key: larger is better
    rj_f64_sort(scores, ids, n)
    for i in range(n):
        scores[i] = sign * scores[i]
    for i in range(n, st.k):
        ids[i] = -1
        scores[i] = -sign * INFINITY


def search(const real[:, ::1] queries, const real[:, ::1] items, int64_t k, str metric,
           const double[::1] center=None, *, exclude_indptr=None, exclude_indices=None,
           item_mask=None, self_ids=None, int64_t block_size=4096, int num_threads=1,
           bint round_f32=True, str isa="auto", int64_t chunk_queries=65536):
    """Top-k items for every query; see the module docstring.

    Parameters
    ----------
    queries : float32 or float64 array, shape [Q, d], C-contiguous
    items : same dtype as ``queries``, shape [N, d], C-contiguous
    k : int, 1 <= k <= N
    metric : {"dot", "cosine", "l2"}
    center : float64 array, shape [d], optional
        For L2: subtracted from both sides (the items are then copied block by block);
        ignored for the other metrics.
    exclude_indptr, exclude_indices : int64 arrays, shapes [Q + 1] and [nnz], optional
        CSR rows of items each query must not return; indices sorted within a row.
    item_mask : bool or uint8 array, shape [N], optional
        Nonzero: the item is never returned.
    self_ids : int64 array, shape [Q], optional
        Item id of each query itself, never returned.
    block_size : int
        Items per block.
    num_threads : int
        Most OpenMP threads (no more than there are units of work).
    round_f32 : bool
        Round the final scores to float32 before sorting (float32 output).
    isa : {"auto", "avx512", "avx2", "portable"}
        Instruction set ("auto": the best available; others for tests).
    chunk_queries : int
        Queries searched together (bounds the reservoir memory).

    Returns
    -------
    ids : int64 array, shape [Q, k]
        Best first, ties by lower id; -1 where fewer than k items are left.
    scores : float64 array, shape [Q, k]
        Exact scores (L2: Euclidean distance); -inf (+inf for L2) where ids is -1.
    """
    cdef int64_t nq = queries.shape[0], n_items = items.shape[0], d = queries.shape[1]
    cdef int code = _check(metric, isa, nq, n_items, d, items.shape[1], k, center,
                           block_size, num_threads, chunk_queries)
    cdef int isa_code = rj_cpu_isa() if isa == "auto" else ISAS[isa]
    cdef int64_t[::1] indptr = _int64_array(exclude_indptr, nq + 1, "exclude_indptr")
    cdef int64_t[::1] indices = _int64_array(exclude_indices, -1, "exclude_indices")
    cdef int64_t[::1] selfs = _int64_array(self_ids, nq, "self_ids")
    cdef const uint8_t[::1] mask = _mask_array(item_mask, n_items)
    if indptr is not None:
        _check_indptr(indptr, indices.shape[0] if indices is not None else 0)
    ids = np.empty((nq, k), dtype=np.int64)
    scores = np.empty((nq, k), dtype=np.float64)
    cdef int64_t[:, ::1] ids_view = ids
    cdef double[:, ::1] scores_view = scores
    cdef int64_t q0
    for q0 in range(0, nq, chunk_queries):
        _search_chunk(queries, items, k, code, center, q0, min(nq, q0 + chunk_queries),
                      indptr, indices, selfs, mask, block_size, num_threads, round_f32,
                      isa_code, ids_view, scores_view)
    return ids, scores


cdef int _check(str metric, str isa, int64_t nq, int64_t n_items, int64_t d, int64_t d_items,
                int64_t k, const double[::1] center, int64_t block_size, int num_threads,
                int64_t chunk_queries) except -1:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if isa != "auto" and isa not in ISAS:
        raise ValueError(f"isa must be 'auto' or one of {sorted(ISAS)}, got {isa!r}")
    if isa != "auto" and ISAS[isa] > rj_cpu_isa():
        raise ValueError(f"this CPU does not support isa={isa!r}")
    if d != d_items or d < 1:
        raise ValueError(f"queries have d={d}, items d={d_items}; need equal and >= 1")
    if not 1 <= k <= n_items:
        raise ValueError(f"k={k} must be in [1, N={n_items}]")
    if n_items > RJ_MAX_ITEMS:
        raise ValueError(f"at most {RJ_MAX_ITEMS} items are supported, got {n_items}")
    if center is not None and center.shape[0] != d:
        raise ValueError(f"center has {center.shape[0]} values, expected d={d}")
    if block_size < 1 or num_threads < 1 or chunk_queries < 1:
        raise ValueError("block_size, num_threads and chunk_queries must be >= 1")
    return METRICS[metric]


cdef _int64_array(a, int64_t size, str name):
    if a is None:
        return None
    arr = np.ascontiguousarray(a, dtype=np.int64)
    if arr.ndim != 1 or (size >= 0 and arr.shape[0] != size):
        raise ValueError(f"{name} must be 1-D" + (f" of length {size}" if size >= 0 else ""))
    return arr


cdef _mask_array(a, int64_t n_items):
    if a is None:
        return None
    arr = np.ascontiguousarray(a).view(np.uint8) if np.asarray(a).dtype == np.bool_ else \
        np.ascontiguousarray(a, dtype=np.uint8)
    if arr.ndim != 1 or arr.shape[0] != n_items:
        raise ValueError(f"item_mask must be 1-D of length N={n_items}")
    return arr


cdef int _check_indptr(const int64_t[::1] indptr, int64_t nnz) except -1:
    cdef int64_t i
    if indptr[0] < 0 or indptr[indptr.shape[0] - 1] > nnz:
        raise ValueError("exclude_indptr points outside exclude_indices")
    for i in range(indptr.shape[0] - 1):
        if indptr[i + 1] < indptr[i]:
            raise ValueError("exclude_indptr must be non-decreasing")
    return 0


cdef _search_chunk(const real[:, ::1] queries, const real[:, ::1] items, int64_t k, int metric,
                   const double[::1] center, int64_t q0, int64_t q1, int64_t[::1] indptr,
                   int64_t[::1] indices, int64_t[::1] selfs, const uint8_t[::1] mask,
                   int64_t block_size, int num_threads, bint round_f32, int isa,
                   int64_t[:, ::1] ids, double[:, ::1] scores):
    """Search queries [q0, q1) against all items."""
    cdef int64_t nq = q1 - q0, n_items = items.shape[0], d = items.shape[1]
    cdef int64_t n_panels = (nq + RJ_LANES - 1) // RJ_LANES
    cdef int64_t unit = max(1, min(<int64_t>_UNIT_PANELS, n_panels // (4 * num_threads)))
    cdef int64_t n_units = (n_panels + unit - 1) // unit
    cdef int threads = <int>max(1, min(num_threads, n_units))
    cdef int64_t block = min(block_size, n_items)
    cdef int64_t cap = 2 * k + 16
    cdef bint copy = real is double or (metric == L2 and center is not None)
    cdef const double[::1] c = np.zeros(d) if center is None else center
    cdef float[::1] qp = np.zeros(n_panels * RJ_LANES * d, dtype=np.float32)
    cdef float[::1] buf = np.empty(threads * block * d if copy else 1, dtype=np.float32)
    cdef float[::1] factor = np.empty(threads * block if copy else n_items, dtype=np.float32)
    cdef float[::1] thr = np.full(n_panels * RJ_LANES, INFINITY, dtype=np.float32)
    cdef uint64_t[::1] res = np.empty(nq * cap, dtype=np.uint64)
    cdef int64_t[::1] count = np.zeros(nq, dtype=np.int64)
    cdef int64_t[::1] cursor = np.zeros(nq, dtype=np.int64)
    cdef rj_state st
    cdef int64_t q, u, i

    thr[:nq] = -INFINITY
    st.nq, st.k, st.cap, st.n_items = nq, k, cap, n_items
    st.res, st.count, st.thr = &res[0], &count[0], &thr[0]
    st.item_mask = &mask[0] if mask is not None else NULL
    st.self_id = &selfs[q0] if selfs is not None else NULL
    st.indptr = &indptr[q0] if indptr is not None and indices.shape[0] > 0 else NULL
    st.indices = &indices[0] if st.indptr != NULL else NULL
    st.cursor = &cursor[0]
    if st.indptr != NULL:
        for q in range(nq):
            cursor[q] = indptr[q0 + q]

    with nogil:
        if not copy and metric != DOT:  # per-item factors of the rows read in place
            for i in prange(n_items, num_threads=threads, schedule="static"):
                factor[i] = _item_factor(&items[i, 0], d, metric)
        for u in prange(n_units, num_threads=threads, schedule="dynamic", chunksize=1):
            i = threadid()
            _run_unit(&st, u * unit, min((u + 1) * unit, n_panels), &queries[q0, 0],
                      &items[0, 0], n_items, d, metric, &c[0], block, copy,
                      &buf[i * block * d if copy else 0], &factor[i * block if copy else 0],
                      &qp[0], isa, round_f32, &ids[q0, 0], &scores[q0, 0])


cdef float _item_factor(const real *x, int64_t d, int metric) noexcept nogil:
    """Cosine: 1/|x| (0 for a zero vector); L2: |x|^2; of the float32 row x."""
    cdef double s = _dot(x, x, d)
    if metric == L2:
        return <float>s
    return <float>(1.0 / sqrt(s)) if s > 0.0 else 0.0


cdef void _run_unit(rj_state *st, int64_t p0, int64_t p1, const real *queries,
                    const real *items, int64_t n_items, int64_t d, int metric,
                    const double *center, int64_t block, bint copy, float *buf,
                    float *factor, float *qp, int isa, bint round_f32, int64_t *ids,
                    double *scores) noexcept nogil:
    """Panels [p0, p1) of the chunk: pack them, run them over every item block, finish.

    ``factor``: the per-item factors of all items (rows read in place), or the
    thread's block buffer for the squared norms of the copied rows."""
    cdef int64_t i, p, first, stop, q_end = min(p1 * RJ_LANES, st.nq)
    cdef const float *rows
    cdef const float *scale
    cdef const float *bias
    cdef double two = 2.0 if metric == L2 else 1.0
    for i in range(p0 * RJ_LANES, q_end):
        _pack_row(queries + i * d, d, metric, center, two,
                  qp + (i // RJ_LANES) * RJ_LANES * d + i % RJ_LANES, RJ_LANES, NULL)
    first = 0
    while first < n_items:
        stop = min(first + block, n_items)
        scale = bias = NULL
        if copy:
            for i in range(first, stop):
                _pack_row(items + i * d, d, metric, center, 1.0, buf + (i - first) * d, 1,
                          factor + (i - first))
            rows = buf
            if metric == L2:
                bias = factor
        else:
            rows = <const float *>(items + first * d)  # real is float here
            if metric == COSINE:
                scale = factor + first
            elif metric == L2:
                bias = factor + first
        for p in range(p0, p1):
            rj_panel(isa, qp + p * RJ_LANES * d, rows, d, d, stop - first, scale, bias, st,
                     p * RJ_LANES, <int>min(RJ_LANES, st.nq - p * RJ_LANES), first)
        first = stop
    for i in range(p0 * RJ_LANES, q_end):
        _finish(st, i, queries + i * d, items, d, metric, round_f32, ids + i * st.k,
                scores + i * st.k)
