/* Unit tests for har.c: HAR 1.2 and JSONL <-> exchange, as tables of cases. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "har.h"

#include "check.h"

static cJSON *parse(const char *text)
{
    const char *end = NULL;
    return cJSON_ParseWithOpts(text, &end, 1);
}

/* ------------------------------------------------------------ time */

static void test_parse_time(void)
{
    static const struct {
        const char *in;
        int rc;
        int64_t us;
    } cases[] = {
        {"1970-01-01T00:00:00Z", 0, 0},
        {"1970-01-01T00:00:00.000001Z", 0, 1},
        {"2026-11-24T15:35:56.050Z", 0, 1795534556050000LL},
        {"2026-11-24T16:35:56.050+01:00", 0, 1795534556050000LL},
        {"2026-11-24T14:35:56.050-0100", 0, 1795534556050000LL},
        {"2026-11-24T15:35:56.0501234Z", 0, 1795534556050123LL},
        {"2026-11-24 15:35:56Z", 0, 1795534556000000LL},
        {"2000-02-29T00:00:00Z", 0, 951782400000000LL},
        {"", -1, 0},
        {"2026-11-24", -1, 0},
        {"2026-13-24T00:00:00Z", -1, 0},
        {"2026-11-24T15:35:56.Z", -1, 0},
        {"2026-11-24T15:35:56Zjunk", -1, 0},
        {"yesterday", -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t us = -7;
        int rc = har_parse_time(cases[i].in, &us);
        CHECK(rc == cases[i].rc, "parse_time(%s) rc %d", cases[i].in, rc);
        if (rc == 0 && cases[i].rc == 0)
            CHECK(us == cases[i].us, "parse_time(%s) = %lld, want %lld", cases[i].in, (long long)us,
                  (long long)cases[i].us);
    }
    CHECK(strcmp(har_status_text(404), "Not Found") == 0, "status text 404");
    CHECK(strcmp(har_status_text(299), "") == 0, "status text unknown");
}

/* ------------------------------------------------------------ HAR import table */

/* A minimal valid entry with one part replaced: %s is spliced in after "response": {...}. */
#define ENTRY(req, resp, extra)                                                                    \
    "{\"startedDateTime\":\"2026-11-24T15:35:56.050Z\",\"time\":10.5,\"request\":" req             \
    ",\"response\":" resp extra "}"
#define REQ_GET "{\"method\":\"GET\",\"url\":\"http://h:1/a/b?x=1&y=2#frag\",\"headers\":[]}"
#define RESP_OK                                                                                    \
    "{\"status\":200,\"headers\":[{\"name\":\"Content-Type\",\"value\":\"text/plain\"}],"          \
    "\"content\":{\"size\":2,\"mimeType\":\"text/plain\",\"text\":\"hi\"}}"

/* The Polly.js reference file's /gzip body: a JSON array of base64 pieces of gzip data. */
#define POLLY_GZIP                                                                                 \
    "[\\\"H4sIAAAAAAACA6tWSs7PLShKLS5OTVGyUigpKk3VUVAqSa0oAfKUKoYJUKoFADbSREnoAAAA\\\"]"

struct import_case {
    const char *name;
    const char *json;
    const char *err;    /* substring of the error, NULL when it must import */
    const char *method; /* expected on success */
    const char *path;
    const char *query;
    int status;
    const char *resp_prefix; /* response body starts with */
    size_t resp_len;
    const char *encoding; /* response_encoding, NULL for none */
    int64_t ttfb_us, duration_us;
};

#define REJECT(n, j, e)                                                                            \
    {                                                                                              \
        .name = (n), .json = (j), .err = (e)                                                       \
    }

static const struct import_case import_cases[] = {
    {"minimal", ENTRY(REQ_GET, RESP_OK, ""), NULL, "GET", "/a/b", "x=1&y=2", 200, "hi", 2, NULL,
     10500, 10500},
    {"timings give ttfb",
     ENTRY(REQ_GET, RESP_OK,
           ",\"timings\":{\"blocked\":-1,\"dns\":-1,\"connect\":-1,\"ssl\":-1,\"send\":0.5,"
           "\"wait\":3.25,\"receive\":6.75}"),
     NULL, "GET", "/a/b", "x=1&y=2", 200, "hi", 2, NULL, 3750, 10500},
    {"origin-relative url",
     ENTRY("{\"method\":\"DELETE\",\"url\":\"/v1/x\"}", "{\"status\":204}", ""), NULL, "DELETE",
     "/v1/x", "", 204, NULL, 0, NULL, 10500, 10500},
    {"url with no path",
     ENTRY("{\"method\":\"GET\",\"url\":\"https://h\"}", "{\"status\":200}", ""), NULL, "GET", "/",
     "", 200, NULL, 0, NULL, 10500, 10500},
    {"base64 binary content",
     ENTRY(REQ_GET,
           "{\"status\":200,\"content\":{\"size\":4,\"mimeType\":\"application/octet-stream\","
           "\"text\":\"AAEC/w==\",\"encoding\":\"base64\"}}",
           ""),
     NULL, "GET", "/a/b", "x=1&y=2", 200, "\x00\x01\x02\xff", 4, NULL, 10500, 10500},
    {"polly gzip pieces are decoded",
     ENTRY(REQ_GET,
           "{\"status\":200,\"headers\":[{\"name\":\"content-encoding\",\"value\":\"gzip\"},"
           "{\"name\":\"content-length\",\"value\":\"54\"}],"
           "\"content\":{\"encoding\":\"base64\",\"mimeType\":\"application/json\",\"size\":54,"
           "\"text\":\"" POLLY_GZIP "\"}}",
           ""),
     NULL, "GET", "/a/b", "x=1&y=2", 200, "{\"compressed\": true, \"text\": \"xxx", 232, "gzip",
     10500, 10500},
    {"browser-decoded gzip kept, encoding remembered",
     ENTRY(REQ_GET,
           "{\"status\":200,\"headers\":[{\"name\":\"Content-Encoding\",\"value\":\"gzip\"}],"
           "\"content\":{\"size\":9,\"mimeType\":\"application/json\",\"text\":\"{\\\"a\\\":1}\"}}",
           ""),
     NULL, "GET", "/a/b", "x=1&y=2", 200, "{\"a\":1}", 7, "gzip", 10500, 10500},
    {"numeric header value (Polly.js)",
     ENTRY("{\"method\":\"POST\",\"url\":\"http://h/e\",\"headers\":[{\"name\":\"content-length\","
           "\"value\":39}],\"postData\":{\"mimeType\":\"application/json\",\"text\":\"{}\"}}",
           RESP_OK, ""),
     NULL, "POST", "/e", "", 200, "hi", 2, NULL, 10500, 10500},
    {"apisim extension wins",
     ENTRY(REQ_GET, RESP_OK,
           ",\"timings\":{\"send\":0,\"wait\":1,\"receive\":2},\"_apisim\":{\"ttfb_us\":1234,"
           "\"duration_us\":5678,\"complete\":0,\"error\":null,\"chunks\":[[1234,1],[5000,1]]}"),
     NULL, "GET", "/a/b", "x=1&y=2", 200, "hi", 2, NULL, 1234, 5678},

    /* Rejected entries: the reason names the field. */
    REJECT("not an object", "[1,2]", "entry is an array"),
    REJECT("missing startedDateTime", "{\"request\":" REQ_GET ",\"response\":" RESP_OK "}",
           "startedDateTime is missing"),
    REJECT("bad date",
           "{\"startedDateTime\":\"soon\",\"request\":" REQ_GET ",\"response\":" RESP_OK "}",
           "startedDateTime \"soon\""),
    REJECT("missing request",
           "{\"startedDateTime\":\"2026-11-24T15:35:56Z\",\"response\":" RESP_OK "}",
           "request is missing"),
    REJECT("request wrong type", ENTRY("\"GET /\"", RESP_OK, ""), "request is a string"),
    REJECT("missing method", ENTRY("{\"url\":\"http://h/\"}", RESP_OK, ""),
           "request.method is missing"),
    REJECT("method wrong type", ENTRY("{\"method\":7,\"url\":\"http://h/\"}", RESP_OK, ""),
           "request.method is a number, not a string"),
    REJECT("method not a token", ENTRY("{\"method\":\"GE T\",\"url\":\"http://h/\"}", RESP_OK, ""),
           "not an HTTP method"),
    REJECT("missing url", ENTRY("{\"method\":\"GET\"}", RESP_OK, ""), "request.url is missing"),
    REJECT("relative url", ENTRY("{\"method\":\"GET\",\"url\":\"a/b\"}", RESP_OK, ""),
           "not an absolute URL"),
    REJECT("headers not an array",
           ENTRY("{\"method\":\"GET\",\"url\":\"/\",\"headers\":{}}", RESP_OK, ""),
           "request.headers is an object, not an array"),
    REJECT("header value object",
           ENTRY("{\"method\":\"GET\",\"url\":\"/\",\"headers\":[{\"name\":\"a\",\"value\":{}}]}",
                 RESP_OK, ""),
           "request.headers[0].value is an object"),
    REJECT(
        "header name invalid",
        ENTRY("{\"method\":\"GET\",\"url\":\"/\",\"headers\":[{\"name\":\"a b\",\"value\":\"v\"}]}",
              RESP_OK, ""),
        "not a valid header name"),
    REJECT("header value line break",
           ENTRY(REQ_GET,
                 "{\"status\":200,\"headers\":[{\"name\":\"x\",\"value\":\"a\\r\\nInjected: 1\"}]}",
                 ""),
           "response.headers[0].value contains a line break"),
    REJECT("missing response",
           "{\"startedDateTime\":\"2026-11-24T15:35:56Z\",\"request\":" REQ_GET "}",
           "response is missing"),
    REJECT("status string", ENTRY(REQ_GET, "{\"status\":\"200\"}", ""),
           "response.status is a string, not a number"),
    REJECT("status zero", ENTRY(REQ_GET, "{\"status\":0}", ""), "got no response"),
    REJECT("status fraction", ENTRY(REQ_GET, "{\"status\":200.5}", ""), "not a whole number"),
    REJECT("content text wrong type",
           ENTRY(REQ_GET, "{\"status\":200,\"content\":{\"text\":[1]}}", ""),
           "response.content.text is an array"),
    REJECT("content bad base64",
           ENTRY(REQ_GET, "{\"status\":200,\"content\":{\"text\":\"!!!\",\"encoding\":\"base64\"}}",
                 ""),
           "response.content.text is not valid base64"),
    REJECT(
        "content unknown encoding",
        ENTRY(REQ_GET, "{\"status\":200,\"content\":{\"text\":\"x\",\"encoding\":\"rot13\"}}", ""),
        "encoding \"rot13\" is not supported"),
    REJECT("content missing text with size",
           ENTRY(REQ_GET, "{\"status\":200,\"content\":{\"size\":10,\"mimeType\":\"x\"}}", ""),
           "has no text although its size is 10"),
    REJECT("content in a separate file",
           ENTRY(REQ_GET, "{\"status\":200,\"content\":{\"size\":10,\"_file\":\"abc.json\"}}", ""),
           "separate file"),
    REJECT("wire gzip that is not gzip",
           ENTRY(REQ_GET,
                 "{\"status\":200,\"headers\":[{\"name\":\"content-encoding\",\"value\":\"gzip\"}],"
                 "\"content\":{\"encoding\":\"base64\",\"text\":\"[\\\"aGVsbG8=\\\"]\"}}",
                 ""),
           "not gzip data"),
    REJECT("wire brotli",
           ENTRY(REQ_GET,
                 "{\"status\":200,\"headers\":[{\"name\":\"content-encoding\",\"value\":\"br\"}],"
                 "\"content\":{\"encoding\":\"base64\",\"text\":\"[\\\"aGVsbG8=\\\"]\"}}",
                 ""),
           "br-compressed"),
    REJECT("postData params only",
           ENTRY("{\"method\":\"POST\",\"url\":\"/f\",\"postData\":{\"mimeType\":\"application/"
                 "x-www-form-urlencoded\",\"params\":[{\"name\":\"a\",\"value\":\"1\"}]}}",
                 RESP_OK, ""),
           "params but no text"),
    REJECT("time wrong type",
           "{\"startedDateTime\":\"2026-11-24T15:35:56Z\",\"time\":\"fast\",\"request\":" REQ_GET
           ",\"response\":" RESP_OK "}",
           "time is a string"),
    REJECT("timings wrong type", ENTRY(REQ_GET, RESP_OK, ",\"timings\":[]"), "timings is an array"),
    REJECT("chunks do not add up", ENTRY(REQ_GET, RESP_OK, ",\"_apisim\":{\"chunks\":[[0,5]]}"),
           "sizes add up to 5 bytes but the response body has 2"),
    REJECT("chunks go backwards",
           ENTRY(REQ_GET, RESP_OK, ",\"_apisim\":{\"chunks\":[[9,1],[3,1]]}"),
           "offsets go backwards"),
};

static void test_import_table(void)
{
    for (size_t i = 0; i < sizeof import_cases / sizeof import_cases[0]; i++) {
        const struct import_case *c = &import_cases[i];
        cJSON *j = parse(c->json);
        char err[APISIM_ERR_LEN] = "";
        struct exchange *ex = NULL;
        CHECK(j != NULL, "case %s: test JSON does not parse", c->name);
        if (!j)
            continue;
        int rc = har_entry_to_exchange(j, NULL, &ex, err);
        if (c->err) {
            CHECK(rc == -1, "case %s: imported but should fail with \"%s\"", c->name, c->err);
            CHECK(rc != -1 || strstr(err, c->err) != NULL, "case %s: error \"%s\", want \"%s\"",
                  c->name, err, c->err);
        } else {
            CHECK(rc == 0, "case %s: rejected: %s", c->name, err);
        }
        if (rc == 0 && !c->err) {
            CHECK(strcmp(ex->method, c->method) == 0, "case %s: method %s", c->name, ex->method);
            CHECK(strcmp(ex->path, c->path) == 0, "case %s: path %s", c->name, ex->path);
            CHECK(strcmp(ex->query, c->query) == 0, "case %s: query %s", c->name, ex->query);
            CHECK(strcmp(ex->source, "import") == 0, "case %s: source %s", c->name, ex->source);
            CHECK(ex->status == c->status, "case %s: status %d", c->name, ex->status);
            CHECK(ex->response_body_len == c->resp_len, "case %s: body length %zu, want %zu",
                  c->name, ex->response_body_len, c->resp_len);
            if (c->resp_prefix && ex->response_body)
                CHECK(memcmp(ex->response_body, c->resp_prefix,
                             strlen(c->resp_prefix) ? strlen(c->resp_prefix) : c->resp_len) == 0,
                      "case %s: body %.40s", c->name, (const char *)ex->response_body);
            CHECK((c->encoding == NULL) == (ex->response_encoding == NULL) &&
                      (!c->encoding || strcmp(c->encoding, ex->response_encoding) == 0),
                  "case %s: response_encoding %s", c->name,
                  ex->response_encoding ? ex->response_encoding : "(null)");
            CHECK(!c->encoding || (!headers_get(&ex->response_headers, "content-encoding") &&
                                   !headers_get(&ex->response_headers, "content-length")),
                  "case %s: stale Content-Encoding/Length kept on a decoded body", c->name);
            CHECK(ex->ttfb_us == c->ttfb_us, "case %s: ttfb %lld, want %lld", c->name,
                  (long long)ex->ttfb_us, (long long)c->ttfb_us);
            CHECK(ex->duration_us == c->duration_us, "case %s: duration %lld, want %lld", c->name,
                  (long long)ex->duration_us, (long long)c->duration_us);
        }
        exchange_free(ex);
        cJSON_Delete(j);
    }
}

/* Bodies over the cap are refused before they are decoded. */
static void test_body_cap(void)
{
    struct har_limits lim = {.max_body = 16};
    static const char *const texts[] = {
        ENTRY(REQ_GET, "{\"status\":200,\"content\":{\"text\":\"0123456789abcdefX\"}}", ""),
        ENTRY(REQ_GET,
              "{\"status\":200,\"content\":{\"encoding\":\"base64\",\"text\":"
              "\"MDEyMzQ1Njc4OWFiY2RlZlhYWFhYWFhY\"}}",
              ""),
        ENTRY("{\"method\":\"POST\",\"url\":\"/\",\"postData\":{\"text\":\"0123456789abcdefX\"}}",
              RESP_OK, ""),
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        cJSON *j = parse(texts[i]);
        struct exchange *ex = NULL;
        char err[APISIM_ERR_LEN] = "";
        int rc = har_entry_to_exchange(j, &lim, &ex, err);
        CHECK(rc == -1 && strstr(err, "cap"), "cap case %zu: rc %d err %s", i, rc, err);
        exchange_free(ex);
        cJSON_Delete(j);
    }
    /* Exactly at the cap is fine. */
    cJSON *j =
        parse(ENTRY(REQ_GET, "{\"status\":200,\"content\":{\"text\":\"0123456789abcdef\"}}", ""));
    struct exchange *ex = NULL;
    char err[APISIM_ERR_LEN] = "";
    CHECK(har_entry_to_exchange(j, &lim, &ex, err) == 0, "at the cap: %s", err);
    exchange_free(ex);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------ round trips */

static struct exchange *sample(int binary, int chunked)
{
    struct exchange *ex = exchange_new();
    static const unsigned char bin[] = {0x00, 0x01, 0xfe, 0xff, 0x80, 0x41};
    const char *text = "{\"hello\": \"w\\u00f6rld\", \"n\": [1, 2]}\n";
    ex->id = 7;
    ex->session = strdup("s1");
    ex->seq = 3;
    ex->source = strdup("record");
    ex->started_us = 1795534556050000LL;
    ex->method = strdup("POST");
    ex->path = strdup("/v1/messages");
    ex->query = strdup("beta=true&q=a%20b");
    headers_add(&ex->request_headers, "Host", "api.example:443");
    headers_add(&ex->request_headers, "Content-Type", "application/json");
    headers_add(&ex->request_headers, "X-Api-Key", "[REDACTED]");
    ex->request_body = (unsigned char *)strdup("{\"model\":\"m\",\"max_tokens\":5}");
    ex->request_body_len = strlen((char *)ex->request_body);
    ex->status = binary ? 200 : 201;
    headers_add(&ex->response_headers, "Content-Type",
                binary ? "application/octet-stream" : "application/json");
    headers_add(&ex->response_headers, "Set-Cookie", "[REDACTED]");
    headers_add(&ex->response_headers, "Set-Cookie", "b=[REDACTED]");
    if (binary) {
        ex->response_body = malloc(sizeof bin);
        memcpy(ex->response_body, bin, sizeof bin);
        ex->response_body_len = sizeof bin;
    } else {
        ex->response_body = (unsigned char *)strdup(text);
        ex->response_body_len = strlen(text);
        ex->response_encoding = strdup("gzip");
    }
    ex->ttfb_us = 1234;
    ex->duration_us = 98765;
    if (chunked) {
        ex->nchunks = 2;
        ex->chunks = calloc(2, sizeof *ex->chunks);
        ex->chunks[0].offset_us = 1234;
        ex->chunks[0].size = 2;
        ex->chunks[1].offset_us = 50001;
        ex->chunks[1].size = ex->response_body_len - 2;
    }
    return ex;
}

static int headers_equal(const struct headers *a, const struct headers *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i].name, b->v[i].name) || strcmp(a->v[i].value, b->v[i].value))
            return 0;
    return 1;
}

