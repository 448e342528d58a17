#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define SERVER_ADMIN_PREFIX "/__apisim/"
#define SERVER_MAX_HEADERS 256
#define SERVER_DRAIN_TIMEOUT_US (30 * 1000000LL)
/* A stalled response looks this often whether its client left or the server is draining. */
#define SERVER_STALL_CHECK_US (100 * 1000LL)
/* Before a reset mid-body, wait this long at most (in 1 ms steps) for the bytes already
 * written to leave the socket, so the client has them before the RST. */
#define SERVER_FLUSH_WAITS 1000

/* A connection waiting for its time: resumed by the timer thread at deadline. */
struct timer_entry {
    int64_t deadline; /* monotonic µs */
    struct req_ctx *ctx;
};

struct server {
    struct MHD_Daemon *daemon;
    struct front *front;           /* NULL when the daemon listens itself */
    struct MHD_Daemon *tls_daemon; /* the front's TLS tunnels; NULL: none, or relayed */
    struct server_options opt;
    char url[1100];

    pthread_mutex_t tmu;
    pthread_cond_t tcond;
    pthread_t timer_thread;
    int timer_running;
    int timer_stop;
    struct timer_entry *heap; /* min-heap on deadline */
    size_t nheap, capheap;

    atomic_long inflight;      /* requests between arrival and completion */
    atomic_long connections;   /* client connections open now */
    atomic_int draining;       /* a signal came: new connections are closed at once */
    unsigned client_timeout_s; /* MHD's connection timeout (--client-timeout) */
};

enum req_state {
    REQ_COLLECTING, /* reading the body */
    REQ_READY,      /* answered by the handler; queued once its delay has passed */
    REQ_WAITING,    /* the handler's answer is not ready yet (resp.ready) */
    REQ_QUEUED,
};

struct req_ctx {
    struct server *srv;
    char *raw_uri;
    char *path;
    char *query;
    char *scheme;                /* of an absolute-form request or a tunnel, else NULL */
    char *authority;             /* of an absolute-form request or a tunnel, else NULL */
    struct front_origin *origin; /* the CONNECT tunnel it came through (and scheme and
                                    authority are its own), else NULL */
    int bad_target;              /* an absolute-form request line without a usable host */
    struct server_request req;
    struct buf body;
    int too_large;
    int too_many_headers;
    enum req_state state;
    struct server_response resp;
    int stretched;       /* this request raised its connection's timeout (restored at the end) */
    int64_t pace_start;  /* monotonic µs when the first paced piece was due */
    size_t pace_next;    /* index of the next chunk not yet released */
    size_t pace_allowed; /* bytes released so far */
    int64_t stall_since; /* FAULT_STALL: monotonic µs when the silence began */
    int flush_waits;     /* FAULT_RESET_MID_BODY: 1 ms waits for the socket to drain */
};

/* ---- timers ---------------------------------------------------------------------------- */

static void heap_swap(struct timer_entry *a, struct timer_entry *b)
{
    struct timer_entry t = *a;
    *a = *b;
    *b = t;
}

