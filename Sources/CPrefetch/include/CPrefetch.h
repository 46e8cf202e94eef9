// Software prefetch for the matrix kernels. `_mm_prefetch` and `__builtin_prefetch` are
// macros or builtins Swift cannot call; a static inline function is imported and inlined.
// Prefetches never fault, so a hint past the end of a buffer is harmless.
#ifndef MOE_CPREFETCH_H
#define MOE_CPREFETCH_H

/// Hints that the cache line holding `p` will be read soon (into all cache levels).
static inline __attribute__((always_inline)) void moe_prefetch_read(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

#endif
