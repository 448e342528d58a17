#include "exchange.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

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

char *exchange_headers_to_json(const struct headers *h)
{
    char *out = NULL;
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        goto out;
    for (size_t i = 0; i < h->n; i++) {
        cJSON *pair = cJSON_CreateArray();
        if (!pair)
            goto out;
        cJSON_AddItemToArray(arr, pair);
        cJSON *n = cJSON_CreateString(h->v[i].name), *v = cJSON_CreateString(h->v[i].value);
        if (n)
            cJSON_AddItemToArray(pair, n);
        if (v)
            cJSON_AddItemToArray(pair, v);
        if (!n || !v)
            goto out;
    }
    out = cJSON_PrintUnformatted(arr);
out:
    cJSON_Delete(arr);
    return out;
}

int exchange_headers_from_json(const char *text, size_t len, struct headers *h)
{
    int rc = -1;
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
