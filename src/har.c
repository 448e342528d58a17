#include "har.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define HAR_DEFAULT_MAX_BODY ((size_t)64 * 1024 * 1024)
#define HAR_MAX_URL (64 * 1024)
#define HAR_MAX_METHOD 32
#define HAR_MAX_HEADERS 1024
#define HAR_MAX_HEADER_NAME 1024
#define HAR_MAX_HEADER_VALUE (64 * 1024)
#define HAR_MAX_CHUNKS (1024 * 1024)
#define HAR_MAX_SHORT_TEXT 4096 /* error texts, encodings, session names, match keys */

/* ---------------------------------------------------------------- small helpers */

static size_t max_body_of(const struct har_limits *lim)
{
    return lim && lim->max_body ? lim->max_body : HAR_DEFAULT_MAX_BODY;
}

/* Inflate n bytes (gzip or zlib when window_bits is 15 + 32, raw deflate when -15) into b.
 * Returns 0, -1 when the data is not valid, -2 when b's cap is exceeded. */
static int inflate_append(const unsigned char *p, size_t n, int window_bits, struct buf *b)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, window_bits) != Z_OK)
        return -2;
    int rc = -1;
    unsigned char out[16384];
    z.next_in = (unsigned char *)p;
    z.avail_in = (uInt)n;
    if ((size_t)z.avail_in != n)
        goto out; /* bodies past 4 GiB are over any cap anyway */
    for (;;) {
        z.next_out = out;
        z.avail_out = sizeof out;
        int zr = inflate(&z, Z_NO_FLUSH);
        size_t got = sizeof out - z.avail_out;
        if (got && buf_append(b, out, got) < 0) {
            rc = -2;
            goto out;
        }
        if (zr == Z_STREAM_END)
            break;
        if (zr != Z_OK || (z.avail_in == 0 && got == 0))
            goto out;
    }
    rc = 0;
out:
    inflateEnd(&z);
    return rc;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decode s[0..n) ('+' as space, as forms do). New string, NULL when out of memory. */
static char *url_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out[j++] = (char)(hi * 16 + lo);
                i += 2;
                continue;
            }
        }
        out[j++] = s[i] == '+' ? ' ' : s[i];
    }
    out[j] = '\0';
    return out;
}

/* ---------------------------------------------------------------- time and status */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Read exactly n digits at *s. */
static int read_digits(const char **s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*s)[i]))
            return -1;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

int har_parse_time(const char *s, int64_t *out_us)
{
    int y, mo, d, h, mi, sec;
    if (!s || read_digits(&s, 4, &y) < 0 || *s++ != '-' || read_digits(&s, 2, &mo) < 0 ||
        *s++ != '-' || read_digits(&s, 2, &d) < 0)
        return -1;
    if (*s != 'T' && *s != 't' && *s != ' ')
        return -1;
    s++;
    if (read_digits(&s, 2, &h) < 0 || *s++ != ':' || read_digits(&s, 2, &mi) < 0 || *s++ != ':' ||
        read_digits(&s, 2, &sec) < 0)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    int64_t frac_us = 0;
    if (*s == '.' || *s == ',') {
        s++;
        if (!isdigit((unsigned char)*s))
            return -1;
        int64_t scale = 100000;
        while (isdigit((unsigned char)*s)) {
            frac_us += (*s - '0') * scale;
            scale /= 10;
            s++;
        }
    }
    int64_t offset_s = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1, oh, om = 0;
        s++;
        if (read_digits(&s, 2, &oh) < 0)
            return -1;
        if (*s == ':')
            s++;
        if (isdigit((unsigned char)*s) && read_digits(&s, 2, &om) < 0)
            return -1;
        if (oh > 23 || om > 59)
            return -1;
        offset_s = sign * (oh * 3600 + om * 60);
    }
    if (*s)
        return -1;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t t = days * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    *out_us = t * 1000000 + frac_us;
    return 0;
}

const char *har_status_text(int status)
{
    static const struct {
        int code;
        const char *text;
    } t[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {422, "Unprocessable Content"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
        {529, "Overloaded"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].code == status)
            return t[i].text;
    return "";
}

/* ---------------------------------------------------------------- HAR out */

static int add_str(cJSON *o, const char *k, const char *v)
{
    return cJSON_AddStringToObject(o, k, v ? v : "") ? 0 : -1;
}

static int add_num(cJSON *o, const char *k, double v)
{
    return cJSON_AddNumberToObject(o, k, v) ? 0 : -1;
}

/* ms with µs precision, as HAR counts time. */
static double us_to_ms(int64_t us)
{
    return (double)us / 1000.0;
}

static cJSON *har_headers(const struct headers *h)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < h->n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            goto fail;
        if (!cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            goto fail;
        }
        if (add_str(o, "name", h->v[i].name) < 0 || add_str(o, "value", h->v[i].value) < 0)
            goto fail;
    }
    return arr;
fail:
    cJSON_Delete(arr);
    return NULL;
}

/* Percent-decode s[0..n) when that gives UTF-8 text, else copy it as written. */
static char *query_part(const char *s, size_t n)
{
    char *d = url_decode(s, n);
    if (d && !is_utf8_text((const unsigned char *)d, strlen(d))) {
        free(d);
        d = xstrndup(s, n);
    }
    return d;
}

