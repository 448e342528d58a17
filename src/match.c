#include "match.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonptr.h"

/* How many JSON pointer differences match_diff lists for one body before it stops looking. */
#define MATCH_BODY_DIFF_CAP 16
/* How many bytes of a value a difference shows. */
#define MATCH_SHOW_MAX 80

#define ACCEPTED_FIELDS "(accepted: method, path, query, body)"

/* ------------------------------------------------------------ canonical JSON */

/* Parse exactly len bytes as one JSON document; NULL when they are not one (or no memory). */
static cJSON *json_parse_exact(const unsigned char *body, size_t len)
{
    if (!body || len == 0 || memchr(body, '\0', len))
        return NULL;
    char *text = xstrndup((const char *)body, len);
    if (!text)
        return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    free(text);
    return root;
}

/* Numbers print so that 1, 1.0 and 1e0 are one text: whole numbers as integers, others in
 * the shortest %g form that reads back as the same double. */
static int canon_number(struct buf *b, double d)
{
    if (!isfinite(d))
        return buf_puts(b, "null");
    if (d == 0)
        return buf_puts(b, "0");
    if (floor(d) == d && fabs(d) < 1e15)
        return buf_printf(b, "%lld", (long long)d);
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    return buf_puts(b, tmp);
}

static int canon_string(struct buf *b, const char *s)
{
    if (buf_append(b, "\"", 1) < 0)
        return -1;
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = NULL;
        char hex[8];
        switch (*p) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (*p < 0x20) {
                snprintf(hex, sizeof hex, "\\u%04x", *p);
                esc = hex;
            }
        }
        if (!esc)
            continue;
        if (buf_append(b, run, (size_t)((const char *)p - run)) < 0 || buf_puts(b, esc) < 0)
            return -1;
        run = (const char *)p + 1;
    }
    return buf_puts(b, run) < 0 || buf_append(b, "\"", 1) < 0 ? -1 : 0;
}

struct member {
    const cJSON *item;
    size_t order; /* position in the object, so repeated keys keep their order */
};

