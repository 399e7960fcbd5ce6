/* One-token (decode) attention for many requests at once, over a key/value cache on a CPU.
 *
 * Why it exists: PyTorch's CPU attention kernel runs a one-token query at a few GFLOP/s per
 * core and reads every row of the cache up to the longest row's length. Here each request's
 * row is read only up to its own length, once for its whole group of query heads (grouped-query
 * attention), with the next positions prefetched and everything accumulated in float32.
 * Two versions: over a bf16 cache with AVX-512 (parley_decode_attention), and over a float32
 * cache with AVX2 and FMA (parley_decode_attention_f32). Built on the machine that runs it
 * (bot/generation/native.py: cc -O3 -march=native -fopenmp) with whichever its CPU can run;
 * where neither, it does not build and the engine keeps PyTorch's kernel.
 *
 * Layouts (element strides; bf16 as uint16):
 *   query  [heads, tokens, head_dim]: token r is decoding row r's query;
 *   key, value [rows, kv_heads, positions, head_dim]: the cache of one layer;
 *   out    [rows, heads, head_dim], contiguous.
 * Row r attends to its positions 0 .. lengths[r] - 1.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__AVX512F__) && !(defined(__AVX2__) && defined(__FMA__))
#error "decode_attention.c needs AVX-512 (bf16) or AVX2 and FMA (float32)"
#endif

#define MAX_GROUP 8 /* query heads per key/value head */
#define PREFETCH 16 /* positions ahead */

typedef struct {
    const void *q;
    long q_head, q_token;
    const void *k, *v;
    long kv_row, kv_head, kv_pos;
    const int32_t *lengths;
    int heads, kv_heads, longest;
    float scale;
    void *out;
    int first, last; /* (row, key/value head) pairs [first, last), row-major */
} job_t;

typedef int (*run_t)(const job_t *);

/* Runs `run` over every (row, key/value head) pair of `base` on the OpenMP threads of the
 * process (PyTorch's own, when this library is loaded after torch: they share libgomp), split
 * so that each thread reads about as many positions. 0 on success; 1 for a shape it does not
 * handle (`run` is NULL for a head size it has no version for: the caller falls back), 2 out of
 * memory. */
static int run_all(job_t base, int rows, run_t run, int threads) {
    if (!run || rows < 1 || base.kv_heads < 1 || base.heads % base.kv_heads ||
        base.heads / base.kv_heads > MAX_GROUP)
        return 1;
    const int kv_heads = base.kv_heads;
    long total = 0;
    int longest = 0;
    for (int r = 0; r < rows; r++) {
        if (base.lengths[r] < 1) return 1;
        total += base.lengths[r];
        longest = base.lengths[r] > longest ? base.lengths[r] : longest;
    }
    base.longest = longest;
    const int items = rows * kv_heads;
    total *= kv_heads;
    if (threads > items) threads = items;
    if (threads > 64) threads = 64;
    if (threads < 1) threads = 1;
    job_t jobs[64];
    int item = 0;
    long seen = 0;
    for (int t = 0; t < threads; t++) {
        const int first = item;
        const long goal = total * (t + 1) / threads;
        while (item < items &&
               (t == threads - 1 || seen + base.lengths[item / kv_heads] / 2 < goal))
            seen += base.lengths[item++ / kv_heads];
        jobs[t] = base;
        jobs[t].first = first;
        jobs[t].last = item;
    }
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(static, 1) reduction(| : failed)
    for (int t = 0; t < threads; t++) failed |= run(&jobs[t]) ? 2 : 0;
    return failed;
}

#if defined(__AVX512F__)