/* Add an entry; the caller holds srv->tmu. Returns 0 or -1 (no memory). */
static int timer_push(struct server *srv, struct req_ctx *ctx, int64_t deadline)
{
    if (srv->nheap == srv->capheap) {
        size_t cap = srv->capheap ? srv->capheap * 2 : 64;
        struct timer_entry *h = realloc(srv->heap, cap * sizeof *h);
        if (!h)
            return -1;
        srv->heap = h;
        srv->capheap = cap;
    }
    size_t i = srv->nheap++;
    srv->heap[i].deadline = deadline;
    srv->heap[i].ctx = ctx;
    while (i > 0 && srv->heap[(i - 1) / 2].deadline > srv->heap[i].deadline) {
        heap_swap(&srv->heap[i], &srv->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    if (i == 0)
        pthread_cond_signal(&srv->tcond);
    return 0;
}

static struct req_ctx *heap_pop(struct server *srv)
{
    struct req_ctx *ctx = srv->heap[0].ctx;
    srv->heap[0] = srv->heap[--srv->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < srv->nheap && srv->heap[l].deadline < srv->heap[m].deadline)
            m = l;
        if (r < srv->nheap && srv->heap[r].deadline < srv->heap[m].deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(&srv->heap[i], &srv->heap[m]);
        i = m;
    }
    return ctx;
}

/* Resumes suspended connections when their time comes. When stopping, resumes everything
 * at once: MHD must not be stopped with suspended connections. */
static void *timer_main(void *arg)
{
    struct server *srv = arg;
    pthread_mutex_lock(&srv->tmu);
    for (;;) {
        if (srv->nheap == 0) {
            if (srv->timer_stop)
                break;
            pthread_cond_wait(&srv->tcond, &srv->tmu);
            continue;
        }
        int64_t now = now_mono_us();
        if (srv->heap[0].deadline <= now || srv->timer_stop) {
            struct req_ctx *ctx = heap_pop(srv);
            MHD_resume_connection(ctx->req.conn);
            continue;
        }
        int64_t until = srv->heap[0].deadline;
        struct timespec ts = {.tv_sec = until / 1000000, .tv_nsec = (until % 1000000) * 1000};
        pthread_cond_timedwait(&srv->tcond, &srv->tmu, &ts);
    }
    pthread_mutex_unlock(&srv->tmu);
    return NULL;
}

/* Wait for a delay by suspending the connection. Returns 1 when the connection was
 * suspended (the timer resumes it), 0 when the wait is over (the server is stopping, or no
 * memory for a timer). */
static int wait_until(struct req_ctx *ctx, int64_t deadline)
{
    struct server *srv = ctx->srv;
    pthread_mutex_lock(&srv->tmu);
    if (srv->timer_stop) {
        pthread_mutex_unlock(&srv->tmu);
        return 0;
    }
    /* Suspend before the timer can see the entry, so a resume never precedes it. */
    MHD_suspend_connection(ctx->req.conn);
    int rc = timer_push(srv, ctx, deadline);
    pthread_mutex_unlock(&srv->tmu);
    if (rc < 0) {
        MHD_resume_connection(ctx->req.conn); /* no memory for a timer: answer now */
        return 0;
    }
    return 1;
}

/* ---- responses ------------------------------------------------------------------------- */

void server_response_json(struct server_response *resp, int status, char *json_text)
{
    resp->status = status;
    headers_remove(&resp->headers, "content-type");
    headers_add(&resp->headers, "Content-Type", "application/json");
    if (!resp->body_borrowed)
        free(resp->body);
    resp->body_borrowed = 0;
    resp->body = (unsigned char *)json_text;
    resp->body_len = json_text ? strlen(json_text) : 0;
}

void server_response_error(struct server_response *resp, int status, const char *message)
{
    struct buf b = {0};
    char *esc = NULL;
    /* cJSON would do, but an error path should not depend on allocation of a tree. */
    buf_puts(&b, "{\"error\":\"");
    for (const char *p = message; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            buf_printf(&b, "\\%c", c);
        else if (c < 0x20)
            buf_printf(&b, "\\u%04x", c);
        else
            buf_append(&b, p, 1);
    }
    buf_puts(&b, "\"}");
    esc = buf_steal(&b, NULL);
    server_response_json(resp, status, esc);
}

static void response_clear(struct server_response *resp)
{
    headers_free(&resp->headers);
    if (!resp->body_borrowed)
        free(resp->body);
    if (resp->reader_free && resp->reader_cls)
        resp->reader_free(resp->reader_cls);
    if (resp->release)
        resp->release(resp->release_cls);
    memset(resp, 0, sizeof *resp);
}

/* ---- faults on the wire (fault.h) ------------------------------------------------------- */

static int conn_fd(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Send what MHD left corked (it holds a head back while it expects the body to follow). */
static void socket_push(int fd)
{
    int zero = 0, one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Reset the connection now: connect() to AF_UNSPEC disconnects a TCP socket, and Linux
 * answers an established one with RST and no FIN. MHD's own shutdown() and close() that
 * follow find it disconnected and send nothing more. SO_LINGER {1, 0} makes the close an RST
 * too, should the disconnect fail. */
static void socket_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNSPEC;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(fd, &sa, sizeof sa) != 0)
        log_msg(LOG_DEBUG, "fault: disconnecting socket %d: %s (the close resets it)", fd,
                strerror(errno));
}

/* Write bytes past MHD, straight to the socket (non-blocking; what does not fit is dropped,
 * which a fault can afford). */
static void socket_write(int fd, const void *p, size_t n)
{
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 || (size_t)w < n)
        log_msg(LOG_DEBUG, "fault: wrote %zd of %zu raw bytes", w, n);
}

/* The faults that send no HTTP response: MHD_NO makes MHD close the connection without
 * one. Garbage goes out first; a reset disconnects before MHD's close. */
static enum MHD_Result close_unanswered(struct req_ctx *ctx)
{
    int fd = conn_fd(ctx->req.conn);
    ctx->state = REQ_QUEUED;
    if (fd < 0)
        return MHD_NO;
    if (ctx->resp.fault == FAULT_RESET) {
        socket_reset(fd);
    } else if (ctx->resp.fault == FAULT_GARBAGE) {
        /* The same 64 bytes every time (xorshift from a fixed seed), none of it HTTP. */
        unsigned char junk[64];
        uint32_t x = 0x2545f491u;
        for (size_t i = 0; i < sizeof junk; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            junk[i] = (unsigned char)(x >> 24);
        }
        junk[0] = 0xff; /* never the start of "HTTP/" */
        socket_write(fd, junk, sizeof junk);
    }
    return MHD_NO;
}

/* FAULT_STALL: the head is out; say nothing more. Looks every SERVER_STALL_CHECK_US whether
 * the client closed, the server is draining, or --client-timeout has passed: then the
 * connection is closed (MHD_CONTENT_READER_END_WITH_ERROR). The thread is not held: the
 * connection is suspended in between. */
static ssize_t stall(struct req_ctx *ctx)
{
    struct server *srv = ctx->srv;
    int fd = conn_fd(ctx->req.conn);
    int64_t now = now_mono_us();
    if (!ctx->stall_since) {
        ctx->stall_since = now;
        if (fd >= 0)
            socket_push(fd);
    }
    char b;
    ssize_t got = fd >= 0 ? recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) : 0;
    int gone = got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    if (gone || atomic_load(&srv->draining) ||
        now - ctx->stall_since >= (int64_t)srv->client_timeout_s * 1000000) {
        log_msg(LOG_DEBUG, "fault: stall of %s %s ends: %s", ctx->req.method, ctx->req.path,
                gone                          ? "the client closed"
                : atomic_load(&srv->draining) ? "draining"
                                              : "timeout");
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (wait_until(ctx, now + SERVER_STALL_CHECK_US))
        return 0;                             /* called again after the wait */
    return MHD_CONTENT_READER_END_WITH_ERROR; /* stopping */
}

/* FAULT_RESET_MID_BODY at its byte: wait (suspended, bounded) until what was written has
 * left the socket, then RST. */
static ssize_t reset_when_sent(struct req_ctx *ctx)
{
    int fd = conn_fd(ctx->req.conn);
    if (fd < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    socket_push(fd);
    int queued = 0;
    if (ioctl(fd, SIOCOUTQ, &queued) == 0 && queued > 0 && ctx->flush_waits < SERVER_FLUSH_WAITS) {
        ctx->flush_waits++;
        if (wait_until(ctx, now_mono_us() + 1000))
            return 0;
    }
    socket_reset(fd);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* FAULT_MALFORMED_CHUNK after its first (good) chunk: a chunk-size line that is not hex,
 * then close. */
static ssize_t malformed_chunk(struct req_ctx *ctx)
{
    static const char bad[] = "XYZ\r\nnot a chunk\r\n";
    int fd = conn_fd(ctx->req.conn);
    if (fd >= 0) {
        socket_write(fd, bad, sizeof bad - 1);
        socket_push(fd);
    }
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* ---- paced and faulted bodies ------------------------------------------------------------ */

static size_t pace_count(const struct server_response *r)
{
    return r->dribble_chunks ? r->dribble_chunks : r->nchunks;
}

/* Piece i of a paced body: when it is due (µs after the first) and how many bytes it holds. */
static void pace_piece(const struct server_response *r, size_t i, int64_t *due, size_t *size)
{
    if (r->dribble_chunks) {
        uint64_t k = r->dribble_chunks, len = r->body_len;
        *due = (int64_t)((double)r->dribble_us * (double)(i + 1) / (double)k);
        *size = (size_t)(len * (i + 1) / k - len * i / k);
        return;
    }
    *due = (int64_t)((double)(r->chunks[i].offset_us - r->chunks[0].offset_us) * r->chunk_factor);
    *size = r->chunks[i].size;
}

/* The content reader of a paced (recorded chunks, dribble), cut or faulted body: releases
 * each piece at its time and suspends the connection in between. */
static ssize_t pace_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    struct req_ctx *ctx = cls;
    struct server_response *r = &ctx->resp;
    size_t end = r->body_len; /* where this response's body stops */
    if (r->fault == FAULT_STALL)
        return stall(ctx);
    if (r->fault == FAULT_RESET_MID_BODY && r->fault_after_bytes < end)
        end = (size_t)r->fault_after_bytes;
    if (r->fault == FAULT_MALFORMED_CHUNK)
        end = r->body_len / 2;
    if (pos >= end) {
        if (r->fault == FAULT_RESET_MID_BODY)
            return reset_when_sent(ctx);
        if (r->fault == FAULT_MALFORMED_CHUNK)
            return malformed_chunk(ctx);
        return r->cut_short ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    }
    int64_t now = now_mono_us();
    size_t count = pace_count(r);
    while (ctx->pace_next < count) {
        int64_t due;
        size_t size;
        pace_piece(r, ctx->pace_next, &due, &size);
        due += ctx->pace_start;
        if (due > now && pos >= ctx->pace_allowed) {
            if (wait_until(ctx, due))
                return 0;           /* called again when the timer resumes the connection */
            ctx->pace_next = count; /* stopping: release the rest now */
            break;
        }
        if (due > now)
            break;
        ctx->pace_allowed += size;
        ctx->pace_next++;
    }
    if (ctx->pace_next >= count || ctx->pace_allowed > r->body_len)
        ctx->pace_allowed = r->body_len;
    size_t stop = ctx->pace_allowed < end ? ctx->pace_allowed : end;
    size_t n = stop - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(out, r->body + pos, n);
    return (ssize_t)n;
}

/* libmicrohttpd's own messages. The requests it refuses by itself (a request line or head
 * beyond the connection's memory: 414, 431; bad chunked framing: 400) and the connection
 * limit are worth a warning; the rest (a client gone mid-send, ...) only with --verbose. */
__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '.' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    unsigned code = 0;
    const char *at = strstr(msg, "HTTP response code is ");
    if (at && sscanf(at + 22, "%u", &code) == 1) {
        /* "... code is 414 ('<html>...<body>TEXT</body></html>')": keep TEXT. */
        char text[512] = "";
        const char *body = strstr(msg, "<body>"), *end = body ? strstr(body, "</body>") : NULL;
        if (body && end)
            snprintf(text, sizeof text, "%.*s", (int)(end - body - 6), body + 6);
        log_msg(LOG_WARN, "refused a request with %u: %s", code,
                text[0] ? text : "libmicrohttpd could not process it");
    } else if (strstr(msg, "connection limit")) {
        log_msg(LOG_WARN, "%s (--max-connections)", msg);
    } else {
        log_msg(LOG_DEBUG, "libmicrohttpd: %s", msg);
    }
}

/* --client-timeout is for clients that go quiet. A response that is quiet by design (a
 * streamed upstream's pause) must not be cut by it: the connection's timeout is raised to
 * cover the longest such silence, for this request. */
static void stretch_timeout(struct req_ctx *ctx)
{
    const struct server_response *r = &ctx->resp;
    struct server *srv = ctx->srv;
    int64_t quiet = r->quiet_us;
    int64_t need = quiet / 1000000 + 1 + (int64_t)srv->client_timeout_s;
    if (quiet <= 0 || need <= (int64_t)srv->client_timeout_s)
        return;
    if (need > 100000000)
        need = 100000000;
    MHD_set_connection_option(ctx->req.conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)need);
    ctx->stretched = 1;
}

static enum MHD_Result queue_response(struct req_ctx *ctx)
{
    struct server_response *r = &ctx->resp;
    struct MHD_Response *mr;
    int mr_from_buffer = 0;
    if (r->fault == FAULT_RESET || r->fault == FAULT_EMPTY || r->fault == FAULT_GARBAGE)
        return close_unanswered(ctx);
    if (r->reader) {
        mr = MHD_create_response_from_callback(r->stream_size, 32 * 1024, r->reader, r->reader_cls,
                                               r->reader_free);
        if (mr) {
            r->reader_cls = NULL; /* MHD frees it now */
            r->reader_free = NULL;
        }
    } else if (r->cut_short || (r->nchunks > 1 && r->body_len > 0) ||
               r->fault == FAULT_RESET_MID_BODY || r->fault == FAULT_MALFORMED_CHUNK ||
               r->fault == FAULT_STALL || (r->dribble_chunks && r->body_len > 0)) {
        ctx->pace_start = now_mono_us();
        uint64_t size = r->cut_short && r->cut_size > r->body_len ? r->cut_size : MHD_SIZE_UNKNOWN;
        /* A stall or a reset mid-body promises the whole body (a stall of an empty body is
         * chunked, so that the reader is asked at all); a malformed chunk is chunked. */
        if ((r->fault == FAULT_STALL && r->body_len > 0) || r->fault == FAULT_RESET_MID_BODY)
            size = r->body_len;
        else if (r->fault == FAULT_STALL || r->fault == FAULT_MALFORMED_CHUNK)
            size = MHD_SIZE_UNKNOWN;
        mr = MHD_create_response_from_callback(size, 32 * 1024, pace_reader, ctx, NULL);
    } else {
        mr = MHD_create_response_from_buffer(r->body_len, r->body,
                                             r->body_borrowed ? MHD_RESPMEM_PERSISTENT
                                                              : MHD_RESPMEM_MUST_FREE);
        mr_from_buffer = 1;
        if (mr && !r->body_borrowed)
            r->body = NULL; /* MHD frees it now */
    }
    if (!mr)
        return MHD_NO;
    stretch_timeout(ctx);
    for (size_t i = 0; i < r->headers.n; i++) {
        const char *name = r->headers.v[i].name;
        if (header_is_hop_by_hop(name) || ascii_casecmp(name, "content-length") == 0)
            continue;
        MHD_add_response_header(mr, name, r->headers.v[i].value);
    }
    for (size_t i = 0; r->extra_headers && i < r->extra_headers->n; i++)
        MHD_add_response_header(mr, r->extra_headers->v[i].name, r->extra_headers->v[i].value);
    ctx->state = REQ_QUEUED;
    /* Through a tunnel, libmicrohttpd sends such an answer's head and then its body at once:
     * their two TLS records go out in one send (front_tls_coalesce()). */
    int coalesce = ctx->origin && mr_from_buffer && r->body_len > 0 &&
                   strcmp(ctx->req.method, MHD_HTTP_METHOD_HEAD) != 0 && r->status >= 200 &&
                   r->status != 204 && r->status != 304;
    if (coalesce)
        front_tls_coalesce(ctx->origin);
    enum MHD_Result ret = MHD_queue_response(ctx->req.conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    if (coalesce && ret != MHD_YES)
        front_tls_flush(ctx->origin); /* nothing to join: disarm */
    return ret;
}

/* ---- requests -------------------------------------------------------------------------- */

static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct server *srv = cls;
    struct req_ctx *ctx = calloc(1, sizeof *ctx);
    (void)conn;
    if (!ctx)
        return NULL;
    ctx->srv = srv;
    ctx->raw_uri = strdup(uri ? uri : "/");
    ctx->body.max = srv->opt.max_body;
    atomic_fetch_add(&srv->inflight, 1);
    return ctx;
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct server *srv = cls;
    struct req_ctx *ctx = *req_cls;
    (void)toe;
    if (!ctx)
        return;
    front_tls_flush(ctx->origin); /* a held record never outlives its response */
    if (ctx->stretched)           /* back to --client-timeout for the next request or idleness */
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, srv->client_timeout_s);
    response_clear(&ctx->resp);
    headers_free(&ctx->req.headers);
    buf_free(&ctx->body);
    free(ctx->raw_uri);
    free(ctx->path);
    free(ctx->query);
    if (!ctx->origin) { /* else borrowed from the tunnel */
        free(ctx->scheme);
        free(ctx->authority);
    }
    free(ctx);
    *req_cls = NULL;
    atomic_fetch_sub(&srv->inflight, 1);
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    struct req_ctx *ctx = cls;
    (void)kind;
    if (ctx->req.headers.n >= SERVER_MAX_HEADERS) {
        ctx->too_many_headers = 1;
        return MHD_NO;
    }
    headers_addn(&ctx->req.headers, key, key_size, value ? value : "", value ? value_size : 0);
    return MHD_YES;
}

