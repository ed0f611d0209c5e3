/* Fused score-and-filter micro-kernels for the retrieval kernel (header-only C).
 *
 * One call scores a *panel* of RJ_LANES queries against `count` consecutive item
 * rows and offers every (query, item) whose selection score beats the query's
 * threshold to the running top-k (select.h).  Items are scored RJ_NR rows at a
 * time; the scores of such a tile (RJ_LANES x RJ_NR) live in SIMD registers and only
 * leave them when some lane passes its threshold: nothing of size queries x items
 * is ever stored.
 *
 * Layouts (float32, prepared by topk.pyx):
 *   panel  qp[kk * RJ_LANES + l]   coordinate kk of query q0 + l (zero-padded lanes
 *                                  have threshold +inf and are never offered)
 *   items  it[r * ld + kk]         coordinate kk of item item0 + r (row-major, the
 *                                  caller's array itself when no transform is needed)
 *   scale  scale[r] or NULL        multiplies the dot product (cosine: 1 / |x|)
 *   bias   bias[r] or NULL         then subtracted from it (L2: |x|^2)
 *
 * Every path computes each score the same way: acc = 0, then acc = fma(q[kk], x[kk],
 * acc) for kk = 0..d-1, then acc * scale, then - bias.  So a score does not depend on the tile,
 * block or thread that computes it, and the AVX-512, AVX2+FMA and portable paths
 * agree bit for bit (the portable path uses C99 fmaf).
 */
#ifndef RECJAX_MICROKERNEL_H
#define RECJAX_MICROKERNEL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "select.h"

#define RJ_LANES 32 /* queries per panel (one uint32_t mask per item) */
#define RJ_NR 12    /* items per tile */

enum { RJ_ISA_PORTABLE = 1, RJ_ISA_AVX2 = 2, RJ_ISA_AVX512 = 3 };

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define RJ_X86 1
#include <immintrin.h>
#endif

/* The best instruction set this CPU runs. */
static int rj_cpu_isa(void)
{
#ifdef RJ_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return RJ_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return RJ_ISA_AVX2;
#endif
    return RJ_ISA_PORTABLE;
}

/* Ask for `bytes` from p to be brought into the cache (a hint; no effect on results). */
static inline void rj_prefetch(const void *p, int64_t bytes)
{
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch((const char *)p + off);
}

/* Portable path: any number of rows (<= RJ_NR) per call. */
static inline uint32_t rj_tile_portable(const float *qp, const float *it, int64_t ld, int64_t d,
                                        int rows, const float *scale, const float *bias,
                                        const float *thr, float *acc, uint32_t *mask)
{
    uint32_t any = 0;
    memset(acc, 0, sizeof(float) * RJ_NR * RJ_LANES);
    for (int64_t kk = 0; kk < d; kk++)
        for (int r = 0; r < rows; r++)
            for (int l = 0; l < RJ_LANES; l++)
                acc[r * RJ_LANES + l] =
                    fmaf(qp[kk * RJ_LANES + l], it[r * ld + kk], acc[r * RJ_LANES + l]);
    for (int r = 0; r < rows; r++) {
        uint32_t m = 0;
        for (int l = 0; l < RJ_LANES; l++) {
            if (scale) acc[r * RJ_LANES + l] *= scale[r];
            if (bias) acc[r * RJ_LANES + l] -= bias[r];
            m |= (uint32_t)(acc[r * RJ_LANES + l] > thr[l]) << l;
        }
        mask[r] = m;
        any |= m;
    }
    return any;
}

