/* libFuzzer target: HAR and JSONL import (har.h), as `apisim import` reads them.
 *
 * The input is one JSON document: a HAR ({"log": {"entries": [...]}}) whose entries are each
 * converted, or one JSONL object. Whatever converts is written back out (HAR entry and
 * JSONL object) and read again, as an export/import round trip does. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>

#include "exchange.h"
#include "har.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(struct exchange *ex)
{
    char err[APISIM_ERR_LEN];
    struct har_limits lim = {.max_body = 1 << 20};
    cJSON *e = har_entry_from_exchange(ex, NULL);
    struct exchange *back = NULL;
    if (e && har_entry_to_exchange(e, &lim, &back, err) == 0)
        exchange_free(back);
    cJSON_Delete(e);
    cJSON *j = har_jsonl_from_exchange(ex);
    back = NULL;
    if (j && har_jsonl_to_exchange(j, &lim, &back, err) == 0)
        exchange_free(back);
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[APISIM_ERR_LEN];
    struct har_limits lim = {.max_body = 1 << 20};
    cJSON *doc = cJSON_ParseWithLength((const char *)data, size);
    if (!doc)
        return 0;
    const cJSON *entries =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "log"), "entries");
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach(e, entries)
    {
        struct exchange *ex = NULL;
        if (har_entry_to_exchange(e, &lim, &ex, err) == 0) {
            round_trip(ex);
            exchange_free(ex);
        }
        if (++n == 64)
            break;
    }
    struct exchange *ex = NULL;
    if (har_jsonl_to_exchange(doc, &lim, &ex, err) == 0) {
        round_trip(ex);
        exchange_free(ex);
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "started_at");
    int64_t us;
    if (cJSON_IsString(t))
        (void)har_parse_time(t->valuestring, &us);
    cJSON_Delete(doc);
    return 0;
}
