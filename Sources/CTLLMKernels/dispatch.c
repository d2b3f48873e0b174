// CPU feature detection, done once; kernels read the active mask.
#include "tllm_kernels.h"
#include "dispatch.h"
#include <stdatomic.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/// Linux keeps AMX tile data disabled until the process asks for it (arch_prctl
/// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); without the grant a tile instruction faults.
static int request_amx(void) {
#if defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return 0;
#endif
}

static unsigned detect(void) {
    unsigned a, b, c, d, features = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    int ymm_ok = (xcr0_lo & 0x6) == 0x6;
    int zmm_ok = (xcr0_lo & 0xe6) == 0xe6;
    if (!ymm_ok) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512vl = (b >> 31) & 1, avx512bw = (b >> 30) & 1, vnni = (c >> 11) & 1;
    int avx512dq = (b >> 17) & 1, amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    int tiles_ok = (xcr0_lo & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA state
    if (avx2 && f16c && fma) features |= TLLM_CPU_AVX2_F16C;
    if (avx512f && zmm_ok) features |= TLLM_CPU_AVX512F;
    if (avx512f && avx512vl && avx512bw && vnni && zmm_ok && avx2 && f16c && fma) features |= TLLM_CPU_AVX512VNNI;
    if (amx_bf16 && amx_tile && tiles_ok && avx512f && avx512vl && avx512bw && avx512dq && zmm_ok && avx2 && f16c &&
        fma && request_amx())
        features |= TLLM_CPU_AMX_BF16;
    return features;
}
#elif defined(__aarch64__)
static unsigned detect(void) { return TLLM_CPU_NEON; }
#else
static unsigned detect(void) { return 0; }
#endif

static _Atomic int detected = 0;
static _Atomic unsigned supported = 0;
/// This thread's restriction (all paths unless a test narrowed them); pool workers take the
/// submitting thread's for each job (pool.c).
static _Thread_local unsigned narrowed = ~0u;

unsigned tllm_cpu_features(void) {
    if (!atomic_load_explicit(&detected, memory_order_acquire)) {
        atomic_store(&supported, detect());
        atomic_store_explicit(&detected, 1, memory_order_release);
    }
    return atomic_load(&supported);
}

unsigned tllm_active_features(void) { return tllm_cpu_features() & narrowed; }

unsigned tllm_set_cpu_features(unsigned mask) {
    narrowed = mask;
    return tllm_cpu_features() & mask;
}
