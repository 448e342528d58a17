#include "latency.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define LATENCY_FORMS                                                                              \
    "none, fixed:50ms, recorded, recorded*0.5, uniform:10ms..50ms, lognormal:40ms,200ms "          \
    "(median,p99); durations take us, ms or s"

/* z of the 99th percentile of the standard normal distribution. */
#define Z_P99 2.3263478740408408

/* Longest delay a random model may produce: one hour. */
#define LATENCY_MAX_US (3600LL * 1000000)

static int bad(const char *s, const char *why, char *err)
{
    snprintf(err, APISIM_ERR_LEN, "invalid latency \"%.100s\": %s; accepted: " LATENCY_FORMS,
             s ? s : "", why);
    return -1;
}

/* Parse a duration that is a part of spec s (the n bytes at p). */
static int part_duration(const char *s, const char *p, size_t n, int64_t *out, char *err)
{
    char tmp[64], why[APISIM_ERR_LEN];
    if (n == 0 || n >= sizeof tmp)
        return bad(s, n ? "duration too long" : "missing duration", err);
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    if (parse_duration_us(tmp, out, why) < 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "\"%s\" is not a duration", tmp);
        return bad(s, msg, err);
    }
    return 0;
}

int latency_parse(const char *s, struct latency_spec *out, char *err)
{
    struct latency_spec spec = {.kind = LATENCY_NONE, .factor = 1.0};
    if (!s || !*s)
        return bad(s, "empty", err);
    if (strcmp(s, "none") == 0) {
        /* nothing to add */
    } else if (strncmp(s, "fixed:", 6) == 0) {
        spec.kind = LATENCY_FIXED;
        if (part_duration(s, s + 6, strlen(s + 6), &spec.a_us, err) < 0)
            return -1;
    } else if (strcmp(s, "recorded") == 0) {
        spec.kind = LATENCY_RECORDED;
    } else if (strncmp(s, "recorded*", 9) == 0) {
        spec.kind = LATENCY_RECORDED;
        const char *f = s + 9;
        char *end;
        if (!isdigit((unsigned char)*f) && *f != '.')
            return bad(s, "the factor must be a non-negative number", err);
        errno = 0;
        spec.factor = strtod(f, &end);
        if (end == f || *end || errno || !isfinite(spec.factor) || spec.factor > 1000)
            return bad(s, "the factor must be a number from 0 to 1000", err);
    } else if (strncmp(s, "uniform:", 8) == 0) {
        spec.kind = LATENCY_UNIFORM;
        const char *p = s + 8, *dots = strstr(p, "..");
        if (!dots)
            return bad(s, "expected uniform:LOW..HIGH", err);
        if (part_duration(s, p, (size_t)(dots - p), &spec.a_us, err) < 0 ||
            part_duration(s, dots + 2, strlen(dots + 2), &spec.b_us, err) < 0)
            return -1;
        if (spec.a_us > spec.b_us)
            return bad(s, "LOW must not exceed HIGH", err);
    } else if (strncmp(s, "lognormal:", 10) == 0) {
        spec.kind = LATENCY_LOGNORMAL;
        const char *p = s + 10, *comma = strchr(p, ',');
        if (!comma)
            return bad(s, "expected lognormal:MEDIAN,P99", err);
        if (part_duration(s, p, (size_t)(comma - p), &spec.a_us, err) < 0 ||
            part_duration(s, comma + 1, strlen(comma + 1), &spec.b_us, err) < 0)
            return -1;
        if (spec.a_us <= 0)
            return bad(s, "MEDIAN must be above zero", err);
        if (spec.a_us > spec.b_us)
            return bad(s, "P99 must not be below MEDIAN", err);
    } else {
        return bad(s, "unknown model", err);
    }
    *out = spec;
    return 0;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void latency_seed(struct latency_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna). */
static uint64_t next_u64(struct latency_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double latency_next_double(struct latency_rng *rng)
{
    return (double)(next_u64(rng) >> 11) * 0x1.0p-53;
}

static int64_t clamp_us(double v)
{
    if (!(v > 0))
        return 0;
    if (v > (double)LATENCY_MAX_US)
        return LATENCY_MAX_US;
    return (int64_t)llround(v);
}

int64_t latency_first_byte_us(const struct latency_spec *spec, struct latency_rng *rng,
                              int64_t recorded_ttfb_us)
{
    switch (spec->kind) {
    case LATENCY_NONE:
        return 0;
    case LATENCY_FIXED:
        return spec->a_us;
    case LATENCY_RECORDED:
        return recorded_ttfb_us > 0 ? clamp_us((double)recorded_ttfb_us * spec->factor) : 0;
    case LATENCY_UNIFORM: {
        double u = latency_next_double(rng);
        int64_t span = spec->b_us - spec->a_us;
        int64_t v = spec->a_us + (int64_t)(u * (double)(span + 1));
        return v > spec->b_us ? spec->b_us : v;
    }
    case LATENCY_LOGNORMAL: {
        /* Box-Muller: u1 in (0, 1] so the log is finite. */
        double u1 = 1.0 - latency_next_double(rng);
        double u2 = latency_next_double(rng);
        double z = sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
        double sigma = log((double)spec->b_us / (double)spec->a_us) / Z_P99;
        return clamp_us((double)spec->a_us * exp(sigma * z));
    }
    }
    return 0;
}

int latency_replays_chunks(const struct latency_spec *spec, double *factor)
{
    int yes = spec && spec->kind == LATENCY_RECORDED;
    if (factor)
        *factor = yes ? spec->factor : 1.0;
    return yes;
}
