#include "template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Longest text between {{ and }} that can be a placeholder. */
#define TEMPLATE_MAX_INNER 256
/* Largest offset accepted: 100000 days, so times stay well inside what gmtime handles. */
#define TEMPLATE_MAX_OFFSET_S (100000LL * 86400LL)

int template_has_placeholders(const unsigned char *body, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (body[i] == '{' && body[i + 1] == '{')
            return 1;
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Parse "" or "+90s" / "-1d" (s, m, h, d) into seconds. Returns 0, or -1 when p..end is
 * anything else. */
static int parse_offset(const char *p, const char *end, int64_t *out)
{
    int64_t sign, v = 0, unit;
    *out = 0;
    if (p == end)
        return 0;
    if (*p != '+' && *p != '-')
        return -1;
    sign = *p == '-' ? -1 : 1;
    p++;
    if (p == end || *p < '0' || *p > '9')
        return -1;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > TEMPLATE_MAX_OFFSET_S)
            return -1;
    }
    if (end - p != 1)
        return -1;
    switch (*p) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return -1;
    }
    if (v > TEMPLATE_MAX_OFFSET_S / unit)
        return -1;
    *out = sign * v * unit;
    return 0;
}

/* 1 when p..end starts with word; *rest gets what follows. */
static int starts_with(const char *p, const char *end, const char *word, const char **rest)
{
    size_t n = strlen(word);
    if ((size_t)(end - p) < n || memcmp(p, word, n) != 0)
        return 0;
    *rest = p + n;
    return 1;
}

/* The raw value of query parameter name (n bytes) in query; "" (length 0) when absent. */
static void query_value(const char *query, const char *name, size_t n, const char **val,
                        size_t *vlen)
{
    *val = "";
    *vlen = 0;
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *nend = eq ? eq : end;
        if ((size_t)(nend - p) == n && memcmp(p, name, n) == 0) {
            if (eq) {
                *val = eq + 1;
                *vlen = (size_t)(end - eq - 1);
            }
            return;
        }
        p = amp ? amp + 1 : NULL;
    }
}

/* Expand the placeholder text p..end: ext and extlen get the result, either written into
 * small or borrowed from req. Returns 0 when it is a placeholder, -1 when not. */
static int expand_one(const char *p, const char *end, const struct server_request *req,
                      int64_t now_us, char *small, size_t smallsz, const char **ext, size_t *extlen)
{
    const char *rest;
    int64_t off_s;
    while (p < end && *p == ' ')
        p++;
    while (end > p && end[-1] == ' ')
        end--;
    *ext = small;
    if (starts_with(p, end, "now_epoch_ms", &rest)) {
        if (parse_offset(rest, end, &off_s) < 0)
            return -1;
        snprintf(small, smallsz, "%lld", (long long)floor_div(now_us + off_s * 1000000, 1000));
    } else if (starts_with(p, end, "now_epoch", &rest)) {
        if (parse_offset(rest, end, &off_s) < 0)
            return -1;
        snprintf(small, smallsz, "%lld", (long long)floor_div(now_us + off_s * 1000000, 1000000));
    } else if (starts_with(p, end, "now", &rest)) {
        struct tm tm;
        if (parse_offset(rest, end, &off_s) < 0)
            return -1;
        int64_t t = now_us + off_s * 1000000;
        time_t secs = (time_t)floor_div(t, 1000000);
        int ms = (int)(floor_div(t, 1000) - (int64_t)secs * 1000);
        if (!gmtime_r(&secs, &tm))
            return -1;
        snprintf(small, smallsz, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    } else if (req && starts_with(p, end, "request.path", &rest) && rest == end) {
        *ext = req->path ? req->path : "";
        *extlen = strlen(*ext);
        return 0;
    } else if (req && starts_with(p, end, "request.query.", &rest) && rest < end) {
        query_value(req->query, rest, (size_t)(end - rest), ext, extlen);
        return 0;
    } else {
        return -1;
    }
    *extlen = strlen(small);
    return 0;
}

/* Where "}}" is in body[from..len), looking no further than TEMPLATE_MAX_INNER bytes, or
 * len when it is not there. */
static size_t find_close(const unsigned char *body, size_t from, size_t len)
{
    size_t limit = len - from > TEMPLATE_MAX_INNER + 2 ? from + TEMPLATE_MAX_INNER + 2 : len;
    for (size_t j = from; j + 1 < limit; j++) {
        if (body[j] == '}' && body[j + 1] == '}')
            return j;
        if (body[j] == '{' || body[j] == '\n')
            return len;
    }
    return len;
}

unsigned char *template_expand(const unsigned char *body, size_t len,
                               const struct server_request *req, int64_t now_us, size_t *outlen)
{
    struct buf b = {0};
    size_t expanded = 0, i = 0, lit = 0; /* body[lit..i) is literal text not yet copied */
    char small[64];
    int rc = 0;
    while (rc == 0 && i + 1 < len) {
        if (body[i] != '{' || body[i + 1] != '{') {
            i++;
            continue;
        }
        size_t close = find_close(body, i + 2, len);
        const char *ext;
        size_t extlen;
        if (close == len ||
            expand_one((const char *)body + i + 2, (const char *)body + close, req, now_us, small,
                       sizeof small, &ext, &extlen) < 0 ||
            extlen > TEMPLATE_MAX_EXPANSION - expanded) {
            i++;
            continue;
        }
        rc = buf_append(&b, body + lit, i - lit);
        if (rc == 0)
            rc = buf_append(&b, ext, extlen);
        expanded += extlen;
        i = close + 2;
        lit = i;
    }
    if (rc == 0)
        rc = buf_append(&b, body + lit, len - lit);
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    return (unsigned char *)buf_steal(&b, outlen); /* NULL only when calloc(1, 1) failed */
}