static int member_cmp(const void *pa, const void *pb)
{
    const struct member *a = pa, *b = pb;
    int c = strcmp(a->item->string ? a->item->string : "", b->item->string ? b->item->string : "");
    if (c)
        return c;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The members of an object sorted by key (byte order). Caller frees *out. */
static int sorted_members(const cJSON *obj, struct member **out, size_t *n)
{
    size_t count = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        count++;
    *out = NULL;
    *n = count;
    if (count == 0)
        return 0;
    struct member *m = malloc(count * sizeof *m);
    if (!m)
        return -1;
    size_t i = 0;
    for (const cJSON *c = obj->child; c; c = c->next, i++)
        m[i] = (struct member){.item = c, .order = i};
    qsort(m, count, sizeof *m, member_cmp);
    *out = m;
    return 0;
}

/* Recursion is bounded by cJSON's nesting limit (CJSON_NESTING_LIMIT). */
static int canon_print(struct buf *b, const cJSON *item)
{
    if (cJSON_IsNull(item))
        return buf_puts(b, "null");
    if (cJSON_IsTrue(item))
        return buf_puts(b, "true");
    if (cJSON_IsFalse(item))
        return buf_puts(b, "false");
    if (cJSON_IsNumber(item))
        return canon_number(b, item->valuedouble);
    if (cJSON_IsString(item))
        return canon_string(b, item->valuestring ? item->valuestring : "");
    if (cJSON_IsArray(item)) {
        if (buf_append(b, "[", 1) < 0)
            return -1;
        for (const cJSON *c = item->child; c; c = c->next)
            if ((c != item->child && buf_append(b, ",", 1) < 0) || canon_print(b, c) < 0)
                return -1;
        return buf_append(b, "]", 1);
    }
    if (cJSON_IsObject(item)) {
        struct member *m;
        size_t n;
        int rc = -1;
        if (sorted_members(item, &m, &n) < 0)
            return -1;
        if (buf_append(b, "{", 1) < 0)
            goto out;
        for (size_t i = 0; i < n; i++) {
            if ((i && buf_append(b, ",", 1) < 0) || canon_string(b, m[i].item->string) < 0 ||
                buf_append(b, ":", 1) < 0 || canon_print(b, m[i].item) < 0)
                goto out;
        }
        rc = buf_append(b, "}", 1);
    out:
        free(m);
        return rc;
    }
    return buf_puts(b, "null"); /* raw or invalid items do not come out of the parser */
}

static char *canon_text(const cJSON *item)
{
    struct buf b = {0};
    if (canon_print(&b, item) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

char *match_canonical_json(const unsigned char *body, size_t len, char *const *ignore,
                           size_t nignore)
{
    cJSON *root = json_parse_exact(body, len);
    if (!root)
        return NULL;
    for (size_t i = 0; i < nignore; i++)
        jsonptr_remove(root, ignore[i]);
    char *s = canon_text(root);
    cJSON_Delete(root);
    return s;
}

/* ------------------------------------------------------------ request parts */

static unsigned fields_of(const struct match_rules *rules)
{
    unsigned f = rules ? rules->fields & MATCH_ALL : 0;
    return f ? f : MATCH_ALL;
}

/* One query parameter as received: the raw "name=value" (or "name") bytes. */
struct qparam {
    const char *s;
    size_t n;     /* whole segment */
    size_t namen; /* up to the first '=' */
};

static int qparam_cmp(const void *pa, const void *pb)
{
    const struct qparam *a = pa, *b = pb;
    size_t m = a->namen < b->namen ? a->namen : b->namen;
    int c = memcmp(a->s, b->s, m);
    if (c || a->namen != b->namen)
        return c ? c : (a->namen < b->namen ? -1 : 1);
    /* Same name: order by what follows it ("" < "=" < "=v"). */
    size_t ra = a->n - a->namen, rb = b->n - b->namen;
    m = ra < rb ? ra : rb;
    c = memcmp(a->s + a->namen, b->s + b->namen, m);
    if (c || ra == rb)
        return c;
    return ra < rb ? -1 : 1;
}

static int name_in(char *const *list, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && memcmp(list[i], s, len) == 0)
            return 1;
    return 0;
}

/* The parameters of query that take part in matching (neither ignored nor secret), sorted.
 * Pointers into query. Caller frees *out. */
static int query_params(const struct match_rules *rules, const struct redact_rules *redact,
                        const char *query, struct qparam **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!query || !*query)
        return 0;
    size_t cap = 1;
    for (const char *p = query; *p; p++)
        cap += *p == '&';
    struct qparam *v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    size_t n = 0;
    for (const char *p = query;; p++) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t namen = eq ? (size_t)(eq - p) : len;
        int skip = len == 0 ||
                   (rules && name_in(rules->ignore_query, rules->nignore_query, p, namen)) ||
                   (redact && name_in(redact->query, redact->nquery, p, namen));
        if (!skip)
            v[n++] = (struct qparam){.s = p, .n = len, .namen = namen};
        p += len;
        if (!*p)
            break;
    }
    qsort(v, n, sizeof *v, qparam_cmp);
    *out = v;
    *nout = n;
    return 0;
}

/* Append every value of header name in h, joined with ", ". Returns 1 when there was one,
 * 0 when none, -1 when out of memory. */
static int header_values(const struct headers *h, const char *name, struct buf *b)
{
    int found = 0;
    for (size_t i = 0; h && i < h->n; i++) {
        if (ascii_casecmp(h->v[i].name, name) != 0)
            continue;
        if ((found && buf_puts(b, ", ") < 0) || buf_puts(b, h->v[i].value) < 0)
            return -1;
        found = 1;
    }
    return found;
}

