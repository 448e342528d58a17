/* proxy — record mode: forwards each request to the upstream with libcurl, streams the
 * answer back as it arrives, and hands the exchange (redacted, bodies decoded, chunk
 * timings kept) to the store's writer.
 *
 * Runs in the server's thread-per-connection mode: a request's thread drives its own
 * transfer. The last byte of a response reaches the client only after its exchange has
 * been committed, so a client that has its answer never loses it to kill -9.
 *
 * Upstream transport failures (refused, DNS, timeout, reset, TLS) answer 502 with a JSON
 * body naming the cause, and are recorded as such.
 */
#ifndef APISIM_PROXY_H
#define APISIM_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "match.h"
#include "redact.h"
#include "server.h"
#include "store.h"

struct proxy;

struct proxy_options {
    const char *upstream; /* base URL, http or https, may carry a path prefix; NULL: only
                             proxied requests (absolute form or CONNECT) can be forwarded */
    struct store *store;  /* where exchanges go (its writer must be running) */
    const char *session;  /* session name */
    const struct redact_rules *redact;
    const struct match_rules *match; /* rules for the stored match_key column */
    int64_t upstream_timeout_us;     /* connect + time to headers, and longest stall */
    size_t max_record_body;          /* bodies larger than this are stored truncated */
    int insecure;                    /* skip TLS certificate verification */
    const char *source;              /* "record" (default) */
    /* Forward proxy: --connect-to rules ("HOST:PORT:HOST2:PORT2", NULL-terminated; may be
     * NULL) and --upstream-cacert (a PEM file of CAs trusted for upstreams; NULL: the
     * system's). */
    const char *const *connect_to;
    const char *upstream_cacert;
};

/* Check that url is an absolute http(s) URL with a host. Returns 0 or -1 with err. */
int proxy_check_upstream(const char *url, char *err);

/* Returns 0 and *out, or -1 with err (bad upstream URL, store failure). */
int proxy_new(struct proxy **out, const struct proxy_options *opt, char *err);
void proxy_free(struct proxy *px);

/* The server handler for record mode (app is the struct proxy). A request goes to its own
 * host when it has one (req->authority: proxied), else to the upstream; with neither it is
 * answered 400 naming both fixes. */
int proxy_handle(void *app, struct server_request *req, struct server_response *resp);

/* Forward req and fill resp, recording into session; used by record mode and by replay's
 * --on-miss forward|record (record = 0 forwards without storing). Blocks until the
 * response is complete; returns 0, or -1 when out of memory. When id_out is not NULL it
 * gets the stored exchange's id (0 when not stored). */
int proxy_forward_whole(struct proxy *px, struct server_request *req, struct server_response *resp,
                        int record, int64_t *id_out);

/* Exchanges recorded since start and the ones that failed to store. */
uint64_t proxy_recorded(const struct proxy *px);

#endif
