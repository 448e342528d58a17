/* admin — the control API under /__apisim/, on every server (record, replay, mock):
 *
 *   GET    /__apisim/health           {"status":"ok","mode","exchanges","stubs","requests",
 *                                      "misses","faults"}; stubs counts registrations (from
 *                                      --stubs and since the last reset; a sequence is one
 *                                      stub); faults counts faulted answers since start
 *   POST   /__apisim/stubs            a stub -> 201 {"id": N}
 *   GET    /__apisim/requests         the journal, oldest first (?method=&path= filter)
 *   GET    /__apisim/requests/count   {"count": N} (same filters)
 *   POST   /__apisim/reset            clears runtime stubs, journal, sequence counters
 *   POST   /__apisim/fixtures/quota   {"preset": NAME[, "delay_ms": N]} or {"windows": {...}}
 *                                     -> 200 with what is active
 *   DELETE /__apisim/fixtures/quota   turns the quota fixture off -> {"active": false}
 *
 * A stub is {"method", "path", "status" (100..599, default 200), "headers": [[name, value],
 * ...], one of "json" (any JSON value, sent compact; adds content-type: application/json
 * unless given), "body" (text) or "body_base64" (bytes), "delay_ms" (>= 0), "fault" (a stub
 * fault of fault.h: reset, empty, reset-mid-body with "after_bytes": N below the body's
 * length, malformed-chunk, garbage-then-close, stall), "dribble": {"chunks": K (1..10000),
 * "over_ms": D (at most --client-timeout)}}, or {"method", "path", "sequence": [{"status",
 * "headers", "json"|"body"|"body_base64", "delay_ms", "fault", "after_bytes", "dribble"},
 * ...]} answered in order, the last one repeating (a sequence mixes answers and faults). "method"
 * and "path" are required; the method is upper-cased; the path has no query and is not under
 * /__apisim/. Unknown fields are errors.
 *
 * Errors answer JSON {"error": "..."} naming the endpoint and the field: 400 for a bad body
 * or query, 404 for an unknown endpoint, 405 (with Allow) for a wrong method.
 *
 * Needs: replay (stubs, journal, counts, quota), quota (fixture bodies). The server checks
 * loopback / --admin-token before calling admin_handle.
 */
#ifndef APISIM_ADMIN_H
#define APISIM_ADMIN_H

#include "replay.h"
#include "server.h"

/* Largest control API request body parsed (the server's --max-body applies first). */
#define ADMIN_MAX_BODY (16u * 1024u * 1024u)
/* Largest --stubs file read. */
#define ADMIN_MAX_STUBS_FILE (64u * 1024u * 1024u)
/* Longest stub delay accepted (one hour). */
#define ADMIN_MAX_DELAY_MS 3600000
/* Most responses in one sequence, headers in one response. */
#define ADMIN_MAX_SEQUENCE 10000
/* Most pieces in a stub's dribble. */
#define ADMIN_MAX_DRIBBLE_CHUNKS 10000
#define ADMIN_MAX_HEADERS 100

/* The server handler for paths under /__apisim/ (app is the struct replay). Fills resp and
 * returns 0; -1 only when out of memory (the server then answers 500). */
int admin_handle(void *app, struct server_request *req, struct server_response *resp);

/* Load --stubs FILE: a JSON array of stubs in the POST /__apisim/stubs format, added in
 * order. Returns 0, or -1 with err naming the file and the place ("stubs.json: [2].status:
 * expected an integer 100..599"); stubs before the faulty one stay added. */
int admin_load_stubs_file(struct replay *rp, const char *path, char *err);

#endif
