/* libFuzzer target: the control API (admin.h) on a mock-mode replay, driven with synthetic
 * requests as the server would make them, and the stub it may have added then answered.
 *
 * Input fields ('\0'-separated, see fuzz_input.h): 0 method, 1 path under /__apisim/
 * (e.g. "stubs", "fixtures/quota", "requests"), 2 query, 3 body (the rest, any bytes).
 * After a POST to stubs, a request for the stub's method and path (taken from the body when
 * it is JSON) goes through replay_handle, which expands the stub's placeholders. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fuzz_input.h"
#include "log.h"
#include "replay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct replay *rp;

static void response_done(struct server_response *resp)
{
    headers_free(&resp->headers);
    if (!resp->body_borrowed)
        free(resp->body);
    memset(resp, 0, sizeof *resp);
}

static void serve(void (*fn)(struct server_request *, struct server_response *), const char *method,
                  const char *path, const char *query, const unsigned char *body, size_t len)
{
    struct server_request req = {.method = method,
                                 .path = path,
                                 .query = query,
                                 .body = body,
                                 .body_len = len,
                                 .loopback = 1,
                                 .received_us = 1764000000000000LL};
    headers_add(&req.headers, "Content-Type", "application/json");
    headers_add(&req.headers, "Authorization", "Bearer fuzz");
    struct server_response resp = {.chunk_factor = 1.0};
    fn(&req, &resp);
    response_done(&resp);
    headers_free(&req.headers);
}

static void call_admin(struct server_request *req, struct server_response *resp)
{
    (void)admin_handle(rp, req, resp);
}

static void call_replay(struct server_request *req, struct server_response *resp)
{
    (void)replay_handle(rp, req, resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[APISIM_ERR_LEN];
    if (!rp) {
        log_set_level(LOG_QUIET);
        struct replay_options ro = {.mode = "mock", .journal_max = 64, .seed = 1};
        if (replay_new(&rp, &ro, err) < 0)
            abort();
    }
    struct fuzz_fields f;
    if (fuzz_fields(data, size, 4, &f) < 0)
        goto out;
    char path[512];
    snprintf(path, sizeof path, "/__apisim/%s", f.v[1]);
    serve(call_admin, f.v[0], path, f.v[2], (const unsigned char *)f.v[3], f.len[3]);
    if (strcmp(f.v[0], "POST") == 0 && strcmp(f.v[1], "stubs") == 0) {
        cJSON *o = cJSON_ParseWithLength(f.v[3], f.len[3]);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "method");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "path");
        if (cJSON_IsString(m) && cJSON_IsString(p)) {
            char upper[32];
            size_t i = 0;
            for (; m->valuestring[i] && i < sizeof upper - 1; i++)
                upper[i] = (char)(m->valuestring[i] >= 'a' && m->valuestring[i] <= 'z'
                                      ? m->valuestring[i] - 32
                                      : m->valuestring[i]);
            upper[i] = '\0';
            serve(call_replay, upper, p->valuestring, f.v[2], (const unsigned char *)"{}", 2);
        }
        cJSON_Delete(o);
    }
    serve(call_admin, "GET", "/__apisim/requests", "", NULL, 0);
    /* Keep the state bounded across millions of inputs. */
    replay_reset(rp);
out:
    fuzz_fields_free(&f);
    return 0;
}
