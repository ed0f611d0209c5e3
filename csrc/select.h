/* Running top-k selection for the retrieval kernel (header-only, plain C99).
 *
 * Order: a candidate (score s, id i) is *better* than (t, j) when s > t, or s == t
 * and i < j.  Ids of one query are distinct, so this is a strict total order and
 * the k best of any candidate stream are unique: whatever the block size, thread
 * count or processing order, the same k candidates come out.
 *
 * A candidate is packed into one uint64 key that orders the same way: the float's
 * bits made monotone in the high half, ~id in the low half (ids < 2^32).  Selection
 * and sorting then compare and move single integers.
 *
 * Each query owns a reservoir of `cap` > k keys and a float threshold `thr`.  A
 * streamed candidate enters only when its score beats `thr`; when the reservoir is
 * full it is cut back to its k best (quickselect) and `thr` becomes the k-th best
 * score.  The filter `s > thr` is exact only because every query sees its items in
 * ascending id order: a later candidate with s == thr has a higher id than the k-th
 * best and loses.
 *
 * Exclusions are tested only for candidates that pass the threshold: a global item
 * mask, a "self" item per query, and the query's sorted CSR row, walked by a cursor
 * that only moves forward (ids ascend).  Every index the functions read comes from
 * the bounds stored in the state, so no input can make them read out of range.
 */
#ifndef RECJAX_SELECT_H
#define RECJAX_SELECT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define RJ_MAX_ITEMS 0xFFFFFFFFu /* ids must fit the low half of a key */

static inline uint64_t rj_key(float s, int64_t id)
{
    uint32_t u;
    if (s == 0.0f) s = 0.0f; /* -0 and +0 are equal scores: one key */
    memcpy(&u, &s, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)(RJ_MAX_ITEMS - (uint32_t)id);
}

static inline float rj_key_score(uint64_t key)
{
    uint32_t u = (uint32_t)(key >> 32);
    float s;
    u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
    memcpy(&s, &u, sizeof s);
    return s;
}

static inline int64_t rj_key_id(uint64_t key)
{
    return (int64_t)(RJ_MAX_ITEMS - (uint32_t)key);
}

