/* har — converts exchanges to and from the interchange formats: HAR 1.2 entries and the
 * JSONL lines of `apisim export --format jsonl`.
 *
 * HAR out: one entry per exchange, with text bodies as text and binary ones as base64
 * (response content "encoding": "base64"; request postData "_encoding": "base64", since
 * HAR 1.2 gives postData no encoding field). What HAR cannot say (seq, chunk timings,
 * exact microseconds, the original Content-Encoding, transport errors) travels in a custom
 * "_apisim" object, so apisim -> HAR -> apisim loses nothing a replay uses.
 *
 * HAR in: an entry is validated whole before an exchange is returned; an entry that cannot
 * be used yields -1 and a reason naming the field ("response.status is not a number"). Read
 * as browsers (Chromium, Playwright) and Polly.js write them: content that a browser stored
 * decoded is kept as is; content still compressed (Polly.js stores gzip bodies as a JSON
 * array of base64 pieces) is decoded, since apisim stores decoded bodies. Header values that
 * are numbers (Polly.js) become text; HTTP/2 pseudo-headers (":authority") are dropped;
 * cookies[] arrays are ignored (the Cookie and Set-Cookie headers carry the same, and the
 * caller redacts those). Only the path and query of request.url are used.
 *
 * JSONL: one object per exchange with the schema's column names (see har_jsonl_from_exchange).
 *
 * Pure: no I/O, no logging. Redaction is the caller's (redact.h), as is the database.
 */
#ifndef APISIM_HAR_H
#define APISIM_HAR_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "exchange.h"

/* HAR log.creator.name. */
#define HAR_CREATOR "apisim"

/* Limits an imported entry must respect. */
struct har_limits {
    size_t max_body; /* decoded request or response body; 0 means 64 MiB */
};

/* A new HAR document {"log": {"version": "1.2", "creator": {"name": "apisim", "version":
 * version}, "pages": [], "entries": []}}; *entries (may be NULL) gets the entries array
 * (owned by the document). Caller frees with cJSON_Delete. NULL when out of memory. */
cJSON *har_log_new(const char *version, cJSON **entries);

/* The HAR 1.2 entry of ex. origin ("http://host:port", no trailing slash) is put before
 * ex->path in request.url; NULL or "" takes the request's Host header, else
 * "http://localhost". Caller frees with cJSON_Delete. NULL when out of memory. */
cJSON *har_entry_from_exchange(const struct exchange *ex, const char *origin);

/* Build an exchange from one HAR entry. Returns 0 and *out (free with exchange_free();
 * source "import", session and seq unset), or -1 with err saying why the entry cannot be
 * used. lim may be NULL (defaults). */
int har_entry_to_exchange(const cJSON *entry, const struct har_limits *lim, struct exchange **out,
                          char *err);

/* The JSONL object of ex: {"id", "session", "seq", "source", "started_at", "method", "path",
 * "query", "request_headers" ([[name, value], ...]), "request_body" (text, null when empty)
 * or "request_body_base64", "match_key", "status", "response_headers", "response_body" or
 * "response_body_base64", "response_encoding", "ttfb_us", "duration_us", "error",
 * "complete", "delay_ms", "chunks" ([[offset_us, size], ...])}, keys in that order.
 * Caller frees with cJSON_Delete. NULL when out of memory. */
cJSON *har_jsonl_from_exchange(const struct exchange *ex);

/* Build an exchange from such an object (id is ignored; session, seq and source are copied
 * when present, and the caller may replace them). Required: method, path, status,
 * started_at. Returns 0 and *out, or -1 with err naming the field. */
int har_jsonl_to_exchange(const cJSON *obj, const struct har_limits *lim, struct exchange **out,
                          char *err);

/* Parse an ISO-8601 date-time ("2026-11-24T15:35:56.050Z", "...+01:00", any number of
 * fraction digits) into µs since the epoch. Returns 0 or -1. */
int har_parse_time(const char *s, int64_t *out_us);

/* The reason phrase of an HTTP status ("OK", "Not Found"); "" when unknown. Static. */
const char *har_status_text(int status);

#endif
