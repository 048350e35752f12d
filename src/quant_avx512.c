/* quant_avx512.c — AVX-512 kernels: VNNI (vpdpbusd) integer dot products, BF16 dot. */
#include "quant_impl.h"

void quant_avx512_fill(quant_kernels *k)
{
    (void)k;
}
