#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int buf_append(struct buf *b, const void *data, size_t n)
{
    size_t max = b->max ? b->max : SIZE_MAX - 1;
    if (n > max || b->len > max - n)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return buf_append(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

char *buf_steal(struct buf *b, size_t *len)
{
    char *p = b->p;
    if (len)
        *len = b->len;
    if (!p)
        p = calloc(1, 1);
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

char *xstrndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int ascii_casecmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        int ca = tolower((unsigned char)*a), cb = tolower((unsigned char)*b);
        if (ca != cb || !ca)
            return ca - cb;
    }
}

int headers_addn(struct headers *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        struct header *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    char *n = xstrndup(name, nlen), *v = xstrndup(value ? value : "", value ? vlen : 0);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    h->v[h->n].name = n;
    h->v[h->n].value = v;
    h->n++;
    return 0;
}

int headers_add(struct headers *h, const char *name, const char *value)
{
    return headers_addn(h, name, strlen(name), value, value ? strlen(value) : 0);
}

const char *headers_get(const struct headers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (ascii_casecmp(h->v[i].name, name) == 0)
            return h->v[i].value;
    return NULL;
}

void headers_remove(struct headers *h, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (ascii_casecmp(h->v[i].name, name) == 0) {
            free(h->v[i].name);
            free(h->v[i].value);
        } else {
            h->v[j++] = h->v[i];
        }
    }
    h->n = j;
}

void headers_free(struct headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
    }
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

int header_is_hop_by_hop(const char *name)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding",
        "te",         "trailer",    "upgrade",          "proxy-authenticate"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (ascii_casecmp(name, hop[i]) == 0)
            return 1;
    return 0;
}

int64_t now_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t now_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void format_iso8601_ms(int64_t t_us, char *out, size_t outlen)
{
    /* The writer stamps every exchange: the date and time are made once per second (per
     * thread), the milliseconds each time. */
    static _Thread_local int64_t last_secs = INT64_MIN;
    static _Thread_local char prefix[32]; /* "YYYY-MM-DDTHH:MM:SS" */
    static _Thread_local size_t prefix_len;
    int64_t secs = t_us / 1000000, rem = t_us % 1000000;
    if (rem < 0) {
        secs--;
        rem += 1000000;
    }
    if (secs != last_secs) {
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        int n = snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        prefix_len = n > 0 && (size_t)n < sizeof prefix ? (size_t)n : 0;
        last_secs = secs;
    }
    int ms = (int)(rem / 1000);
    char buf[48];
    memcpy(buf, prefix, prefix_len);
    memcpy(buf + prefix_len,
           (char[]){'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                    'Z'},
           5);
    size_t len = prefix_len + 5;
    if (outlen == 0)
        return;
    if (len >= outlen)
        len = outlen - 1;
    memcpy(out, buf, len);
    out[len] = '\0';
}

/* Parse a non-negative decimal number at the start of s; *end gets the rest. */
static int parse_number(const char *s, double *out, const char **end)
{
    if (!isdigit((unsigned char)*s) && *s != '.')
        return -1;
    errno = 0;
    char *e;
    double v = strtod(s, &e);
    if (e == s || errno || !isfinite(v) || v < 0)
        return -1;
    *out = v;
    *end = e;
    return 0;
}

int parse_duration_us(const char *s, int64_t *out, char *err)
{
    double v;
    const char *unit;
    if (!s || parse_number(s, &v, &unit) < 0)
        goto bad;
    double mult;
    if (strcmp(unit, "us") == 0)
        mult = 1;
    else if (strcmp(unit, "ms") == 0)
        mult = 1e3;
    else if (strcmp(unit, "s") == 0)
        mult = 1e6;
    else
        goto bad;
    if (v * mult > 9.0e15)
        goto bad;
    *out = (int64_t)llround(v * mult);
    return 0;
bad:
    snprintf(err, APISIM_ERR_LEN,
             "invalid duration \"%s\": expected a number with unit us, ms or s (e.g. 250ms)",
             s ? s : "");
    return -1;
}

int parse_size(const char *s, size_t *out, char *err)
{
    double v;
    const char *unit;
    if (!s || parse_number(s, &v, &unit) < 0 || v != floor(v))
        goto bad;
    double mult;
    if (*unit == '\0' || strcmp(unit, "B") == 0)
        mult = 1;
    else if (strcmp(unit, "KiB") == 0)
        mult = 1024.0;
    else if (strcmp(unit, "MiB") == 0)
        mult = 1024.0 * 1024;
    else if (strcmp(unit, "GiB") == 0)
        mult = 1024.0 * 1024 * 1024;
    else
        goto bad;
    if (v * mult > 1.0e15)
        goto bad;
    *out = (size_t)(v * mult);
    return 0;
bad:
    snprintf(err, APISIM_ERR_LEN,
             "invalid size \"%s\": expected a whole number with unit B, KiB, MiB or GiB (e.g. "
             "64MiB)",
             s ? s : "");
    return -1;
}

int is_utf8_text(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* Eight ASCII bytes at a time, none of them NUL (most bodies are all ASCII). */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            const uint64_t high = 0x8080808080808080u, ones = 0x0101010101010101u;
            if ((w & high) || ((w - ones) & ~w & high))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = p[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

char *base64_encode(const unsigned char *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = tbl[(v >> 18) & 63];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? tbl[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int base64_decode_append(const char *s, size_t n, struct buf *b)
{
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = base64_value(c);
        if (v < 0 || pad)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            unsigned char byte = (unsigned char)(acc >> bits);
            if (buf_append(b, &byte, 1) < 0)
                return -2;
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits must be padding zeros, and at most 4 bits (2 '=') may be left. */
    if (bits >= 6 || pad > 2 || acc != 0)
        return -1;
    return 0;
}

int strlist_add(char ***list, size_t *n, const char *s)
{
    char *copy = s ? strdup(s) : NULL;
    char **v = copy ? realloc(*list, (*n + 1) * sizeof *v) : NULL;
    if (!v) {
        free(copy);
        return -1;
    }
    v[(*n)++] = copy;
    *list = v;
    return 0;
}

void strlist_free(char ***list, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*list)[i]);
    free(*list);
    *list = NULL;
    *n = 0;
}
