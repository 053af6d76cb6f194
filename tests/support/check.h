/*
 * check.h - the minimal test harness every tests/test_*.c uses.
 *
 *   CHECK(cond)            count a check; on failure print file:line and cond
 *   CHECK_EQ(a, b)         integers; prints both values on failure
 *   CHECK_OK(expr)         expr must return >= 0
 *   return check_summary("suite");  prints "suite: N passed, N failed" and
 *                          returns the process exit status
 */
#ifndef CELLAR_CHECK_H
#define CELLAR_CHECK_H

#include <stdio.h>
#include <string.h>

static long check_pass_, check_fail_;

#define CHECK(cond) do { \
    if (cond) { check_pass_++; } else { check_fail_++; \
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

#define CHECK_EQ(a, b) do { \
    long long va_ = (long long)(a), vb_ = (long long)(b); \
    if (va_ == vb_) { check_pass_++; } else { check_fail_++; \
        fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n", \
                __FILE__, __LINE__, #a, va_, #b, vb_); } \
} while (0)

#define CHECK_OK(expr) do { \
    long long r_ = (long long)(expr); \
    if (r_ >= 0) { check_pass_++; } else { check_fail_++; \
        fprintf(stderr, "%s:%d: CHECK_OK failed: %s returned %lld\n", \
                __FILE__, __LINE__, #expr, r_); } \
} while (0)

static inline int check_summary(const char *suite)
{
    printf("%s: %ld passed, %ld failed\n", suite, check_pass_, check_fail_);
    return check_fail_ ? 1 : 0;
}

#endif /* CELLAR_CHECK_H */