/* HAR's queryString: the query's parameters, percent-decoded, in order. */
static cJSON *har_query(const char *q)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    while (q && *q) {
        size_t n = strcspn(q, "&");
        if (n) {
            const char *eq = memchr(q, '=', n);
            size_t kn = eq ? (size_t)(eq - q) : n;
            char *k = query_part(q, kn);
            char *v = eq ? query_part(eq + 1, n - kn - 1) : xstrndup("", 0);
            cJSON *o = cJSON_CreateObject();
            int bad = !k || !v || !o;
            if (o && !cJSON_AddItemToArray(arr, o)) {
                cJSON_Delete(o);
                bad = 1;
            }
            if (!bad)
                bad = add_str(o, "name", k) < 0 || add_str(o, "value", v) < 0;
            free(k);
            free(v);
            if (bad) {
                cJSON_Delete(arr);
                return NULL;
            }
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return arr;
}

/* Set text (and "encoding"/"_encoding": "base64" for binary) on o. */
static int add_body_text(cJSON *o, const unsigned char *p, size_t n, const char *enc_key)
{
    if (!n)
        return add_str(o, "text", "");
    if (is_utf8_text(p, n)) {
        /* Bodies need not end in NUL; UTF-8 text holds none, so a copy is a C string. */
        char *text = xstrndup((const char *)p, n);
        int rc = !text || add_str(o, "text", text) < 0 ? -1 : 0;
        free(text);
        return rc;
    }
    char *b64 = base64_encode(p, n);
    int rc = !b64 || add_str(o, "text", b64) < 0 || add_str(o, enc_key, "base64") < 0 ? -1 : 0;
    free(b64);
    return rc;
}

static const char *mime_of(const struct headers *h, const unsigned char *body, size_t n)
{
    const char *ct = headers_get(h, "content-type");
    if (ct)
        return ct;
    return n && !is_utf8_text(body, n) ? "application/octet-stream" : "";
}

cJSON *har_log_new(const char *version, cJSON **entries)
{
    cJSON *doc = cJSON_CreateObject(), *log = NULL, *creator = NULL, *ents = NULL;
    if (!doc || !(log = cJSON_AddObjectToObject(doc, "log")) ||
        add_str(log, "version", "1.2") < 0 ||
        !(creator = cJSON_AddObjectToObject(log, "creator")) ||
        add_str(creator, "name", HAR_CREATOR) < 0 || add_str(creator, "version", version) < 0 ||
        !cJSON_AddArrayToObject(log, "pages") || !(ents = cJSON_AddArrayToObject(log, "entries"))) {
        cJSON_Delete(doc);
        return NULL;
    }
    if (entries)
        *entries = ents;
    return doc;
}

/* The _apisim object: what HAR cannot say. */
static cJSON *apisim_extra(const struct exchange *ex)
{
    cJSON *o = cJSON_CreateObject(), *chunks = NULL;
    if (!o || add_str(o, "session", ex->session) < 0 || add_num(o, "seq", (double)ex->seq) < 0 ||
        add_str(o, "source", ex->source ? ex->source : "record") < 0 ||
        add_num(o, "ttfb_us", (double)ex->ttfb_us) < 0 ||
        add_num(o, "duration_us", (double)ex->duration_us) < 0 ||
        add_num(o, "complete", ex->complete) < 0 ||
        add_num(o, "delay_ms", (double)ex->delay_ms) < 0)
        goto fail;
    if (ex->error && add_str(o, "error", ex->error) < 0)
        goto fail;
    if (ex->response_encoding && add_str(o, "response_encoding", ex->response_encoding) < 0)
        goto fail;
    if (!(chunks = cJSON_AddArrayToObject(o, "chunks")))
        goto fail;
    for (size_t i = 0; i < ex->nchunks; i++) {
        double pair[2] = {(double)ex->chunks[i].offset_us, (double)ex->chunks[i].size};
        cJSON *p = cJSON_CreateDoubleArray(pair, 2);
        if (!p || !cJSON_AddItemToArray(chunks, p)) {
            cJSON_Delete(p);
            goto fail;
        }
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* "scheme://authority" of origin, or from the Host header, or http://localhost. */
static char *origin_for(const struct exchange *ex, const char *origin)
{
    if (origin && *origin) {
        const char *p = strstr(origin, "://");
        size_t n = p ? (size_t)(p + 3 - origin) + strcspn(p + 3, "/?#") : strlen(origin);
        return xstrndup(origin, n);
    }
    const char *host = headers_get(&ex->request_headers, "host");
    struct buf b = {.max = HAR_MAX_URL};
    if (buf_printf(&b, "http://%s", host && *host ? host : "localhost") < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

cJSON *har_entry_from_exchange(const struct exchange *ex, const char *origin)
{
    cJSON *e = cJSON_CreateObject(), *req, *resp, *content, *timings, *item = NULL;
    char *base = origin_for(ex, origin);
    struct buf url = {0};
    char started[40];
    int ok = 0;
    if (!e || !base)
        goto out;
    format_iso8601_ms(ex->started_us, started, sizeof started);
    if (buf_printf(&url, "%s%s%s%s", base, ex->path ? ex->path : "/",
                   ex->query && *ex->query ? "?" : "", ex->query ? ex->query : "") < 0)
        goto out;
    int64_t duration = ex->duration_us > ex->ttfb_us ? ex->duration_us : ex->ttfb_us;
    if (add_str(e, "startedDateTime", started) < 0 || add_num(e, "time", us_to_ms(duration)) < 0)
        goto out;

    if (!(req = cJSON_AddObjectToObject(e, "request")) || add_str(req, "method", ex->method) < 0 ||
        add_str(req, "url", url.p) < 0 || add_str(req, "httpVersion", "HTTP/1.1") < 0 ||
        !cJSON_AddArrayToObject(req, "cookies"))
        goto out;
    if (!(item = har_headers(&ex->request_headers)) || !cJSON_AddItemToObject(req, "headers", item))
        goto out_item;
    if (!(item = har_query(ex->query)) || !cJSON_AddItemToObject(req, "queryString", item))
        goto out_item;
    if (ex->request_body_len) {
        cJSON *pd = cJSON_AddObjectToObject(req, "postData");
        if (!pd ||
            add_str(pd, "mimeType",
                    mime_of(&ex->request_headers, ex->request_body, ex->request_body_len)) < 0 ||
            add_body_text(pd, ex->request_body, ex->request_body_len, "_encoding") < 0)
            goto out;
    }
    if (add_num(req, "headersSize", -1) < 0 ||
        add_num(req, "bodySize", (double)ex->request_body_len) < 0)
        goto out;

    const char *location = headers_get(&ex->response_headers, "location");
    if (!(resp = cJSON_AddObjectToObject(e, "response")) ||
        add_num(resp, "status", ex->status) < 0 ||
        add_str(resp, "statusText", har_status_text(ex->status)) < 0 ||
        add_str(resp, "httpVersion", "HTTP/1.1") < 0 || !cJSON_AddArrayToObject(resp, "cookies"))
        goto out;
    if (!(item = har_headers(&ex->response_headers)) ||
        !cJSON_AddItemToObject(resp, "headers", item))
        goto out_item;
    if (!(content = cJSON_AddObjectToObject(resp, "content")) ||
        add_num(content, "size", (double)ex->response_body_len) < 0 ||
        add_str(content, "mimeType",
                mime_of(&ex->response_headers, ex->response_body, ex->response_body_len)) < 0 ||
        add_body_text(content, ex->response_body, ex->response_body_len, "encoding") < 0 ||
        add_str(resp, "redirectURL", location) < 0 || add_num(resp, "headersSize", -1) < 0 ||
        add_num(resp, "bodySize", (double)ex->response_body_len) < 0)
        goto out;

    if (!cJSON_AddObjectToObject(e, "cache") ||
        !(timings = cJSON_AddObjectToObject(e, "timings")) || add_num(timings, "send", 0) < 0 ||
        add_num(timings, "wait", us_to_ms(ex->ttfb_us)) < 0 ||
        add_num(timings, "receive", us_to_ms(duration - ex->ttfb_us)) < 0)
        goto out;
    if (!(item = apisim_extra(ex)) || !cJSON_AddItemToObject(e, "_apisim", item))
        goto out_item;
    ok = 1;
    goto out;
out_item:
    cJSON_Delete(item);
out:
    free(base);
    buf_free(&url);
    if (!ok) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

/* ---------------------------------------------------------------- HAR in */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, APISIM_ERR_LEN, __VA_ARGS__);                                                \
        goto out;                                                                                  \
    } while (0)

/* What a JSON value is, for messages: "a number", "missing". */
static const char *json_kind(const cJSON *j)
{
    if (!j)
        return "missing";
    if (cJSON_IsNull(j))
        return "null";
    if (cJSON_IsBool(j))
        return "a boolean";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsArray(j))
        return "an array";
    return "an object";
}

static const cJSON *member(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* A string member: *out is the string or NULL when absent/null and optional. */
static int get_string(const cJSON *o, const char *k, const char *where, int required,
                      const char **out, char *err)
{
    const cJSON *j = member(o, k);
    *out = NULL;
    if (cJSON_IsString(j)) {
        *out = j->valuestring;
        return 0;
    }
    if (!required && (!j || cJSON_IsNull(j)))
        return 0;
    snprintf(err, APISIM_ERR_LEN, "%s%s%s is %s%s", where, *where ? "." : "", k, json_kind(j),
             j ? ", not a string" : "");
    return -1;
}

/* A number member in [lo, hi]; *present tells whether it was there (absent/null is fine
 * when not required). */
static int get_number(const cJSON *o, const char *k, const char *where, int required, double lo,
                      double hi, double *out, int *present, char *err)
{
    const cJSON *j = member(o, k);
    if (present)
        *present = 0;
    if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (!isfinite(v) || v < lo || v > hi) {
            snprintf(err, APISIM_ERR_LEN, "%s%s%s is %g, outside %g..%g", where, *where ? "." : "",
                     k, v, lo, hi);
            return -1;
        }
        *out = v;
        if (present)
            *present = 1;
        return 0;
    }
    if (!required && (!j || cJSON_IsNull(j)))
        return 0;
    snprintf(err, APISIM_ERR_LEN, "%s%s%s is %s%s", where, *where ? "." : "", k, json_kind(j),
             j ? ", not a number" : "");
    return -1;
}

static int is_token_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int valid_token(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_token_char((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Check one header and append it; where names it ("request.headers[3]"). */
static int header_in(struct headers *h, const char *name, const char *value, const char *where,
                     char *err)
{
    if (!valid_token(name, HAR_MAX_HEADER_NAME)) {
        snprintf(err, APISIM_ERR_LEN, "%s.name \"%.64s\" is not a valid header name", where, name);
        return -1;
    }
    size_t n = strlen(value);
    if (n > HAR_MAX_HEADER_VALUE) {
        snprintf(err, APISIM_ERR_LEN, "%s.value is %zu bytes, over the %d-byte cap", where, n,
                 HAR_MAX_HEADER_VALUE);
        return -1;
    }
    if (strpbrk(value, "\r\n")) {
        snprintf(err, APISIM_ERR_LEN, "%s.value contains a line break", where);
        return -1;
    }
    if (h->n >= HAR_MAX_HEADERS) {
        snprintf(err, APISIM_ERR_LEN, "%s: more than %d headers", where, HAR_MAX_HEADERS);
        return -1;
    }
    if (headers_add(h, name, value) < 0) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    return 0;
}

/* HAR headers [{name, value}] into h. Absent is an empty list. */
static int har_headers_in(const cJSON *arr, const char *where, struct headers *h, char *err)
{
    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr)) {
        snprintf(err, APISIM_ERR_LEN, "%s.headers is %s, not an array", where, json_kind(arr));
        return -1;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        char at[64];
        snprintf(at, sizeof at, "%s.headers[%d]", where, i++);
        if (!cJSON_IsObject(it)) {
            snprintf(err, APISIM_ERR_LEN, "%s is %s, not an object", at, json_kind(it));
            return -1;
        }
        const char *name;
        if (get_string(it, "name", at, 1, &name, err) < 0)
            return -1;
        /* HTTP/2 pseudo-headers (":authority", ":path") say again what method and url say. */
        if (name[0] == ':')
            continue;
        const cJSON *v = member(it, "value");
        char num[64];
        const char *value;
        if (cJSON_IsString(v)) {
            value = v->valuestring;
        } else if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
            /* Polly.js keeps a number a caller passed (Content-Length: 39) as a number. */
            snprintf(num, sizeof num, "%.15g", v->valuedouble);
            value = num;
        } else {
            snprintf(err, APISIM_ERR_LEN, "%s.value is %s%s", at, json_kind(v),
                     v ? ", not a string" : "");
            return -1;
        }
        if (header_in(h, name, value, at, err) < 0)
            return -1;
    }
    return 0;
}

/* Split an absolute URL (or an origin-relative "/path?q") into path and query. */
static int url_in(const char *url, struct exchange *ex, char *err)
{
    size_t n = strlen(url);
    if (n > HAR_MAX_URL) {
        snprintf(err, APISIM_ERR_LEN, "request.url is %zu bytes, over the %d-byte cap", n,
                 HAR_MAX_URL);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f) {
            snprintf(err, APISIM_ERR_LEN,
                     "request.url \"%.200s\" contains a space or control character", url);
            return -1;
        }
    }
    const char *p = url;
    const char *scheme_end = strstr(url, "://");
    if (scheme_end && strcspn(url, "/?#") > (size_t)(scheme_end - url)) {
        p = scheme_end + 3;
        size_t alen = strcspn(p, "/?#");
        /* The host it was for: a recording holds many (apisim as a forward proxy). */
        if (alen > 0 && alen <= 255) {
            ex->scheme = xstrndup(url, (size_t)(scheme_end - url));
            ex->authority = xstrndup(p, alen);
            for (char *c = ex->scheme; c && *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c - 'A' + 'a');
        }
        p += alen;
    } else if (url[0] != '/') {
        snprintf(err, APISIM_ERR_LEN, "request.url \"%.200s\" is not an absolute URL", url);
        return -1;
    }
    size_t path_len = strcspn(p, "?#");
    const char *q = p + path_len;
    size_t qlen = 0;
    if (*q == '?') {
        q++;
        qlen = strcspn(q, "#");
    }
    ex->path = path_len ? xstrndup(p, path_len) : xstrndup("/", 1);
    ex->query = xstrndup(q, qlen);
    if (!ex->path || !ex->query) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    return 0;
}

/* Decode a body text (plain, base64, or Polly.js's JSON array of base64 pieces) into b,
 * which carries the cap. *wire is set when the bytes are as sent on the wire (still
 * Content-Encoded), which is what the array form holds. */
static int body_in(const char *text, const char *encoding, const char *where, struct buf *b,
                   int *wire, char *err)
{
    int rc = -1;
    cJSON *pieces = NULL;
    size_t n = strlen(text);
    *wire = 0;
    if (!encoding || !*encoding) {
        if (n > b->max)
            FAIL("%s.text is %zu bytes, over the %zu-byte body cap (--max-body)", where, n, b->max);
        if (buf_append(b, text, n) < 0)
            FAIL("out of memory");
        rc = 0;
        goto out;
    }
    if (strcmp(encoding, "base64") != 0)
        FAIL("%s encoding \"%.32s\" is not supported (only base64)", where, encoding);
    if (n / 4 * 3 > b->max + 3)
        FAIL("%s.text decodes to about %zu bytes, over the %zu-byte body cap (--max-body)", where,
             n / 4 * 3, b->max);
    const char *t = text + strspn(text, " \t\r\n");
    if (*t == '[') {
        const char *end = NULL;
        pieces = cJSON_ParseWithOpts(t, &end, 1);
        if (!cJSON_IsArray(pieces))
            FAIL("%s.text starts with '[' but is not a JSON array of base64 strings", where);
        const cJSON *it;
        cJSON_ArrayForEach(it, pieces)
        {
            if (!cJSON_IsString(it))
                FAIL("%s.text is a JSON array holding %s, not base64 strings", where,
                     json_kind(it));
            int d = base64_decode_append(it->valuestring, strlen(it->valuestring), b);
            if (d == -1)
                FAIL("%s.text holds a piece that is not valid base64", where);
            if (d == -2)
                FAIL("%s.text decodes to more than the %zu-byte body cap (--max-body)", where,
                     b->max);
        }
        *wire = 1;
        rc = 0;
        goto out;
    }
    int d = base64_decode_append(text, n, b);
    if (d == -1)
        FAIL("%s.text is not valid base64", where);
    if (d == -2)
        FAIL("%s.text decodes to more than the %zu-byte body cap (--max-body)", where, b->max);
    rc = 0;
out:
    cJSON_Delete(pieces);
    return rc;
}

/* Lower-cased, trimmed copy of a header value into out. */
static void lower_trim(const char *s, char *out, size_t outlen)
{
    s += strspn(s, " \t");
    size_t j = 0;
    for (; *s && j + 1 < outlen; s++)
        out[j++] = (char)tolower((unsigned char)*s);
    while (j && (out[j - 1] == ' ' || out[j - 1] == '\t'))
        j--;
    out[j] = '\0';
}

/* Undo a Content-Encoding on the bytes in *b when they still carry it. apisim stores
 * decoded bodies. Sets *encoding_out to the encoding the upstream used ("" for none). */
static int decode_content(struct buf *b, int wire, const struct headers *h, char *enc,
                          size_t enclen, char *err)
{
    int rc = -1;
    struct buf out = {.max = b->max};
    const char *ce = headers_get(h, "content-encoding");
    lower_trim(ce ? ce : "", enc, enclen);
    if (!*enc || strcmp(enc, "identity") == 0) {
        enc[0] = '\0';
        return 0;
    }
    const unsigned char *p = (const unsigned char *)b->p;
    int z = 1; /* 1: not attempted */
    if (strcmp(enc, "gzip") == 0 || strcmp(enc, "x-gzip") == 0) {
        if (b->len >= 2 && p[0] == 0x1f && p[1] == 0x8b)
            z = inflate_append(p, b->len, 15 + 32, &out);
        else if (wire)
            FAIL("response body is marked Content-Encoding: gzip but is not gzip data");
    } else if (strcmp(enc, "deflate") == 0) {
        int zlib_header = b->len >= 2 && (p[0] & 0x0f) == 8 && ((p[0] << 8) | p[1]) % 31 == 0;
        if (zlib_header || wire) {
            z = inflate_append(p, b->len, 15, &out);
            if (z == -1) {
                buf_free(&out);
                out.max = b->max;
                z = inflate_append(p, b->len, -15, &out);
            }
        }
    } else if (wire) {
        FAIL("response body is %s-compressed: apisim decodes gzip and deflate only", enc);
    }
    if (z == -2)
        FAIL("response body decompresses to more than the %zu-byte body cap (--max-body)", b->max);
    if (z == -1 && wire)
        FAIL("response body is marked Content-Encoding: %s but does not decompress", enc);
    if (z == 0) {
        buf_free(b);
        *b = out;
        out.p = NULL;
    }
    rc = 0;
out:
    buf_free(&out);
    return rc;
}

/* A buffer's bytes into an exchange body (NULL/0 when empty). */
static int take_body(struct buf *b, unsigned char **p, size_t *n, char *err)
{
    if (!b->len) {
        buf_free(b);
        return 0;
    }
    *p = (unsigned char *)buf_steal(b, n);
    if (!*p) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    return 0;
}

/* [[offset_us, size], ...] whose sizes add up to the response body. */
static int chunks_in(const cJSON *arr, const char *where, struct exchange *ex, char *err)
{
    int rc = -1;
    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr))
        FAIL("%s is %s, not an array", where, json_kind(arr));
    int n = cJSON_GetArraySize(arr);
    if (n > HAR_MAX_CHUNKS)
        FAIL("%s has %d pieces, over the cap of %d", where, n, HAR_MAX_CHUNKS);
    if (n == 0) {
        rc = 0;
        goto out;
    }
    if (!(ex->chunks = calloc((size_t)n, sizeof *ex->chunks)))
        FAIL("out of memory");
    size_t total = 0;
    int64_t last = 0;
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *o = cJSON_GetArrayItem(it, 0), *s = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsNumber(o) ||
            !cJSON_IsNumber(s) || o->valuedouble < 0 || s->valuedouble < 0 ||
            o->valuedouble > 9e15 || s->valuedouble > (double)SIZE_MAX / 2)
            FAIL("%s[%d] is not [offset_us, size] with two non-negative numbers", where, i);
        int64_t off = (int64_t)o->valuedouble;
        if (off < last)
            FAIL("%s[%d]: offsets go backwards", where, i);
        last = off;
        ex->chunks[i].offset_us = off;
        ex->chunks[i].size = (size_t)s->valuedouble;
        total += ex->chunks[i].size;
        i++;
    }
    ex->nchunks = (size_t)n;
    if (total != ex->response_body_len)
        FAIL("%s sizes add up to %zu bytes but the response body has %zu", where, total,
             ex->response_body_len);
    rc = 0;
