#include "proxy.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"
#include "upstream.h"

#define PROXY_MAX_RESPONSE_HEADERS 512
#define PROXY_MAX_HEADER_LINE (64 * 1024)
/* How much of a streamed body may wait for a slow client before the upstream is paused. */
#define PROXY_PENDING_CAP (4u * 1024 * 1024)
/* A response complete before the client has its head is sent whole (committed first) up
 * to this size; a larger one streams, and is stored once the client has taken it all. */
#define PROXY_WHOLE_MAX (64u * 1024)
/* Easy handles kept for the next transfers once theirs are over (curl_easy_reset keeps
 * their buffers: no 16 KiB allocation and set-up per exchange). */
#define PROXY_IDLE_EASY 128

struct transfer;

struct proxy {
    struct proxy_options opt;
    char *base;           /* upstream without a trailing '/'; NULL when none */
    char *base_scheme;    /* the upstream's scheme and authority, stored with each exchange */
    char *base_authority; /* forwarded to it */
    struct curl_slist *connect_to; /* --connect-to, as curl takes it */
    int env_proxy;                 /* the environment names a proxy for curl to use (proxy_new) */
    struct upstream *up;
    /* DNS and TLS sessions shared by every loop's transfers (a TLS upstream resumes
     * sessions instead of full handshakes); connections are cached per loop. */
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    atomic_int_least64_t seq;
    atomic_uint_least64_t recorded;
    atomic_int stopping;
    /* Every live transfer, so that proxy_stop() can wake the connections waiting on one. */
    pthread_mutex_t live_mu;
    struct transfer *live;
    pthread_mutex_t easy_mu; /* idle easy handles, reset, for the next transfers */
    CURL *idle_easy[PROXY_IDLE_EASY];
    size_t nidle_easy;
};

/* One forwarded request, from the handler to the end of its response. Shared by the
 * client's side (the server's worker threads: ready and the content reader), the upstream
 * loop (curl's callbacks, done, kick) and the store's writer (the commit's notice); freed
 * when the last of them lets go (refs). */
struct transfer {
    struct upstream_job job;
    struct proxy *px;
    atomic_int refs;
    struct transfer *live_prev, *live_next;
    struct MHD_Connection *conn;
    struct curl_slist *req_headers;
    char errbuf[CURL_ERROR_SIZE];
    int record; /* store it (0: spy forwarding only) */
    void (*on_stored)(void *cls, int64_t id);
    void *on_stored_cls;
    int64_t start_mono;
    char what[160];   /* "METHOD /path" for log lines */
    char origin[300]; /* "scheme://authority" the request went to */

    /* Loop thread only, until done() (then read by the client's side under mu). */
    struct exchange *ex; /* what will be stored; owns copies of the request */
    int status;
    int head_seen;
    int too_many_headers;
    struct codec *codec; /* decoder when the body is gzip, deflate, br or zstd */
    int codec_checked;
    int decode_failed;
    struct buf raw;     /* raw body as received (kept when it cannot be decoded) */
    struct buf decoded; /* decoded body */
    int truncated;      /* the body passed max_record_body */
    struct chunk *chunks;
    size_t nchunks, capchunks;

    pthread_mutex_t mu; /* guards everything below */
    int head_ready;     /* the head (or the failure) can be answered */
    int failed;         /* no usable head: answer failure_body with 502 */
    char *failure_body;
    struct headers resp_headers; /* the head as the client gets it */
    uint64_t stream_size;        /* Content-Length of the body, MHD_SIZE_UNKNOWN when none */
    int upstream_done;
    CURLcode result;
    int head_taken;     /* the client's response has been made from the head */
    int submitted;      /* the exchange went to the store's writer */
    int settled;        /* the exchange is committed (or held, or failed, or not stored) */
    struct buf pending; /* body bytes received and not yet given to the client */
    size_t pending_off; /* bytes of pending already given */
    uint64_t given;     /* body bytes given to the client */
    int paused;         /* the upstream is paused until the client takes data */
    int client_waiting; /* the client's connection is suspended until something changes */
    int client_gone;    /* the server let go of the response */
    int failure_logged;
};