static inline __m512 load_bf16(const uint16_t *p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* exp(x) for x <= 0 (scores minus their maximum): Cephes' polynomial, about 1 ulp. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* Round to nearest even, as torch does when it casts float32 to bf16. */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* The (row, key/value head) pairs of one job. CHUNKS = head_dim / 16 is a constant in each
 * instantiation below, so the compiler keeps the query and the accumulators in registers. */
static inline __attribute__((always_inline)) int run_job(const job_t *j, const int CHUNKS) {
    const int group = j->heads / j->kv_heads;
    const long stride = ((long)j->longest + 16) & ~15L;
    float *scores = aligned_alloc(64, sizeof(float) * (size_t)group * (size_t)stride);
    if (!scores) return 1;
    for (int item = j->first; item < j->last; item++) {
        const int row = item / j->kv_heads, h = item % j->kv_heads, length = j->lengths[row];
        __m512 q[MAX_GROUP][CHUNKS];
        for (int a = 0; a < group; a++) {
            const uint16_t *qp = (const uint16_t *)j->q + (long)(h * group + a) * j->q_head +
                                 (long)row * j->q_token;
            for (int c = 0; c < CHUNKS; c++)
                q[a][c] = _mm512_mul_ps(load_bf16(qp + 16 * c), _mm512_set1_ps(j->scale));
        }
        const uint16_t *keys = (const uint16_t *)j->k + row * j->kv_row + h * j->kv_head;
        const uint16_t *values = (const uint16_t *)j->v + row * j->kv_row + h * j->kv_head;
        for (int p = 0; p < length; p++) {
            const uint16_t *kp = keys + (long)p * j->kv_pos;
            for (int c = 0; c < CHUNKS; c += 2) {
                _mm_prefetch((const char *)(kp + PREFETCH * j->kv_pos + 16 * c), _MM_HINT_T0);
                _mm_prefetch((const char *)(values + (long)p * j->kv_pos + 16 * c), _MM_HINT_T1);
            }
            __m512 k[CHUNKS];
            for (int c = 0; c < CHUNKS; c++) k[c] = load_bf16(kp + 16 * c);
            for (int a = 0; a < group; a++) {
                __m512 dot = _mm512_mul_ps(q[a][0], k[0]);
                for (int c = 1; c < CHUNKS; c++) dot = _mm512_fmadd_ps(q[a][c], k[c], dot);
                scores[a * stride + p] = _mm512_reduce_add_ps(dot);
            }
        }
        float inverse[MAX_GROUP];
        for (int a = 0; a < group; a++) {
            float *s = scores + a * stride;
            float top = -INFINITY;
            for (int p = 0; p < length; p++) top = s[p] > top ? s[p] : top;
            __m512 shift = _mm512_set1_ps(top), total = _mm512_setzero_ps();
            for (int p = 0; p < length; p += 16) {
                __mmask16 m = length - p >= 16 ? 0xffff : (__mmask16)((1u << (length - p)) - 1);
                __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + p), shift));
                e = _mm512_maskz_mov_ps(m, e);
                _mm512_mask_storeu_ps(s + p, m, e);
                total = _mm512_add_ps(total, e);
            }
            inverse[a] = 1.0f / _mm512_reduce_add_ps(total);
        }
        __m512 acc[MAX_GROUP][CHUNKS];
        for (int a = 0; a < group; a++)
            for (int c = 0; c < CHUNKS; c++) acc[a][c] = _mm512_setzero_ps();
        for (int p = 0; p < length; p++) {
            const uint16_t *vp = values + (long)p * j->kv_pos;
            for (int c = 0; c < CHUNKS; c += 2)
                _mm_prefetch((const char *)(vp + PREFETCH * j->kv_pos + 16 * c), _MM_HINT_T0);
            __m512 v[CHUNKS];
            for (int c = 0; c < CHUNKS; c++) v[c] = load_bf16(vp + 16 * c);
            for (int a = 0; a < group; a++) {
                __m512 w = _mm512_set1_ps(scores[a * stride + p]);
                for (int c = 0; c < CHUNKS; c++) acc[a][c] = _mm512_fmadd_ps(w, v[c], acc[a][c]);
            }
        }
        for (int a = 0; a < group; a++) {
            uint16_t *op =
                (uint16_t *)j->out + ((long)row * j->heads + h * group + a) * 16 * CHUNKS;
            float row_out[16 * CHUNKS];
            for (int c = 0; c < CHUNKS; c++)
                _mm512_storeu_ps(row_out + 16 * c, _mm512_mul_ps(acc[a][c], _mm512_set1_ps(inverse[a])));
            for (int i = 0; i < 16 * CHUNKS; i++) op[i] = to_bf16(row_out[i]);
        }
    }
    free(scores);
    return 0;
}

static int run_16(const job_t *j) { return run_job(j, 1); }
static int run_32(const job_t *j) { return run_job(j, 2); }
static int run_64(const job_t *j) { return run_job(j, 4); }
static int run_128(const job_t *j) { return run_job(j, 8); }

int parley_decode_attention(const uint16_t *q, long q_head, long q_token, const uint16_t *k,
                            const uint16_t *v, long kv_row, long kv_head, long kv_pos,
                            const int32_t *lengths, int rows, int heads, int kv_heads,
                            int head_dim, float scale, uint16_t *out, int threads) {
    run_t run = head_dim == 16    ? run_16
                : head_dim == 32  ? run_32
                : head_dim == 64  ? run_64
                : head_dim == 128 ? run_128
                                  : NULL;
    job_t base = {q, q_head, q_token, k, v, kv_row, kv_head, kv_pos, lengths, heads, kv_heads,
                  0, scale, out, 0, 0};
    return run_all(base, rows, run, threads);
}
#endif /* __AVX512F__ */

#if defined(__AVX2__) && defined(__FMA__)
static inline float sum_ps(__m256 x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* exp(x) for x <= 0, the same polynomial as exp_ps above; 2^n built in the exponent bits. */
static inline __m256 exp8_ps(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f)); /* keeps 2^n a normal number */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}

/* As run_job, step for step, over a float32 cache in AVX2's 8 lanes: CHUNKS = head_dim / 8.
 * Written out again rather than generated from one macro body: the two differ in every vector
 * operation, and this one must build where the AVX-512 one cannot. */
