/* cuda_bf16.h of the simulated device: everything is in cudasim.h */
#include "cudasim.h"