#ifdef RJ_X86
/* AVX2 + FMA: `rows` (<= 6) items x 16 queries in 12 ymm accumulators. */
__attribute__((target("avx2,fma"))) static inline uint32_t
rj_sub_avx2(const float *qp, const float *it, int64_t ld, int64_t d, int rows, int h,
            const float *scale, const float *bias, const float *thr, float *acc, uint32_t *mask)
{
    __m256 a[6][2];
    uint32_t any = 0;
    for (int r = 0; r < 6; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
    if (rows == 6) {
        for (int64_t kk = 0; kk < d; kk++) {
            __m256 x0 = _mm256_loadu_ps(qp + kk * RJ_LANES + h);
            __m256 x1 = _mm256_loadu_ps(qp + kk * RJ_LANES + h + 8);
#pragma GCC unroll 6
            for (int r = 0; r < 6; r++) {
                __m256 b = _mm256_broadcast_ss(it + r * ld + kk);
                a[r][0] = _mm256_fmadd_ps(x0, b, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(x1, b, a[r][1]);
            }
        }
    } else {
        for (int r = 0; r < rows; r++)
            for (int64_t kk = 0; kk < d; kk++) {
                __m256 b = _mm256_broadcast_ss(it + r * ld + kk);
                a[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(qp + kk * RJ_LANES + h), b, a[r][0]);
                a[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(qp + kk * RJ_LANES + h + 8), b, a[r][1]);
            }
    }
    __m256 t0 = _mm256_loadu_ps(thr + h), t1 = _mm256_loadu_ps(thr + h + 8);
    for (int r = 0; r < rows; r++) {
        if (scale) {
            __m256 sv = _mm256_broadcast_ss(scale + r);
            a[r][0] = _mm256_mul_ps(a[r][0], sv);
            a[r][1] = _mm256_mul_ps(a[r][1], sv);
        }
        if (bias) {
            __m256 bv = _mm256_broadcast_ss(bias + r);
            a[r][0] = _mm256_sub_ps(a[r][0], bv);
            a[r][1] = _mm256_sub_ps(a[r][1], bv);
        }
        uint32_t m = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a[r][0], t0, _CMP_GT_OQ))
                     | (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a[r][1], t1, _CMP_GT_OQ)) << 8;
        mask[r] |= m << h;
        any |= m;
        _mm256_storeu_ps(acc + r * RJ_LANES + h, a[r][0]);
        _mm256_storeu_ps(acc + r * RJ_LANES + h + 8, a[r][1]);
    }
    return any;
}

__attribute__((target("avx2,fma"))) static inline uint32_t
rj_tile_avx2(const float *qp, const float *it, int64_t ld, int64_t d, int rows,
             const float *scale, const float *bias, const float *thr, float *acc,
             uint32_t *mask)
{
    uint32_t any = 0;
    memset(mask, 0, sizeof(uint32_t) * RJ_NR);
    for (int g = 0; g < rows; g += 6) {
        int n = rows - g < 6 ? rows - g : 6;
        for (int h = 0; h < RJ_LANES; h += 16)
            any |= rj_sub_avx2(qp, it + g * ld, ld, d, n, h, scale ? scale + g : NULL,
                               bias ? bias + g : NULL, thr, acc + g * RJ_LANES, mask + g);
    }
    return any;
}

/* AVX-512: a full tile in 24 zmm accumulators; fewer rows one at a time.  Stores the
 * scores only when some lane passes (returns nonzero then). */