static inline __attribute__((always_inline)) int run_job_f32(const job_t *j, const int CHUNKS) {
    const int group = j->heads / j->kv_heads;
    const long stride = ((long)j->longest + 8) & ~7L;
    float *scores = aligned_alloc(32, sizeof(float) * (size_t)group * (size_t)stride);
    if (!scores) return 1;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int item = j->first; item < j->last; item++) {
        const int row = item / j->kv_heads, h = item % j->kv_heads, length = j->lengths[row];
        __m256 q[MAX_GROUP][CHUNKS];
        for (int a = 0; a < group; a++) {
            const float *qp = (const float *)j->q + (long)(h * group + a) * j->q_head +
                              (long)row * j->q_token;
            for (int c = 0; c < CHUNKS; c++)
                q[a][c] = _mm256_mul_ps(_mm256_loadu_ps(qp + 8 * c), _mm256_set1_ps(j->scale));
        }
        const float *keys = (const float *)j->k + row * j->kv_row + h * j->kv_head;
        const float *values = (const float *)j->v + row * j->kv_row + h * j->kv_head;
        for (int p = 0; p < length; p++) {
            const float *kp = keys + (long)p * j->kv_pos;
            for (int c = 0; c < CHUNKS; c += 2) {
                _mm_prefetch((const char *)(kp + PREFETCH * j->kv_pos + 8 * c), _MM_HINT_T0);
                _mm_prefetch((const char *)(values + (long)p * j->kv_pos + 8 * c), _MM_HINT_T1);
            }
            __m256 k[CHUNKS];
            for (int c = 0; c < CHUNKS; c++) k[c] = _mm256_loadu_ps(kp + 8 * c);
            for (int a = 0; a < group; a++) {
                __m256 dot = _mm256_mul_ps(q[a][0], k[0]);
                for (int c = 1; c < CHUNKS; c++) dot = _mm256_fmadd_ps(q[a][c], k[c], dot);
                scores[a * stride + p] = sum_ps(dot);
            }
        }
        float inverse[MAX_GROUP];
        for (int a = 0; a < group; a++) {
            float *s = scores + a * stride;
            float top = -INFINITY;
            for (int p = 0; p < length; p++) top = s[p] > top ? s[p] : top;
            __m256 shift = _mm256_set1_ps(top), total = _mm256_setzero_ps();
            for (int p = 0; p < length; p += 8) {
                __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(length - p), lanes);
                __m256 e = exp8_ps(_mm256_sub_ps(_mm256_maskload_ps(s + p, m), shift));
                e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
                _mm256_maskstore_ps(s + p, m, e);
                total = _mm256_add_ps(total, e);
            }
            inverse[a] = 1.0f / sum_ps(total);
        }
        __m256 acc[MAX_GROUP][CHUNKS];
        for (int a = 0; a < group; a++)
            for (int c = 0; c < CHUNKS; c++) acc[a][c] = _mm256_setzero_ps();
        for (int p = 0; p < length; p++) {
            const float *vp = values + (long)p * j->kv_pos;
            for (int c = 0; c < CHUNKS; c += 2)
                _mm_prefetch((const char *)(vp + PREFETCH * j->kv_pos + 8 * c), _MM_HINT_T0);
            __m256 v[CHUNKS];
            for (int c = 0; c < CHUNKS; c++) v[c] = _mm256_loadu_ps(vp + 8 * c);
            for (int a = 0; a < group; a++) {
                __m256 w = _mm256_set1_ps(scores[a * stride + p]);
                for (int c = 0; c < CHUNKS; c++) acc[a][c] = _mm256_fmadd_ps(w, v[c], acc[a][c]);
            }
        }
        for (int a = 0; a < group; a++) {
            float *op = (float *)j->out + ((long)row * j->heads + h * group + a) * 8 * CHUNKS;
            for (int c = 0; c < CHUNKS; c++)
                _mm256_storeu_ps(op + 8 * c, _mm256_mul_ps(acc[a][c], _mm256_set1_ps(inverse[a])));
        }
    }
    free(scores);
    return 0;
}

static int run_f32_16(const job_t *j) { return run_job_f32(j, 2); }
static int run_f32_32(const job_t *j) { return run_job_f32(j, 4); }
static int run_f32_64(const job_t *j) { return run_job_f32(j, 8); }
static int run_f32_128(const job_t *j) { return run_job_f32(j, 16); }

int parley_decode_attention_f32(const float *q, long q_head, long q_token, const float *k,
                                const float *v, long kv_row, long kv_head, long kv_pos,
                                const int32_t *lengths, int rows, int heads, int kv_heads,
                                int head_dim, float scale, float *out, int threads) {
    run_t run = head_dim == 16    ? run_f32_16
                : head_dim == 32  ? run_f32_32
                : head_dim == 64  ? run_f32_64
                : head_dim == 128 ? run_f32_128
                                  : NULL;
    job_t base = {q, q_head, q_token, k, v, kv_row, kv_head, kv_pos, lengths, heads, kv_heads,
                  0, scale, out, 0, 0};
    return run_all(base, rows, run, threads);
}
#endif /* __AVX2__ && __FMA__ */