out:
    return rc;
}

/* apisim's own extension object, present in HAR files apisim wrote. */
/* The fields apisim adds beyond HAR, shared by HAR's "_apisim" object and JSONL lines:
 * ttfb_us, duration_us, delay_ms and complete (each optional). where names the object in
 * messages ("" for the top level). Returns 0 or -1 with err. */
static int extras_in(const cJSON *o, const char *where, struct exchange *ex, char *err)
{
    int rc = -1, present;
    double v;
    if (get_number(o, "ttfb_us", where, 0, 0, 9e15, &v, &present, err) < 0)
        goto out;
    if (present)
        ex->ttfb_us = (int64_t)v;
    if (get_number(o, "duration_us", where, 0, 0, 9e15, &v, &present, err) < 0)
        goto out;
    if (present)
        ex->duration_us = (int64_t)v;
    if (get_number(o, "delay_ms", where, 0, 0, 9e12, &v, &present, err) < 0)
        goto out;
    if (present)
        ex->delay_ms = (int64_t)v;
    const cJSON *c = member(o, "complete");
    if (cJSON_IsBool(c))
        ex->complete = cJSON_IsTrue(c);
    else if (cJSON_IsNumber(c) && (c->valuedouble == 0 || c->valuedouble == 1))
        ex->complete = c->valuedouble == 1;
    else if (c && !cJSON_IsNull(c))
        FAIL("%s%scomplete is %s, not 0 or 1", where, where[0] ? "." : "", json_kind(c));
    rc = 0;
out:
    return rc;
}

