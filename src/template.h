/* template — placeholders in stub bodies, expanded when the stub answers, so fixtures can
 * speak of the present and of the request.
 *
 *   {{now}}                     the request's time, ISO-8601 UTC: 2026-11-24T17:00:00.123Z
 *   {{now+90s}} {{now-1d}}      shifted by a whole number of s, m, h or d
 *   {{now_epoch}}               seconds since the epoch (integer), with the same offsets:
 *                               {{now_epoch+2h}}
 *   {{now_epoch_ms}}            milliseconds since the epoch, with the same offsets
 *   {{request.path}}            the raw request path (no query)
 *   {{request.query.NAME}}      the raw (undecoded) value of the first query parameter
 *                               NAME; "" when it is absent or has no value
 *
 * Spaces just inside the braces are allowed ({{ now }}). Anything else between {{ and }}
 * (and an offset beyond 100000 days) is left exactly as written.
 *
 * Pure: no I/O, no logging.
 */
#ifndef APISIM_TEMPLATE_H
#define APISIM_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

/* Substituted text beyond this many bytes in one body is not expanded: the placeholders
 * that would pass it are left as written. */
#define TEMPLATE_MAX_EXPANSION (16u * 1024u * 1024u)

/* 1 when the len bytes of body contain "{{" (worth expanding). */
int template_has_placeholders(const unsigned char *body, size_t len);

/* Expand the placeholders of body (len bytes) for req, received at now_us (µs since the
 * epoch). Returns a malloc'd result of *outlen bytes, NUL-terminated for convenience (the
 * caller frees it with free()), or NULL when out of memory. */
unsigned char *template_expand(const unsigned char *body, size_t len,
                               const struct server_request *req, int64_t now_us, size_t *outlen);

#endif
