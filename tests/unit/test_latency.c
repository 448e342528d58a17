/* Unit tests for latency.c: spec parsing, the seeded generator and the random models. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latency.h"
#include "util.h"

#include "check.h"

static void test_parse(void)
{
    static const struct {
        const char *in;
        int rc;
        enum latency_kind kind;
        int64_t a, b;
        double factor;
        const char *why; /* for errors: a piece of the message besides the spec and forms */
    } cases[] = {
        {"none", 0, LATENCY_NONE, 0, 0, 1.0, NULL},
        {"fixed:50ms", 0, LATENCY_FIXED, 50000, 0, 1.0, NULL},
        {"fixed:1.5s", 0, LATENCY_FIXED, 1500000, 0, 1.0, NULL},
        {"fixed:250us", 0, LATENCY_FIXED, 250, 0, 1.0, NULL},
        {"fixed:0ms", 0, LATENCY_FIXED, 0, 0, 1.0, NULL},
        {"recorded", 0, LATENCY_RECORDED, 0, 0, 1.0, NULL},
        {"recorded*0.5", 0, LATENCY_RECORDED, 0, 0, 0.5, NULL},
        {"recorded*2", 0, LATENCY_RECORDED, 0, 0, 2.0, NULL},
        {"recorded*0", 0, LATENCY_RECORDED, 0, 0, 0.0, NULL},
        {"uniform:10ms..50ms", 0, LATENCY_UNIFORM, 10000, 50000, 1.0, NULL},
        {"uniform:5ms..5ms", 0, LATENCY_UNIFORM, 5000, 5000, 1.0, NULL},
        {"uniform:0.5ms..1s", 0, LATENCY_UNIFORM, 500, 1000000, 1.0, NULL},
        {"lognormal:40ms,200ms", 0, LATENCY_LOGNORMAL, 40000, 200000, 1.0, NULL},
        {"lognormal:1s,1s", 0, LATENCY_LOGNORMAL, 1000000, 1000000, 1.0, NULL},
        {"", -1, 0, 0, 0, 0, "empty"},
        {"fast", -1, 0, 0, 0, 0, "unknown model"},
        {"Fixed:50ms", -1, 0, 0, 0, 0, "unknown model"},
        {"none ", -1, 0, 0, 0, 0, "unknown model"},
        {"fixed:", -1, 0, 0, 0, 0, "missing duration"},
        {"fixed:50", -1, 0, 0, 0, 0, "\"50\" is not a duration"},
        {"fixed:50 ms", -1, 0, 0, 0, 0, "is not a duration"},
        {"fixed:-5ms", -1, 0, 0, 0, 0, "is not a duration"},
        {"fixed:5m", -1, 0, 0, 0, 0, "is not a duration"},
        {"recorded*", -1, 0, 0, 0, 0, "factor"},
        {"recorded*-1", -1, 0, 0, 0, 0, "factor"},
        {"recorded*abc", -1, 0, 0, 0, 0, "factor"},
        {"recorded*nan", -1, 0, 0, 0, 0, "factor"},
        {"recorded*0.5x", -1, 0, 0, 0, 0, "factor"},
        {"recorded*1e9", -1, 0, 0, 0, 0, "factor"},
        {"uniform:50ms..10ms", -1, 0, 0, 0, 0, "LOW must not exceed HIGH"},
        {"uniform:10ms", -1, 0, 0, 0, 0, "expected uniform:LOW..HIGH"},
        {"uniform:10ms..", -1, 0, 0, 0, 0, "missing duration"},
        {"uniform:..10ms", -1, 0, 0, 0, 0, "missing duration"},
        {"lognormal:40ms", -1, 0, 0, 0, 0, "expected lognormal:MEDIAN,P99"},
        {"lognormal:0ms,10ms", -1, 0, 0, 0, 0, "MEDIAN must be above zero"},
        {"lognormal:200ms,40ms", -1, 0, 0, 0, 0, "P99 must not be below MEDIAN"},
        {"lognormal:40ms,200", -1, 0, 0, 0, 0, "\"200\" is not a duration"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        char err[APISIM_ERR_LEN] = "";
        struct latency_spec s = {.kind = LATENCY_FIXED, .a_us = -7, .b_us = -7, .factor = -7};
        int rc = latency_parse(cases[i].in, &s, err);
        CHECK(rc == cases[i].rc, "parse(\"%s\") = %d (%s)", cases[i].in, rc, err);
        if (rc == 0 && cases[i].rc == 0) {
            CHECK(s.kind == cases[i].kind && s.a_us == cases[i].a && s.b_us == cases[i].b &&
                      s.factor == cases[i].factor,
                  "parse(\"%s\") = {%d, %lld, %lld, %g}", cases[i].in, (int)s.kind,
                  (long long)s.a_us, (long long)s.b_us, s.factor);
        }
        if (rc < 0) {
            char quoted[128];
            snprintf(quoted, sizeof quoted, "invalid latency \"%s\"", cases[i].in);
            CHECK(strstr(err, quoted) != NULL, "error quotes the spec: %s", err);
            CHECK(strstr(err, "accepted: none, fixed:50ms, recorded, recorded*0.5, "
                              "uniform:10ms..50ms, lognormal:40ms,200ms") != NULL,
                  "error lists the forms: %s", err);
            CHECK(strstr(err, cases[i].why) != NULL, "error says \"%s\": %s", cases[i].why, err);
            CHECK(s.a_us == -7 && s.factor == -7, "out untouched on error (%s)", cases[i].in);
        }
    }
}

