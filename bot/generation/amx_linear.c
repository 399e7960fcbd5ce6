/* bf16 matrix products (a Linear layer without bias) on the CPU's AMX tile units.
 *
 * Why it exists: the bf16 model's products are most of a decode step, and for the few rows a
 * decode step has (one per reply), oneDNN's kernels stream the weights at about half the rate
 * the memory allows. This one streams each weight once per call, in the order it lies in
 * memory, prefetching ahead, and sums every output in the same order whatever the number of
 * rows, so a reply's numbers do not depend on the replies sharing its step.
 * Built on the machine that runs it (bot/generation/native.py: cc -O3 -march=native -fopenmp);
 * without AMX it does not build and the model keeps oneDNN's products.
 *
 * Layouts (bf16 as uint16):
 *   x   [M, K], row stride ldx elements;
 *   w   [N, K] packed as [N / 32][K / 32][2][16][16][2] (native.py, pack_for_amx): for each
 *       32 outputs and 32 inputs, two tiles of 16 input pairs x 16 outputs x the pair;
 *   out [M, N], row stride ldo elements.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if !defined(__AMX_TILE__) || !defined(__AMX_BF16__) || !defined(__AVX512BF16__)
#error "amx_linear.c needs AMX with BF16"
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define AHEAD 2 /* blocks of 32 inputs prefetched ahead */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config_t;

/* Linux lends a process the tile registers only when asked; 0 when granted. */
int parley_amx_init(void) { return (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); }

/* Tiles 0-3: sums (rows 0-15 and 16-31 x outputs 0-15 and 16-31); 4, 5: those rows' inputs;
 * 6, 7: the weights for the two groups of 16 outputs. */
static void configure(int low, int high) {
    tile_config_t config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) config.bytes_per_row[t] = 64;
    config.rows[0] = config.rows[1] = config.rows[4] = (uint8_t)low;
    config.rows[2] = config.rows[3] = config.rows[5] = (uint8_t)(high ? high : 1);
    config.rows[6] = config.rows[7] = 16;
    _tile_loadconfig(&config);
}

/* 0 on success, 1 for a shape it does not handle. Runs on the OpenMP threads of the process
 * (PyTorch's own: see decode_attention.c), each taking a run of 32-output blocks. */
int parley_amx_linear(const uint16_t *x, long ldx, long M, long K, const uint16_t *w, long N,
                      uint16_t *out, long ldo, int threads) {
    if (M < 1 || K < 32 || N < 32 || K % 32 || N % 32 || threads < 1) return 1;
    const long blocks = N / 32, steps = K / 32;
#pragma omp parallel num_threads(threads)
    {
        float sums[4][16][16] __attribute__((aligned(64)));
        long configured = -1;
#pragma omp for schedule(static)
        for (long block = 0; block < blocks; block++) {
            const uint16_t *weights = w + block * steps * 1024;
            for (long first = 0; first < M; first += 32) {
                const long rows = M - first < 32 ? M - first : 32;
                const int low = rows > 16 ? 16 : (int)rows, high = (int)rows - low;
                if (configured != rows) {
                    configure(low, high);
                    configured = rows;
                }
                const uint16_t *inputs = x + first * ldx;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (long step = 0; step < steps; step++) {
                    const uint16_t *tile = weights + step * 1024;
                    for (int line = 0; line < 1024; line += 32)
                        _mm_prefetch((const char *)(tile + AHEAD * 1024 + line), _MM_HINT_T0);
                    _tile_loadd(4, inputs + step * 32, ldx * 2);
                    _tile_loadd(6, tile, 64);
                    _tile_loadd(7, tile + 512, 64);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 4, 7);
                    if (high) {
                        _tile_loadd(5, inputs + 16 * ldx + step * 32, ldx * 2);
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                }
                _tile_stored(0, sums[0], 64);
                _tile_stored(1, sums[1], 64);
                if (high) {
                    _tile_stored(2, sums[2], 64);
                    _tile_stored(3, sums[3], 64);
                }
                for (long r = 0; r < rows; r++) {
                    const int t = r < 16 ? 0 : 2, i = (int)(r & 15);
                    uint16_t *o = out + (first + r) * ldo + block * 32;
                    /* Round to nearest even, as torch does when it casts float32 to bf16. */
                    _mm256_storeu_si256((__m256i *)o, (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(sums[t][i])));
                    _mm256_storeu_si256((__m256i *)(o + 16),
                                        (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(sums[t + 1][i])));
                }
            }
        }
        /* Hand the tile registers back, so a context switch need not save them. */
        if (configured >= 0) _tile_release();
    }
    return 0;
}
