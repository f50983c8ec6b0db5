// The CPU kernels for the baseline instruction set of the target (what the compiler assumes by default).
#define HIPNNTS_CPU_TABLE hipnnts_cpu_kernels_default
#define HIPNNTS_CPU_TABLE_NAME "default"
#include "kernels.h"
