/* Unit tests for fault.c: stub fault names, --faults specs (good and bad), and the seeded
 * draw (a pure function of seed and request number, at the configured rates). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "util.h"

#include "check.h"

static void test_stub_kinds(void)
{
    static const struct {
        const char *name;
        int rc;
        enum fault_kind kind;
    } cases[] = {
        {"reset", 0, FAULT_RESET},
        {"empty", 0, FAULT_EMPTY},
        {"reset-mid-body", 0, FAULT_RESET_MID_BODY},
        {"malformed-chunk", 0, FAULT_MALFORMED_CHUNK},
        {"garbage-then-close", 0, FAULT_GARBAGE},
        {"stall", 0, FAULT_STALL},
        {"Reset", -1, 0},
        {"status", -1, 0},
        {"cut-stream", -1, 0},
        {"", -1, 0},
        {"none", -1, 0},
    };
    for (size_t i = 0; i < N(cases); i++) {
        enum fault_kind k = FAULT_NONE;
        char err[APISIM_ERR_LEN] = "";
        int rc = fault_stub_kind(cases[i].name, &k, err);
        CHECK(rc == cases[i].rc, "stub kind %s: rc %d", cases[i].name, rc);
        if (rc == 0) {
            CHECK(k == cases[i].kind, "stub kind %s: %d", cases[i].name, k);
            CHECK(strcmp(fault_kind_name(k), cases[i].name) == 0, "name of %s is %s", cases[i].name,
                  fault_kind_name(k));
        } else {
            CHECK(strstr(err, "unknown fault") && strstr(err, "garbage-then-close"),
                  "stub kind %s: error lists the kinds: %s", cases[i].name, err);
        }
    }
}

static void test_parse(void)
{
    static const struct {
        const char *spec;
        int rc;
        size_t n;
        enum fault_kind kind; /* of the last rule */
        double rate;          /* of the last rule */
        const char *name;     /* of the last rule; for errors, a piece of the message */
    } cases[] = {
        {"reset:5%", 0, 1, FAULT_RESET, 0.05, "reset"},
        {"empty:100%", 0, 1, FAULT_EMPTY, 1.0, "empty"},
        {"cut-stream:20%", 0, 1, FAULT_CUT_STREAM, 0.20, "cut-stream"},
        {"status:529:10%", 0, 1, FAULT_STATUS, 0.10, "status:529"},
        {"latency-spike:2s:1%", 0, 1, FAULT_LATENCY_SPIKE, 0.01, "latency-spike:2s"},
        {"reset:0%", 0, 1, FAULT_RESET, 0.0, "reset"},
        {"reset:0.5%", 0, 1, FAULT_RESET, 0.005, "reset"},
        {"reset:5%,status:503:10%,cut-stream:85%", 0, 3, FAULT_CUT_STREAM, 0.85, "cut-stream"},
        {"", -1, 0, 0, 0, "empty"},
        {"reset", -1, 0, 0, 0, "expected KIND[:ARG]:RATE%"},
        {"reset:5", -1, 0, 0, 0, "must be a percentage ending in %"},
        {"reset:%", -1, 0, 0, 0, "is not a number"},
        {"reset:abc%", -1, 0, 0, 0, "is not a number"},
        {"reset:101%", -1, 0, 0, 0, "rate 101% is outside 0%..100%"},
        {"reset:-1%", -1, 0, 0, 0, "rate -1% is outside 0%..100%"},
        {"reset:nan%", -1, 0, 0, 0, "is not a number"},
        {"explode:5%", -1, 0, 0, 0, "unknown fault kind \"explode\""},
        {"stall:5%", -1, 0, 0, 0, "is a stub fault"},
        {"reset:x:5%", -1, 0, 0, 0, "reset takes no argument"},
        {"status:5%", -1, 0, 0, 0, "status needs a CODE 200..599"},
        {"status:99:5%", -1, 0, 0, 0, "status needs a CODE 200..599"},
        {"status:600:5%", -1, 0, 0, 0, "status needs a CODE 200..599"},
        {"status:52x:5%", -1, 0, 0, 0, "status needs a CODE 200..599"},
        {"latency-spike:5%", -1, 0, 0, 0, "latency-spike needs a DURATION"},
        {"latency-spike:2parsecs:5%", -1, 0, 0, 0, "invalid duration \"2parsecs\""},
        {"reset:5%,", -1, 0, 0, 0, "an empty spec between commas"},
        {"reset:60%,empty:50%", -1, 0, 0, 0, "the rates add up to 110%, more than 100%"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct fault_set set = {0};
        char err[APISIM_ERR_LEN] = "";
        int rc = fault_parse(cases[i].spec, &set, err);
        CHECK(rc == cases[i].rc, "spec \"%s\": rc %d (%s)", cases[i].spec, rc, err);
        if (rc == 0 && cases[i].rc == 0) {
            CHECK(set.n == cases[i].n, "spec \"%s\": %zu rules", cases[i].spec, set.n);
            const struct fault_rule *r = set.n ? &set.v[set.n - 1] : NULL;
            CHECK(r && r->kind == cases[i].kind && fabs(r->rate - cases[i].rate) < 1e-12 &&
                      strcmp(r->name, cases[i].name) == 0,
                  "spec \"%s\": last rule %s at %g", cases[i].spec, r ? r->name : "-",
                  r ? r->rate : -1);
        } else if (rc < 0) {
            CHECK(strstr(err, cases[i].name) != NULL, "spec \"%s\": error \"%s\" lacks \"%s\"",
                  cases[i].spec, err, cases[i].name);
        }
        fault_set_free(&set);
    }
    struct fault_set set = {0};
    char err[APISIM_ERR_LEN];
    CHECK(fault_parse("status:529:10%", &set, err) == 0 && set.v[0].status == 529, "status");
    CHECK(fault_parse("latency-spike:250ms:10%", &set, err) == 0 && set.n == 2 &&
              set.v[1].spike_us == 250000,
          "spike, appended");
    CHECK(fault_parse("reset:81%", &set, err) == -1 && strstr(err, "add up to 101%"),
          "a second list counts the rates already in the set: %s", err);
    struct fault_set copy = {0};
    CHECK(fault_set_copy(&copy, &set) == 0 && copy.n == set.n && copy.v != set.v &&
              memcmp(copy.v, set.v, set.n * sizeof *set.v) == 0,
          "copy");
    fault_set_free(&copy);
    fault_set_free(&set);
    fault_set_free(&set);
    fault_set_free(NULL);
}

