/* fault — the failures apisim serves on demand, by name, and the seeded draw of replay faults.
 *
 * Stub faults (a stub's "fault" field): reset, empty, reset-mid-body, malformed-chunk,
 * garbage-then-close, stall. The server (server.c) puts them on the wire.
 *
 * Replay faults (--faults SPEC[,SPEC...], config "faults"): each SPEC is KIND[:ARG]:RATE%
 * with KIND one of reset, empty, status:CODE, latency-spike:DURATION, cut-stream, and RATE a
 * percentage 0..100 (fractions allowed: "0.5%"). The rates of one set add up to at most
 * 100 %: one draw per request picks at most one fault.
 *
 * The draw for a request is a pure function of (seed, n), n the request's number in the
 * journal's arrival order: the same seed faults the same requests in every run, whatever
 * else the run does.
 *
 * Pure: no I/O, no logging.
 */
#ifndef APISIM_FAULT_H
#define APISIM_FAULT_H

#include <stddef.h>
#include <stdint.h>

enum fault_kind {
    FAULT_NONE = 0,
    FAULT_RESET,           /* RST before any response byte */
    FAULT_EMPTY,           /* close (FIN) with no response byte */
    FAULT_RESET_MID_BODY,  /* head and the first after_bytes bytes of the body, then RST */
    FAULT_MALFORMED_CHUNK, /* chunked head, the first half of the body, a bad chunk size line,
                              then close */
    FAULT_GARBAGE,         /* bytes that are not HTTP, then close ("garbage-then-close") */
    FAULT_STALL,           /* head, then silence until the client gives up */
    FAULT_STATUS,          /* replay: an error answer with the rule's status instead */
    FAULT_LATENCY_SPIKE,   /* replay: the rule's duration added before the first byte */
    FAULT_CUT_STREAM,      /* replay: head and the first half of the body, then close */
};

/* The name of a kind as stubs, specs, journal and logs spell it ("reset-mid-body"). */
const char *fault_kind_name(enum fault_kind kind);

/* A stub fault by name. Returns 0 and *out, or -1 with err listing the accepted names. */
int fault_stub_kind(const char *name, enum fault_kind *out, char *err);

/* One replay fault: what, how often. */
struct fault_rule {
    enum fault_kind kind;
    int status;       /* FAULT_STATUS: the status answered (200..599) */
    int64_t spike_us; /* FAULT_LATENCY_SPIKE: added delay */
    double rate;      /* probability 0..1 */
    char name[48];    /* as the journal and the log show it: "reset", "status:529",
                         "latency-spike:2s" */
};

struct fault_set {
    struct fault_rule *v;
    size_t n;
};

/* Parse a comma-separated list of specs and append its rules to set. Returns 0, or -1 with
 * err quoting the faulty spec (set then holds what was parsed before it). */
int fault_parse(const char *specs, struct fault_set *set, char *err);

/* Replace dst's rules by a copy of src's. Returns 0 or -1 (out of memory; dst unchanged). */
int fault_set_copy(struct fault_set *dst, const struct fault_set *src);

/* Free the rules; set is left empty. */
void fault_set_free(struct fault_set *set);

/* The rule that faults request n (1, 2, ...) under seed, or NULL for none. */
const struct fault_rule *fault_draw(const struct fault_set *set, uint64_t seed, uint64_t n);

/* Uniform double in [0, 1), a pure function of (seed, n) (what fault_draw uses). */
double fault_uniform(uint64_t seed, uint64_t n);

#endif
