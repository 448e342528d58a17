/* quota: every preset's answer, with and without a bearer token, and the fixture request
 * bodies (good and bad), as tables. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quota.h"

/* 2026-11-24T17:00:00.123456Z */
#define NOW_US 1795539600123456LL

#define W(u, r) "{\"utilization\":" u ",\"resets_at\":" r "}"
#define WNULL W("null", "null")
#define BODY(a, b, c, d)                                                                           \
    "{\"five_hour\":" a ",\"seven_day\":" b ",\"seven_day_opus\":" c ",\"seven_day_sonnet\":" d "}"
#define T(s) "\"" s "+00:00\""

#define OK_BODY                                                                                    \
    BODY(W("12.0", T("2026-11-24T20:00:00")), W("30.0", T("2026-11-28T17:00:00")), WNULL, WNULL)
#define NO_BEARER                                                                                  \
    "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"                \
    "\"OAuth authentication is required: send Authorization: Bearer TOKEN\"}}"
#define EXPIRED                                                                                    \
    "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"                \
    "\"OAuth token has expired. Please obtain a new token or refresh your existing token.\"}}"
#define RATE_LIMITED                                                                               \
    "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":"                    \
    "\"Rate limited. Please try again later.\"}}"
#define SERVER_ERROR                                                                               \
    "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Service unavailable\"}}"

struct acase {
    const char *preset;
    int64_t delay_ms; /* passed to quota_from_preset */
    const char *method;
    const char *authorization; /* NULL: no header */
    int status;
    const char *body;
    const char *retry_after; /* NULL: must be absent */
    int64_t delay_us;
};

static const struct acase answers[] = {
    {"ok", -1, "GET", "Bearer tok", 200, OK_BODY, NULL, 0},
    {"ok", 2000, "GET", "bearer tok", 200, OK_BODY, NULL, 0}, /* only slow waits */
    {"ok", -1, "HEAD", "Bearer tok", 200, OK_BODY, NULL, 0},
    {"ok", -1, "GET", NULL, 401, NO_BEARER, NULL, 0},
    {"ok", -1, "GET", "Bearer ", 401, NO_BEARER, NULL, 0},
    {"ok", -1, "GET", "Basic dXNlcjpwYXNz", 401, NO_BEARER, NULL, 0},
    {"ok", -1, "GET", "Bearertok", 401, NO_BEARER, NULL, 0},
    {"ok", -1, "POST", "Bearer tok", 405, NULL, NULL, 0},
    {"near-limit", -1, "GET", "Bearer tok", 200,
     BODY(W("86.0", T("2026-11-24T18:00:00")), W("40.0", T("2026-11-28T17:00:00")), WNULL, WNULL),
     NULL, 0},
    {"near-limit", -1, "GET", NULL, 401, NO_BEARER, NULL, 0},
    {"exhausted", -1, "GET", "Bearer tok", 200,
     BODY(W("100.0", T("2026-11-24T19:00:00")), WNULL, WNULL, WNULL), NULL, 0},
    {"exhausted", -1, "GET", NULL, 401, NO_BEARER, NULL, 0},
    {"long-window-exhausted", -1, "GET", "Bearer tok", 200,
     BODY(W("20.0", T("2026-11-24T20:00:00")), W("100.0", T("2026-11-27T17:00:00")), WNULL, WNULL),
     NULL, 0},
    {"long-window-exhausted", -1, "GET", NULL, 401, NO_BEARER, NULL, 0},
    {"unknown-reset", -1, "GET", "Bearer tok", 200, BODY(W("95.0", "null"), WNULL, WNULL, WNULL),
     NULL, 0},
    {"unknown-reset", -1, "GET", NULL, 401, NO_BEARER, NULL, 0},
    {"rate-limited", -1, "GET", "Bearer tok", 429, RATE_LIMITED, "30", 0},
    {"rate-limited", -1, "GET", NULL, 401, NO_BEARER, NULL, 0},
    {"server-error", -1, "GET", "Bearer tok", 503, SERVER_ERROR, NULL, 0},
    {"server-error", -1, "GET", NULL, 401, NO_BEARER, NULL, 0},
    {"slow", -1, "GET", "Bearer tok", 200, OK_BODY, NULL, 2000000},
    {"slow", 250, "GET", "Bearer tok", 200, OK_BODY, NULL, 250000},
    {"slow", 0, "GET", "Bearer tok", 200, OK_BODY, NULL, 0},
    {"slow", -1, "GET", NULL, 401, NO_BEARER, NULL, 2000000},
    {"unauthorized", -1, "GET", "Bearer tok", 401, EXPIRED, NULL, 0},
    {"unauthorized", -1, "GET", NULL, 401, EXPIRED, NULL, 0},
};