static int apisim_extra_in(const cJSON *x, struct exchange *ex, char *err)
{
    int rc = -1;
    const char *s;
    if (!x || cJSON_IsNull(x))
        return 0;
    if (!cJSON_IsObject(x))
        FAIL("_apisim is %s, not an object", json_kind(x));
    if (extras_in(x, "_apisim", ex, err) < 0)
        goto out;
    if (get_string(x, "error", "_apisim", 0, &s, err) < 0)
        goto out;
    if (s && strlen(s) > HAR_MAX_SHORT_TEXT)
        FAIL("_apisim.error is longer than %d bytes", HAR_MAX_SHORT_TEXT);
    if (s && !(ex->error = xstrndup(s, strlen(s))))
        FAIL("out of memory");
    const cJSON *re = member(x, "response_encoding");
    if (re) {
        if (get_string(x, "response_encoding", "_apisim", 0, &s, err) < 0)
            goto out;
        if (s && !valid_token(s, 64))
            FAIL("_apisim.response_encoding \"%.64s\" is not an encoding name", s);
        free(ex->response_encoding);
        ex->response_encoding = s ? xstrndup(s, strlen(s)) : NULL;
        if (s && !ex->response_encoding)
            FAIL("out of memory");
    }
    if (chunks_in(member(x, "chunks"), "_apisim.chunks", ex, err) < 0)
        goto out;
    rc = 0;
out:
    return rc;
}

