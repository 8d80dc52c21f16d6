/*
 * clock: the two times Parley reads. Wall-clock milliseconds for what leaves
 * the process (message timestamps, token expiry, Redis records); monotonic
 * milliseconds for durations measured inside it (microseconds for the
 * metrics' latency histograms). Any thread.
 */
#ifndef PARLEY_BASE_CLOCK_H
#define PARLEY_BASE_CLOCK_H

#include <stdint.h>

/** Unix time in milliseconds (CLOCK_REALTIME). */
int64_t pl_now_ms(void);

/** Milliseconds of CLOCK_MONOTONIC: only differences mean anything. */
int64_t pl_mono_ms(void);

/** Microseconds of CLOCK_MONOTONIC: only differences mean anything. */
uint64_t pl_mono_us(void);

#endif