static int put_lower(struct buf *b, const char *s)
{
    for (; *s; s++) {
        char c = *s >= 'A' && *s <= 'Z' ? (char)(*s - 'A' + 'a') : *s;
        if (buf_append(b, &c, 1) < 0)
            return -1;
    }
    return 0;
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

enum body_kind { BODY_EMPTY, BODY_JSON, BODY_TEXT, BODY_BINARY };

/* A request body as matching sees it. */
struct body_view {
    enum body_kind kind;
    cJSON *tree; /* BODY_JSON: ignored and secret pointers removed */
    char *canon; /* BODY_JSON: canonical text of tree */
    const unsigned char *p;
    size_t len;
};

static int body_view_init(const struct match_rules *rules, const struct redact_rules *redact,
                          const unsigned char *body, size_t len, struct body_view *v)
{
    memset(v, 0, sizeof *v);
    v->p = body;
    v->len = body ? len : 0;
    if (v->len == 0) {
        v->kind = BODY_EMPTY;
        return 0;
    }
    v->tree = json_parse_exact(body, len);
    if (v->tree) {
        v->kind = BODY_JSON;
        for (size_t i = 0; rules && i < rules->nignore_json; i++)
            jsonptr_remove(v->tree, rules->ignore_json[i]);
        for (size_t i = 0; redact && i < redact->njson; i++)
            jsonptr_remove(v->tree, redact->json[i]);
        v->canon = canon_text(v->tree);
        return v->canon ? 0 : -1;
    }
    v->kind = is_utf8_text(body, len) ? BODY_TEXT : BODY_BINARY;
    return 0;
}

static void body_view_free(struct body_view *v)
{
    cJSON_Delete(v->tree);
    free(v->canon);
    memset(v, 0, sizeof *v);
}

/* What the key says of a body (nothing for an empty one). */
static int body_key(const struct body_view *v, struct buf *b)
{
    switch (v->kind) {
    case BODY_EMPTY:
        return 0;
    case BODY_JSON:
        return buf_puts(b, v->canon);
    case BODY_TEXT:
        return buf_append(b, v->p, v->len);
    case BODY_BINARY:
        return buf_printf(b, "<binary %zu bytes fnv1a %016llx>", v->len,
                          (unsigned long long)fnv1a(v->p, v->len));
    }
    return 0;
}

/* ------------------------------------------------------------ keys */

static int sep(struct buf *b)
{
    return b->len ? buf_append(b, " ", 1) : 0;
}

char *match_key(const struct match_rules *rules, const struct redact_rules *redact,
                const struct match_request *req)
{
    unsigned f = fields_of(rules);
    struct buf b = {0};
    struct qparam *q = NULL;
    size_t nq = 0;
    struct body_view body = {0};
    char *key = NULL;
    if (buf_append(&b, "", 0) < 0)
        goto out;
    if ((f & MATCH_METHOD) && buf_puts(&b, req->method ? req->method : "") < 0)
        goto out;
    if ((f & MATCH_PATH) && (sep(&b) < 0 || buf_puts(&b, req->path ? req->path : "") < 0))
        goto out;
    if (f & MATCH_QUERY) {
        if (query_params(rules, redact, req->query, &q, &nq) < 0)
            goto out;
        if (nq && !(f & MATCH_PATH) && sep(&b) < 0)
            goto out;
        for (size_t i = 0; i < nq; i++)
            if (buf_append(&b, i ? "&" : "?", 1) < 0 || buf_append(&b, q[i].s, q[i].n) < 0)
                goto out;
    }
    /* Headers come before the body so that a body's text cannot pose as a header. */
    for (size_t i = 0; rules && i < rules->nheaders; i++) {
        const char *name = rules->headers[i];
        if (redact_is_secret_header(redact, name))
            continue;
        struct buf val = {0};
        int found = header_values(req->headers, name, &val);
        int bad = found < 0 || (found && (sep(&b) < 0 || buf_puts(&b, "header:") < 0 ||
                                          put_lower(&b, name) < 0 || buf_append(&b, "=", 1) < 0 ||
                                          buf_append(&b, val.p, val.len) < 0));
        buf_free(&val);
        if (bad)
            goto out;
    }
    if (f & MATCH_BODY) {
        if (body_view_init(rules, redact, req->body, req->body_len, &body) < 0)
            goto out;
        if (body.kind != BODY_EMPTY &&
            (sep(&b) < 0 || buf_puts(&b, "body=") < 0 || body_key(&body, &b) < 0))
            goto out;
    }
    key = buf_steal(&b, NULL);
out:
    buf_free(&b);
    free(q);
    body_view_free(&body);
    return key;
}

uint64_t match_hash(const char *key)
{
    return fnv1a((const unsigned char *)key, key ? strlen(key) : 0);
}

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* murmur3's finaliser: every input bit reaches every output bit. */
static uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* A multiply-rotate hash of 8-byte words (read little-endian, so a file's hashes are the
 * same on every machine), unrelated in construction to FNV-1a. */
static uint64_t check_hash(const unsigned char *p, size_t n)
{
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)n * c2);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t k = 0;
        for (int j = 7; j >= 0; j--)
            k = (k << 8) | p[i + (size_t)j];
        k = rotl64(k * c1, 31) * c2;
        h = rotl64(h ^ k, 27) * 5 + 0x52dce729;
    }
    uint64_t k = 0;
    for (size_t j = n - i; j > 0; j--)
        k = (k << 8) | p[i + j - 1];
    h ^= rotl64(k * c1, 31) * c2;
    return fmix64(h ^ (uint64_t)n);
}