/* time and timings: duration and time to first byte. */
static int timings_in(const cJSON *entry, struct exchange *ex, char *err)
{
    int rc = -1;
    double time_ms = 0, v;
    int has_time, present, any = 0;
    if (get_number(entry, "time", "", 0, -1, 9e12, &time_ms, &has_time, err) < 0)
        goto out;
    const cJSON *t = member(entry, "timings");
    double before_first_byte = 0;
    if (t && !cJSON_IsNull(t)) {
        if (!cJSON_IsObject(t))
            FAIL("timings is %s, not an object", json_kind(t));
        /* ssl is part of connect in HAR 1.2; receive comes after the first byte. */
        static const char *const keys[] = {"blocked", "dns", "connect", "send", "wait"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            if (get_number(t, keys[i], "timings", 0, -1, 9e12, &v, &present, err) < 0)
                goto out;
            if (present && v >= 0) {
                before_first_byte += v;
                any = 1;
            }
        }
        if (get_number(t, "receive", "timings", 0, -1, 9e12, &v, &present, err) < 0)
            goto out;
    }
    if (has_time && time_ms > 0)
        ex->duration_us = llround(time_ms * 1000.0);
    ex->ttfb_us = any ? llround(before_first_byte * 1000.0) : ex->duration_us;
    if (ex->ttfb_us > ex->duration_us)
        ex->duration_us = ex->ttfb_us;
    rc = 0;
out:
    return rc;
}

