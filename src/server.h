/* server — the HTTP front of every server mode (record, replay, mock), on libmicrohttpd.
 *
 * Owns: the MHD daemon, the per-request state (method, raw path and query, headers, body
 * collected up to --max-body), timers that delay or pace answers without holding a thread
 * (the connection is suspended and resumed from the timer thread), the routing of
 * /__apisim/ to the control API, and the graceful stop on SIGINT/SIGTERM.
 *
 * Threading: every mode runs on an internal thread pool over epoll; handlers never block.
 * A handler whose answer is not known yet (record mode waiting for the upstream) sets the
 * response's ready hook: the connection is suspended until the hook's owner resumes it.
 *
 * A request that declares a body larger than --max-body (Content-Length) is answered 413
 * on arrival, before any of the body is read (and instead of 100 Continue).
 *
 * Forward proxy (record, replay: options.front): the front (front.h) owns the listening
 * socket and hands connections to the daemon; CONNECT tunnels go to a second daemon that
 * terminates their TLS. A request learns the host it is for from an absolute-form target
 * ("GET http://host/path") or from its tunnel (the connection's socket context), as
 * server_request.scheme/authority.
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
#include "fault.h"
#include "front.h"
#include "util.h"

struct server;

/* One request as the server collected it. Everything is owned by the server and valid
 * until the response has been sent. */
struct server_request {
    const char *method;
    const char *path;  /* raw path, without the query */
    const char *query; /* raw query string without '?', "" when none */
    /* The host a proxied request is for: from an absolute-form request line ("GET
     * http://host:port/path", HTTP_PROXY) or from the CONNECT tunnel it came through
     * (HTTPS_PROXY, "https"). Both NULL for a request in origin form sent to apisim itself
     * (reverse proxy mode). */
    const char *scheme;    /* "http" or "https" */
    const char *authority; /* "host[:port]" as the client named it */
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
    /* A failure served instead of this answer, or in the middle of it (fault.h; FAULT_NONE
     * for a normal answer), after delay_us. FAULT_RESET: RST before any byte; FAULT_EMPTY:
     * close with no byte; FAULT_GARBAGE: bytes that are not HTTP, then close;
     * FAULT_RESET_MID_BODY: the head (Content-Length of the whole body) and the first
     * fault_after_bytes bytes once sent, then RST; FAULT_MALFORMED_CHUNK: a chunked head, the
     * first half of the body as one chunk, a chunk-size line that is not hex, then close;
     * FAULT_STALL: the head, then silence until the client closes, the server drains, or
     * --client-timeout passes (then closed). Other kinds are the handler's to apply. */
    int fault;
    uint64_t fault_after_bytes;
    /* Dribble: the body, chunked, in dribble_chunks pieces; piece i (from 0) is sent
     * dribble_us * (i + 1) / dribble_chunks after delay_us. 0 for none. */
    unsigned dribble_chunks;
    int64_t dribble_us;
    /* Called once, with release_cls, when the server is done with the response and so with
     * what it borrowed (body, chunks, extra_headers): replay's cache lets go of an entry. */
    void (*release)(void *cls);
    void *release_cls;
    /* The longest silence the body may have by design (a streamed upstream's pauses, up to
     * --upstream-timeout): the client connection's timeout is raised to cover it. */
    int64_t quiet_us;
    /* A streamed body (record mode). When set, body is ignored and the server sends what
     * reader produces, with stream_size (MHD_SIZE_UNKNOWN for chunked); a reader with
     * nothing to give suspends the connection (MHD_suspend_connection) and returns 0, and
     * its owner resumes it. reader_free(reader_cls) is called once when the response is
     * done, also when reader was never set. */
    MHD_ContentReaderCallback reader;
    void *reader_cls;
    MHD_ContentReaderFreeCallback reader_free;
    uint64_t stream_size;
    /* An answer not known yet. The server calls ready(ready_cls, resp) right after the
     * handler and again each time the connection is resumed; it returns 1 once it has
     * filled resp (status, headers, body or reader), 0 when it has suspended the
     * connection (its owner resumes it with MHD_resume_connection), -1 for a 500. */
    int (*ready)(void *cls, struct server_response *resp);
    void *ready_cls;
};

/* A mode's request handler: fill resp and return 0; -1 means the server answers 500. */
typedef int (*server_handler_fn)(void *app, struct server_request *req,
                                 struct server_response *resp);

struct server_options {
    const char *listen;             /* "HOST:PORT" */
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
    /* Forward proxy (record, replay): the front owns the listening socket and handles
     * CONNECT (front.h). NULL: the daemon listens itself (mock). */
    const struct front_config *front;
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