static void test_first_byte(void)
{
    static const struct {
        const char *spec;
        int64_t ttfb, want;
        int chunks;
        double factor;
    } cases[] = {
        {"none", 5000, 0, 0, 1.0},
        {"fixed:50ms", 5000, 50000, 0, 1.0},
        {"recorded", 5000, 5000, 1, 1.0},
        {"recorded*0.5", 5000, 2500, 1, 0.5},
        {"recorded*3", 1000, 3000, 1, 3.0},
        {"recorded", -1, 0, 1, 1.0},
        {"recorded", 0, 0, 1, 1.0},
        {"uniform:7ms..7ms", 5000, 7000, 0, 1.0},
        {"lognormal:30ms,30ms", 5000, 30000, 0, 1.0},
    };
    for (size_t i = 0; i < N(cases); i++) {
        char err[APISIM_ERR_LEN];
        struct latency_spec s;
        struct latency_rng rng;
        latency_seed(&rng, 1);
        CHECK(latency_parse(cases[i].spec, &s, err) == 0, "parse %s: %s", cases[i].spec, err);
        int64_t got = latency_first_byte_us(&s, &rng, cases[i].ttfb);
        CHECK(got == cases[i].want, "%s with ttfb %lld: %lld, want %lld", cases[i].spec,
              (long long)cases[i].ttfb, (long long)got, (long long)cases[i].want);
        double f = -1;
        CHECK(latency_replays_chunks(&s, &f) == cases[i].chunks, "%s replays chunks",
              cases[i].spec);
        CHECK(f == cases[i].factor, "%s chunk factor %g", cases[i].spec, f);
    }
}

static void test_rng(void)
{
    /* Reference values from an independent implementation of splitmix64 + xoshiro256**. */
    static const struct {
        uint64_t seed;
        double first[3];
    } cases[] = {
        {0, {0.6012629994179048, 0.7477740925472398, 0.10301998939503632}},
        {42, {0.08386297105988216, 0.3789802506626686, 0.6800434110281394}},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct latency_rng rng;
        latency_seed(&rng, cases[i].seed);
        for (int k = 0; k < 3; k++) {
            double d = latency_next_double(&rng);
            CHECK(d == cases[i].first[k], "seed %llu draw %d: %.17g, want %.17g",
                  (unsigned long long)cases[i].seed, k, d, cases[i].first[k]);
        }
    }

    /* Same seed, same 1000 draws; another seed, other draws. */
    struct latency_rng a, b, c;
    latency_seed(&a, 1234);
    latency_seed(&b, 1234);
    latency_seed(&c, 1235);
    int same = 1, differ = 0, in_range = 1;
    for (int k = 0; k < 1000; k++) {
        double x = latency_next_double(&a), y = latency_next_double(&b),
               z = latency_next_double(&c);
        same &= x == y;
        differ += x != z;
        in_range &= x >= 0.0 && x < 1.0;
    }
    CHECK(same, "same seed gives the same 1000 draws");
    CHECK(differ > 990, "another seed differs (%d of 1000 differ)", differ);
    CHECK(in_range, "draws in [0, 1)");

    /* The same holds for the delays of a random model. */
    char err[APISIM_ERR_LEN];
    struct latency_spec s;
    latency_parse("lognormal:40ms,200ms", &s, err);
    latency_seed(&a, 7);
    latency_seed(&b, 7);
    latency_seed(&c, 8);
    same = 1;
    differ = 0;
    for (int k = 0; k < 1000; k++) {
        int64_t x = latency_first_byte_us(&s, &a, 0), y = latency_first_byte_us(&s, &b, 0),
                z = latency_first_byte_us(&s, &c, 0);
        same &= x == y;
        differ += x != z;
    }
    CHECK(same, "same seed gives the same 1000 delays");
    CHECK(differ > 900, "another seed gives other delays (%d of 1000 differ)", differ);
}

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return (a > b) - (a < b);
}

#define DRAWS 10001

static void test_distributions(void)
{
    static int64_t v[DRAWS];
    char err[APISIM_ERR_LEN];
    struct latency_spec s;
    struct latency_rng rng;

    latency_parse("uniform:10ms..50ms", &s, err);
    latency_seed(&rng, 99);
    double sum = 0;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int i = 0; i < DRAWS; i++) {
        v[i] = latency_first_byte_us(&s, &rng, 0);
        sum += (double)v[i];
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    CHECK(lo >= 10000 && hi <= 50000, "uniform within bounds: [%lld, %lld]", (long long)lo,
          (long long)hi);
    CHECK(lo < 10500 && hi > 49500, "uniform reaches both ends: [%lld, %lld]", (long long)lo,
          (long long)hi);
    CHECK(fabs(sum / DRAWS - 30000) < 1000, "uniform mean %.0f near 30000", sum / DRAWS);

    latency_parse("lognormal:40ms,200ms", &s, err);
    latency_seed(&rng, 99);
    for (int i = 0; i < DRAWS; i++)
        v[i] = latency_first_byte_us(&s, &rng, 0);
    qsort(v, DRAWS, sizeof v[0], cmp_i64);
    int64_t median = v[DRAWS / 2], p99 = v[DRAWS * 99 / 100];
    CHECK(median > 38000 && median < 42000, "lognormal median %lld near 40000", (long long)median);
    CHECK(p99 > 170000 && p99 < 230000, "lognormal p99 %lld near 200000", (long long)p99);
    CHECK(v[0] > 0, "lognormal delays are positive (min %lld)", (long long)v[0]);
}

int main(void)
{
    test_parse();
    test_first_byte();
    test_rng();
    test_distributions();
    if (failures) {
        fprintf(stderr, "test_latency: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_latency: ok\n");
    return 0;
}