static int is_loopback(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return 0;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return in6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

/* "http://host:port/path?q" (what a client sends to its HTTP_PROXY): split off the scheme
 * and authority; *uri moves to the origin-form rest ("" for none). Returns 1 when uri is in
 * absolute form, 0 when not, -1 out of memory. A form with no host sets bad_target. */
static int split_absolute(struct req_ctx *ctx, const char **uri)
{
    const char *u = *uri;
    size_t sl = strncasecmp(u, "http://", 7) == 0 ? 4 : strncasecmp(u, "https://", 8) == 0 ? 5 : 0;
    if (!sl)
        return 0;
    const char *a = u + sl + 3;
    size_t alen = strcspn(a, "/?#");
    ctx->scheme = xstrndup(sl == 4 ? "http" : "https", sl);
    ctx->authority = xstrndup(a, alen);
    if (!ctx->scheme || !ctx->authority)
        return -1;
    for (char *c = ctx->authority; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    /* The scheme's own port is left out, as in a URL: "http://h:80/" is "http://h/". */
    const char *dflt = sl == 4 ? ":80" : ":443";
    size_t dl = strlen(dflt);
    if (alen > dl && strcmp(ctx->authority + alen - dl, dflt) == 0)
        ctx->authority[alen - dl] = '\0';
    if (alen == 0 || alen > 255 || memchr(a, '@', alen))
        ctx->bad_target = 1; /* no host, or credentials in the URL */
    *uri = a + alen;
    return 1;
}

static int setup_request(struct req_ctx *ctx, struct MHD_Connection *conn, const char *method)
{
    const char *uri = ctx->raw_uri;
    if (split_absolute(ctx, &uri) < 0)
        return -1;
    if (!ctx->authority && ctx->srv->front) {
        /* A request that came decrypted through a CONNECT tunnel: the tunnel's host. */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        struct front_origin *o = ci ? ci->socket_context : NULL;
        if (o) {
            ctx->origin = o;
            atomic_fetch_add(&o->requests, 1);
            ctx->scheme = o->scheme; /* borrowed: the tunnel outlives its requests */
            ctx->authority = o->authority;
        }
    }
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    ctx->path = plen ? xstrndup(uri, plen) : strdup("/");
    ctx->query = strdup(q ? q + 1 : "");
    if (!ctx->path || !ctx->query)
        return -1;
    ctx->req.scheme = ctx->scheme;
    ctx->req.authority = ctx->authority;
    ctx->req.method = method;
    ctx->req.path = ctx->path;
    ctx->req.query = ctx->query;
    ctx->req.conn = conn;
    ctx->req.received_us = now_wall_us();
    ctx->req.received_mono_us = now_mono_us();
    ctx->req.loopback = is_loopback(conn);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, collect_header, ctx);
    return 0;
}

static int is_admin_path(const char *path)
{
    return strncmp(path, SERVER_ADMIN_PREFIX, sizeof SERVER_ADMIN_PREFIX - 1) == 0 ||
           strcmp(path, "/__apisim") == 0;
}

static unsigned max_connections(const struct server_options *opt)
{
    return opt->max_connections ? opt->max_connections : 1024;
}

/* RFC 9110 field names are tokens; anything else is refused rather than forwarded. */
static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
            return 0;
    }
    return 1;
}