void match_ident_of(const char *key, struct match_ident *out)
{
    size_t n = key ? strlen(key) : 0;
    out->hash = fnv1a((const unsigned char *)key, n);
    out->check = check_hash((const unsigned char *)key, n);
}

int match_rules_are_default(const struct match_rules *r)
{
    return !r || (fields_of(r) == MATCH_ALL && r->nheaders == 0 && r->nignore_query == 0 &&
                  r->nignore_json == 0);
}

static int has_redacted(const void *p, size_t n)
{
    static const char needle[] = REDACTED;
    const size_t m = sizeof needle - 1;
    const unsigned char *s = p;
    for (size_t i = 0; s && i + m <= n; i++)
        if (s[i] == '[' && memcmp(s + i, needle, m) == 0)
            return 1;
    return 0;
}

static int listed(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

/* Add the pointer of every string REDACTED under item (its pointer so far in ptr). */
static int learn_json(struct redact_rules *r, const cJSON *item, struct buf *ptr, int depth)
{
    if (depth > 32 || r->njson >= MATCH_LEARN_MAX)
        return 0;
    if (cJSON_IsString(item) && strcmp(item->valuestring, REDACTED) == 0) {
        const char *p = ptr->p ? ptr->p : "";
        if (p[0] && !listed(r->json, r->njson, p) && redact_add_json(r, p) < 0)
            return -1;
        return 0;
    }
    if (!cJSON_IsArray(item) && !cJSON_IsObject(item))
        return 0;
    size_t len = ptr->len;
    int i = 0, rc = 0;
    for (const cJSON *c = item->child; c && rc == 0; c = c->next, i++) {
        ptr->len = len;
        if (ptr->p)
            ptr->p[len] = '\0';
        if (cJSON_IsArray(item)) {
            if (buf_printf(ptr, "/%d", i) < 0)
                return -1;
        } else {
            /* A member named "*" would read as every member: not learnt. */
            if (!c->string || strcmp(c->string, "*") == 0)
                continue;
            if (buf_puts(ptr, "/") < 0)
                return -1;
            for (const char *k = c->string; *k; k++)
                if ((*k == '~'   ? buf_puts(ptr, "~0")
                     : *k == '/' ? buf_puts(ptr, "~1")
                                 : buf_append(ptr, k, 1)) < 0)
                    return -1;
        }
        rc = learn_json(r, c, ptr, depth + 1);
    }
    ptr->len = len;
    if (ptr->p)
        ptr->p[len] = '\0';
    return rc;
}

int match_learn_redacted(struct redact_rules *r, const struct match_request *req)
{
    /* Query: "name=[REDACTED]" pairs. */
    const char *q = req->query;
    if (q && has_redacted(q, strlen(q))) {
        while (*q && r->nquery < MATCH_LEARN_MAX) {
            const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
            const char *eq = memchr(q, '=', (size_t)(end - q));
            if (eq && (size_t)(end - eq - 1) == strlen(REDACTED) &&
                memcmp(eq + 1, REDACTED, strlen(REDACTED)) == 0) {
                char *name = xstrndup(q, (size_t)(eq - q));
                int bad =
                    !name || (!listed(r->query, r->nquery, name) && redact_add_query(r, name) < 0);
                free(name);
                if (bad)
                    return -1;
            }
            q = amp ? amp + 1 : end;
        }
    }
    for (size_t i = 0; req->headers && i < req->headers->n && r->nheaders < MATCH_LEARN_MAX; i++) {
        const struct header *h = &req->headers->v[i];
        if (strcmp(h->value, REDACTED) == 0 && !redact_is_secret_header(r, h->name) &&
            redact_add_header(r, h->name) < 0)
            return -1;
    }
    if (!has_redacted(req->body, req->body_len))
        return 0;
    cJSON *tree = json_parse_exact(req->body, req->body_len);
    if (!tree)
        return 0;
    struct buf ptr = {0};
    int rc = learn_json(r, tree, &ptr, 0);
    buf_free(&ptr);
    cJSON_Delete(tree);
    return rc;
}

int match_index_ident(const struct match_request *req, struct redact_rules *learnt,
                      struct match_ident *out)
{
    static const struct match_rules all = {.fields = MATCH_ALL};
    if (match_learn_redacted(learnt, req) < 0)
        return -1;
    char *key = match_key(&all, learnt, req);
    if (!key)
        return -1;
    match_ident_of(key, out);
    free(key);
    return 0;
}

/* ------------------------------------------------------------ differences */

struct diffs {
    char **out;
    size_t max;
    int count;
    int oom;
};

__attribute__((format(printf, 2, 3))) static void diff_add(struct diffs *d, const char *fmt, ...)
{
    if (d->oom)
        return;
    if ((size_t)d->count < d->max) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
        if (!s) {
            d->oom = 1;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
        d->out[d->count] = s;
    }
    d->count++;
}

/* At most max bytes of s[0..n), cut on a UTF-8 boundary, with "..." when cut; out holds at
 * least max + 4 bytes. */
static const char *clip(const char *s, size_t n, char *out, size_t max)
{
    if (n <= max) {
        memcpy(out, s, n);
        out[n] = '\0';
        return out;
    }
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    memcpy(out, s, k);
    memcpy(out + k, "...", 4);
    return out;
}

static void diff_scalar(struct diffs *d, const char *what, const char *a, const char *b)
{
    char ca[MATCH_SHOW_MAX + 4], cb[MATCH_SHOW_MAX + 4];
    if (strcmp(a ? a : "", b ? b : "") == 0)
        return;
    diff_add(d, "%s: %s != %s", what, clip(a ? a : "", a ? strlen(a) : 0, ca, MATCH_SHOW_MAX),
             clip(b ? b : "", b ? strlen(b) : 0, cb, MATCH_SHOW_MAX));
}

/* The values of the run of parameters q[i..j) that share a name, joined with ",". */
static int qvalues(const struct qparam *q, size_t i, size_t j, struct buf *b)
{
    for (size_t k = i; k < j; k++) {
        size_t off = q[k].namen < q[k].n ? q[k].namen + 1 : q[k].n;
        if ((k > i && buf_append(b, ",", 1) < 0) || buf_append(b, q[k].s + off, q[k].n - off) < 0)
            return -1;
    }
    return 0;
}

static size_t qrun_end(const struct qparam *q, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && q[j].namen == q[i].namen && memcmp(q[j].s, q[i].s, q[i].namen) == 0)
        j++;
    return j;
}