static void compare(const char *what, const struct exchange *a, const struct exchange *b)
{
    CHECK(strcmp(a->method, b->method) == 0, "%s: method", what);
    CHECK(strcmp(a->path, b->path) == 0, "%s: path %s", what, b->path);
    CHECK(strcmp(a->query, b->query) == 0, "%s: query %s", what, b->query);
    CHECK(a->started_us / 1000 == b->started_us / 1000, "%s: started", what);
    CHECK(headers_equal(&a->request_headers, &b->request_headers), "%s: request headers", what);
    CHECK(headers_equal(&a->response_headers, &b->response_headers), "%s: response headers", what);
    CHECK(a->request_body_len == b->request_body_len &&
              memcmp(a->request_body, b->request_body, a->request_body_len) == 0,
          "%s: request body", what);
    CHECK(a->response_body_len == b->response_body_len &&
              memcmp(a->response_body, b->response_body, a->response_body_len) == 0,
          "%s: response body (%zu vs %zu bytes)", what, a->response_body_len, b->response_body_len);
    CHECK(a->status == b->status, "%s: status", what);
    CHECK((a->response_encoding == NULL) == (b->response_encoding == NULL) &&
              (!a->response_encoding || strcmp(a->response_encoding, b->response_encoding) == 0),
          "%s: response_encoding", what);
    CHECK(a->ttfb_us == b->ttfb_us, "%s: ttfb %lld", what, (long long)b->ttfb_us);
    CHECK(a->duration_us == b->duration_us, "%s: duration %lld", what, (long long)b->duration_us);
    CHECK(a->nchunks == b->nchunks, "%s: %zu chunks", what, b->nchunks);
    for (size_t i = 0; i < a->nchunks && i < b->nchunks; i++)
        CHECK(a->chunks[i].offset_us == b->chunks[i].offset_us &&
                  a->chunks[i].size == b->chunks[i].size,
              "%s: chunk %zu", what, i);
}