static int check_answer(size_t i, const struct acase *c)
{
    char err[APISIM_ERR_LEN] = "";
    struct quota_state *q = NULL;
    struct server_request req = {.method = c->method, .path = QUOTA_PATH, .query = ""};
    struct server_response resp = {0};
    int ok = 0;
    if (c->authorization)
        headers_add(&req.headers, "Authorization", c->authorization);
    if (quota_from_preset(c->preset, c->delay_ms, &q, err) < 0) {
        fprintf(stderr, "FAIL answer %zu (%s): %s\n", i, c->preset, err);
        goto out;
    }
    if (quota_answer(q, &req, NOW_US, &resp) < 0) {
        fprintf(stderr, "FAIL answer %zu (%s): quota_answer failed\n", i, c->preset);
        goto out;
    }
    const char *ct = headers_get(&resp.headers, "content-type");
    const char *ra = headers_get(&resp.headers, "retry-after");
    ok = resp.status == c->status && ct && strcmp(ct, "application/json") == 0 && resp.body &&
         resp.body_len == strlen((const char *)resp.body) &&
         (!c->body || strcmp((const char *)resp.body, c->body) == 0) &&
         (c->retry_after ? ra && strcmp(ra, c->retry_after) == 0 : ra == NULL) &&
         resp.delay_us == c->delay_us;
    if (ok && !c->body) {
        /* Bodies not spelled out must still be JSON. */
        cJSON *j = cJSON_ParseWithOpts((const char *)resp.body, NULL, 1);
        ok = j != NULL;
        cJSON_Delete(j);
    }
    if (!ok)
        fprintf(stderr,
                "FAIL answer %zu (%s %s auth=%s): status %d (want %d), delay %lld (want %lld), "
                "retry-after %s, body %s\n   want %s\n",
                i, c->preset, c->method, c->authorization ? c->authorization : "none", resp.status,
                c->status, (long long)resp.delay_us, (long long)c->delay_us, ra ? ra : "none",
                resp.body ? (const char *)resp.body : "NULL", c->body ? c->body : "(any JSON)");
out:
    headers_free(&req.headers);
    headers_free(&resp.headers);
    free(resp.body);
    quota_free(q);
    return ok ? 0 : 1;
}

struct jcase {
    const char *json;
    const char *err;  /* NULL: must parse; else a substring of the error */
    const char *body; /* with a bearer token, when it parses */
    int64_t delay_us;
};

static const struct jcase bodies[] = {
    {"{\"preset\":\"ok\"}", NULL, OK_BODY, 0},
    {"{\"preset\":\"slow\"}", NULL, OK_BODY, 2000000},
    {"{\"preset\":\"slow\",\"delay_ms\":150}", NULL, OK_BODY, 150000},
    {"{\"preset\":\"exhausted\"}", NULL,
     BODY(W("100.0", T("2026-11-24T19:00:00")), WNULL, WNULL, WNULL), 0},
    {"{\"windows\":{\"five_hour\":{\"utilization\":95,\"resets_in_s\":3600}}}", NULL,
     BODY(W("95.0", T("2026-11-24T18:00:00")), WNULL, WNULL, WNULL), 0},
    {"{\"windows\":{\"seven_day_opus\":{\"utilization\":33.5,\"resets_in_s\":-60},"
     "\"seven_day_sonnet\":{\"utilization\":null,\"resets_in_s\":86400},"
     "\"seven_day\":{\"utilization\":0.1}, \"five_hour\": null}}",
     NULL,
     BODY(WNULL, W("0.1", "null"), W("33.5", T("2026-11-24T16:59:00")),
          W("null", T("2026-11-25T17:00:00"))),
     0},
    {"{\"windows\":{}}", NULL, BODY(WNULL, WNULL, WNULL, WNULL), 0},
    {"[]", "expected a JSON object", NULL, 0},
    {"\"ok\"", "expected a JSON object", NULL, 0},
    {"{}", "field \"preset\" or \"windows\" is required", NULL, 0},
    {"{\"preset\":\"nope\"}",
     "field \"preset\": unknown quota preset \"nope\" (expected one of: ok, near-limit, "
     "exhausted, long-window-exhausted, unknown-reset, rate-limited, server-error, slow, "
     "unauthorized)",
     NULL, 0},
    {"{\"preset\":5}", "field \"preset\": expected a string", NULL, 0},
    {"{\"preset\":\"ok\",\"windows\":{}}", "either \"preset\" or \"windows\"", NULL, 0},
    {"{\"preset\":\"slow\",\"delay_ms\":\"5\"}", "field \"delay_ms\": expected an integer", NULL,
     0},
    {"{\"preset\":\"slow\",\"delay_ms\":-1}", "field \"delay_ms\": expected an integer", NULL, 0},
    {"{\"preset\":\"slow\",\"delay_ms\":1.5}", "field \"delay_ms\": expected an integer", NULL, 0},
    {"{\"preset\":\"slow\",\"delay_ms\":3600001}", "field \"delay_ms\": expected an integer", NULL,
     0},
    {"{\"preset\":\"ok\",\"delay_ms\":10}", "field \"delay_ms\": only the \"slow\" preset", NULL,
     0},
    {"{\"presets\":\"ok\"}", "field \"presets\": unknown field", NULL, 0},
    {"{\"windows\":[]}", "field \"windows\": expected an object", NULL, 0},
    {"{\"windows\":{\"five_hours\":{}}}", "field \"windows.five_hours\": unknown window", NULL, 0},
    {"{\"windows\":{\"five_hour\":95}}", "field \"windows.five_hour\": expected an object", NULL,
     0},
    {"{\"windows\":{\"five_hour\":{\"utilization\":\"95\"}}}",
     "field \"windows.five_hour.utilization\": expected a number", NULL, 0},
    {"{\"windows\":{\"five_hour\":{\"utilization\":-1}}}",
     "field \"windows.five_hour.utilization\": expected a number >= 0", NULL, 0},
    {"{\"windows\":{\"seven_day\":{\"resets_in_s\":\"1h\"}}}",
     "field \"windows.seven_day.resets_in_s\": expected an integer", NULL, 0},
    {"{\"windows\":{\"seven_day\":{\"resets_in_s\":1.5}}}",
     "field \"windows.seven_day.resets_in_s\": expected an integer", NULL, 0},
    {"{\"windows\":{\"seven_day\":{\"resets_in_s\":1e12}}}",
     "field \"windows.seven_day.resets_in_s\": expected an integer", NULL, 0},
    {"{\"windows\":{\"seven_day\":{\"resets_at\":\"x\"}}}",
     "field \"windows.seven_day.resets_at\": unknown field", NULL, 0},
};