__attribute__((target("avx512f"))) static inline uint32_t
rj_tile_avx512(const float *qp, const float *it, int64_t ld, int64_t d, int rows,
               const float *scale, const float *bias, const float *thr, float *acc,
               uint32_t *mask)
{
    __m512 a[RJ_NR][2];
    uint32_t any = 0;
    const __m512 t0 = _mm512_loadu_ps(thr), t1 = _mm512_loadu_ps(thr + 16);
    if (rows == RJ_NR) {
#pragma GCC unroll 12
        for (int r = 0; r < RJ_NR; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
        const float *qk = qp;
        for (int64_t kk = 0; kk < d; kk++, qk += RJ_LANES) {
            __m512 x0 = _mm512_loadu_ps(qk), x1 = _mm512_loadu_ps(qk + 16);
#pragma GCC unroll 12
            for (int r = 0; r < RJ_NR; r++) {
                __m512 b = _mm512_set1_ps(it[r * ld + kk]);
                a[r][0] = _mm512_fmadd_ps(x0, b, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(x1, b, a[r][1]);
            }
        }
    } else {
        for (int r = 0; r < rows; r++) {
            __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
            for (int64_t kk = 0; kk < d; kk++) {
                __m512 b = _mm512_set1_ps(it[r * ld + kk]);
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp + kk * RJ_LANES), b, s0);
                s1 = _mm512_fmadd_ps(_mm512_loadu_ps(qp + kk * RJ_LANES + 16), b, s1);
            }
            a[r][0] = s0;
            a[r][1] = s1;
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < RJ_NR; r++) {
        if (r >= rows) break;
        if (scale) {
            __m512 sv = _mm512_set1_ps(scale[r]);
            a[r][0] = _mm512_mul_ps(a[r][0], sv);
            a[r][1] = _mm512_mul_ps(a[r][1], sv);
        }
        if (bias) {
            __m512 bv = _mm512_set1_ps(bias[r]);
            a[r][0] = _mm512_sub_ps(a[r][0], bv);
            a[r][1] = _mm512_sub_ps(a[r][1], bv);
        }
        mask[r] = (uint32_t)_mm512_cmp_ps_mask(a[r][0], t0, _CMP_GT_OQ)
                  | (uint32_t)_mm512_cmp_ps_mask(a[r][1], t1, _CMP_GT_OQ) << 16;
        any |= mask[r];
    }
    if (any) {
#pragma GCC unroll 12
        for (int r = 0; r < RJ_NR; r++) {
            if (r >= rows) break;
            _mm512_storeu_ps(acc + r * RJ_LANES, a[r][0]);
            _mm512_storeu_ps(acc + r * RJ_LANES + 16, a[r][1]);
        }
    }
    return any;
}
#endif /* RJ_X86 */

/* Score one panel against items [0, count) (row stride ld) and offer the passing
 * candidates as items item0 + r to queries q0 + l, l < lanes.  Defined once per
 * instruction set so that the tile function inlines into the loop. */
#define RJ_DEFINE_PANEL(NAME, TARGET, TILE)                                              \
    TARGET static void NAME(const float *qp, const float *items, int64_t ld, int64_t d,  \
                            int64_t count, const float *scale, const float *bias,        \
                            rj_state *st, int64_t q0, int lanes, int64_t item0)          \
    {                                                                                    \
        float acc[RJ_NR * RJ_LANES];                                                     \
        uint32_t mask[RJ_NR];                                                            \
        const float *thr = st->thr + q0;                                                 \
        for (int64_t t = 0; t < count; t += RJ_NR) {                                     \
            int rows = count - t < RJ_NR ? (int)(count - t) : RJ_NR;                     \
            if (TILE(qp, items + t * ld, ld, d, rows, scale ? scale + t : NULL,          \
                     bias ? bias + t : NULL, thr, acc, mask))                            \
                rj_offer_tile(st, q0, item0 + t, rows, lanes, RJ_LANES, acc, mask);      \
        }                                                                                \
    }

RJ_DEFINE_PANEL(rj_panel_portable, , rj_tile_portable)
#ifdef RJ_X86
RJ_DEFINE_PANEL(rj_panel_avx2, __attribute__((target("avx2,fma"))), rj_tile_avx2)
RJ_DEFINE_PANEL(rj_panel_avx512, __attribute__((target("avx512f"))), rj_tile_avx512)
#endif

/* rj_panel_* for the given instruction set (the caller checks the CPU supports it). */
static void rj_panel(int isa, const float *qp, const float *items, int64_t ld, int64_t d,
                     int64_t count, const float *scale, const float *bias, rj_state *st,
                     int64_t q0, int lanes, int64_t item0)
{
#ifdef RJ_X86
    if (isa == RJ_ISA_AVX512) {
        rj_panel_avx512(qp, items, ld, d, count, scale, bias, st, q0, lanes, item0);
        return;
    }
    if (isa == RJ_ISA_AVX2) {
        rj_panel_avx2(qp, items, ld, d, count, scale, bias, st, q0, lanes, item0);
        return;
    }
#endif
    rj_panel_portable(qp, items, ld, d, count, scale, bias, st, q0, lanes, item0);
}

#endif /* RECJAX_MICROKERNEL_H */
