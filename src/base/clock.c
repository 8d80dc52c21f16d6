/* clock: wall and monotonic milliseconds; see the header. */
#include "parley/base/clock.h"

#include <time.h>

static int64_t ms_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pl_now_ms(void)
{
    return ms_of(CLOCK_REALTIME);
}

int64_t pl_mono_ms(void)
{
    return ms_of(CLOCK_MONOTONIC);
}

uint64_t pl_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}
