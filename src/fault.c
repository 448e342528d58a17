#include "fault.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define FAULT_SPEC_MAX 128 /* longest single spec looked at */
#define FAULT_RULES_MAX 64 /* rules in one set */

static const char *const kind_names[] = {
    [FAULT_NONE] = "none",
    [FAULT_RESET] = "reset",
    [FAULT_EMPTY] = "empty",
    [FAULT_RESET_MID_BODY] = "reset-mid-body",
    [FAULT_MALFORMED_CHUNK] = "malformed-chunk",
    [FAULT_GARBAGE] = "garbage-then-close",
    [FAULT_STALL] = "stall",
    [FAULT_STATUS] = "status",
    [FAULT_LATENCY_SPIKE] = "latency-spike",
    [FAULT_CUT_STREAM] = "cut-stream",
};

#define STUB_KINDS "reset, empty, reset-mid-body, malformed-chunk, garbage-then-close, stall"
#define REPLAY_KINDS "reset, empty, status:CODE, latency-spike:DURATION, cut-stream"

const char *fault_kind_name(enum fault_kind kind)
{
    if ((size_t)kind < sizeof kind_names / sizeof kind_names[0] && kind_names[kind])
        return kind_names[kind];
    return "unknown";
}

int fault_stub_kind(const char *name, enum fault_kind *out, char *err)
{
    for (enum fault_kind k = FAULT_RESET; k <= FAULT_STALL; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            *out = k;
            return 0;
        }
    }
    snprintf(err, APISIM_ERR_LEN, "unknown fault \"%.64s\" (expected one of: " STUB_KINDS ")",
             name);
    return -1;
}

/* "12.5%" -> 0.125. Returns 0, or -1 with err. */
static int parse_rate(const char *spec, const char *s, double *out, char *err)
{
    size_t n = strlen(s);
    if (n == 0 || s[n - 1] != '%') {
        snprintf(err, APISIM_ERR_LEN,
                 "\"%s\": rate \"%s\" must be a percentage ending in %% (e.g. 5%%)", spec, s);
        return -1;
    }
    char num[32];
    if (n - 1 == 0 || n - 1 >= sizeof num) {
        snprintf(err, APISIM_ERR_LEN, "\"%s\": rate \"%s\" is not a number", spec, s);
        return -1;
    }
    memcpy(num, s, n - 1);
    num[n - 1] = '\0';
    char *end;
    double v = strtod(num, &end);
    if (*end || end == num || !isfinite(v) || num[0] == '+' || num[0] == ' ') {
        snprintf(err, APISIM_ERR_LEN, "\"%s\": rate \"%s\" is not a number", spec, s);
        return -1;
    }
    if (v < 0 || v > 100) {
        snprintf(err, APISIM_ERR_LEN, "\"%s\": rate %s is outside 0%%..100%%", spec, s);
        return -1;
    }
    *out = v / 100.0;
    return 0;
}

