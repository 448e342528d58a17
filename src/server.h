/* server — the HTTP front of every server mode (record, replay, mock), on libmicrohttpd.
 *
 * Owns: the MHD daemon, the per-request state (method, raw path and query, headers, body
 * collected up to --max-body), timers that delay or pace answers without holding a thread
 * (the connection is suspended and resumed from the timer thread), the routing of
 * /__apisim/ to the control API, and the graceful stop on SIGINT/SIGTERM.
 *
 * Threading: replay and mock use an internal thread pool (handlers never block); record
 * uses a thread per connection because forwarding blocks on the upstream.
 *
 * A handler fills a struct server_response; the server queues it (after its delay, paced
 * by its chunks when given) and frees it.
 */
#ifndef APISIM_SERVER_H
#define APISIM_SERVER_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#include "exchange.h"
#include "util.h"

struct server;

/* One request as the server collected it. Everything is owned by the server and valid
 * until the response has been sent. */
struct server_request {
    const char *method;
    const char *path;  /* raw path, without the query */
    const char *query; /* raw query string without '?', "" when none */
    struct headers headers;
    const unsigned char *body;
    size_t body_len;
    int64_t received_us; /* wall clock µs since epoch */
    int64_t received_mono_us;
    int loopback; /* 1 when the client is on a loopback address */
    struct MHD_Connection *conn;
};

/* What a handler answers. The server owns it after the handler returns: it frees headers
 * and body (body must be malloc'd, or NULL). */
struct server_response {
    int status;
    struct headers headers; /* sent as given, except hop-by-hop and Content-Length */
    unsigned char *body;
    size_t body_len;
    int body_borrowed; /* body is not the response's to free (it outlives the response) */
    const struct headers *extra_headers; /* borrowed, sent after headers; NULL for none */
    int64_t delay_us; /* wait this long before the first byte (without holding a thread) */
    /* Pace the body: piece i is sent at delay_us + (chunks[i].offset_us - chunks[0].offset_us)
     * * chunk_factor. NULL for all at once. Borrowed: must outlive the response (replay's
     * in-memory index). */
    const struct chunk *chunks;
    size_t nchunks;
    double chunk_factor;
    /* Replaying an upstream that failed mid-body: after the body the connection is cut
     * instead of ending the response, declared as cut_size bytes when that is larger than
     * the body (the recorded Content-Length), else chunked without its last chunk. */
    int cut_short;
    uint64_t cut_size;
    /* Called once, with release_cls, when the server is done with the response and so with
     * what it borrowed (body, chunks, extra_headers): replay's cache lets go of an entry. */
    void (*release)(void *cls);
    void *release_cls;
    /* The longest silence the body may have by design (a streamed upstream's pauses, up to
     * --upstream-timeout): the client connection's timeout is raised to cover it. */
    int64_t quiet_us;
    /* A streamed body from a blocking source (record mode only). When set, body is
     * ignored and the server sends what reader produces, with stream_size (MHD_SIZE_UNKNOWN
     * for chunked). reader_free is called once when the response is done. */
    MHD_ContentReaderCallback reader;
    void *reader_cls;
    MHD_ContentReaderFreeCallback reader_free;
    uint64_t stream_size;
};

/* A mode's request handler: fill resp and return 0; -1 means the server answers 500. */
typedef int (*server_handler_fn)(void *app, struct server_request *req,
                                 struct server_response *resp);

struct server_options {
    const char *listen;             /* "HOST:PORT" */
    int thread_per_connection;      /* record mode */
    size_t max_body;                /* request body cap (413 beyond) */
    size_t max_header_bytes;        /* per-connection memory for the request head (431 beyond) */
    unsigned max_connections;       /* 503 beyond */
    int64_t client_timeout_us;      /* idle client connections are closed after this (0: 30 s) */
    unsigned threads;               /* thread pool size (0: number of cores) */
    const char *admin_token;        /* NULL: control API for loopback clients only */
    server_handler_fn handle;       /* the mode's handler */
    server_handler_fn handle_admin; /* the control API (paths under /__apisim/) */
    void *app;                      /* handle's first argument */
    void *admin_app;                /* handle_admin's first argument */
};

/* Check that listen is HOST:PORT with a resolvable host and a port 0..65535. Returns 0 or
 * -1 with err. */
int server_check_listen(const char *listen, char *err);

/* Start listening. Prints nothing; returns 0 and *out, or -1 with err naming the address. */
int server_start(struct server **out, const struct server_options *opt, char *err);

/* The URL clients use, e.g. "http://127.0.0.1:41234". */
const char *server_url(const struct server *srv);

/* Block until SIGINT or SIGTERM, then stop accepting, let in-flight exchanges finish and
 * stop the daemon. */
void server_wait_for_signal(struct server *srv);

/* Stop and free. NULL does nothing. */
void server_free(struct server *srv);

/* Helpers for handlers. */
/* A JSON response with the given status; takes ownership of json_text (malloc'd). */
void server_response_json(struct server_response *resp, int status, char *json_text);
/* {"error": message} as JSON with the given status. */
void server_response_error(struct server_response *resp, int status, const char *message);

#endif
