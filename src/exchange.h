/* exchange — one recorded request and its response, as the store holds it and as replay
 * serves it. A plain data type: every pointer is owned by the struct and freed by
 * exchange_free().
 */
#ifndef APISIM_EXCHANGE_H
#define APISIM_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "match.h"
#include "redact.h"
#include "util.h"

/* When one piece of the response body arrived, relative to the request's start. */
struct chunk {
    int64_t offset_us; /* from the moment the request was received */
    size_t size;       /* bytes of the stored (decoded) body in this piece */
};

/* An exchange's entry in the match index (schema/007_match_index.sql): the identity of its
 * key under the default rules, and what its request holds as REDACTED (match.h,
 * match_index_ident). Computed by the store before the exchange is written. */
struct exchange_index {
    struct match_ident ident;
    struct redact_rules learnt;
};

struct exchange {
    int64_t id;         /* rowid in exchanges; 0 before it is stored */
    char *session;      /* session name */
    int64_t seq;        /* order of arrival within the session, from 1 */
    char *source;       /* "record", "stub" or "import" */
    int64_t started_us; /* wall clock when the request arrived, µs since epoch */
    char *method;       /* "GET", ... */
    char *path;         /* as received, without the query, e.g. "/v1/messages" */
    char *query;        /* raw query string without '?', "" when none */
    char *scheme;       /* "http" or "https" the request was for; NULL when unknown (old) */
    char *authority;    /* its "host[:port]" (reverse mode: the upstream's); NULL when unknown */
    struct headers request_headers;
    unsigned char *request_body;
    size_t request_body_len;
    char *match_key; /* key under the default rules when recorded; may be NULL */

    int status; /* HTTP status answered; 502 for a transport failure */
    struct headers response_headers;
    unsigned char *response_body; /* decoded when the upstream compressed it */
    size_t response_body_len;
    char *response_encoding; /* original Content-Encoding ("gzip", "deflate") or NULL */
    int64_t ttfb_us;         /* request received -> first response byte from upstream */
    int64_t duration_us;     /* request received -> last response byte */
    char *error;             /* transport failure cause, NULL when the upstream answered */
    int complete;            /* 0 when the client or upstream went away before the end */
    int64_t delay_ms;        /* stubs: wait this long before answering */

    /* Stubs' faults (fault.h): the kind served (0 for none), the body bytes sent before a
     * reset-mid-body, and a dribble of the body in dribble_chunks pieces (0: at once), the
     * last one dribble_over_ms after the first byte. */
    int fault;
    uint64_t fault_after_bytes;
    unsigned dribble_chunks;
    int64_t dribble_over_ms;

    struct chunk *chunks; /* arrival of the body in pieces; NULL/0 when unknown */
    size_t nchunks;

    struct exchange_index *index; /* NULL until the store computes it */
};

/* A zeroed exchange with complete = 1, or NULL when out of memory. */
struct exchange *exchange_new(void);

/* Free everything the exchange owns, then the exchange itself. NULL does nothing. */
void exchange_free(struct exchange *ex);

/* Render headers as the JSON array of [name, value] pairs the schema stores. Returns a
 * newly allocated string (caller frees), NULL when out of memory. */
char *exchange_headers_to_json(const struct headers *h);

/* Parse such an array and append its pairs to h. Returns 0, or -1 when text is not an array
 * of two-string arrays (h then holds what was parsed before the fault). */
int exchange_headers_from_json(const char *text, size_t len, struct headers *h);

#endif
