#include "exchange.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void exchange_free(struct exchange *ex)
{
    if (!ex)
        return;
    free(ex->session);
    free(ex->source);
    free(ex->method);
    free(ex->path);
    free(ex->query);
    free(ex->scheme);
    free(ex->authority);
    headers_free(&ex->request_headers);
    free(ex->request_body);
    free(ex->match_key);
    headers_free(&ex->response_headers);
    free(ex->response_body);
    free(ex->response_encoding);
    free(ex->error);
    free(ex->chunks);
    if (ex->index) {
        redact_rules_free(&ex->index->learnt);
        free(ex->index);
    }
    free(ex);
}

struct exchange *exchange_new(void)
{
    struct exchange *ex = calloc(1, sizeof *ex);
    if (ex)
        ex->complete = 1;
    return ex;
}

/* A JSON string's contents escaped as cJSON escapes them (so a stored row reads the same
 * whichever wrote it): '"', '\\' and the control characters; other bytes as they are. Writes
 * into o when it is not NULL; returns the length either way. */
static size_t json_escape(char *o, const char *s)
{
    static const char from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt", hex[] = "0123456789abcdef";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *short_form = memchr(from, *p, sizeof from - 1);
        if (short_form) {
            if (o) {
                o[n] = '\\';
                o[n + 1] = to[short_form - from];
            }
            n += 2;
        } else if (*p < 0x20) {
            if (o)
                memcpy(o + n, (char[]){'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]}, 6);
            n += 6;
        } else {
            if (o)
                o[n] = (char)*p;
            n++;
        }
    }
    return n;
}

/* Written directly rather than through a cJSON tree: the writer renders two of these for
 * every exchange it stores. */
char *exchange_headers_to_json(const struct headers *h)
{
    size_t len = 2; /* [] */
    for (size_t i = 0; i < h->n; i++)
        len +=
            8 + json_escape(NULL, h->v[i].name) + json_escape(NULL, h->v[i].value); /* ,["",""] */
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    out[n++] = '[';
    for (size_t i = 0; i < h->n; i++) {
        if (i)
            out[n++] = ',';
        out[n++] = '[';
        out[n++] = '"';
        n += json_escape(out + n, h->v[i].name);
        out[n++] = '"';
        out[n++] = ',';
        out[n++] = '"';
        n += json_escape(out + n, h->v[i].value);
        out[n++] = '"';
        out[n++] = ']';
    }
    out[n++] = ']';
    out[n] = '\0';
    return out;
}

static size_t skip_ws(const char *t, size_t i, size_t len)
{
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

/* The end (past the closing quote) of the JSON string at t[i], or 0 when there is none or
 * it has an escape or a control character. */
static size_t plain_string(const char *t, size_t i, size_t len)
{
    if (i >= len || t[i] != '"')
        return 0;
    for (size_t j = i + 1; j < len; j++) {
        unsigned char c = (unsigned char)t[j];
        if (c == '"')
            return j + 1;
        if (c == '\\' || c < 0x20)
            return 0;
    }
    return 0;
}

/* A plain string at t[i] (after blanks) followed by the character end (after blanks): its
 * quotes at *s and *e - 1, and the position past end returned; 0 when t is not so. */
static size_t plain_member(const char *t, size_t i, size_t len, char end, size_t *s, size_t *e)
{
    *s = skip_ws(t, i, len);
    if (!(*e = plain_string(t, *s, len)))
        return 0;
    i = skip_ws(t, *e, len);
    return i < len && t[i] == end ? i + 1 : 0;
}

/* Headers as apisim writes them, [["name","value"],...] with nothing to unescape, read
 * without building a cJSON tree (a replayed exchange's headers are read per request): 1 when
 * text is of that form (its pairs added to h when add), 0 when it is not (nothing added), -1
 * when out of memory. */
static int headers_plain(const char *t, size_t len, struct headers *h, int add)
{
    size_t i = skip_ws(t, 0, len);
    if (i >= len || t[i++] != '[')
        return 0;
    i = skip_ws(t, i, len);
    if (i < len && t[i] == ']')
        return skip_ws(t, i + 1, len) == len;
    for (;;) {
        size_t ns, ne, vs, ve;
        if (i >= len || t[i++] != '[' || !(i = plain_member(t, i, len, ',', &ns, &ne)) ||
            !(i = plain_member(t, i, len, ']', &vs, &ve)))
            return 0;
        if (add && headers_addn(h, t + ns + 1, ne - ns - 2, t + vs + 1, ve - vs - 2) < 0)
            return -1;
        i = skip_ws(t, i, len);
        if (i < len && t[i] == ',') {
            i = skip_ws(t, i + 1, len);
            continue;
        }
        if (i < len && t[i] == ']')
            return skip_ws(t, i + 1, len) == len;
        return 0;
    }
}

int exchange_headers_from_json(const char *text, size_t len, struct headers *h)
{
    int rc = -1;
    if (text && headers_plain(text, len, h, 0) == 1)
        return headers_plain(text, len, h, 1) == 1 ? 0 : -1;
    cJSON *arr = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsArray(arr))
        goto out;
    const cJSON *pair;
    cJSON_ArrayForEach(pair, arr)
    {
        const cJSON *n = cJSON_GetArrayItem(pair, 0), *v = cJSON_GetArrayItem(pair, 1);
        if (!cJSON_IsArray(pair) || !cJSON_IsString(n) || !cJSON_IsString(v))
            goto out;
        if (headers_add(h, n->valuestring, v->valuestring) < 0)
            goto out;
    }
    rc = 0;
out:
    cJSON_Delete(arr);
    return rc;
}