static int qrun_equal(const struct qparam *a, size_t na, const struct qparam *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t k = 0; k < na; k++)
        if (a[k].n != b[k].n || memcmp(a[k].s, b[k].s, a[k].n) != 0)
            return 0;
    return 1;
}

static void diff_query(struct diffs *d, const struct qparam *a, size_t na, const struct qparam *b,
                       size_t nb)
{
    size_t i = 0, j = 0;
    char cn[MATCH_SHOW_MAX + 4], ca[MATCH_SHOW_MAX + 4], cb[MATCH_SHOW_MAX + 4];
    while ((i < na || j < nb) && !d->oom) {
        int c;
        if (i == na)
            c = 1;
        else if (j == nb)
            c = -1;
        else {
            struct qparam x = a[i], y = b[j];
            x.n = x.namen; /* compare names only */
            y.n = y.namen;
            c = qparam_cmp(&x, &y);
        }
        size_t ie = c <= 0 ? qrun_end(a, na, i) : i;
        size_t je = c >= 0 ? qrun_end(b, nb, j) : j;
        const struct qparam *named = c <= 0 ? &a[i] : &b[j];
        if (c != 0 || !qrun_equal(a + i, ie - i, b + j, je - j)) {
            struct buf va = {0}, vb = {0};
            if (qvalues(a, i, ie, &va) < 0 || qvalues(b, j, je, &vb) < 0 ||
                buf_append(&va, "", 0) < 0 || buf_append(&vb, "", 0) < 0) {
                d->oom = 1;
            } else {
                diff_add(d, "query %s: %s != %s", clip(named->s, named->namen, cn, MATCH_SHOW_MAX),
                         c <= 0 ? clip(va.p, va.len, ca, MATCH_SHOW_MAX) : "missing",
                         c >= 0 ? clip(vb.p, vb.len, cb, MATCH_SHOW_MAX) : "missing");
            }
            buf_free(&va);
            buf_free(&vb);
        }
        i = ie;
        j = je;
    }
}

