/* tp_clock.c - the transports' monotonic clock on POSIX (tp_now_ms, tp.h).
 * A device build gives its own tp_now_ms (its tick counter). */
#include "tp.h"

#include <time.h>

uint64_t tp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
