/*
 * unit.h: the smallest test harness that does the job. Each test binary
 * prints one line per test, `PASS <name>` or `FAIL <name>: <where>`, and exits
 * non-zero if any failed; test/run counts the lines across every suite.
 */
#ifndef PARLEY_UNIT_H
#define PARLEY_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failed_total;
static int unit_cur_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (!unit_cur_failed)                                                                  \
                printf("  check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);                 \
            unit_cur_failed = 1;                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            if (!unit_cur_failed)                                                                  \
                printf("  check failed: %s == %s (%lld != %lld) (%s:%d)\n", #a, #b, a_, b_,        \
                       __FILE__, __LINE__);                                                        \
            unit_cur_failed = 1;                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        unit_cur_failed = 0;                                                                       \
        fn();                                                                                      \
        printf("%s %s\n", unit_cur_failed ? "FAIL" : "PASS", #fn);                                 \
        unit_failed_total += unit_cur_failed;                                                      \
        fflush(stdout);                                                                            \
    } while (0)

#define UNIT_EXIT() return unit_failed_total ? 1 : 0

#endif