/* Compact canonical JSON of item, clipped for display. */
static const char *show_json(const cJSON *item, char *out, int *oom)
{
    char *s = canon_text(item);
    if (!s) {
        *oom = 1;
        out[0] = '\0';
        return out;
    }
    clip(s, strlen(s), out, MATCH_SHOW_MAX);
    free(s);
    return out;
}

struct jdiff {
    struct diffs *d;
    struct buf ptr; /* JSON pointer of the value being compared */
    int found;      /* pointer differences so far */
};

static void jdiff_add(struct jdiff *j, const cJSON *a, const cJSON *b)
{
    char ca[MATCH_SHOW_MAX + 4], cb[MATCH_SHOW_MAX + 4];
    if (j->found++ == MATCH_BODY_DIFF_CAP) {
        diff_add(j->d, "body: more differences after the first %d", MATCH_BODY_DIFF_CAP);
        return;
    }
    if (j->found > MATCH_BODY_DIFF_CAP)
        return;
    const char *sa = a ? show_json(a, ca, &j->d->oom) : "missing";
    const char *sb = b ? show_json(b, cb, &j->d->oom) : "missing";
    char cp[MATCH_SHOW_MAX + 4];
    if (j->ptr.len)
        diff_add(j->d, "body %s: %s != %s", clip(j->ptr.p, j->ptr.len, cp, MATCH_SHOW_MAX), sa, sb);
    else
        diff_add(j->d, "body: %s != %s", sa, sb);
}

/* Append "/" and the escaped key (or index) to the pointer; returns the old length. */
static size_t jptr_push(struct jdiff *j, const char *key, size_t index)
{
    size_t old = j->ptr.len;
    int rc = buf_append(&j->ptr, "/", 1);
    if (rc == 0 && key) {
        for (const char *p = key; *p && rc == 0; p++)
            rc = *p == '~'   ? buf_puts(&j->ptr, "~0")
                 : *p == '/' ? buf_puts(&j->ptr, "~1")
                             : buf_append(&j->ptr, p, 1);
    } else if (rc == 0) {
        rc = buf_printf(&j->ptr, "%zu", index);
    }
    if (rc < 0)
        j->d->oom = 1;
    return old;
}

static void jptr_pop(struct jdiff *j, size_t old)
{
    j->ptr.len = old;
    if (j->ptr.p)
        j->ptr.p[old] = '\0';
}

/* The type of a value, with true and false one kind. */
static int json_kind(const cJSON *x)
{
    int t = x->type & 0xFF;
    return t == cJSON_False ? cJSON_True : t;
}

/* Walk two trees side by side; recursion bounded by cJSON's nesting limit. */
static void json_diff(struct jdiff *j, const cJSON *a, const cJSON *b)
{
    if (j->d->oom || j->found > MATCH_BODY_DIFF_CAP)
        return;
    if (json_kind(a) != json_kind(b)) {
        jdiff_add(j, a, b);
        return;
    }
    if (cJSON_IsArray(a)) {
        const cJSON *x = a->child, *y = b->child;
        for (size_t i = 0; (x || y) && !j->d->oom; i++) {
            size_t old = jptr_push(j, NULL, i);
            if (x && y)
                json_diff(j, x, y);
            else
                jdiff_add(j, x, y);
            jptr_pop(j, old);
            x = x ? x->next : NULL;
            y = y ? y->next : NULL;
        }
        return;
    }
    if (cJSON_IsObject(a)) {
        struct member *ma = NULL, *mb = NULL;
        size_t na = 0, nb = 0, i = 0, k = 0;
        if (sorted_members(a, &ma, &na) < 0 || sorted_members(b, &mb, &nb) < 0) {
            j->d->oom = 1;
            goto out;
        }
        while ((i < na || k < nb) && !j->d->oom) {
            int c = i == na ? 1 : k == nb ? -1 : strcmp(ma[i].item->string, mb[k].item->string);
            const cJSON *x = c <= 0 ? ma[i].item : NULL, *y = c >= 0 ? mb[k].item : NULL;
            size_t old = jptr_push(j, (x ? x : y)->string, 0);
            if (x && y)
                json_diff(j, x, y);
            else
                jdiff_add(j, x, y);
            jptr_pop(j, old);
            i += c <= 0;
            k += c >= 0;
        }
    out:
        free(ma);
        free(mb);
        return;
    }
    /* Scalars: equal when their canonical texts are. */
    char *sa = canon_text(a), *sb = canon_text(b);
    if (!sa || !sb)
        j->d->oom = 1;
    else if (strcmp(sa, sb) != 0)
        jdiff_add(j, a, b);
    free(sa);
    free(sb);
}