int har_entry_to_exchange(const cJSON *entry, const struct har_limits *lim,
                          struct exchange **out_ex, char *err)
{
    int rc = -1, wire = 0;
    struct exchange *ex = exchange_new();
    struct buf body = {.max = max_body_of(lim)};
    const char *s, *enc;
    double v;
    char ce[64];
    if (!ex)
        FAIL("out of memory");
    if (!cJSON_IsObject(entry))
        FAIL("the entry is %s, not an object", json_kind(entry));
    if (!(ex->source = xstrndup("import", 6)))
        FAIL("out of memory");

    if (get_string(entry, "startedDateTime", "", 1, &s, err) < 0)
        goto out;
    if (har_parse_time(s, &ex->started_us) < 0)
        FAIL("startedDateTime \"%.64s\" is not an ISO-8601 date-time", s);

    const cJSON *req = member(entry, "request");
    if (!cJSON_IsObject(req))
        FAIL("request is %s%s", json_kind(req), req ? ", not an object" : "");
    if (get_string(req, "method", "request", 1, &s, err) < 0)
        goto out;
    if (!valid_token(s, HAR_MAX_METHOD))
        FAIL("request.method \"%.40s\" is not an HTTP method", s);
    if (!(ex->method = xstrndup(s, strlen(s))))
        FAIL("out of memory");
    if (get_string(req, "url", "request", 1, &s, err) < 0 || url_in(s, ex, err) < 0)
        goto out;
    if (har_headers_in(member(req, "headers"), "request", &ex->request_headers, err) < 0)
        goto out;
    const cJSON *pd = member(req, "postData");
    if (pd && !cJSON_IsNull(pd)) {
        if (!cJSON_IsObject(pd))
            FAIL("request.postData is %s, not an object", json_kind(pd));
        if (get_string(pd, "text", "request.postData", 0, &s, err) < 0)
            goto out;
        const cJSON *params = member(pd, "params");
        if (!s && cJSON_GetArraySize(params) > 0)
            FAIL("request.postData has params but no text: the body cannot be rebuilt exactly");
        if (get_string(pd, "_encoding", "request.postData", 0, &enc, err) < 0)
            goto out;
        if (!enc && get_string(pd, "encoding", "request.postData", 0, &enc, err) < 0)
            goto out;
        if (s && body_in(s, enc, "request.postData", &body, &wire, err) < 0)
            goto out;
        if (take_body(&body, &ex->request_body, &ex->request_body_len, err) < 0)
            goto out;
        body.max = max_body_of(lim);
    }