static void test_round_trips(void)
{
    for (int binary = 0; binary < 2; binary++) {
        for (int chunked = 0; chunked < 2; chunked++) {
            struct exchange *ex = sample(binary, chunked), *back = NULL;
            char err[APISIM_ERR_LEN] = "", what[64];

            /* HAR, through text, as a file would carry it. */
            snprintf(what, sizeof what, "har binary=%d chunked=%d", binary, chunked);
            cJSON *e = har_entry_from_exchange(ex, "https://api.example:443/base");
            CHECK(e != NULL, "%s: entry", what);
            char *text = cJSON_PrintUnformatted(e);
            cJSON *again = parse(text);
            const cJSON *req = cJSON_GetObjectItem(again, "request");
            const cJSON *url = cJSON_GetObjectItem(req, "url");
            CHECK(cJSON_IsString(url) &&
                      strcmp(url->valuestring,
                             "https://api.example:443/v1/messages?beta=true&q=a%20b") == 0,
                  "%s: url %s", what, cJSON_IsString(url) ? url->valuestring : "?");
            const cJSON *qs = cJSON_GetObjectItem(req, "queryString");
            const cJSON *q1 = cJSON_GetArrayItem(qs, 1);
            CHECK(cJSON_GetArraySize(qs) == 2 &&
                      strcmp(cJSON_GetObjectItem(q1, "value")->valuestring, "a b") == 0,
                  "%s: queryString", what);
            const cJSON *content =
                cJSON_GetObjectItem(cJSON_GetObjectItem(again, "response"), "content");
            const cJSON *enc = cJSON_GetObjectItem(content, "encoding");
            CHECK(binary ? cJSON_IsString(enc) && strcmp(enc->valuestring, "base64") == 0
                         : enc == NULL,
                  "%s: content.encoding", what);
            const cJSON *timings = cJSON_GetObjectItem(again, "timings");
            CHECK(cJSON_GetObjectItem(timings, "wait")->valuedouble == 1.234, "%s: wait", what);
            CHECK(cJSON_GetObjectItem(again, "time")->valuedouble == 98.765, "%s: time", what);
            CHECK(har_entry_to_exchange(again, NULL, &back, err) == 0, "%s: import: %s", what, err);
            if (back)
                compare(what, ex, back);
            exchange_free(back);
            back = NULL;
            free(text);
            cJSON_Delete(again);
            cJSON_Delete(e);

            /* The same without the _apisim extension: what a HAR from another tool says. */
            e = har_entry_from_exchange(ex, NULL);
            cJSON_DeleteItemFromObject(e, "_apisim");
            CHECK(har_entry_to_exchange(e, NULL, &back, err) == 0, "%s plain: %s", what, err);
            if (back) {
                CHECK(back->ttfb_us == 1234 && back->duration_us == 98765,
                      "%s plain: timings %lld %lld", what, (long long)back->ttfb_us,
                      (long long)back->duration_us);
                CHECK(back->response_body_len == ex->response_body_len, "%s plain: body", what);
            }
            exchange_free(back);
            back = NULL;
            cJSON_Delete(e);

            /* JSONL. */
            snprintf(what, sizeof what, "jsonl binary=%d chunked=%d", binary, chunked);
            e = har_jsonl_from_exchange(ex);
            text = cJSON_PrintUnformatted(e);
            CHECK(strncmp(text, "{\"id\":7,\"session\":\"s1\",\"seq\":3,\"source\":\"record\"",
                          47) == 0,
                  "%s: key order: %.60s", what, text);
            CHECK((strstr(text, "\"response_body_base64\":") != NULL) == binary, "%s: base64 key",
                  what);
            again = parse(text);
            CHECK(har_jsonl_to_exchange(again, NULL, &back, err) == 0, "%s: import: %s", what, err);
            if (back) {
                compare(what, ex, back);
                CHECK(strcmp(back->session, "s1") == 0 && back->seq == 3, "%s: session/seq", what);
            }
            exchange_free(back);
            free(text);
            cJSON_Delete(again);
            cJSON_Delete(e);
            exchange_free(ex);
        }
    }
}

