// The CPU kernels for x86-64 with AVX2 and FMA (chosen at run time by capi.cpp when the CPU has both).
// Elsewhere this file compiles to nothing.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <stdint.h>  // every header before the target switch: only this file's functions get AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define HIPNNTS_CPU_TABLE hipnnts_cpu_kernels_avx2
#define HIPNNTS_CPU_TABLE_NAME "avx2"
#define HIPNNTS_CPU_VECTOR_BYTES 32
#include "kernels.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