static void test_draw(void)
{
    struct fault_set set = {0};
    char err[APISIM_ERR_LEN];
    CHECK(fault_draw(NULL, 1, 1) == NULL && fault_draw(&set, 1, 1) == NULL, "no rules, no fault");
    CHECK(fault_parse("reset:10%,status:529:5%", &set, err) == 0, "parse: %s", err);
    /* Pure: the same (seed, n) gives the same answer, whatever was drawn before. */
    const struct fault_rule *first[200];
    for (uint64_t n = 1; n <= 200; n++)
        first[n - 1] = fault_draw(&set, 42, n);
    int same = 1, differs = 0;
    for (uint64_t n = 200; n >= 1; n--) {
        same &= fault_draw(&set, 42, n) == first[n - 1];
        differs |= fault_draw(&set, 43, n) != first[n - 1];
    }
    CHECK(same, "same seed, same faults, in any order of asking");
    CHECK(differs, "another seed faults other requests");
    /* Rates: 100k draws, within 5 standard deviations of the expected counts. */
    size_t resets = 0, statuses = 0, total = 100000;
    double sum = 0;
    for (uint64_t n = 1; n <= total; n++) {
        const struct fault_rule *r = fault_draw(&set, 7, n);
        resets += r && r->kind == FAULT_RESET;
        statuses += r && r->kind == FAULT_STATUS;
        double u = fault_uniform(7, n);
        CHECK(u >= 0 && u < 1, "uniform in [0, 1): %g", u);
        sum += u;
    }
    double sd10 = sqrt(total * 0.10 * 0.90), sd5 = sqrt(total * 0.05 * 0.95);
    CHECK(fabs((double)resets - total * 0.10) < 5 * sd10, "reset rate: %zu of %zu", resets, total);
    CHECK(fabs((double)statuses - total * 0.05) < 5 * sd5, "status rate: %zu of %zu", statuses,
          total);
    CHECK(fabs(sum / total - 0.5) < 0.005, "uniform mean %g", sum / total);
    fault_set_free(&set);
    CHECK(fault_parse("empty:100%", &set, err) == 0, "parse");
    int all = 1;
    for (uint64_t n = 1; n <= 1000; n++)
        all &= fault_draw(&set, 1, n) == &set.v[0];
    CHECK(all, "100%% faults every request");
    fault_set_free(&set);
    CHECK(fault_parse("empty:0%", &set, err) == 0, "parse");
    int none = 1;
    for (uint64_t n = 1; n <= 1000; n++)
        none &= fault_draw(&set, 1, n) == NULL;
    CHECK(none, "0%% faults nothing");
    fault_set_free(&set);
}

int main(void)
{
    test_stub_kinds();
    test_parse();
    test_draw();
    if (failures) {
        fprintf(stderr, "test_fault: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_fault: ok\n");
    return 0;
}