static void test_jsonl_rejects(void)
{
    static const struct {
        const char *json;
        const char *err;
    } cases[] = {
        {"{}", "started_at is missing"},
        {"{\"started_at\":\"2026-11-24T00:00:00Z\",\"method\":\"GET\",\"path\":\"/"
         "\",\"status\":\"x\"}",
         "status is a string"},
        {"{\"started_at\":\"2026-11-24T00:00:00Z\",\"method\":\"GET\",\"path\":\"x\",\"status\":"
         "200}",
         "is not a request path"},
        {"{\"started_at\":\"2026-11-24T00:00:00Z\",\"method\":\"GET\",\"path\":\"/"
         "\",\"status\":200,"
         "\"request_headers\":[[\"a\"]]}",
         "request_headers[0] is not [name, value]"},
        {"{\"started_at\":\"2026-11-24T00:00:00Z\",\"method\":\"GET\",\"path\":\"/"
         "\",\"status\":200,"
         "\"response_body\":\"a\",\"response_body_base64\":\"YQ==\"}",
         "both response_body and response_body_base64"},
        {"{\"started_at\":\"2026-11-24T00:00:00Z\",\"method\":\"GET\",\"path\":\"/"
         "\",\"status\":200,"
         "\"source\":\"magic\"}",
         "source \"magic\""},
        {"{\"started_at\":\"2026-11-24T00:00:00Z\",\"method\":\"GET\",\"path\":\"/"
         "\",\"status\":200,"
         "\"response_body\":\"ab\",\"chunks\":[[0,1]]}",
         "add up to 1 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = parse(cases[i].json);
        struct exchange *ex = NULL;
        char err[APISIM_ERR_LEN] = "";
        int rc = har_jsonl_to_exchange(j, NULL, &ex, err);
        CHECK(rc == -1 && strstr(err, cases[i].err),
              "jsonl case %zu: rc %d err \"%s\", want \"%s\"", i, rc, err, cases[i].err);
        exchange_free(ex);
        cJSON_Delete(j);
    }
}

static void test_log(void)
{
    cJSON *entries = NULL;
    cJSON *doc = har_log_new("9.9.9", &entries);
    char *text = cJSON_PrintUnformatted(doc);
    CHECK(strcmp(text, "{\"log\":{\"version\":\"1.2\",\"creator\":{\"name\":\"apisim\",\"version\":"
                       "\"9.9.9\"},\"pages\":[],\"entries\":[]}}") == 0,
          "log: %s", text);
    CHECK(cJSON_IsArray(entries), "entries array");
    free(text);
    cJSON_Delete(doc);
}

int main(void)
{
    test_parse_time();
    test_import_table();
    test_body_cap();
    test_round_trips();
    test_jsonl_rejects();
    test_log();
    if (failures) {
        fprintf(stderr, "test_har: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_har: all passed\n");
    return 0;
}
