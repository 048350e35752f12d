/* quant_grids.c — the IQ grids of quant_grids.h expanded for the CPU kernels.
 *
 * The packed form keeps the source small and is shared with the CUDA kernels; the CPU
 * decoders want one byte per element so that a grid entry is one 8- or 4-byte load.
 */
#include "quant_grids.h"
#include "quant_impl.h"

const uint16_t quant_grid_iq2xxs_packed[QUANT_GRID_IQ2XXS_N] __attribute__((aligned(64))) = {QUANT_GRID_IQ2XXS};
const uint16_t quant_grid_iq2xs_packed[QUANT_GRID_IQ2XS_N] __attribute__((aligned(64))) = {QUANT_GRID_IQ2XS};
static const uint16_t packed_iq2s[QUANT_GRID_IQ2S_N] = {QUANT_GRID_IQ2S};
const uint16_t quant_grid_iq3xxs_packed[QUANT_GRID_IQ3XXS_N] __attribute__((aligned(64))) = {QUANT_GRID_IQ3XXS};
static const uint16_t packed_iq3s[QUANT_GRID_IQ3S_N] = {QUANT_GRID_IQ3S};
static const uint16_t packed_iq1s[QUANT_GRID_IQ1S_N] = {QUANT_GRID_IQ1S};

uint8_t quant_grid_iq2xxs[256][8];
uint8_t quant_grid_iq2xs[512][8];
uint8_t quant_grid_iq2s[1024][8];
uint8_t quant_grid_iq3xxs[256][4];
uint8_t quant_grid_iq3s[512][4];
int8_t quant_grid_iq1s[2048][8];
uint8_t quant_sign_bytes[128][8];
const int8_t quant_iq4nl_values[16] = QUANT_IQ4NL_VALUES;
const int8_t quant_mxfp4_values[16] = QUANT_MXFP4_VALUES;

_Static_assert(QUANT_GRID_IQ2XXS_N == 256 && QUANT_GRID_IQ2XS_N == 512 && QUANT_GRID_IQ2S_N == 1024 &&
                   QUANT_GRID_IQ3XXS_N == 256 && QUANT_GRID_IQ3S_N == 512 && QUANT_GRID_IQ1S_N == 2048,
               "grid sizes");

static void expand8(const uint16_t *packed, int n, const int *levels, uint8_t (*out)[8])
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 8; j++)
            out[i][j] = (uint8_t)levels[(packed[i] >> (2 * j)) & 3];
}

void quant_grids_init(void)
{
    static const int iq2[3] = QUANT_IQ2_LEVELS, iq3xxs[8] = QUANT_IQ3XXS_LEVELS;
    static const int iq1[3] = {-1, 0, 1};
    expand8(quant_grid_iq2xxs_packed, 256, iq2, quant_grid_iq2xxs);
    expand8(quant_grid_iq2xs_packed, 512, iq2, quant_grid_iq2xs);
    expand8(packed_iq2s, 1024, iq2, quant_grid_iq2s);
    expand8(packed_iq1s, 2048, iq1, (uint8_t (*)[8])quant_grid_iq1s);
    for (int i = 0; i < 256; i++)
        for (int j = 0; j < 4; j++)
            quant_grid_iq3xxs[i][j] = (uint8_t)iq3xxs[(quant_grid_iq3xxs_packed[i] >> (3 * j)) & 7];
    for (int i = 0; i < 512; i++)
        for (int j = 0; j < 4; j++)
            quant_grid_iq3s[i][j] = (uint8_t)(2 * ((packed_iq3s[i] >> (3 * j)) & 7) + 1);
    /* 7 stored signs; the eighth makes the count of minus signs even */
    for (int k = 0; k < 128; k++) {
        int bits = k | (__builtin_popcount((unsigned)k) & 1) << 7;
        for (int j = 0; j < 8; j++)
            quant_sign_bytes[k][j] = (bits >> j) & 1 ? 0xFF : 0;
    }
}