/* Append a body for display: JSON clipped, text quoted and clipped (starting at byte from,
 * "..." marking a cut), binary by its size. */
static int show_body(struct buf *b, const struct body_view *v, size_t from)
{
    char tmp[MATCH_SHOW_MAX + 4];
    switch (v->kind) {
    case BODY_EMPTY:
        return buf_puts(b, "empty");
    case BODY_JSON:
        return buf_puts(b, clip(v->canon, strlen(v->canon), tmp, MATCH_SHOW_MAX));
    case BODY_TEXT: {
        struct buf raw = {0};
        int rc = buf_puts(&raw, from ? "..." : "");
        if (rc == 0)
            rc =
                buf_puts(&raw, clip((const char *)v->p + from, v->len - from, tmp, MATCH_SHOW_MAX));
        if (rc == 0)
            rc = canon_string(b, raw.p);
        buf_free(&raw);
        return rc;
    }
    case BODY_BINARY:
        return buf_printf(b, "binary %zu bytes", v->len);
    }
    return 0;
}

static void diff_body(struct diffs *d, const struct body_view *a, const struct body_view *b)
{
    if (a->kind == BODY_JSON && b->kind == BODY_JSON) {
        if (strcmp(a->canon, b->canon) == 0)
            return;
        struct jdiff j = {.d = d};
        int before = d->count;
        json_diff(&j, a->tree, b->tree);
        buf_free(&j.ptr);
        if (d->count > before || d->oom)
            return;
        /* The trees compare equal yet print differently (repeated keys): say so plainly. */
    } else if (a->kind == b->kind && a->len == b->len &&
               (a->kind == BODY_EMPTY || memcmp(a->p, b->p, a->len) == 0)) {
        return;
    }
    struct buf sa = {0}, sb = {0};
    size_t at = 0, from = 0;
    int raw = a->kind != BODY_JSON && b->kind != BODY_JSON && a->len && b->len;
    if (raw) {
        /* Neither is JSON: point at the first byte that differs. */
        while (at < a->len && at < b->len && a->p[at] == b->p[at])
            at++;
        from = at > 20 ? at - 20 : 0;
        while (from > 0 && (a->p[from] & 0xC0) == 0x80) /* the bytes before at are shared */
            from--;
    }
    if (show_body(&sa, a, a->kind == BODY_TEXT ? from : 0) < 0 ||
        show_body(&sb, b, b->kind == BODY_TEXT ? from : 0) < 0)
        d->oom = 1;
    else if (raw)
        diff_add(d, "body at byte %zu: %s != %s", at, sa.p, sb.p);
    else
        diff_add(d, "body: %s != %s", sa.p, sb.p);
    buf_free(&sa);
    buf_free(&sb);
}

