#include "proxy.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"

#define PROXY_MAX_RESPONSE_HEADERS 512
#define PROXY_MAX_HEADER_LINE (64 * 1024)
/* How much of a streamed body may wait for a slow client before curl is paused. */
#define PROXY_PENDING_CAP (4u * 1024 * 1024)

struct proxy {
    struct proxy_options opt;
    char *base;           /* upstream without a trailing '/'; NULL when none */
    char *base_scheme;    /* the upstream's scheme and authority, stored with each exchange */
    char *base_authority; /* forwarded to it */
    struct curl_slist *connect_to; /* --connect-to, as curl takes it */
    /* DNS and TLS sessions shared by every thread's transfers (a TLS upstream resumes
     * sessions instead of full handshakes). Connections are deliberately not shared: on
     * a reused connection an upstream that writes head and body separately meets Nagle
     * and delayed ACKs, and the recorded time to first byte grows by 40 ms that a
     * client's own fresh connection would not see. */
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    atomic_int_least64_t seq;
    atomic_uint_least64_t recorded;
};

/* One forwarded request, from the handler to the end of its response. */
struct transfer {
    struct proxy *px;
    CURL *easy;
    CURLM *multi;
    struct curl_slist *req_headers;
    char errbuf[CURL_ERROR_SIZE];
    struct exchange *ex; /* what will be stored; owns copies of the request */
    int record;          /* store it (0: spy forwarding only) */

    int64_t start_mono;
    int status;
    int headers_done; /* the blank line after the final response head was seen */
    int done;         /* curl finished (well or not) */
    CURLcode result;
    int too_many_headers;

    struct buf pending; /* raw bytes received and not yet given to the client */
    size_t pending_off; /* bytes of pending already given */
    int paused;

    struct codec *codec; /* decoder when the body is gzip/deflate */
    int codec_checked;   /* the response's Content-Encoding has been looked at */
    int decode_failed;
    struct buf raw;     /* raw body as received (kept when it cannot be decoded) */
    struct buf decoded; /* decoded body */
    int truncated;      /* the body passed max_record_body */
    struct chunk *chunks;
    size_t nchunks, capchunks;