/* MHD's accept policy: once draining, a new connection is closed as soon as it is
 * accepted, as MHD_quiesce_daemon() would have refused it. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    const struct server *srv = cls;
    return atomic_load(&srv->draining) ? MHD_NO : MHD_YES;
}

/* Counts open connections, for the --max-connections answer (503), turns Nagle off on each
 * (a streamed event must not wait for the client's delayed ACK), and gives a connection that
 * came through a CONNECT tunnel its host (the front's socket context). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&srv->connections, 1);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        int on = 1;
        if (ci)
            setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        if (srv->front) {
            *socket_ctx = ci ? front_claim(srv->front, ci->connect_fd) : NULL;
            const union MHD_ConnectionInfo *ti =
                *socket_ctx ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION)
                            : NULL;
            if (ti && ti->tls_session)
                front_tls_attach(*socket_ctx, (gnutls_session_t)ti->tls_session);
        }
    } else {
        atomic_fetch_sub(&srv->connections, 1);
        front_release(srv->front, *socket_ctx);
        *socket_ctx = NULL;
    }
}

/* A request that declares a body over --max-body: 1 (and ctx->too_large set), else 0. */
static int declares_too_large(struct req_ctx *ctx)
{
    const char *cl = headers_get(&ctx->req.headers, "content-length");
    if (!cl || !*cl)
        return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (end == cl || *end)
        return 0; /* not a number: libmicrohttpd answers 400 itself */
    if (errno == ERANGE || n > ctx->srv->opt.max_body) {
        ctx->too_large = 1;
        return 1;
    }
    return 0;
}