/* One spec: KIND[:ARG]:RATE%. */
static int parse_one(const char *spec, struct fault_rule *r, char *err)
{
    char kind[FAULT_SPEC_MAX];
    const char *colon = strrchr(spec, ':');
    memset(r, 0, sizeof *r);
    if (!colon) {
        snprintf(err, APISIM_ERR_LEN,
                 "\"%s\": expected KIND[:ARG]:RATE%% (e.g. reset:5%%, status:529:10%%); "
                 "KIND is one of " REPLAY_KINDS,
                 spec);
        return -1;
    }
    size_t klen = (size_t)(colon - spec);
    memcpy(kind, spec, klen);
    kind[klen] = '\0';
    if (parse_rate(spec, colon + 1, &r->rate, err) < 0)
        return -1;
    char *arg = strchr(kind, ':');
    if (arg)
        *arg++ = '\0';
    if (strcmp(kind, "reset") == 0 || strcmp(kind, "empty") == 0 ||
        strcmp(kind, "cut-stream") == 0) {
        r->kind = kind[0] == 'r' ? FAULT_RESET : kind[0] == 'e' ? FAULT_EMPTY : FAULT_CUT_STREAM;
        if (arg) {
            snprintf(err, APISIM_ERR_LEN, "\"%s\": %s takes no argument (e.g. %s:5%%)", spec, kind,
                     kind);
            return -1;
        }
        snprintf(r->name, sizeof r->name, "%.16s", kind);
    } else if (strcmp(kind, "status") == 0) {
        char *end = NULL;
        long code = arg ? strtol(arg, &end, 10) : 0;
        if (!arg || !*arg || *end || code < 200 || code > 599) {
            snprintf(err, APISIM_ERR_LEN,
                     "\"%s\": status needs a CODE 200..599 (e.g. status:529:10%%)", spec);
            return -1;
        }
        r->kind = FAULT_STATUS;
        r->status = (int)code;
        snprintf(r->name, sizeof r->name, "status:%d", r->status);
    } else if (strcmp(kind, "latency-spike") == 0) {
        char why[APISIM_ERR_LEN];
        if (!arg || !*arg) {
            snprintf(err, APISIM_ERR_LEN,
                     "\"%s\": latency-spike needs a DURATION (e.g. "
                     "latency-spike:2s:1%%)",
                     spec);
            return -1;
        }
        if (parse_duration_us(arg, &r->spike_us, why) < 0) {
            snprintf(err, APISIM_ERR_LEN, "\"%s\": %.300s", spec, why);
            return -1;
        }
        r->kind = FAULT_LATENCY_SPIKE;
        snprintf(r->name, sizeof r->name, "latency-spike:%.32s", arg);
    } else {
        enum fault_kind k;
        char why[APISIM_ERR_LEN];
        if (fault_stub_kind(kind, &k, why) == 0)
            snprintf(err, APISIM_ERR_LEN,
                     "\"%s\": \"%s\" is a stub fault (POST /__apisim/stubs "
                     "\"fault\"); --faults takes " REPLAY_KINDS,
                     spec, kind);
        else
            snprintf(err, APISIM_ERR_LEN,
                     "\"%s\": unknown fault kind \"%.64s\" (expected " REPLAY_KINDS ")", spec,
                     kind);
        return -1;
    }
    return 0;
}

int fault_parse(const char *specs, struct fault_set *set, char *err)
{
    const char *p = specs;
    double total = 0;
    for (size_t i = 0; i < set->n; i++)
        total += set->v[i].rate;
    if (!*specs) {
        snprintf(err, APISIM_ERR_LEN, "empty; expected KIND[:ARG]:RATE%%[,...] (e.g. reset:5%%)");
        return -1;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char spec[FAULT_SPEC_MAX];
        if (n == 0 || n >= sizeof spec) {
            snprintf(err, APISIM_ERR_LEN, "\"%.100s\": %s", specs,
                     n ? "a spec is too long" : "an empty spec between commas");
            return -1;
        }
        memcpy(spec, p, n);
        spec[n] = '\0';
        if (set->n >= FAULT_RULES_MAX) {
            snprintf(err, APISIM_ERR_LEN, "more than %d specs", FAULT_RULES_MAX);
            return -1;
        }
        struct fault_rule r;
        if (parse_one(spec, &r, err) < 0)
            return -1;
        total += r.rate;
        if (total > 1.0 + 1e-9) {
            snprintf(err, APISIM_ERR_LEN,
                     "\"%.100s\": the rates add up to %.4g%%, more than 100%% (one "
                     "draw per request picks at most one fault)",
                     specs, total * 100);
            return -1;
        }
        struct fault_rule *v = realloc(set->v, (set->n + 1) * sizeof *v);
        if (!v) {
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            return -1;
        }
        set->v = v;
        set->v[set->n++] = r;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

int fault_set_copy(struct fault_set *dst, const struct fault_set *src)
{
    struct fault_rule *v = NULL;
    if (src->n) {
        v = malloc(src->n * sizeof *v);
        if (!v)
            return -1;
        memcpy(v, src->v, src->n * sizeof *v);
    }
    free(dst->v);
    dst->v = v;
    dst->n = src->n;
    return 0;
}

void fault_set_free(struct fault_set *set)
{
    if (!set)
        return;
    free(set->v);
    set->v = NULL;
    set->n = 0;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

double fault_uniform(uint64_t seed, uint64_t n)
{
    uint64_t x = splitmix64(splitmix64(seed) ^ splitmix64(n ^ 0x6a09e667f3bcc909ULL));
    return (double)(x >> 11) * 0x1.0p-53;
}

const struct fault_rule *fault_draw(const struct fault_set *set, uint64_t seed, uint64_t n)
{
    if (!set || set->n == 0)
        return NULL;
    double u = fault_uniform(seed, n), acc = 0;
    for (size_t i = 0; i < set->n; i++) {
        acc += set->v[i].rate;
        if (u < acc)
            return &set->v[i];
    }
    return NULL;
}
