/* latency — models for how long replay waits before answering.
 *
 * Specs: "none", "fixed:50ms", "recorded", "recorded*0.5", "uniform:10ms..50ms",
 * "lognormal:40ms,200ms" (median, p99). Random models draw from a xoshiro256** generator
 * seeded with --seed, so the n-th draw is the same in every run with that seed.
 *
 * Pure: no I/O. A struct latency_rng is not thread-safe; callers serialise draws.
 */
#ifndef APISIM_LATENCY_H
#define APISIM_LATENCY_H

#include <stdint.h>

enum latency_kind {
    LATENCY_NONE,
    LATENCY_FIXED,
    LATENCY_RECORDED,
    LATENCY_UNIFORM,
    LATENCY_LOGNORMAL
};

struct latency_spec {
    enum latency_kind kind;
    int64_t a_us;  /* fixed: the delay; uniform: low; lognormal: median */
    int64_t b_us;  /* uniform: high; lognormal: p99 */
    double factor; /* recorded: multiplier of recorded timings (1.0 by default) */
};

struct latency_rng {
    uint64_t s[4];
};

/* Parse a spec. Returns 0, or -1 with err quoting s and listing the accepted forms. */
int latency_parse(const char *s, struct latency_spec *out, char *err);

/* Seed the generator (splitmix64 expansion of seed). */
void latency_seed(struct latency_rng *rng, uint64_t seed);

/* The delay before the first byte of a response, in µs. recorded_ttfb_us is the exchange's
 * own time to first byte (used by the recorded model). Random models consume one or two
 * draws from rng; others none. */
int64_t latency_first_byte_us(const struct latency_spec *spec, struct latency_rng *rng,
                              int64_t recorded_ttfb_us);

/* 1 when the model replays the recorded gaps between body chunks; *factor gets the scale. */
int latency_replays_chunks(const struct latency_spec *spec, double *factor);

/* Uniform double in [0, 1) from rng. */
double latency_next_double(struct latency_rng *rng);

#endif