int proxy_check_upstream(const char *url, char *err)
{
    int rc = -1;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
        snprintf(err, APISIM_ERR_LEN,
                 "--upstream \"%s\" is not a URL: expected http://HOST[:PORT][/PREFIX] or "
                 "https://...",
                 url);
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, APISIM_ERR_LEN, "--upstream \"%s\": scheme must be http or https, not %s",
                 url, scheme);
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *cls)
{
    struct proxy *px = cls;
    (void)handle;
    (void)access;
    pthread_mutex_lock(&px->share_locks[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *cls)
{
    struct proxy *px = cls;
    (void)handle;
    pthread_mutex_unlock(&px->share_locks[data]);
}

/* The upstream's scheme and host[:port] as its URL spells them. */
static int split_base(struct proxy *px)
{
    int rc = -1;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    if (!u || curl_url_set(u, CURLUPART_URL, px->base, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    curl_url_get(u, CURLUPART_PORT, &port, 0); /* only when the URL names one */
    struct buf a = {.max = 1024};
    if (buf_printf(&a, "%s%s%s", host, port ? ":" : "", port ? port : "") < 0) {
        buf_free(&a);
        goto out;
    }
    for (char *c = a.p; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    px->base_authority = buf_steal(&a, NULL);
    px->base_scheme = strdup(scheme);
    rc = px->base_authority && px->base_scheme ? 0 : -1;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* Whether libcurl would find a proxy in the environment (its detect_proxy(): the
 * scheme's <scheme>_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY; HTTP_PROXY is ignored). */
static int env_names_proxy(void)
{
    static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                       "ALL_PROXY"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && v[0])
            return 1;
    }
    return 0;
}

int proxy_new(struct proxy **out, const struct proxy_options *opt, char *err)
{
    if (opt->upstream && proxy_check_upstream(opt->upstream, err) < 0)
        return -1;
    struct proxy *px = calloc(1, sizeof *px);
    if (!px) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    px->opt = *opt;
    px->env_proxy = env_names_proxy();
    pthread_mutex_init(&px->live_mu, NULL);
    pthread_mutex_init(&px->easy_mu, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&px->share_locks[i], NULL);
    if ((px->share = curl_share_init())) {
        curl_share_setopt(px->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(px->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(px->share, CURLSHOPT_USERDATA, px);
        curl_share_setopt(px->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(px->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    }
    if (opt->upstream && (!(px->base = strdup(opt->upstream)) || split_base(px) < 0)) {
        proxy_free(px);
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    size_t n = px->base ? strlen(px->base) : 0;
    while (n > 0 && px->base[n - 1] == '/')
        px->base[--n] = '\0';
    for (const char *const *r = opt->connect_to; r && *r; r++) {
        struct curl_slist *l = curl_slist_append(px->connect_to, *r);
        if (!l) {
            proxy_free(px);
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            return -1;
        }
        px->connect_to = l;
    }
    int64_t seq = 0;
    if ((opt->store && store_max_seq(opt->store, opt->session, &seq, err) < 0) ||
        upstream_new(&px->up, opt->loops, err) < 0) {
        proxy_free(px);
        return -1;
    }
    atomic_store(&px->seq, seq);
    *out = px;
    return 0;
}

void proxy_stop(struct proxy *px)
{
    if (!px)
        return;
    atomic_store(&px->stopping, 1);
    /* Every transfer ends (done() runs for each), then every connection still waiting on
     * one is woken: the server may not stop with a suspended connection. */
    upstream_stop(px->up);
    pthread_mutex_lock(&px->live_mu);
    for (struct transfer *t = px->live; t; t = t->live_next) {
        pthread_mutex_lock(&t->mu);
        if (t->client_waiting) {
            t->client_waiting = 0;
            MHD_resume_connection(t->conn);
        }
        pthread_mutex_unlock(&t->mu);
    }
    pthread_mutex_unlock(&px->live_mu);
}

void proxy_free(struct proxy *px)
{
    if (!px)
        return;
    upstream_free(px->up);
    for (size_t i = 0; i < px->nidle_easy; i++)
        curl_easy_cleanup(px->idle_easy[i]);
    pthread_mutex_destroy(&px->easy_mu);
    curl_share_cleanup(px->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&px->share_locks[i]);
    pthread_mutex_destroy(&px->live_mu);
    curl_slist_free_all(px->connect_to);
    free(px->base_scheme);
    free(px->base_authority);
    free(px->base);
    free(px);
}

uint64_t proxy_recorded(const struct proxy *px)
{
    return atomic_load(&px->recorded);
}

/* ---- the transfer ---------------------------------------------------------------------- */

static struct transfer *job_transfer(struct upstream_job *job)
{
    return (struct transfer *)(void *)((char *)job - offsetof(struct transfer, job));
}

/* An easy handle for a new transfer: an idle one, or a new one. NULL when out of memory. */
static CURL *easy_get(struct proxy *px)
{
    CURL *e = NULL;
    pthread_mutex_lock(&px->easy_mu);
    if (px->nidle_easy > 0)
        e = px->idle_easy[--px->nidle_easy];
    pthread_mutex_unlock(&px->easy_mu);
    return e ? e : curl_easy_init();
}

/* A transfer's easy handle, out of every multi handle: reset and kept, or cleaned up. */
static void easy_put(struct proxy *px, CURL *e)
{
    if (!e)
        return;
    curl_easy_setopt(e, CURLOPT_SHARE, NULL); /* the share counts its users */
    curl_easy_reset(e);
    pthread_mutex_lock(&px->easy_mu);
    if (px->nidle_easy < PROXY_IDLE_EASY) {
        px->idle_easy[px->nidle_easy++] = e;
        e = NULL;
    }
    pthread_mutex_unlock(&px->easy_mu);
    curl_easy_cleanup(e);
}

static void transfer_release(struct transfer *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    struct proxy *px = t->px;
    if (px) {
        pthread_mutex_lock(&px->live_mu);
        if (t->live_prev)
            t->live_prev->live_next = t->live_next;
        else if (px->live == t)
            px->live = t->live_next;
        if (t->live_next)
            t->live_next->live_prev = t->live_prev;
        pthread_mutex_unlock(&px->live_mu);
        easy_put(px, t->job.easy);
    } else {
        curl_easy_cleanup(t->job.easy);
    }
    curl_slist_free_all(t->req_headers);
    exchange_free(t->ex);
    headers_free(&t->resp_headers);
    free(t->failure_body);
    buf_free(&t->pending);
    buf_free(&t->raw);
    buf_free(&t->decoded);
    codec_free(t->codec);
    free(t->chunks);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Body bytes the client may take now: all that is pending, but the last byte of a body of
 * known length, which waits for the commit. With t->mu held. */
static size_t can_give(const struct transfer *t)
{
    size_t left = t->pending.len - t->pending_off;
    if (left > 0 && t->stream_size != MHD_SIZE_UNKNOWN && t->given + left >= t->stream_size &&
        !(t->upstream_done && t->settled))
        left--;
    return left;
}

/* Whether the client's side would get further if woken. With t->mu held. */
static int client_can_progress(const struct transfer *t)
{
    if (!t->head_taken)
        return t->head_ready && (t->settled || !t->submitted);
    return can_give(t) > 0 || (t->upstream_done && (t->settled || !t->submitted));
}

/* Wake the client's connection if it waits and has something to do now. With t->mu held. */
static void wake_client(struct transfer *t)
{
    if (!t->client_waiting || !client_can_progress(t))
        return;
    t->client_waiting = 0;
    MHD_resume_connection(t->conn);
}

static void on_kick(struct upstream_job *job)
{
    struct transfer *t = job_transfer(job);
    pthread_mutex_lock(&t->mu);
    wake_client(t);
    pthread_mutex_unlock(&t->mu);
}

/* The final head is complete: give it to the client's side. Loop thread. */
static void publish_head(struct transfer *t)
{
    struct headers h = {0};
    int ok = 1;
    for (size_t i = 0; i < t->ex->response_headers.n; i++) {
        const struct header *hd = &t->ex->response_headers.v[i];
        if (header_is_hop_by_hop(hd->name))
            continue;
        if (headers_add(&h, hd->name, hd->value) < 0)
            ok = 0;
    }
    uint64_t size = MHD_SIZE_UNKNOWN;
    const char *cl = headers_get(&t->ex->response_headers, "content-length");
    if (cl && !headers_get(&t->ex->response_headers, "transfer-encoding"))
        size = strtoull(cl, NULL, 10);
    t->ex->status = t->status;
    pthread_mutex_lock(&t->mu);
    if (ok) {
        t->resp_headers = h;
        t->stream_size = size;
        t->head_ready = 1;
    } else {
        headers_free(&h);
    }
    pthread_mutex_unlock(&t->mu);
    upstream_kick(&t->job);
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *cls)
{
    struct transfer *t = cls;
    size_t n = size * nmemb;
    t->job.last_active_us = now_mono_us();
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* A new response head (after 1xx, the final one replaces it). */
        headers_free(&t->ex->response_headers);
        const char *sp = memchr(data, ' ', n);
        t->status = sp ? (int)strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    if (n <= 2 && (n == 0 || data[0] == '\r' || data[0] == '\n')) {
        if (t->status >= 200 && !t->head_seen) {
            t->head_seen = 1;
            if (t->ex->ttfb_us == 0)
                t->ex->ttfb_us = now_mono_us() - t->start_mono;
            publish_head(t);
        }
        return n;
    }
    if (t->ex->response_headers.n >= PROXY_MAX_RESPONSE_HEADERS || n > PROXY_MAX_HEADER_LINE) {
        t->too_many_headers = 1;
        return 0; /* aborts the transfer */
    }
    const char *colon = memchr(data, ':', n);
    if (!colon)
        return n;
    size_t nlen = (size_t)(colon - data);
    const char *v = colon + 1, *end = data + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    headers_addn(&t->ex->response_headers, data, nlen, v, (size_t)(end - v));
    return n;
}

static void note_chunk(struct transfer *t, size_t size)
{
    if (size == 0)
        return;
    if (t->nchunks == t->capchunks) {
        size_t cap = t->capchunks ? t->capchunks * 2 : 16;
        struct chunk *c = realloc(t->chunks, cap * sizeof *c);
        if (!c)
            return; /* timing is lost, the body is not */
        t->chunks = c;
        t->capchunks = cap;
    }
    t->chunks[t->nchunks].offset_us = now_mono_us() - t->start_mono;
    t->chunks[t->nchunks].size = size;
    t->nchunks++;
}

/* What is kept for the store: the raw body, and the decoded one when it is encoded. */
static void keep_for_store(struct transfer *t, const char *data, size_t n)
{
    if (!t->codec_checked) {
        const char *enc = headers_get(&t->ex->response_headers, "content-encoding");
        t->codec = enc ? codec_new(enc) : NULL;
        t->codec_checked = 1;
    }
    if (t->truncated)
        return;
    size_t before = t->codec ? t->decoded.len : t->raw.len;
    if (buf_append(&t->raw, data, n) < 0) {
        t->truncated = 1;
        return;
    }
    if (t->codec && !t->decode_failed && codec_feed(t->codec, data, n, &t->decoded) < 0)
        t->decode_failed = 1;
    note_chunk(t, (t->codec && !t->decode_failed ? t->decoded.len : t->raw.len) - before);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *cls)
{
    struct transfer *t = cls;
    size_t n = size * nmemb;
    t->job.last_active_us = now_mono_us();
    if (!t->head_seen) {
        /* A body without a blank line seen (HTTP/0.9-like answers): the head is done. */
        t->head_seen = 1;
        if (t->ex->ttfb_us == 0)
            t->ex->ttfb_us = now_mono_us() - t->start_mono;
        publish_head(t);
    }
    if (t->ex->ttfb_us == 0)
        t->ex->ttfb_us = now_mono_us() - t->start_mono;
    pthread_mutex_lock(&t->mu);
    if (t->client_gone) {
        pthread_mutex_unlock(&t->mu);
        return 0; /* nobody to give it to: end the transfer (stored as incomplete) */
    }
    if (t->pending.len - t->pending_off > PROXY_PENDING_CAP) {
        t->paused = 1;
        t->job.paused = 1;
        pthread_mutex_unlock(&t->mu);
        return CURL_WRITEFUNC_PAUSE; /* the client is slow: stop reading the upstream */
    }
    /* Drop what the client has already taken: all of it, or a large prefix of a stream
     * the client keeps just behind. */
    if (t->pending_off > 0 && t->pending_off == t->pending.len) {
        t->pending.len = 0;
        t->pending_off = 0;
    } else if (t->pending_off >= PROXY_PENDING_CAP / 4) {
        memmove(t->pending.p, t->pending.p + t->pending_off, t->pending.len - t->pending_off);
        t->pending.len -= t->pending_off;
        t->pending_off = 0;
    }
    int rc = buf_append(&t->pending, data, n);
    pthread_mutex_unlock(&t->mu);
    if (rc < 0)
        return 0;
    if (t->record)
        keep_for_store(t, data, n);
    upstream_kick(&t->job);
    return n;
}

/* A sentence for a transport failure, and the key word tests and users match on. */
static const char *failure_cause(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        return "connection refused";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "DNS lookup failed";
    case CURLE_OPERATION_TIMEDOUT:
        return "timed out";
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return "connection reset";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return "TLS certificate rejected (use --insecure to accept it)";
    case CURLE_ABORTED_BY_CALLBACK:
        return "apisim stopped before the upstream answered";
    default:
        return "upstream transfer failed";
    }
}

static char *failure_json(struct transfer *t, const char *cause)
{
    char *out = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    char msg[512];
    snprintf(msg, sizeof msg, "upstream unreachable: %s", cause);
    cJSON_AddStringToObject(o, "error", msg);
    cJSON_AddStringToObject(o, "cause", cause);
    cJSON_AddStringToObject(o, "detail", t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result));
    cJSON_AddStringToObject(o, "upstream", t->origin);
    out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

static int add_request_header(struct transfer *t, const char *name, const char *value)
{
    struct buf line = {.max = 1024 * 1024};
    if (buf_printf(&line, "%s:%s%s", name, value[0] ? " " : "", value) < 0) {
        buf_free(&line);
        return -1;
    }
    /* "Name;" sends an empty header; "Name:" would remove it. */
    if (!value[0])
        line.p[strlen(name)] = ';';
    struct curl_slist *l = curl_slist_append(t->req_headers, line.p);
    buf_free(&line);
    if (!l)
        return -1;
    t->req_headers = l;
    return 0;
}

/* Which URL a request goes to: its own host when proxied (absolute form, CONNECT tunnel),
 * else the upstream's base (with its path prefix); then the request's raw path and query.
 * The one place that decides it. Sets the exchange's scheme and authority and t->origin.
 * Returns 0 or -1. */
static int proxy_target_url(const struct proxy *px, const struct server_request *req,
                            struct transfer *t, struct buf *url)
{
    const char *scheme = req->authority ? req->scheme : px->base_scheme;
    const char *authority = req->authority ? req->authority : px->base_authority;
    snprintf(t->origin, sizeof t->origin, "%s://%.280s", scheme, authority);
    if (!(t->ex->scheme = strdup(scheme)) || !(t->ex->authority = strdup(authority)))
        return -1;
    if (buf_puts(url, req->authority ? t->origin : px->base) < 0 || buf_puts(url, req->path) < 0 ||
        (req->query[0] && (buf_puts(url, "?") < 0 || buf_puts(url, req->query) < 0)))
        return -1;
    return 0;
}

static struct transfer *transfer_new(struct proxy *px, struct server_request *req, int record,
                                     char *err)
{
    struct transfer *t = calloc(1, sizeof *t);
    struct buf url = {.max = 1024 * 1024};
    if (!t)
        goto oom;
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->refs, 1);
    t->px = px;
    t->record = record;
    t->conn = req->conn;
    t->start_mono = req->received_mono_us;
    t->stream_size = MHD_SIZE_UNKNOWN;
    snprintf(t->what, sizeof t->what, "%s %s", req->method, req->path);
    t->raw.max = px->opt.max_record_body ? px->opt.max_record_body : 0;
    t->decoded.max = t->raw.max;
    struct exchange *ex = t->ex = exchange_new();
    if (!ex)
        goto oom;
    ex->session = strdup(px->opt.session);
    ex->source = strdup(px->opt.source ? px->opt.source : "record");
    ex->method = strdup(req->method);
    ex->path = strdup(req->path);
    ex->query = strdup(req->query);
    ex->started_us = req->received_us;
    if (record)
        ex->seq = atomic_fetch_add(&px->seq, 1) + 1;
    if (!ex->session || !ex->source || !ex->method || !ex->path || !ex->query)
        goto oom;
    for (size_t i = 0; i < req->headers.n; i++)
        if (headers_add(&ex->request_headers, req->headers.v[i].name, req->headers.v[i].value) < 0)
            goto oom;
    /* The exchange's copy is also what curl sends: it outlives the server's request. */
    if (req->body_len) {
        if (!(ex->request_body = malloc(req->body_len)))
            goto oom;
        memcpy(ex->request_body, req->body, req->body_len);
        ex->request_body_len = req->body_len;
    }

    if (proxy_target_url(px, req, t, &url) < 0)
        goto oom;
    for (size_t i = 0; i < req->headers.n; i++) {
        const char *name = req->headers.v[i].name;
        /* Host follows the upstream URL; curl frames the body itself. */
        if (header_is_hop_by_hop(name) || ascii_casecmp(name, "host") == 0 ||
            ascii_casecmp(name, "content-length") == 0 || ascii_casecmp(name, "expect") == 0)
            continue;
        if (add_request_header(t, name, req->headers.v[i].value) < 0)
            goto oom;
    }
    /* No 100-continue round trip, and no header curl would add on its own. */
    if (!(t->req_headers = curl_slist_append(t->req_headers, "Expect:")))
        goto oom;
    if (!headers_get(&req->headers, "accept"))
        t->req_headers = curl_slist_append(t->req_headers, "Accept:");
    if (!headers_get(&req->headers, "user-agent"))
        t->req_headers = curl_slist_append(t->req_headers, "User-Agent:");

    CURL *e = t->job.easy = easy_get(px);
    if (!e)
        goto oom;
    curl_easy_setopt(e, CURLOPT_URL, url.p);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (px->share)
        curl_easy_setopt(e, CURLOPT_SHARE, px->share);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_TRANSFER_DECODING, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    /* HTTP/2 when a TLS upstream offers it by ALPN, HTTP/1.1 otherwise; a new transfer
     * waits for a connection being set up rather than opening a second one, so h2 streams
     * share one connection. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    long timeout_ms = (long)(px->opt.upstream_timeout_us / 1000);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
    if (px->opt.insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (px->opt.upstream_cacert)
        curl_easy_setopt(e, CURLOPT_CAINFO, px->opt.upstream_cacert);
    if (px->connect_to)
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, px->connect_to);
    /* No proxy in the environment: say so, or libcurl reads five or seven environment
     * variables for every transfer to find that out again. */
    if (!px->env_proxy)
        curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
               strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                         ex->request_body ? (const char *)ex->request_body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)ex->request_body_len);
        /* curl would add a form content type; keep exactly what the client sent. */
        if (!headers_get(&req->headers, "content-type"))
            t->req_headers = curl_slist_append(t->req_headers, "Content-Type:");
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->req_headers);
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    buf_free(&url);
    return t;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory preparing the upstream request");
    buf_free(&url);
    transfer_release(t);
    return NULL;
}

/* Move the recorded response into the exchange: decoded body, redaction, timings. */
static void build_exchange(struct transfer *t, int client_gone)
{
    struct exchange *ex = t->ex;
    const struct proxy_options *o = &t->px->opt;
    ex->duration_us = now_mono_us() - t->start_mono;
    ex->match_key = match_key(o->match, o->redact,
                              &(struct match_request){.method = ex->method,
                                                      .path = ex->path,
                                                      .query = ex->query,
                                                      .headers = &ex->request_headers,
                                                      .body = ex->request_body,
                                                      .body_len = ex->request_body_len});
    if (t->result != CURLE_OK || t->truncated || client_gone)
        ex->complete = 0;
    /* The upstream failed after its head: the cause is kept, so replay can repeat it (a
     * client that went away is not the upstream's failure). */
    if (t->result != CURLE_OK && !ex->error && !client_gone)
        ex->error = strdup(failure_cause(t->result));
    struct buf *body = &t->raw;
    const char *enc = headers_get(&ex->response_headers, "content-encoding");
    if (t->codec && !t->decode_failed && codec_finished(t->codec)) {
        body = &t->decoded;
        ex->response_encoding = enc ? strdup(enc) : NULL;
        /* The stored body is decoded: its headers must say so. */
        headers_remove(&ex->response_headers, "content-encoding");
        headers_remove(&ex->response_headers, "content-length");
    }
    ex->response_body = (unsigned char *)buf_steal(body, &ex->response_body_len);
    if (ex->response_body_len == 0) {
        free(ex->response_body);
        ex->response_body = NULL;
    }
    ex->chunks = t->chunks;
    ex->nchunks = t->nchunks;
    t->chunks = NULL;
    t->nchunks = 0;

    /* Secrets never reach the store. */
    redact_headers(o->redact, &ex->request_headers);
    redact_headers(o->redact, &ex->response_headers);
    char *q = redact_query(o->redact, ex->query);
    if (q) {
        free(ex->query);
        ex->query = q;
    }
    unsigned char *red = NULL;
    size_t redlen = 0;
    if (redact_json(o->redact, ex->request_body, ex->request_body_len, &red, &redlen) == 1) {
        free(ex->request_body);
        ex->request_body = red;
        ex->request_body_len = redlen;
    }
    if (redact_json(o->redact, ex->response_body, ex->response_body_len, &red, &redlen) == 1) {
        free(ex->response_body);
        ex->response_body = red;
        ex->response_body_len = redlen;
        free(ex->chunks); /* sizes no longer add up to the body */
        ex->chunks = NULL;
        ex->nchunks = 0;
    }
}

/* The writer committed (or held, or failed to store) the exchange. Writer thread. */
static void on_committed(void *cls, int rc, int64_t id)
{
    struct transfer *t = cls;
    if (rc == 0) {
        atomic_fetch_add(&t->px->recorded, 1);
        /* Before the client has its answer: a repeat it sends next must find it. */
        if (t->on_stored)
            t->on_stored(t->on_stored_cls, id);
    }
    pthread_mutex_lock(&t->mu);
    t->settled = 1;
    wake_client(t);
    pthread_mutex_unlock(&t->mu);
    transfer_release(t);
}

static void on_committed(void *cls, int rc, int64_t id);

/* Hand the exchange to the store once the upstream is done and the client has taken all
 * but the end (or will take it whole, or went away): what it stores as complete is what
 * the client got. With t->mu held; force submits whatever the client has. */
static void maybe_submit(struct transfer *t, int force)
{
    if (t->submitted || !t->upstream_done)
        return;
    size_t left = t->pending.len - t->pending_off;
    int caught_up = left == 0 || (t->stream_size != MHD_SIZE_UNKNOWN && left == 1 &&
                                  t->given + 1 == t->stream_size);
    int whole = !t->head_taken && left <= PROXY_WHOLE_MAX;
    if (!force && !t->client_gone && !caught_up && !whole)
        return;
    t->submitted = 1;
    if (!t->record || !t->px->opt.store) {
        t->settled = 1;
        return;
    }
    build_exchange(t, t->client_gone);
    struct exchange *ex = t->ex;
    t->ex = NULL;
    atomic_fetch_add(&t->refs, 1); /* the writer's, until on_committed */
    if (store_submit_notify(t->px->opt.store, ex, on_committed, t) < 0) {
        atomic_fetch_sub(&t->refs, 1);
        t->settled = 1;
    }
}

/* The upstream transfer is over. Loop thread. */
static void on_done(struct upstream_job *job, CURLcode result)
{
    struct transfer *t = job_transfer(job);
    t->result = result;
    pthread_mutex_lock(&t->mu);
    int gone = t->client_gone;
    /* Failed before the client had anything: it gets a 502, never a short answer. */
    int failed = !gone && (!t->head_seen || !t->head_ready || t->too_many_headers ||
                           (result != CURLE_OK && !t->head_taken));
    if (failed)
        t->head_ready = 0;
    pthread_mutex_unlock(&t->mu);
    if (result != CURLE_OK && !gone && !failed) {
        log_msg(LOG_WARN,
                "%s: upstream failed mid-response (%s): %s; the client's response is cut "
                "short and stored as incomplete",
                t->what, failure_cause(result),
                t->errbuf[0] ? t->errbuf : curl_easy_strerror(result));
    }
    char *failure = NULL;
    if (failed) {
        /* No usable head: the client gets a 502 that says why, recorded as such. */
        const char *cause = t->too_many_headers ? "response head too large" : failure_cause(result);
        if (result == CURLE_OK)
            t->result = CURLE_GOT_NOTHING;
        log_msg(LOG_WARN, "%s: upstream %s: %s", t->what, cause,
                t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result));
        failure = failure_json(t, cause);
        struct exchange *ex = t->ex;
        headers_free(&ex->response_headers);
        headers_add(&ex->response_headers, "Content-Type", "application/json");
        ex->status = 502;
        free(ex->error);
        ex->error = strdup(cause);
        ex->ttfb_us = now_mono_us() - t->start_mono;
        buf_free(&t->raw);
        buf_puts(&t->raw, failure ? failure : "{}");
        t->codec_checked = 1;
        codec_free(t->codec);
        t->codec = NULL;
        free(t->chunks);
        t->chunks = NULL;
        t->nchunks = 0;
        t->result = CURLE_OK; /* the 502 itself is a complete answer */
    }
    pthread_mutex_lock(&t->mu);
    if (failed) {
        t->failed = 1;
        t->failure_body = failure;
        t->head_ready = 1;
        headers_free(&t->resp_headers);
        t->stream_size = MHD_SIZE_UNKNOWN;
        t->pending_off = t->pending.len;
    }
    t->upstream_done = 1;
    maybe_submit(t, failed);
    wake_client(t);
    pthread_mutex_unlock(&t->mu);
    transfer_release(t); /* the loop's */
}

/* ---- the client's side (the server's worker threads) ----------------------------------- */

/* Suspend the client's connection until wake_client() resumes it. With t->mu held. */
static void wait_for_upstream(struct transfer *t)
{
    t->client_waiting = 1;
    MHD_suspend_connection(t->conn);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    struct transfer *t = cls;
    (void)pos;
    ssize_t ret = 0;
    pthread_mutex_lock(&t->mu);
    int stopping = atomic_load(&t->px->stopping);
    size_t give = can_give(t);
    if (give == 0 && stopping && t->pending.len > t->pending_off)
        give = t->pending.len - t->pending_off; /* nothing waits for a commit any more */
    if (give > 0) {
        if (give > max)
            give = max;
        memcpy(out, t->pending.p + t->pending_off, give);
        t->pending_off += give;
        t->given += give;
        if (t->paused && t->pending.len - t->pending_off <= PROXY_PENDING_CAP / 2) {
            t->paused = 0;
            upstream_unpause(&t->job);
        }
        maybe_submit(t, 0);
        ret = (ssize_t)give;
    } else if (t->upstream_done && (t->settled || stopping)) {
        ret = t->result != CURLE_OK ? MHD_CONTENT_READER_END_WITH_ERROR
                                    : MHD_CONTENT_READER_END_OF_STREAM;
    } else if (stopping) {
        ret = MHD_CONTENT_READER_END_WITH_ERROR;
    } else {
        maybe_submit(t, 1); /* the client has all but the end: store it */
        if (t->settled) {
            ret = t->result != CURLE_OK ? MHD_CONTENT_READER_END_WITH_ERROR
                                        : MHD_CONTENT_READER_END_OF_STREAM;
            if (can_give(t) > 0) { /* the held last byte is free now */
                memcpy(out, t->pending.p + t->pending_off, 1);
                t->pending_off++;
                t->given++;
                ret = 1;
            }
        } else {
            wait_for_upstream(t);
            ret = 0; /* called again once resumed */
        }
    }
    pthread_mutex_unlock(&t->mu);
    return ret;
}

/* The server let go of the response: the end of the exchange for the client's side. */
static void stream_free(void *cls)
{
    struct transfer *t = cls;
    pthread_mutex_lock(&t->mu);
    t->client_waiting = 0;
    if (!t->submitted && t->head_taken) {
        /* The client went away mid-stream: keep what arrived, marked incomplete. */
        log_msg(LOG_WARN, "%s: client disconnected before the end; stored as incomplete", t->what);
    }
    t->client_gone = 1;
    if (!t->upstream_done)
        upstream_abort(&t->job);
    else
        maybe_submit(t, 1);
    pthread_mutex_unlock(&t->mu);
    transfer_release(t);
}

/* The server's ready hook: fill resp from the upstream's head, or wait for it. */
static int proxy_ready(void *cls, struct server_response *resp)
{
    struct transfer *t = cls;
    int rc = 1;
    pthread_mutex_lock(&t->mu);
    int stopping = atomic_load(&t->px->stopping);
    if (!t->head_ready) {
        if (!stopping) {
            wait_for_upstream(t);
            rc = 0;
        } else {
            server_response_error(resp, 503, "apisim is stopping");
        }
        goto out;
    }
    if (t->upstream_done)
        maybe_submit(t, 0); /* small and complete: stored before it is sent whole */
    if (t->submitted && !t->settled && !stopping) {
        wait_for_upstream(t); /* for the commit */
        rc = 0;
        goto out;
    }
    t->head_taken = 1;
    if (t->failed) {
        char *body = t->failure_body;
        t->failure_body = NULL;
        if (body)
            server_response_json(resp, 502, body);
        else
            rc = -1;
        goto out;
    }
    resp->status = t->status;
    for (size_t i = 0; i < t->resp_headers.n; i++)
        if (headers_add(&resp->headers, t->resp_headers.v[i].name, t->resp_headers.v[i].value) < 0)
            rc = -1;
    if (t->upstream_done && t->submitted && t->result == CURLE_OK) {
        /* Complete and committed already (a small answer usually is): send it whole. */
        size_t n = t->pending.len - t->pending_off;
        if (t->pending_off == 0 && n > 0) {
            /* The response takes the buffer itself: no copy, and no malloc of a body's
             * size (from 1 KiB, glibc's malloc first consolidates its small free lists). */
            resp->body = (unsigned char *)buf_steal(&t->pending, &resp->body_len);
        } else if ((resp->body = malloc(n ? n : 1))) {
            if (n) /* an empty answer (HEAD, 204, length 0) may have no buffer at all */
                memcpy(resp->body, t->pending.p + t->pending_off, n);
            resp->body_len = n;
            t->pending_off += n;
        } else {
            rc = -1;
        }
        t->given += resp->body ? resp->body_len : 0;
    } else {
        resp->reader = stream_reader;
        resp->stream_size = t->stream_size;
        resp->quiet_us = t->px->opt.upstream_timeout_us; /* the longest pause let pass */
    }
out:
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int proxy_forward(struct proxy *px, struct server_request *req, struct server_response *resp,
                  int record, void (*on_stored)(void *cls, int64_t id), void *cls)
{
    char err[APISIM_ERR_LEN];
    if (atomic_load(&px->stopping)) {
        server_response_error(resp, 503, "apisim is stopping");
        return 0;
    }
    struct transfer *t = transfer_new(px, req, record, err);
    if (!t) {
        log_msg(LOG_ERROR, "%s", err);
        return -1;
    }
    t->on_stored = on_stored;
    t->on_stored_cls = cls;
    t->job.done = on_done;
    t->job.kick = on_kick;
    t->job.timeout_us = px->opt.upstream_timeout_us;
    t->job.last_active_us = t->start_mono;
    t->job.errbuf = t->errbuf;
    pthread_mutex_lock(&px->live_mu);
    t->live_next = px->live;
    if (px->live)
        px->live->live_prev = t;
    px->live = t;
    pthread_mutex_unlock(&px->live_mu);
    atomic_fetch_add(&t->refs, 1); /* the loop's, until on_done */
    if (upstream_start(px->up, &t->job) < 0) {
        atomic_fetch_sub(&t->refs, 1);
        transfer_release(t);
        server_response_error(resp, 503, "apisim is stopping");
        return 0;
    }
    /* The client's reference: the server releases it through reader_free. */
    resp->ready = proxy_ready;
    resp->ready_cls = t;
    resp->reader_cls = t;
    resp->reader_free = stream_free;
    return 0;
}

int proxy_handle(void *app, struct server_request *req, struct server_response *resp)
{
    struct proxy *px = app;
    if (!req->authority && !px->base) {
        log_msg(LOG_WARN, "%s %s: no upstream for a request in origin form", req->method,
                req->path);
        server_response_error(resp, 400,
                              "apisim record has no --upstream: start it with --upstream URL, or "
                              "send requests through it as a proxy (HTTP_PROXY/HTTPS_PROXY, "
                              "curl -x) so they name their host");
        return 0;
    }
    return proxy_forward(px, req, resp, 1, NULL, NULL);
}