/* Ask the handler's pending answer whether it is ready; queue it when it is. */
static enum MHD_Result answer_when_ready(struct req_ctx *ctx)
{
    int rc = ctx->resp.ready(ctx->resp.ready_cls, &ctx->resp);
    if (rc == 0)
        return MHD_YES; /* suspended: called again when resumed */
    ctx->resp.ready = NULL;
    if (rc < 0) {
        response_clear(&ctx->resp);
        ctx->resp.chunk_factor = 1.0;
        server_response_error(&ctx->resp, 500, "apisim: internal error (see its stderr)");
    }
    return queue_response(ctx);
}

/* Decide the answer: limits, the control API, or the mode's handler. */
static void dispatch(struct req_ctx *ctx)
{
    struct server *srv = ctx->srv;
    struct server_request *req = &ctx->req;
    struct server_response *resp = &ctx->resp;
    char msg[256];
    req->body = (const unsigned char *)ctx->body.p;
    req->body_len = ctx->body.len;
    resp->chunk_factor = 1.0;
    if (ctx->too_many_headers) {
        snprintf(msg, sizeof msg, "request has more than %d headers", SERVER_MAX_HEADERS);
        log_msg(LOG_WARN, "%s %s: %s", req->method, req->path, msg);
        server_response_error(resp, 431, msg);
        return;
    }
    for (size_t i = 0; i < req->headers.n; i++) {
        if (!is_token(req->headers.v[i].name)) {
            snprintf(msg, sizeof msg, "request header name \"%.64s\" is not a valid token",
                     req->headers.v[i].name);
            log_msg(LOG_WARN, "%s %s: %s", req->method, req->path, msg);
            server_response_error(resp, 400, msg);
            return;
        }
    }
    if (ctx->too_large) {
        snprintf(msg, sizeof msg, "request body larger than --max-body (%zu bytes)",
                 srv->opt.max_body);
        log_msg(LOG_WARN, "%s %s: %s", req->method, req->path, msg);
        server_response_error(resp, 413, msg);
        return;
    }
    if (ctx->bad_target) {
        snprintf(msg, sizeof msg,
                 "request target \"%.150s\" has no host (expected http://HOST[:PORT]/PATH)",
                 ctx->raw_uri);
        log_msg(LOG_WARN, "%s: %s", req->method, msg);
        server_response_error(resp, 400, msg);
        return;
    }
    if (strcmp(req->method, "CONNECT") == 0) {
        /* The front answers a CONNECT that opens a connection; one here came later on a
         * kept-alive connection, or this server is not a proxy (mock). */
        snprintf(msg, sizeof msg, "%s",
                 srv->front
                     ? "CONNECT must be the first request on its connection"
                     : "this server is not a proxy: CONNECT is for apisim record and replay");
        log_msg(LOG_WARN, "CONNECT %s: %s", req->path, msg);
        server_response_error(resp, srv->front ? 400 : 405, msg);
        return;
    }
    /* A proxied request for another host's /__apisim/ is that host's business. */
    if (is_admin_path(req->path) && !req->authority) {
        if (srv->opt.admin_token) {
            const char *tok = headers_get(&req->headers, "x-apisim-token");
            if (!tok || strcmp(tok, srv->opt.admin_token) != 0) {
                server_response_error(resp, 401,
                                      "control API: missing or wrong X-Apisim-Token header");
                return;
            }
        } else if (!req->loopback) {
            server_response_error(resp, 403,
                                  "control API answers loopback clients only; start the server "
                                  "with --admin-token to allow others");
            return;
        }
        if (!srv->opt.handle_admin || srv->opt.handle_admin(srv->opt.admin_app, req, resp) < 0) {
            response_clear(resp);
            server_response_error(resp, srv->opt.handle_admin ? 500 : 404,
                                  srv->opt.handle_admin ? "control API failed"
                                                        : "no control API on this server");
        }
        return;
    }
    /* The control API stays reachable; the mode's answers wait for room. */
    long open = atomic_load(&srv->connections);
    if (open > (long)max_connections(&srv->opt)) {
        snprintf(msg, sizeof msg,
                 "too many connections: %ld open, --max-connections is %u; retry later", open,
                 max_connections(&srv->opt));
        log_msg(LOG_WARN, "%s %s: %s", req->method, req->path, msg);
        server_response_error(resp, 503, msg);
        headers_add(&resp->headers, "Retry-After", "1");
        return;
    }
    if (srv->opt.handle(srv->opt.app, req, resp) < 0) {
        response_clear(resp);
        server_response_error(resp, 500, "apisim: internal error (see its stderr)");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct req_ctx *ctx = *req_cls;
    (void)cls;
    (void)url;
    (void)version;
    if (!ctx)
        return MHD_NO; /* the URI logger ran out of memory: drop the connection */
    if (!ctx->req.method) {
        /* First call: headers are in; answer on a later call so keep-alive survives. */
        if (setup_request(ctx, conn, method) < 0)
            return MHD_NO;
        /* A declared body over the limit is refused before it is read, and instead of
         * 100 Continue. Answering on this first call costs the connection's keep-alive:
         * libmicrohttpd closes it after the answer, as it must with the body unread. */
        if (declares_too_large(ctx)) {
            dispatch(ctx);
            return queue_response(ctx);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!ctx->too_large && buf_append(&ctx->body, upload_data, *upload_data_size) < 0)
            ctx->too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    switch (ctx->state) {
    case REQ_COLLECTING:
        dispatch(ctx);
        if (ctx->resp.ready) {
            ctx->state = REQ_WAITING;
            return answer_when_ready(ctx);
        }
        if (ctx->resp.delay_us > 0 && !ctx->resp.reader) {
            ctx->state = REQ_READY;
            if (wait_until(ctx, ctx->req.received_mono_us + ctx->resp.delay_us))
                return MHD_YES;
        }
        return queue_response(ctx);
    case REQ_READY:
        return queue_response(ctx);
    case REQ_WAITING:
        return answer_when_ready(ctx);
    case REQ_QUEUED:
        return MHD_YES;
    }
    return MHD_NO;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sslen,
                        char *host_out, size_t host_len, char *err)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || colon[1] == '\0') {
        snprintf(err, APISIM_ERR_LEN,
                 "--listen \"%s\": expected HOST:PORT (e.g. 127.0.0.1:8080, port 0 picks one)",
                 listen);
        return -1;
    }
    char host[256];
    size_t hlen = (size_t)(colon - listen);
    if (listen[0] == '[' && hlen >= 2 && listen[hlen - 1] == ']') {
        listen++;
        hlen -= 2;
    }
    if (hlen >= sizeof host) {
        snprintf(err, APISIM_ERR_LEN, "--listen \"%s\": host name too long", listen);
        return -1;
    }
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) {
        snprintf(err, APISIM_ERR_LEN, "--listen \"%s\": port must be a number 0..65535", listen);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, APISIM_ERR_LEN, "--listen \"%s\": cannot resolve %s: %s", listen, host,
                 gai_strerror(gai));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    getnameinfo(res->ai_addr, res->ai_addrlen, host_out, (socklen_t)host_len, NULL, 0,
                NI_NUMERICHOST);
    freeaddrinfo(res);
    return 0;
}