    int finished; /* exchange handed to the store */
    int64_t id;
    int64_t last_data_mono; /* when the upstream last sent something (stall detection) */
    int failure_logged;
    char what[160];   /* "METHOD /path" for log lines, valid after ex is handed over */
    char origin[300]; /* "scheme://authority" the request went to */
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

int proxy_new(struct proxy **out, const struct proxy_options *opt, char *err)
{
    if (opt->upstream && proxy_check_upstream(opt->upstream, err) < 0)
        return -1;
    struct proxy *px = calloc(1, sizeof *px);
    if (!px || (opt->upstream && (!(px->base = strdup(opt->upstream)) || split_base(px) < 0))) {
        proxy_free(px);
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    size_t n = px->base ? strlen(px->base) : 0;
    while (n > 0 && px->base[n - 1] == '/')
        px->base[--n] = '\0';
    px->opt = *opt;
    for (const char *const *r = opt->connect_to; r && *r; r++) {
        struct curl_slist *l = curl_slist_append(px->connect_to, *r);
        if (!l) {
            proxy_free(px);
            snprintf(err, APISIM_ERR_LEN, "out of memory");
            return -1;
        }
        px->connect_to = l;
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&px->share_locks[i], NULL);
    if ((px->share = curl_share_init())) {
        curl_share_setopt(px->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(px->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(px->share, CURLSHOPT_USERDATA, px);
        curl_share_setopt(px->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(px->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    }
    int64_t seq = 0;
    if (opt->store && store_max_seq(opt->store, opt->session, &seq, err) < 0) {
        proxy_free(px);
        return -1;
    }
    atomic_store(&px->seq, seq);
    *out = px;
    return 0;
}

void proxy_free(struct proxy *px)
{
    if (!px)
        return;
    curl_share_cleanup(px->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&px->share_locks[i]);
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

static void transfer_free(struct transfer *t)
{
    if (!t)
        return;
    if (t->multi && t->easy)
        curl_multi_remove_handle(t->multi, t->easy);
    curl_easy_cleanup(t->easy);
    curl_multi_cleanup(t->multi);
    curl_slist_free_all(t->req_headers);
    exchange_free(t->ex);
    buf_free(&t->pending);
    buf_free(&t->raw);
    buf_free(&t->decoded);
    codec_free(t->codec);
    free(t->chunks);
    free(t);
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *cls)
{
    struct transfer *t = cls;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* A new response head (after 1xx, the final one replaces it). */
        headers_free(&t->ex->response_headers);
        t->headers_done = 0;
        const char *sp = memchr(data, ' ', n);
        t->status = sp ? (int)strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    if (n <= 2 && (n == 0 || data[0] == '\r' || data[0] == '\n')) {
        if (t->status >= 200)
            t->headers_done = 1;
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

static size_t on_body(char *data, size_t size, size_t nmemb, void *cls)
{
    struct transfer *t = cls;
    size_t n = size * nmemb;
    t->last_data_mono = now_mono_us();
    if (!t->headers_done)
        t->headers_done = 1;
    if (t->ex->ttfb_us == 0)
        t->ex->ttfb_us = now_mono_us() - t->start_mono;
    if (t->pending.len - t->pending_off > PROXY_PENDING_CAP) {
        t->paused = 1;
        return CURL_WRITEFUNC_PAUSE; /* the client is slow: stop reading the upstream */
    }
    /* Compact what the client has already taken. */
    if (t->pending_off > 0 && t->pending_off == t->pending.len) {
        t->pending.len = 0;
        t->pending_off = 0;
    }
    if (buf_append(&t->pending, data, n) < 0)
        return 0;
    if (t->record && !t->codec_checked) {
        /* The head is complete once body bytes flow: pick the decoder now. */
        const char *enc = headers_get(&t->ex->response_headers, "content-encoding");
        t->codec = enc ? codec_new(enc) : NULL;
        t->codec_checked = 1;
    }
    if (t->record && !t->truncated) {
        size_t before = t->codec ? t->decoded.len : t->raw.len;
        if (buf_append(&t->raw, data, n) < 0) {
            t->truncated = 1;
        } else if (t->codec && !t->decode_failed) {
            if (codec_feed(t->codec, data, n, &t->decoded) < 0)
                t->decode_failed = 1;
        }
        if (!t->truncated)
            note_chunk(t, (t->codec && !t->decode_failed ? t->decoded.len : t->raw.len) - before);
    }
    return n;
}

/* Run curl until cond(t) holds or the transfer ends; waits on the sockets, never spins.
 * --upstream-timeout bounds the time to the response head (from the request's arrival) and
 * every stall after it: time spent here with nothing arriving. (curl's own low-speed check
 * averages over several seconds, so a stall after a burst would pass unnoticed that long.) */
static void drive(struct transfer *t, int (*cond)(const struct transfer *))
{
    int64_t entered = now_mono_us();
    int64_t limit = t->px->opt.upstream_timeout_us;
    while (!t->done && !cond(t)) {
        int running = 0;
        if (t->paused && t->pending.len - t->pending_off <= PROXY_PENDING_CAP / 2) {
            t->paused = 0;
            curl_easy_pause(t->easy, CURLPAUSE_CONT);
        }
        CURLMcode mc = curl_multi_perform(t->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(t->multi, &left))) {
            if (msg->msg == CURLMSG_DONE) {
                t->done = 1;
                t->result = msg->data.result;
            }
        }
        if (mc != CURLM_OK && !t->done) {
            t->done = 1;
            t->result = CURLE_FAILED_INIT;
        }
        if (t->done || cond(t))
            break;
        if (t->paused)
            break; /* the client must take data first */
        int64_t now = now_mono_us();
        int64_t since = t->last_data_mono > entered ? t->last_data_mono : entered;
        if ((!t->headers_done && now - t->start_mono > limit) ||
            (t->headers_done && now - since > limit)) {
            t->done = 1;
            t->result = CURLE_OPERATION_TIMEDOUT;
            snprintf(t->errbuf, sizeof t->errbuf,
                     "nothing received from the upstream for %lld ms (--upstream-timeout)",
                     (long long)((now - (t->headers_done ? since : t->start_mono)) / 1000));
            break;
        }
        curl_multi_poll(t->multi, NULL, 0, 200, NULL);
    }
}

static int cond_headers(const struct transfer *t)
{
    return t->headers_done;
}

static int cond_data(const struct transfer *t)
{
    return t->pending.len - t->pending_off > 1;
}

static int cond_never(const struct transfer *t)
{
    (void)t;
    return 0;
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
        return "connection reset";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return "TLS certificate rejected (use --insecure to accept it)";
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

/* Where a request goes: its own host when proxied (absolute form, CONNECT tunnel), else
 * the upstream. Sets the exchange's scheme and authority and t->origin. Returns 0 or -1. */
static int target_of(const struct proxy *px, const struct server_request *req, struct transfer *t,
                     struct buf *url)
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
    t->px = px;
    t->record = record;
    t->start_mono = req->received_mono_us;
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
    ex->seq = atomic_fetch_add(&px->seq, 1) + 1;
    if (!ex->session || !ex->source || !ex->method || !ex->path || !ex->query)
        goto oom;
    for (size_t i = 0; i < req->headers.n; i++)
        if (headers_add(&ex->request_headers, req->headers.v[i].name, req->headers.v[i].value) < 0)
            goto oom;
    if (req->body_len) {
        if (!(ex->request_body = malloc(req->body_len)))
            goto oom;
        memcpy(ex->request_body, req->body, req->body_len);
        ex->request_body_len = req->body_len;
    }

    if (target_of(px, req, t, &url) < 0)
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

    CURL *e = t->easy = curl_easy_init();
    if (!e || !(t->multi = curl_multi_init()))
        goto oom;
    curl_easy_setopt(e, CURLOPT_URL, url.p);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->req_headers);
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
    long timeout_ms = (long)(px->opt.upstream_timeout_us / 1000);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
    /* A stream that stalls longer than the timeout is a failure; a long live one is not. */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, timeout_ms / 1000 > 0 ? timeout_ms / 1000 : 1L);
    if (px->opt.insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (px->opt.upstream_cacert)
        curl_easy_setopt(e, CURLOPT_CAINFO, px->opt.upstream_cacert);
    if (px->connect_to)
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, px->connect_to);
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
               strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body_len ? (const char *)req->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        /* curl would add a form content type; keep exactly what the client sent. */
        if (!headers_get(&req->headers, "content-type"))
            t->req_headers = curl_slist_append(t->req_headers, "Content-Type:");
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->req_headers);
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    if (curl_multi_add_handle(t->multi, e) != CURLM_OK)
        goto oom;
    buf_free(&url);
    return t;
oom:
    snprintf(err, APISIM_ERR_LEN, "out of memory preparing the upstream request");
    buf_free(&url);
    transfer_free(t);
    return NULL;
}

/* Move the recorded response into the exchange: decoded body, redaction, timings. */
static void build_exchange(struct transfer *t)
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
    if (!t->done || t->result != CURLE_OK || t->truncated)
        ex->complete = 0;
    /* The upstream failed after its head: the cause is kept, so replay can repeat it. */
    if (t->done && t->result != CURLE_OK && !ex->error)
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

/* Hand the exchange to the writer; wait for the commit when the client is still there. */
static void finish(struct transfer *t, int wait)
{
    if (t->finished || !t->record)
        return;
    t->finished = 1;
    build_exchange(t);
    struct exchange *ex = t->ex;
    t->ex = NULL;
    if (store_submit(t->px->opt.store, ex, wait, &t->id) == 0)
        atomic_fetch_add(&t->px->recorded, 1);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max)
{
    struct transfer *t = cls;
    (void)pos;
    for (;;) {
        size_t avail = t->pending.len - t->pending_off;
        /* Keep the last byte back until the exchange is committed. */
        size_t give = t->done ? avail : (avail > 1 ? avail - 1 : 0);
        if (t->done && t->result != CURLE_OK && !t->failure_logged) {
            t->failure_logged = 1;
            log_msg(LOG_WARN,
                    "%s: upstream failed mid-response (%s): %s; the client's "
                    "response is cut short and stored as incomplete",
                    t->what, failure_cause(t->result),
                    t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result));
        }
        if (give > 0) {
            if (t->done && give == avail)
                finish(t, 1);
            if (give > max)
                give = max;
            memcpy(out, t->pending.p + t->pending_off, give);
            t->pending_off += give;
            return (ssize_t)give;
        }
        if (t->done) {
            finish(t, 1);
            return t->result != CURLE_OK ? MHD_CONTENT_READER_END_WITH_ERROR
                                         : MHD_CONTENT_READER_END_OF_STREAM;
        }
        drive(t, cond_data);
    }
}

static void stream_free(void *cls)
{
    struct transfer *t = cls;
    if (!t->done) {
        /* The client went away mid-stream: keep what arrived, marked incomplete. */
        log_msg(LOG_WARN, "%s: client disconnected before the end; stored as incomplete", t->what);
    }
    finish(t, 0);
    transfer_free(t);
}

/* Prepare the client's response from the upstream's head. */
static int answer_head(struct transfer *t, struct server_response *resp)
{
    resp->status = t->status;
    for (size_t i = 0; i < t->ex->response_headers.n; i++) {
        const struct header *h = &t->ex->response_headers.v[i];
        if (header_is_hop_by_hop(h->name))
            continue;
        if (headers_add(&resp->headers, h->name, h->value) < 0)
            return -1;
    }
    return 0;
}

static int answer_failure(struct transfer *t, struct server_response *resp)
{
    const char *cause = t->too_many_headers ? "response head too large" : failure_cause(t->result);
    log_msg(LOG_WARN, "%s %s: upstream %s: %s", t->ex->method, t->ex->path, cause,
            t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result));
    char *body = failure_json(t, cause);
    if (!body)
        return -1;
    headers_free(&t->ex->response_headers);
    headers_add(&t->ex->response_headers, "Content-Type", "application/json");
    t->ex->status = 502;
    t->ex->error = strdup(cause);
    t->ex->ttfb_us = now_mono_us() - t->start_mono;
    buf_free(&t->raw);
    buf_puts(&t->raw, body);
    free(t->chunks);
    t->chunks = NULL;
    t->nchunks = 0;
    t->result = CURLE_OK; /* the 502 itself is a complete answer */
    server_response_json(resp, 502, body);
    return 0;
}

static int forward(struct proxy *px, struct server_request *req, struct server_response *resp,
                   int record, int stream, int64_t *id_out)
{
    char err[APISIM_ERR_LEN];
    struct transfer *t = transfer_new(px, req, record, err);
    if (!t) {
        log_msg(LOG_ERROR, "%s", err);
        return -1;
    }
    drive(t, cond_headers);
    if (t->done && (t->result != CURLE_OK || t->status == 0)) {
        if (answer_failure(t, resp) < 0) {
            transfer_free(t);
            return -1;
        }
        finish(t, 1);
        if (id_out)
            *id_out = t->id;
        transfer_free(t);
        return 0;
    }
    t->ex->status = t->status;
    if (answer_head(t, resp) < 0) {
        transfer_free(t);
        return -1;
    }
    /* Small answers are usually complete by now: send them whole. */
    if (!stream)
        drive(t, cond_never);
    if (t->done) {
        if (t->result != CURLE_OK && !stream) {
            headers_free(&resp->headers);
            if (answer_failure(t, resp) < 0) {
                transfer_free(t);
                return -1;
            }
        } else {
            size_t n = t->pending.len - t->pending_off;
            resp->body = malloc(n ? n : 1);
            if (!resp->body) {
                transfer_free(t);
                return -1;
            }
            memcpy(resp->body, t->pending.p + t->pending_off, n);
            resp->body_len = n;
        }
        finish(t, 1);
        if (id_out)
            *id_out = t->id;
        transfer_free(t);
        return 0;
    }
    resp->reader = stream_reader;
    resp->reader_cls = t;
    resp->reader_free = stream_free;
    resp->quiet_us = px->opt.upstream_timeout_us; /* the longest pause drive() lets pass */
    const char *cl = headers_get(&t->ex->response_headers, "content-length");
    resp->stream_size = MHD_SIZE_UNKNOWN;
    if (cl && !headers_get(&t->ex->response_headers, "transfer-encoding"))
        resp->stream_size = strtoull(cl, NULL, 10);
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
    return forward(px, req, resp, 1, 1, NULL);
}

int proxy_forward_whole(struct proxy *px, struct server_request *req, struct server_response *resp,
                        int record, int64_t *id_out)
{
    if (id_out)
        *id_out = 0;
    return forward(px, req, resp, record, 0, id_out);
}
