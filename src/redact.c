#include "redact.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "jsonptr.h"

static const char *const builtin_headers[] = {"authorization", "proxy-authorization", "x-api-key",
                                              "cookie", "set-cookie"};

int redact_is_secret_header(const struct redact_rules *r, const char *name)
{
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof builtin_headers / sizeof builtin_headers[0]; i++)
        if (ascii_casecmp(name, builtin_headers[i]) == 0)
            return 1;
    for (size_t i = 0; r && i < r->nheaders; i++)
        if (ascii_casecmp(name, r->headers[i]) == 0)
            return 1;
    return 0;
}

/* Same as redact_is_secret_query for a name that is not NUL-terminated. */
static int secret_query_n(const struct redact_rules *r, const char *name, size_t n)
{
    for (size_t i = 0; r && i < r->nquery; i++)
        if (strlen(r->query[i]) == n && memcmp(r->query[i], name, n) == 0)
            return 1;
    return 0;
}

int redact_is_secret_query(const struct redact_rules *r, const char *name)
{
    return name ? secret_query_n(r, name, strlen(name)) : 0;
}

int redact_headers(const struct redact_rules *r, struct headers *h)
{
    for (size_t i = 0; h && i < h->n; i++) {
        if (!redact_is_secret_header(r, h->v[i].name) || strcmp(h->v[i].value, REDACTED) == 0)
            continue;
        char *v = strdup(REDACTED);
        if (!v)
            return -1;
        free(h->v[i].value);
        h->v[i].value = v;
    }
    return 0;
}

char *redact_query(const struct redact_rules *r, const char *query)
{
    struct buf b = {0};
    const char *p = query ? query : "";
    if (buf_append(&b, "", 0) < 0)
        return NULL;
    for (;;) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        if (eq && secret_query_n(r, p, (size_t)(eq - p))) {
            if (buf_append(&b, p, (size_t)(eq - p) + 1) < 0 || buf_puts(&b, REDACTED) < 0)
                goto fail;
        } else if (buf_append(&b, p, n) < 0) {
            goto fail;
        }
        if (p[n] == '\0')
            break;
        if (buf_append(&b, "&", 1) < 0)
            goto fail;
        p += n + 1;
    }
    return buf_steal(&b, NULL);
fail:
    buf_free(&b);
    return NULL;
}

struct replace_ctx {
    cJSON **root;
    int oom;
};

static void replace_one(cJSON *parent, cJSON *item, void *arg)
{
    struct replace_ctx *c = arg;
    cJSON *s = cJSON_CreateString(REDACTED);
    if (!s) {
        c->oom = 1;
        return;
    }
    if (!parent) {
        cJSON_Delete(*c->root);
        *c->root = s;
        return;
    }
    /* ReplaceItemViaPointer relinks but does not carry the member name over. */
    if (item->string) {
        s->string = strdup(item->string);
        if (!s->string) {
            cJSON_Delete(s);
            c->oom = 1;
            return;
        }
    }
    if (!cJSON_ReplaceItemViaPointer(parent, item, s)) {
        cJSON_Delete(s);
        c->oom = 1;
    }
}

/* Parse exactly len bytes as one JSON document; NULL when they are not one. */
static cJSON *parse_exact(const unsigned char *body, size_t len)
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

int redact_json(const struct redact_rules *r, const unsigned char *body, size_t len,
                unsigned char **out, size_t *outlen)
{
    if (!r || r->njson == 0)
        return 0;
    cJSON *root = parse_exact(body, len);
    if (!root)
        return 0;
    int rc = 0, reached = 0;
    struct replace_ctx c = {.root = &root, .oom = 0};
    for (size_t i = 0; i < r->njson && !c.oom; i++)
        reached += jsonptr_visit(root, r->json[i], replace_one, &c);
    if (c.oom) {
        rc = -1;
        goto out;
    }
    if (reached == 0)
        goto out;
    char *text = cJSON_PrintUnformatted(root);
    if (!text) {
        rc = -1;
        goto out;
    }
    *outlen = strlen(text);
    *out = (unsigned char *)text;
    rc = 1;
out:
    cJSON_Delete(root);
    return rc;
}

int redact_add_header(struct redact_rules *r, const char *name)
{
    return strlist_add(&r->headers, &r->nheaders, name);
}

int redact_add_query(struct redact_rules *r, const char *name)
{
    return strlist_add(&r->query, &r->nquery, name);
}

int redact_add_json(struct redact_rules *r, const char *ptr)
{
    return strlist_add(&r->json, &r->njson, ptr);
}

void redact_rules_free(struct redact_rules *r)
{
    if (!r)
        return;
    strlist_free(&r->headers, &r->nheaders);
    strlist_free(&r->query, &r->nquery);
    strlist_free(&r->json, &r->njson);
}
