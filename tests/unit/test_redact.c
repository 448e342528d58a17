/* Unit tests for redact.c: secret headers, query parameters and JSON values, as tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redact.h"
#include "util.h"

#include "check.h"

static void test_secret_header(void)
{
    struct redact_rules r = {0};
    CHECK(redact_add_header(&r, "X-Session-Token") == 0, "add header");
    static const struct {
        const char *name;
        int with_rules;
        int without_rules;
    } cases[] = {
        {"authorization", 1, 1}, {"Authorization", 1, 1},   {"PROXY-AUTHORIZATION", 1, 1},
        {"x-api-key", 1, 1},     {"X-Api-Key", 1, 1},       {"cookie", 1, 1},
        {"Set-Cookie", 1, 1},    {"x-session-token", 1, 0}, {"X-SESSION-TOKEN", 1, 0},
        {"content-type", 0, 0},  {"x-api-keys", 0, 0},      {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(redact_is_secret_header(&r, cases[i].name) == cases[i].with_rules,
              "secret header %s with rules", cases[i].name);
        CHECK(redact_is_secret_header(NULL, cases[i].name) == cases[i].without_rules,
              "secret header %s without rules", cases[i].name);
    }
    redact_rules_free(&r);
    CHECK(r.headers == NULL && r.nheaders == 0, "rules emptied");
}

static void test_headers(void)
{
    struct redact_rules r = {0};
    struct headers h = {0};
    redact_add_header(&r, "x-secret");
    static const struct {
        const char *name, *value, *stored;
    } cases[] = {
        {"Authorization", "Bearer sk-live-123", REDACTED},
        {"Content-Type", "application/json", "application/json"},
        {"X-Api-Key", "sk-ant-xyz", REDACTED},
        {"Cookie", "a=1; b=2", REDACTED},
        {"Set-Cookie", "sid=1; HttpOnly", REDACTED},
        {"Set-Cookie", "other=2", REDACTED},
        {"X-Secret", "hush", REDACTED},
        {"Proxy-Authorization", "Basic Zm9v", REDACTED},
        {"Accept", "*/*", "*/*"},
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++)
        headers_add(&h, cases[i].name, cases[i].value);
    CHECK(redact_headers(&r, &h) == 0, "redact_headers");
    CHECK(h.n == n, "header count kept: %zu", h.n);
    for (size_t i = 0; i < n && i < h.n; i++) {
        CHECK(strcmp(h.v[i].name, cases[i].name) == 0, "name %s kept (%s)", cases[i].name,
              h.v[i].name);
        CHECK(strcmp(h.v[i].value, cases[i].stored) == 0, "%s: stored %s, want %s", cases[i].name,
              h.v[i].value, cases[i].stored);
    }
    headers_free(&h);
    redact_rules_free(&r);
}

static void test_query(void)
{
    struct redact_rules r = {0};
    redact_add_query(&r, "token");
    redact_add_query(&r, "api_key");
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"a=1&b=2", "a=1&b=2"},
        {"a=1&token=abc&b=2", "a=1&token=" REDACTED "&b=2"},
        {"token=x&token=y", "token=" REDACTED "&token=" REDACTED},
        {"token=", "token=" REDACTED},
        {"token", "token"}, /* no value, nothing to hide */
        {"tokens=1&xtoken=2&Token=3", "tokens=1&xtoken=2&Token=3"},
        {"a=1&&token=2&", "a=1&&token=" REDACTED "&"},
        {"api_key=k%20y&q=hello+world", "api_key=" REDACTED "&q=hello+world"},
        {"token=a=b&z", "token=" REDACTED "&z"},
        {"q=%E2%9C%93&token=s", "q=%E2%9C%93&token=" REDACTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = redact_query(&r, cases[i].in);
        CHECK(out && strcmp(out, cases[i].out) == 0, "redact_query(%s) = %s, want %s", cases[i].in,
              out ? out : "(null)", cases[i].out);
        free(out);
    }
    char *out = redact_query(NULL, "token=1");
    CHECK(out && strcmp(out, "token=1") == 0, "no rules: unchanged (%s)", out ? out : "(null)");
    free(out);
    out = redact_query(&r, NULL);
    CHECK(out && strcmp(out, "") == 0, "NULL query gives \"\"");
    free(out);
    CHECK(redact_is_secret_query(&r, "token") && !redact_is_secret_query(&r, "Token") &&
              !redact_is_secret_query(NULL, "token"),
          "query names compare exactly");
    redact_rules_free(&r);
}