int match_diff(const struct match_rules *rules, const struct redact_rules *redact,
               const struct match_request *req, const struct match_request *rec, char **out,
               size_t max)
{
    unsigned f = fields_of(rules);
    struct diffs d = {.out = out, .max = max};
    struct qparam *qa = NULL, *qb = NULL;
    size_t nqa = 0, nqb = 0;
    struct body_view ba = {0}, bb = {0};
    if (f & MATCH_METHOD)
        diff_scalar(&d, "method", req->method, rec->method);
    if (f & MATCH_PATH)
        diff_scalar(&d, "path", req->path, rec->path);
    if (f & MATCH_QUERY) {
        if (query_params(rules, redact, req->query, &qa, &nqa) < 0 ||
            query_params(rules, redact, rec->query, &qb, &nqb) < 0)
            d.oom = 1;
        else
            diff_query(&d, qa, nqa, qb, nqb);
    }
    for (size_t i = 0; rules && i < rules->nheaders && !d.oom; i++) {
        const char *name = rules->headers[i];
        if (redact_is_secret_header(redact, name))
            continue;
        struct buf va = {0}, vb = {0}, what = {0};
        int fa = header_values(req->headers, name, &va);
        int fb = header_values(rec->headers, name, &vb);
        if (fa < 0 || fb < 0 || buf_puts(&what, "header ") < 0 || put_lower(&what, name) < 0)
            d.oom = 1;
        else if (fa != fb)
            diff_scalar(&d, what.p, fa ? va.p : "missing", fb ? vb.p : "missing");
        else if (fa)
            diff_scalar(&d, what.p, va.p, vb.p);
        buf_free(&va);
        buf_free(&vb);
        buf_free(&what);
    }
    if ((f & MATCH_BODY) && !d.oom) {
        if (body_view_init(rules, redact, req->body, req->body_len, &ba) < 0 ||
            body_view_init(rules, redact, rec->body, rec->body_len, &bb) < 0)
            d.oom = 1;
        else
            diff_body(&d, &ba, &bb);
    }
    free(qa);
    free(qb);
    body_view_free(&ba);
    body_view_free(&bb);
    if (d.oom) {
        for (size_t i = 0; i < max && i < (size_t)d.count; i++) {
            free(out[i]);
            out[i] = NULL;
        }
        return -1;
    }
    return d.count;
}

/* ------------------------------------------------------------ rules */

int match_parse_fields(const char *s, unsigned *out, char *err)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"method", MATCH_METHOD},
                 {"path", MATCH_PATH},
                 {"query", MATCH_QUERY},
                 {"body", MATCH_BODY}};
    unsigned bits = 0;
    const char *p = s ? s : "";
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *t = p;
        size_t tn = n;
        while (tn && (*t == ' ' || *t == '\t'))
            t++, tn--;
        while (tn && (t[tn - 1] == ' ' || t[tn - 1] == '\t'))
            tn--;
        if (tn == 0) {
            snprintf(err, APISIM_ERR_LEN, "empty match field in \"%.200s\" " ACCEPTED_FIELDS,
                     s ? s : "");
            return -1;
        }
        size_t k = 0;
        while (k < sizeof names / sizeof names[0] &&
               !(strlen(names[k].name) == tn && memcmp(names[k].name, t, tn) == 0))
            k++;
        if (k == sizeof names / sizeof names[0]) {
            snprintf(err, APISIM_ERR_LEN, "unknown match field \"%.*s\" " ACCEPTED_FIELDS,
                     (int)(tn < 200 ? tn : 200), t);
            return -1;
        }
        bits |= names[k].bit;
        if (!p[n])
            break;
        p += n + 1;
    }
    *out = bits;
    return 0;
}

int match_add_header(struct match_rules *r, const char *name)
{
    return strlist_add(&r->headers, &r->nheaders, name);
}

int match_add_ignore_query(struct match_rules *r, const char *name)
{
    return strlist_add(&r->ignore_query, &r->nignore_query, name);
}

int match_add_ignore_json(struct match_rules *r, const char *ptr)
{
    return strlist_add(&r->ignore_json, &r->nignore_json, ptr);
}

int match_rules_copy(struct match_rules *dst, const struct match_rules *src)
{
    struct match_rules r = {.fields = src->fields};
    for (size_t i = 0; i < src->nheaders; i++)
        if (match_add_header(&r, src->headers[i]) < 0)
            goto fail;
    for (size_t i = 0; i < src->nignore_query; i++)
        if (match_add_ignore_query(&r, src->ignore_query[i]) < 0)
            goto fail;
    for (size_t i = 0; i < src->nignore_json; i++)
        if (match_add_ignore_json(&r, src->ignore_json[i]) < 0)
            goto fail;
    *dst = r;
    return 0;
fail:
    match_rules_free(&r);
    return -1;
}

void match_rules_free(struct match_rules *r)
{
    if (!r)
        return;
    strlist_free(&r->headers, &r->nheaders);
    strlist_free(&r->ignore_query, &r->nignore_query);
    strlist_free(&r->ignore_json, &r->nignore_json);
    r->fields = 0;
}