int server_check_listen(const char *listen, char *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    char host[1025];
    return parse_listen(listen, &ss, &sslen, host, sizeof host, err);
}

static int addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr) >> 24) ==
               127;
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr);
    return 0;
}

/* The front's listening socket: bound, listening, nonblocking. Returns the fd or -1. */
static int listen_socket(const struct sockaddr_storage *ss, socklen_t sslen, char *err,
                         const char *where)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)ss, sslen) < 0 || listen(fd, 1024) < 0) {
        snprintf(err, APISIM_ERR_LEN,
                 "cannot listen on %s: %s (is the port in use? use --listen HOST:0 for a free "
                 "port)",
                 where, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int server_start(struct server **out, const struct server_options *opt, char *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    char host[1025];
    if (parse_listen(opt->listen, &ss, &sslen, host, sizeof host, err) < 0)
        return -1;
    if (!addr_is_loopback(&ss))
        log_msg(LOG_WARN,
                "listening on %s, which is not a loopback address: other machines can reach "
                "this server%s",
                host, opt->admin_token ? "" : " (the control API still answers loopback only)");

    struct server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    srv->opt = *opt;
    pthread_mutex_init(&srv->tmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->tcond, &ca);
    pthread_condattr_destroy(&ca);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_SUPPRESS_DATE_NO_CLOCK |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned threads = opt->threads ? opt->threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    flags |= MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (pthread_create(&srv->timer_thread, NULL, timer_main, srv) != 0) {
        snprintf(err, APISIM_ERR_LEN, "cannot start the timer thread");
        free(srv);
        return -1;
    }
    srv->timer_running = 1;
    /* MHD clears a connection's whole pool between requests: its size is paid on every
     * request, so it stays at MHD's own default (a request head above it gets 431). */
    size_t mem = opt->max_header_bytes ? opt->max_header_bytes : 32 * 1024;
    /* A client that sends nothing for this long (half a request head, an idle keep-alive)
     * is disconnected; MHD counts in whole seconds. */
    int64_t ct = opt->client_timeout_us > 0 ? (opt->client_timeout_us + 999999) / 1000000 : 30;
    unsigned client_timeout_s = ct > 100000000 ? 100000000u : (unsigned)ct;
    srv->client_timeout_s = client_timeout_s;
    unsigned conn_limit = max_connections(opt) + max_connections(opt) / 8 + 16;
    int lfd = -1;
    unsigned port = 0;
    if (opt->front) {
        /* The front owns the listening socket and hands connections to the daemon. */
        if ((lfd = listen_socket(&ss, sslen, err, opt->listen)) < 0) {
            server_free(srv);
            return -1;
        }
        struct sockaddr_storage bound;
        socklen_t blen = sizeof bound;
        getsockname(lfd, (struct sockaddr *)&bound, &blen);
        port =
            ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)(void *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)(void *)&bound)->sin_port);
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    }
    /* Without the front the daemon binds the address itself. */
    struct MHD_OptionItem listen_opt[] = {
        {opt->front ? MHD_OPTION_END : MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_END, 0, NULL},
    };
    /* Beyond --max-connections a request is answered 503 (dispatch); MHD itself only cuts
     * connections past a margin above it. */
    struct MHD_OptionItem common[] = {
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)mem, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, conn_limit, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, client_timeout_s, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
        {threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
#define SERVER_CALLBACKS                                                                           \
    MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv, MHD_OPTION_URI_LOG_CALLBACK, uri_logger, srv,     \
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, srv, MHD_OPTION_NOTIFY_CONNECTION,         \
        on_connection, srv
    srv->daemon =
        MHD_start_daemon(flags, 0, accept_policy, srv, on_request, srv, SERVER_CALLBACKS,
                         MHD_OPTION_ARRAY, listen_opt, MHD_OPTION_ARRAY, common, MHD_OPTION_END);
    /* APISIM_TLS_RELAY=1 forces the front's own OpenSSL relay (what a libmicrohttpd without
     * TLS gets), so the tests cover both ways. */
    const char *relay = getenv("APISIM_TLS_RELAY");
    int tls_ok = MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES &&
                 MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) == MHD_YES &&
                 !(relay && strcmp(relay, "1") == 0);
    /* The second daemon takes the front's CONNECT tunnels and terminates their TLS in its
     * own threads (GnuTLS), with a certificate minted for the tunnel's host. It polls with
     * poll(), not epoll: libmicrohttpd 0.9.75's epoll loop keeps a TLS connection "ready"
     * until a read fails, so it spins (epoll_wait(0) and a failing recv() over and over)
     * for as long as the client takes to answer the server's handshake flight (about 4 ms
     * of CPU per handshake), and spends an epoll_wait() and a failing recv() more on every
     * request; poll() asks the socket each time (bench/README.md, "CONNECT tunnel"). */
    unsigned tls_flags = (flags & ~(unsigned)MHD_USE_EPOLL) | MHD_USE_POLL | MHD_USE_TLS;
    if (srv->daemon && opt->front && tls_ok)
        srv->tls_daemon =
            MHD_start_daemon(tls_flags, 0, accept_policy, srv, on_request, srv, SERVER_CALLBACKS,
                             MHD_OPTION_HTTPS_CERT_CALLBACK, front_tls_certificate,
                             MHD_OPTION_ARRAY, common, MHD_OPTION_END);