static inline void rj_u64_swap(uint64_t *a, int64_t i, int64_t j)
{
    uint64_t t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Sort a[lo..hi] descending (small ranges). */
static void rj_u64_insertion(uint64_t *a, int64_t lo, int64_t hi)
{
    for (int64_t i = lo + 1; i <= hi; i++) {
        uint64_t v = a[i];
        int64_t j = i - 1;
        while (j >= lo && a[j] < v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

/* Partition a[lo..hi] (hi - lo >= 2) descending around a median-of-three pivot;
 * returns its final position p: a[lo..p) > a[p] > a(p..hi].  Branch-free (Lomuto
 * with an unconditional swap): random keys would mispredict half the branches. */
static int64_t rj_u64_partition(uint64_t *a, int64_t lo, int64_t hi)
{
    int64_t mid = lo + (hi - lo) / 2, store = lo;
    if (a[mid] > a[lo]) rj_u64_swap(a, mid, lo);
    if (a[hi] > a[lo]) rj_u64_swap(a, hi, lo);
    if (a[mid] > a[hi]) rj_u64_swap(a, mid, hi); /* a[hi]: the median, the pivot */
    uint64_t pivot = a[hi];
    for (int64_t i = lo; i < hi; i++) {
        uint64_t v = a[i];
        a[i] = a[store];
        a[store] = v;
        store += v > pivot;
    }
    rj_u64_swap(a, store, hi);
    return store;
}

/* Reorder a[0, n) so that its k largest come first (in no particular order). */
static void rj_u64_select(uint64_t *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    if (k <= 0 || k >= n) return;
    while (hi - lo > 16) {
        int64_t p = rj_u64_partition(a, lo, hi);
        if (p == k - 1 || p == k) return;
        if (p < k) lo = p + 1;
        else hi = p - 1;
    }
    rj_u64_insertion(a, lo, hi);
}

/* Sort a[0, n) descending. */
static void rj_u64_sort(uint64_t *a, int64_t n)
{
    int64_t lo = 0, hi = n - 1;
    while (hi - lo > 16) {
        int64_t p = rj_u64_partition(a, lo, hi);
        if (p - lo < hi - p) { /* recurse on the smaller side: depth <= log2 n */
            rj_u64_sort(a + lo, p - lo);
            lo = p + 1;
        } else {
            rj_u64_sort(a + p + 1, hi - p);
            hi = p - 1;
        }
    }
    if (hi > lo) rj_u64_insertion(a, lo, hi);
}

/* Final ordering: key descending, ties by id ascending. */
static inline int rj_f64_first(double ka, int64_t ia, double kb, int64_t ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

static inline void rj_f64_swap(double *key, int64_t *id, int64_t i, int64_t j)
{
    double tk = key[i];
    int64_t ti = id[i];
    key[i] = key[j];
    id[i] = id[j];
    key[j] = tk;
    id[j] = ti;
}

/* Sort key/id[0, n) best first (quicksort, median of three, insertion below 16). */
static void rj_f64_sort(double *key, int64_t *id, int64_t n)
{
    int64_t lo = 0, hi = n - 1;
    while (hi - lo > 16) {
        int64_t mid = lo + (hi - lo) / 2, i = lo, j = hi - 1, p;
        if (rj_f64_first(key[mid], id[mid], key[lo], id[lo])) rj_f64_swap(key, id, mid, lo);
        if (rj_f64_first(key[hi], id[hi], key[lo], id[lo])) rj_f64_swap(key, id, hi, lo);
        if (rj_f64_first(key[hi], id[hi], key[mid], id[mid])) rj_f64_swap(key, id, hi, mid);
        rj_f64_swap(key, id, mid, hi - 1);
        double pk = key[hi - 1];
        int64_t pi = id[hi - 1];
        for (;;) {
            do i++; while (rj_f64_first(key[i], id[i], pk, pi));
            do j--; while (rj_f64_first(pk, pi, key[j], id[j]));
            if (i >= j) break;
            rj_f64_swap(key, id, i, j);
        }
        rj_f64_swap(key, id, i, hi - 1);
        p = i;
        if (p - lo < hi - p) { /* recurse on the smaller side: depth <= log2 n */
            rj_f64_sort(key + lo, id + lo, p - lo);
            lo = p + 1;
        } else {
            rj_f64_sort(key + p + 1, id + p + 1, hi - p);
            hi = p - 1;
        }
    }
    for (int64_t i = lo + 1; i <= hi; i++) {
        double k = key[i];
        int64_t v = id[i], j = i - 1;
        while (j >= lo && rj_f64_first(k, v, key[j], id[j])) {
            key[j + 1] = key[j];
            id[j + 1] = id[j];
            j--;
        }
        key[j + 1] = k;
        id[j + 1] = v;
    }
}

/* Per-query running top-k for the queries [0, nq) of one chunk. */
typedef struct {
    int64_t nq, k, cap;     /* queries, results per query, reservoir slots (cap > k) */
    int64_t n_items;        /* item ids are in [0, n_items), n_items <= RJ_MAX_ITEMS */
    uint64_t *res;          /* [nq * cap] candidate keys */
    int64_t *count;         /* [nq] filled slots */
    float *thr;             /* [>= nq] entry threshold (-inf until the first cut) */
    /* exclusions, each optional (NULL) */
    const uint8_t *item_mask;   /* [n_items] nonzero: never return the item */
    const int64_t *self_id;     /* [nq] item id of the query itself */
    const int64_t *indptr;      /* [nq + 1] CSR row bounds into indices (validated) */
    const int64_t *indices;     /* sorted item ids per row */
    int64_t *cursor;            /* [nq] position in the row, only moves forward */
} rj_state;

static inline int rj_excluded(rj_state *st, int64_t q, int64_t item)
{
    if (st->item_mask && st->item_mask[item]) return 1;
    if (st->self_id && st->self_id[q] == item) return 1;
    if (st->indptr) {
        int64_t c = st->cursor[q], end = st->indptr[q + 1];
        while (c < end && st->indices[c] < item) c++;
        st->cursor[q] = c;
        if (c < end && st->indices[c] == item) return 1;
    }
    return 0;
}

/* Offer candidate `item` with selection score s to query q (ids must ascend per q). */
static inline void rj_offer(rj_state *st, int64_t q, int64_t item, float s)
{
    if (q < 0 || q >= st->nq || item < 0 || item >= st->n_items) return;
    if (!(s > st->thr[q]) || rj_excluded(st, q, item)) return;
    uint64_t *res = st->res + q * st->cap;
    int64_t n = st->count[q];
    res[n++] = rj_key(s, item);
    if (n == st->cap) {
        rj_u64_select(res, n, st->k);
        uint64_t worst = res[0];
        for (int64_t i = 1; i < st->k; i++)
            if (res[i] < worst) worst = res[i];
        st->thr[q] = rj_key_score(worst);
        n = st->k;
    }
    st->count[q] = n;
}

/* Offer a scored tile: scores[r * stride + l] is item item0 + r for query q0 + l
 * (l < lanes <= 32); bit l of mask[r] says it passed the SIMD threshold test.  Items
 * are taken in ascending order, then lanes, so each query still sees ascending ids. */
static inline void rj_offer_tile(rj_state *st, int64_t q0, int64_t item0, int rows, int lanes,
                                 int stride, const float *scores, const uint32_t *mask)
{
    for (int r = 0; r < rows; r++) {
        uint32_t m = mask[r];
        while (m) {
            int l = __builtin_ctz(m);
            m &= m - 1;
            if (l < lanes) rj_offer(st, q0 + l, item0 + r, scores[r * stride + l]);
        }
    }
}

/* The k best of query q's reservoir, best first, into out_ids; returns how many
 * there are (<= k). */
static inline int64_t rj_take(rj_state *st, int64_t q, int64_t *out_ids)
{
    uint64_t *res = st->res + q * st->cap;
    int64_t n = st->count[q];
    rj_u64_select(res, n, st->k);
    if (n > st->k) n = st->k;
    rj_u64_sort(res, n);
    for (int64_t i = 0; i < n; i++) out_ids[i] = rj_key_id(res[i]);
    return n;
}

#endif /* RECJAX_SELECT_H */