    const cJSON *resp = member(entry, "response");
    if (!cJSON_IsObject(resp))
        FAIL("response is %s%s", json_kind(resp), resp ? ", not an object" : "");
    if (get_number(resp, "status", "response", 1, -1, 999, &v, NULL, err) < 0)
        goto out;
    if (v != floor(v))
        FAIL("response.status %g is not a whole number", v);
    if (v < 100)
        FAIL("response.status is %g: the request got no response (blocked, failed or "
             "cancelled when the HAR was captured)",
             v);
    ex->status = (int)v;
    if (har_headers_in(member(resp, "headers"), "response", &ex->response_headers, err) < 0)
        goto out;
    const cJSON *content = member(resp, "content");
    if (content && !cJSON_IsNull(content)) {
        if (!cJSON_IsObject(content))
            FAIL("response.content is %s, not an object", json_kind(content));
        if (get_string(content, "text", "response.content", 0, &s, err) < 0 ||
            get_string(content, "encoding", "response.content", 0, &enc, err) < 0)
            goto out;
        double size = 0;
        int has_size;
        if (get_number(content, "size", "response.content", 0, -1, 1e18, &size, &has_size, err) < 0)
            goto out;
        if (!s && member(content, "_file"))
            FAIL("response.content is in a separate file (_file), not in the HAR: capture it "
                 "with content embedded");
        if (!s && has_size && size > 0)
            FAIL("response.content has no text although its size is %.0f bytes: capture the "
                 "HAR with content embedded",
                 size);
        if (s && body_in(s, enc, "response.content", &body, &wire, err) < 0)
            goto out;
        if (decode_content(&body, wire, &ex->response_headers, ce, sizeof ce, err) < 0)
            goto out;
        if (*ce && !(ex->response_encoding = xstrndup(ce, strlen(ce))))
            FAIL("out of memory");
        if (take_body(&body, &ex->response_body, &ex->response_body_len, err) < 0)
            goto out;
    }
    if (timings_in(entry, ex, err) < 0 || apisim_extra_in(member(entry, "_apisim"), ex, err) < 0)
        goto out;
    /* The stored body is decoded: its headers must say so, as recording leaves them. */
    if (ex->response_encoding) {
        headers_remove(&ex->response_headers, "content-encoding");
        headers_remove(&ex->response_headers, "content-length");
    }
    *out_ex = ex;
    ex = NULL;
    rc = 0;
out:
    buf_free(&body);
    exchange_free(ex);
    return rc;
}

/* ---------------------------------------------------------------- JSONL */

static int add_opt_str(cJSON *o, const char *k, const char *v)
{
    if (!v)
        return cJSON_AddNullToObject(o, k) ? 0 : -1;
    return add_str(o, k, v);
}

static cJSON *pairs_out(const struct headers *h)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < h->n; i++) {
        const char *pair[2] = {h->v[i].name, h->v[i].value};
        cJSON *p = cJSON_CreateStringArray(pair, 2);
        if (!p || !cJSON_AddItemToArray(arr, p)) {
            cJSON_Delete(p);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

/* key: text when UTF-8, else key_base64: base64; null when empty. */
static int add_body(cJSON *o, const char *key, const unsigned char *p, size_t n)
{
    if (!n)
        return cJSON_AddNullToObject(o, key) ? 0 : -1;
    if (is_utf8_text(p, n)) {
        char *text = xstrndup((const char *)p, n);
        int rc = !text || add_str(o, key, text) < 0 ? -1 : 0;
        free(text);
        return rc;
    }
    char k64[64];
    snprintf(k64, sizeof k64, "%s_base64", key);
    char *b64 = base64_encode(p, n);
    int rc = !b64 || add_str(o, k64, b64) < 0 ? -1 : 0;
    free(b64);
    return rc;
}

cJSON *har_jsonl_from_exchange(const struct exchange *ex)
{
    cJSON *o = cJSON_CreateObject(), *item = NULL, *chunks;
    char started[40];
    format_iso8601_ms(ex->started_us, started, sizeof started);
    if (!o || add_num(o, "id", (double)ex->id) < 0 || add_str(o, "session", ex->session) < 0 ||
        add_num(o, "seq", (double)ex->seq) < 0 ||
        add_str(o, "source", ex->source ? ex->source : "record") < 0 ||
        add_str(o, "started_at", started) < 0 || add_str(o, "method", ex->method) < 0 ||
        add_str(o, "path", ex->path) < 0 || add_str(o, "query", ex->query) < 0 ||
        add_opt_str(o, "scheme", ex->scheme) < 0 || add_opt_str(o, "authority", ex->authority) < 0)
        goto fail;
    if (!(item = pairs_out(&ex->request_headers)) ||
        !cJSON_AddItemToObject(o, "request_headers", item))
        goto fail_item;
    if (add_body(o, "request_body", ex->request_body, ex->request_body_len) < 0 ||
        add_opt_str(o, "match_key", ex->match_key) < 0 || add_num(o, "status", ex->status) < 0)
        goto fail;
    if (!(item = pairs_out(&ex->response_headers)) ||
        !cJSON_AddItemToObject(o, "response_headers", item))
        goto fail_item;
    if (add_body(o, "response_body", ex->response_body, ex->response_body_len) < 0 ||
        add_opt_str(o, "response_encoding", ex->response_encoding) < 0 ||
        add_num(o, "ttfb_us", (double)ex->ttfb_us) < 0 ||
        add_num(o, "duration_us", (double)ex->duration_us) < 0 ||
        add_opt_str(o, "error", ex->error) < 0 || add_num(o, "complete", ex->complete) < 0 ||
        add_num(o, "delay_ms", (double)ex->delay_ms) < 0 ||
        !(chunks = cJSON_AddArrayToObject(o, "chunks")))
        goto fail;
    for (size_t i = 0; i < ex->nchunks; i++) {
        double pair[2] = {(double)ex->chunks[i].offset_us, (double)ex->chunks[i].size};
        cJSON *p = cJSON_CreateDoubleArray(pair, 2);
        if (!p || !cJSON_AddItemToArray(chunks, p)) {
            cJSON_Delete(p);
            goto fail;
        }
    }
    return o;
fail_item:
    cJSON_Delete(item);
fail:
    cJSON_Delete(o);
    return NULL;
}

/* [[name, value], ...] into h. */
static int pairs_in(const cJSON *arr, const char *where, struct headers *h, char *err)
{
    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr)) {
        snprintf(err, APISIM_ERR_LEN, "%s is %s, not an array", where, json_kind(arr));
        return -1;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        char at[64];
        snprintf(at, sizeof at, "%s[%d]", where, i++);
        const cJSON *n = cJSON_GetArrayItem(it, 0), *v = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsString(n) ||
            !cJSON_IsString(v)) {
            snprintf(err, APISIM_ERR_LEN, "%s is not [name, value] with two strings", at);
            return -1;
        }
        if (header_in(h, n->valuestring, v->valuestring, at, err) < 0)
            return -1;
    }
    return 0;
}