#undef SERVER_CALLBACKS
    if (!srv->daemon || (opt->front && tls_ok && !srv->tls_daemon)) {
        if (lfd >= 0)
            close(lfd);
        snprintf(err, APISIM_ERR_LEN,
                 "cannot listen on %s: %s (is the port in use? use --listen HOST:0 for a free "
                 "port)",
                 opt->listen, errno ? strerror(errno) : "libmicrohttpd refused to start");
        server_free(srv);
        return -1;
    }
    if (opt->front) {
        int fd = lfd;
        lfd = -1; /* the front owns it now, even when it fails */
        if (front_start(&srv->front, opt->front, fd, srv->daemon, srv->tls_daemon, &srv->draining,
                        err) < 0) {
            server_free(srv);
            return -1;
        }
    } else {
        const union MHD_DaemonInfo *di =
            MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
        port = di ? di->port : 0;
    }
    if (ss.ss_family == AF_INET6)
        snprintf(srv->url, sizeof srv->url, "http://[%s]:%u", host, port);
    else
        snprintf(srv->url, sizeof srv->url, "http://%s:%u", host, port);
    *out = srv;
    return 0;
}

const char *server_url(const struct server *srv)
{
    return srv->url;
}

void server_wait_for_signal(struct server *srv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    /* Stop taking connections, then let what is in flight finish (bounded).
     * MHD_quiesce_daemon() is not used: in 0.9.75 it races an epoll worker thread
     * removing the same listen socket and aborts the process ("Failed to remove
     * listen FD from epoll set"). The accept policy closes new connections instead.
     * Set before the log line, which tells watchers the drain has begun. */
    atomic_store(&srv->draining, 1);
    log_msg(LOG_INFO, "%s received: finishing in-flight requests",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    int64_t deadline = now_mono_us() + SERVER_DRAIN_TIMEOUT_US;
    while (atomic_load(&srv->inflight) > 0 && now_mono_us() < deadline) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void server_free(struct server *srv)
{
    if (!srv)
        return;
    if (srv->timer_running) {
        /* Resume everything still waiting, then stop the timer thread. */
        pthread_mutex_lock(&srv->tmu);
        srv->timer_stop = 1;
        pthread_cond_signal(&srv->tcond);
        pthread_mutex_unlock(&srv->tmu);
        pthread_join(srv->timer_thread, NULL);
    }
    /* No new connections and the relays closed; the daemons' last notifications still
     * reach the front, which goes after them. */
    front_stop(srv->front);
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    if (srv->tls_daemon)
        MHD_stop_daemon(srv->tls_daemon);
    front_free(srv->front);
    srv->front = NULL;
    pthread_mutex_destroy(&srv->tmu);
    pthread_cond_destroy(&srv->tcond);
    free(srv->heap);
    free(srv);
}
