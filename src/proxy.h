/* proxy — record mode: forwards each request to the upstream, streams the answer back
 * as it arrives, and hands the exchange (redacted, bodies decoded, chunk timings kept) to
 * the store's writer.
 *
 * Event-driven: the handler hands the transfer to an upstream event loop (upstream.h) and
 * returns at once; the server suspends the client's connection until the upstream's head
 * is in (the response's ready hook), and the content reader gives every body byte as soon
 * as it has arrived, suspending the connection while nothing is there. Nothing blocks a
 * server thread. Only the end of the message (the last byte of a Content-Length body, the
 * terminating chunk otherwise) waits for the exchange's commit, so a client that has its
 * answer never loses it to kill -9.
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
    unsigned loops; /* upstream event loops (0: one per core) */
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

/* Forward req and set resp up to answer with the upstream's response (resp->ready and
 * the reader), recording into session; used by record mode and by replay's --on-miss
 * forward|record (record = 0 forwards without storing). Never blocks. When the exchange
 * has been committed, on_stored(cls, id) is called (on the store's writer thread), before
 * the client gets the end of its answer. Returns 0, or -1 when out of memory. */
int proxy_forward(struct proxy *px, struct server_request *req, struct server_response *resp,
                  int record, void (*on_stored)(void *cls, int64_t id), void *cls);

/* Stop forwarding: transfers still running end (stored as incomplete), connections waiting
 * on them are resumed, later requests get 503. Call before the server stops. */
void proxy_stop(struct proxy *px);

/* Exchanges recorded since start and the ones that failed to store. */
uint64_t proxy_recorded(const struct proxy *px);

#endif