static int check_body(size_t i, const struct jcase *c)
{
    char err[APISIM_ERR_LEN] = "";
    struct quota_state *q = NULL;
    struct server_request req = {.method = "GET", .path = QUOTA_PATH, .query = ""};
    struct server_response resp = {0};
    cJSON *j = cJSON_ParseWithOpts(c->json, NULL, 1);
    int ok = 0;
    headers_add(&req.headers, "Authorization", "Bearer t");
    if (!j) {
        fprintf(stderr, "FAIL body %zu: test JSON does not parse: %s\n", i, c->json);
        goto out;
    }
    int rc = quota_from_json(j, &q, err);
    if (c->err) {
        ok = rc < 0 && q == NULL && strncmp(err, "fixtures/quota: ", 16) == 0 &&
             strstr(err, c->err) != NULL;
        if (!ok)
            fprintf(stderr, "FAIL body %zu %s: rc %d, err \"%s\", want \"%s\"\n", i, c->json, rc,
                    err, c->err);
        goto out;
    }
    if (rc < 0 || quota_answer(q, &req, NOW_US, &resp) < 0) {
        fprintf(stderr, "FAIL body %zu %s: %s\n", i, c->json, err);
        goto out;
    }
    ok = resp.status == 200 && strcmp((const char *)resp.body, c->body) == 0 &&
         resp.delay_us == c->delay_us;
    if (!ok)
        fprintf(stderr, "FAIL body %zu %s:\n   got  %s (delay %lld)\n   want %s (delay %lld)\n", i,
                c->json, (const char *)resp.body, (long long)resp.delay_us, c->body,
                (long long)c->delay_us);
    cJSON *d = ok ? quota_describe(q) : NULL;
    if (ok && (!d || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(d, "preset")) ||
               !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(d, "windows")))) {
        fprintf(stderr, "FAIL body %zu: quota_describe\n", i);
        ok = 0;
    }
    cJSON_Delete(d);
out:
    cJSON_Delete(j);
    headers_free(&req.headers);
    headers_free(&resp.headers);
    free(resp.body);
    quota_free(q);
    return ok ? 0 : 1;
}

int main(void)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++)
        failed += check_answer(i, &answers[i]);
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        failed += check_body(i, &bodies[i]);
    /* resp may already hold a body and headers: quota_answer replaces them. */
    {
        struct quota_state *q = NULL;
        char err[APISIM_ERR_LEN];
        struct server_request req = {.method = "GET", .path = QUOTA_PATH, .query = ""};
        struct server_response resp = {0};
        resp.body = (unsigned char *)strdup("old");
        headers_add(&resp.headers, "X-Old", "1");
        if (quota_from_preset("ok", -1, &q, err) < 0 || quota_answer(q, &req, NOW_US, &resp) < 0 ||
            headers_get(&resp.headers, "x-old") || resp.status != 401) {
            fprintf(stderr, "FAIL replacing a response\n");
            failed++;
        }
        headers_free(&resp.headers);
        free(resp.body);
        quota_free(q);
    }
    quota_free(NULL);
    if (failed) {
        fprintf(stderr, "%d quota case(s) failed\n", failed);
        return 1;
    }
    printf("quota: all cases pass\n");
    return 0;
}