/* "key" (text) or "key_base64" into the body pointer and length. */
static int body_field_in(const cJSON *o, const char *key, size_t max, unsigned char **p, size_t *n,
                         char *err)
{
    int rc = -1, wire;
    char k64[64];
    const char *text, *b64;
    struct buf b = {.max = max};
    snprintf(k64, sizeof k64, "%s_base64", key);
    if (get_string(o, key, "", 0, &text, err) < 0 || get_string(o, k64, "", 0, &b64, err) < 0)
        goto out;
    if (text && b64)
        FAIL("both %s and %s are given", key, k64);
    if ((text || b64) &&
        body_in(text ? text : b64, text ? NULL : "base64", key, &b, &wire, err) < 0)
        goto out;
    rc = take_body(&b, p, n, err);
out:
    buf_free(&b);
    return rc;
}

static int dup_opt(const cJSON *o, const char *k, char **dst, char *err)
{
    const char *s;
    if (get_string(o, k, "", 0, &s, err) < 0)
        return -1;
    if (!s)
        return 0;
    if (strlen(s) > HAR_MAX_SHORT_TEXT) {
        snprintf(err, APISIM_ERR_LEN, "%s is longer than %d bytes", k, HAR_MAX_SHORT_TEXT);
        return -1;
    }
    free(*dst);
    if (!(*dst = xstrndup(s, strlen(s)))) {
        snprintf(err, APISIM_ERR_LEN, "out of memory");
        return -1;
    }
    return 0;
}

int har_jsonl_to_exchange(const cJSON *obj, const struct har_limits *lim, struct exchange **out_ex,
                          char *err)
{
    int rc = -1, present;
    struct exchange *ex = exchange_new();
    const char *s;
    double v;
    size_t max = max_body_of(lim);
    if (!ex)
        FAIL("out of memory");
    if (!cJSON_IsObject(obj))
        FAIL("the line is %s, not an object", json_kind(obj));
    if (dup_opt(obj, "session", &ex->session, err) < 0 ||
        dup_opt(obj, "source", &ex->source, err) < 0)
        goto out;
    if (ex->source && strcmp(ex->source, "record") != 0 && strcmp(ex->source, "stub") != 0 &&
        strcmp(ex->source, "import") != 0)
        FAIL("source \"%.32s\" is not record, stub or import", ex->source);
    if (get_number(obj, "seq", "", 0, 0, 9e15, &v, &present, err) < 0)
        goto out;
    if (present)
        ex->seq = (int64_t)v;
    if (get_string(obj, "started_at", "", 1, &s, err) < 0)
        goto out;
    if (har_parse_time(s, &ex->started_us) < 0)
        FAIL("started_at \"%.64s\" is not an ISO-8601 date-time", s);
    if (get_string(obj, "method", "", 1, &s, err) < 0)
        goto out;
    if (!valid_token(s, HAR_MAX_METHOD))
        FAIL("method \"%.40s\" is not an HTTP method", s);
    if (!(ex->method = xstrndup(s, strlen(s))))
        FAIL("out of memory");
    if (get_string(obj, "path", "", 1, &s, err) < 0)
        goto out;
    if (s[0] != '/' || strlen(s) > HAR_MAX_URL || strpbrk(s, " \t\r\n?#"))
        FAIL("path \"%.200s\" is not a request path (it starts with '/', has no query)", s);
    if (!(ex->path = xstrndup(s, strlen(s))))
        FAIL("out of memory");
    if (get_string(obj, "query", "", 0, &s, err) < 0)
        goto out;
    if (s && (strlen(s) > HAR_MAX_URL || strpbrk(s, " \t\r\n#")))
        FAIL("query is longer than %d bytes or holds a space or line break", HAR_MAX_URL);
    if (!(ex->query = xstrndup(s ? s : "", s ? strlen(s) : 0)))
        FAIL("out of memory");
    if (dup_opt(obj, "scheme", &ex->scheme, err) < 0 ||
        dup_opt(obj, "authority", &ex->authority, err) < 0)
        goto out;
    if (ex->scheme && strcmp(ex->scheme, "http") != 0 && strcmp(ex->scheme, "https") != 0)
        FAIL("scheme \"%.32s\" is not http or https", ex->scheme);
    if (ex->authority && (strlen(ex->authority) > 255 || strpbrk(ex->authority, " \t\r\n/?#@")))
        FAIL("authority \"%.64s\" is not host[:port]", ex->authority);
    if (pairs_in(member(obj, "request_headers"), "request_headers", &ex->request_headers, err) <
            0 ||
        body_field_in(obj, "request_body", max, &ex->request_body, &ex->request_body_len, err) <
            0 ||
        dup_opt(obj, "match_key", &ex->match_key, err) < 0)
        goto out;
    if (get_number(obj, "status", "", 1, 100, 999, &v, NULL, err) < 0)
        goto out;
    if (v != floor(v))
        FAIL("status %g is not a whole number", v);
    ex->status = (int)v;
    if (pairs_in(member(obj, "response_headers"), "response_headers", &ex->response_headers, err) <
            0 ||
        body_field_in(obj, "response_body", max, &ex->response_body, &ex->response_body_len, err) <
            0 ||
        dup_opt(obj, "response_encoding", &ex->response_encoding, err) < 0 ||
        dup_opt(obj, "error", &ex->error, err) < 0)
        goto out;
    if (ex->response_encoding && !valid_token(ex->response_encoding, 64))
        FAIL("response_encoding \"%.64s\" is not an encoding name", ex->response_encoding);
    if (extras_in(obj, "", ex, err) < 0)
        goto out;
    if (chunks_in(member(obj, "chunks"), "chunks", ex, err) < 0)
        goto out;
    *out_ex = ex;
    ex = NULL;
    rc = 0;
out:
    exchange_free(ex);
    return rc;
}