static void test_json(void)
{
    struct redact_rules r = {0};
    redact_add_json(&r, "/api_key");
    redact_add_json(&r, "/messages/*/secret");
    redact_add_json(&r, "/auth/password");
    static const struct {
        const char *in;
        int rc;
        const char *out;
    } cases[] = {
        {"{\"api_key\":\"sk-1\",\"model\":\"m\"}", 1,
         "{\"api_key\":\"" REDACTED "\",\"model\":\"m\"}"},
        {"{ \"model\" : \"m\" }", 0, NULL},
        {"{\"messages\":[{\"secret\":1,\"t\":\"a\"},{\"t\":\"b\"},{\"secret\":{\"x\":[1]}}]}", 1,
         "{\"messages\":[{\"secret\":\"" REDACTED
         "\",\"t\":\"a\"},{\"t\":\"b\"},{\"secret\":\"" REDACTED "\"}]}"},
        {"{\"auth\":{\"user\":\"u\",\"password\":\"p\"}}", 1,
         "{\"auth\":{\"user\":\"u\",\"password\":\"" REDACTED "\"}}"},
        {"{\"api_key\":\"a\",\"api_key\":\"b\"}", 1,
         "{\"api_key\":\"" REDACTED "\",\"api_key\":\"" REDACTED "\"}"},
        {"not json api_key", 0, NULL},
        {"{\"api_key\":\"x\"} trailing", 0, NULL},
        {"[\"api_key\"]", 0, NULL},
        {"", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *out = (unsigned char *)"untouched";
        size_t outlen = 0;
        int rc =
            redact_json(&r, (const unsigned char *)cases[i].in, strlen(cases[i].in), &out, &outlen);
        CHECK(rc == cases[i].rc, "redact_json(%s) = %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == 1 && cases[i].out) {
            CHECK(outlen == strlen(cases[i].out) && memcmp(out, cases[i].out, outlen) == 0,
                  "redact_json(%s) = %.*s, want %s", cases[i].in, (int)outlen, (const char *)out,
                  cases[i].out);
            free(out);
        } else {
            CHECK(strcmp((const char *)out, "untouched") == 0, "out untouched for %s", cases[i].in);
        }
    }
    /* A body that is not NUL-terminated and one with a NUL inside. */
    const unsigned char padded[] = "{\"api_key\":1}XXXX";
    unsigned char *out = NULL;
    size_t outlen = 0;
    CHECK(redact_json(&r, padded, 13, &out, &outlen) == 1 && outlen == 24 &&
              memcmp(out, "{\"api_key\":\"" REDACTED "\"}", 24) == 0,
          "length-bounded body");
    free(out);
    const unsigned char nul[] = "{\"api_key\":1}\0";
    CHECK(redact_json(&r, nul, sizeof nul - 1, &out, &outlen) == 0, "NUL inside: not JSON");
    /* No JSON rules: nothing is parsed. */
    CHECK(redact_json(NULL, padded, 13, &out, &outlen) == 0, "no rules");
    /* The whole document. */
    struct redact_rules all = {0};
    redact_add_json(&all, "");
    out = NULL;
    CHECK(redact_json(&all, (const unsigned char *)"[1,2]", 5, &out, &outlen) == 1 && out &&
              strcmp((const char *)out, "\"" REDACTED "\"") == 0,
          "pointer \"\" redacts the whole document");
    free(out);
    redact_rules_free(&all);
    redact_rules_free(&r);
    redact_rules_free(&r); /* twice is harmless */
}

int main(void)
{
    test_secret_header();
    test_headers();
    test_query();
    test_json();
    if (failures) {
        fprintf(stderr, "test_redact: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_redact: ok\n");
    return 0;
}
