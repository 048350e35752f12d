/* gpu_mtp.c — test_mtp's fixture checks of the hybrid Qwen MTP heads (teacher-forced
 * logits, the drafting loop forced onto greedy.txt against llama.cpp's steps, and free
 * running equal to plain greedy decoding) with the target, its caches and the head on
 * the GPU (a real one, or the simulated device of tests/cudasim). One source, two
 * builds: the checks are test_mtp.c's. Exits 77 (skip) without a usable GPU. */
#define MTP_ON_GPU 1
#include "test_mtp.c"
