#include "jsonptr.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

/* Pointers longer than this are refused: they come from flags and config files, and a cap
 * keeps the segment decoding on the stack. */
#define JSONPTR_MAX_LEN 4096

int jsonptr_validate(const char *s, char *err)
{
    if (!s) {
        snprintf(err, APISIM_ERR_LEN, "invalid JSON pointer: missing");
        return -1;
    }
    size_t len = strlen(s);
    if (len == 0)
        return 0;
    if (len > JSONPTR_MAX_LEN) {
        snprintf(err, APISIM_ERR_LEN, "invalid JSON pointer \"%.64s...\": longer than %d bytes", s,
                 JSONPTR_MAX_LEN);
        return -1;
    }
    if (s[0] != '/') {
        snprintf(err, APISIM_ERR_LEN,
                 "invalid JSON pointer \"%.200s\": must be empty or start with '/' (e.g. "
                 "/metadata/user_id, /messages/*/id)",
                 s);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '~' && s[i + 1] != '0' && s[i + 1] != '1') {
            snprintf(
                err, APISIM_ERR_LEN,
                "invalid JSON pointer \"%.200s\": '~' at offset %zu must be followed by 0 or 1 "
                "(~0 is '~', ~1 is '/')",
                s, i);
            return -1;
        }
    }
    return 0;
}

struct walk {
    void (*fn)(cJSON *parent, cJSON *item, void *ctx);
    void *ctx;
    int count;
};

/* 1 when the raw segment seg[0..n) (escapes "~0" and "~1" undecoded) names key. */
static int segment_equals(const char *seg, size_t n, const char *key)
{
    size_t i = 0;
    for (; i < n; key++) {
        char c = seg[i];
        if (c == '~') {
            c = seg[i + 1] == '0' ? '~' : '/';
            i += 2;
        } else {
            i++;
        }
        if (*key != c)
            return 0;
    }
    return *key == '\0';
}

/* An RFC 6901 array index: "0" or digits without a leading zero, within range. */
static int segment_index(const char *seg, size_t n, int *out)
{
    if (n == 0 || (seg[0] == '0' && n > 1))
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (seg[i] < '0' || seg[i] > '9')
            return -1;
        v = v * 10 + (seg[i] - '0');
        if (v > 1000000000L)
            return -1;
    }
    *out = (int)v;
    return 0;
}

/* item (a child of parent, or the root) is reached by the pointer up to rest; follow the
 * rest. Recursion is as deep as the pointer has segments and the document has levels. */
static void walk_at(struct walk *w, cJSON *parent, cJSON *item, const char *rest)
{
    if (*rest == '\0') {
        w->count++;
        w->fn(parent, item, w->ctx);
        return;
    }
    if (!cJSON_IsArray(item) && !cJSON_IsObject(item))
        return;
    const char *seg = rest + 1; /* rest points at '/' */
    size_t n = strcspn(seg, "/");
    const char *next = seg + n;
    if (n == 1 && seg[0] == '*') {
        cJSON *c = item->child;
        while (c) {
            cJSON *after = c->next; /* fn may detach c */
            walk_at(w, item, c, next);
            c = after;
        }
    } else if (cJSON_IsArray(item)) {
        int idx;
        cJSON *c = segment_index(seg, n, &idx) == 0 ? cJSON_GetArrayItem(item, idx) : NULL;
        if (c)
            walk_at(w, item, c, next);
    } else {
        /* Every member with that name: a secret under a repeated key must not slip through. */
        cJSON *c = item->child;
        while (c) {
            cJSON *after = c->next;
            if (c->string && segment_equals(seg, n, c->string))
                walk_at(w, item, c, next);
            c = after;
        }
    }
}

int jsonptr_visit(cJSON *root, const char *ptr, void (*fn)(cJSON *parent, cJSON *item, void *ctx),
                  void *ctx)
{
    char err[APISIM_ERR_LEN];
    if (!root || !fn || jsonptr_validate(ptr, err) < 0)
        return 0;
    struct walk w = {.fn = fn, .ctx = ctx, .count = 0};
    walk_at(&w, NULL, root, ptr);
    return w.count;
}

static void remove_one(cJSON *parent, cJSON *item, void *ctx)
{
    int *removed = ctx;
    if (!parent)
        return;
    cJSON_Delete(cJSON_DetachItemViaPointer(parent, item));
    (*removed)++;
}

int jsonptr_remove(cJSON *root, const char *ptr)
{
    int removed = 0;
    jsonptr_visit(root, ptr, remove_one, &removed);
    return removed;
}
