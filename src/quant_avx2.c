/* quant_avx2.c — AVX2/FMA/F16C kernels (maddubs-based integer dot products). */
#include "quant_impl.h"

void quant_avx2_fill(quant_kernels *k)
{
    (void)k;
}
