/* check.h — the one assertion the unit tests use: CHECK(cond, printf-style why) counts a
 * failure and says where, and the test goes on, so one run reports every failing case of a
 * table. main() returns failures ? 1 : 0. N(a) is the number of elements of an array. */
#ifndef APISIM_TEST_CHECK_H
#define APISIM_TEST_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define N(a) (sizeof(a) / sizeof((a)[0]))

#endif
