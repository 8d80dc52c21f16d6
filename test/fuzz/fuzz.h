/*
 * fuzz.h: what the libFuzzer targets in test/fuzz/ share: cutting an input into reads the way
 * a socket might deliver it, a running digest of what a run saw (so a run fed whole and a run
 * fed in pieces can be compared), and an assertion that stays on in every build.
 */
#ifndef PARLEY_FUZZ_H
#define PARLEY_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A broken promise is a crash, so libFuzzer keeps the input (assert() may be compiled out). */
#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz: assertion failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* FNV-1a over what a run observed. */
typedef struct {
    uint64_t h;
} fuzz_digest_t;

static inline void fuzz_digest_init(fuzz_digest_t *d)
{
    d->h = 14695981039346656037ull;
}

static inline void fuzz_digest_add(fuzz_digest_t *d, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        d->h = (d->h ^ c[i]) * 1099511628211ull;
}

static inline void fuzz_digest_int(fuzz_digest_t *d, long long v)
{
    fuzz_digest_add(d, &v, sizeof v);
}

/* The length of the next read of a stream cut by `cut` (0: the whole rest at once; otherwise
 * pieces of 1..cut bytes, varied by position so that every boundary gets its turn). */
static inline size_t fuzz_piece(unsigned cut, size_t off, size_t left)
{
    if (cut == 0) return left;
    size_t n = 1 + (off * 7 + cut) % cut;
    return n < left ? n : left;
}

#endif
