/* Unit tests for match.c: keys, differences, canonical JSON and rule parsing, as tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "match.h"
#include "redact.h"
#include "util.h"

/* Table rows leave trailing fields out on purpose (they are zero). */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include "check.h"

/* A request as a case writes it. body_len 0 means strlen(body). */
struct req {
    const char *method, *path, *query;
    const char *headers[8]; /* name, value, name, value, ..., NULL */
    const char *body;
    size_t body_len;
};

/* Rules as a case writes them: NULL-terminated lists. */
struct rules {
    const char *fields; /* NULL: all */
    const char *headers[4];
    const char *ignore_query[4];
    const char *ignore_json[4];
};

static void rules_build(const struct rules *in, struct match_rules *out)
{
    char err[APISIM_ERR_LEN];
    memset(out, 0, sizeof *out);
    if (in->fields && match_parse_fields(in->fields, &out->fields, err) < 0) {
        failures++;
        fprintf(stderr, "bad fields in a case: %s\n", err);
    }
    for (size_t i = 0; in->headers[i]; i++)
        match_add_header(out, in->headers[i]);
    for (size_t i = 0; in->ignore_query[i]; i++)
        match_add_ignore_query(out, in->ignore_query[i]);
    for (size_t i = 0; in->ignore_json[i]; i++)
        match_add_ignore_json(out, in->ignore_json[i]);
}

static struct match_request req_view(const struct req *r, struct headers *h)
{
    memset(h, 0, sizeof *h);
    for (size_t i = 0; r->headers[i]; i += 2)
        headers_add(h, r->headers[i], r->headers[i + 1]);
    return (struct match_request){
        .method = r->method,
        .path = r->path,
        .query = r->query,
        .headers = h,
        .body = (const unsigned char *)r->body,
        .body_len = r->body ? (r->body_len ? r->body_len : strlen(r->body)) : 0,
    };
}

/* The redaction every case runs under, as a recording would have it. */
static struct redact_rules redact;

static char *key_of(const struct rules *rs, const struct req *r)
{
    struct match_rules mr;
    struct headers h;
    rules_build(rs, &mr);
    struct match_request v = req_view(r, &h);
    char *k = match_key(&mr, &redact, &v);
    headers_free(&h);
    match_rules_free(&mr);
    return k;
}

static const char *const IGNORE_IDS[4] = {"/metadata/user_id", "/messages/*/id"};

static void test_key(void)
{
    static const struct {
        struct rules rules;
        struct req req;
        const char *key;
    } cases[] = {
        {{0}, {"GET", "/v1/x", "a=1&b=2"}, "GET /v1/x?a=1&b=2"},
        {{0}, {"GET", "/v1/x", "b=2&a=1"}, "GET /v1/x?a=1&b=2"},
        {{0}, {"GET", "/v1/x", "b=2&a=2&a=1"}, "GET /v1/x?a=1&a=2&b=2"},
        {{0}, {"GET", "/v1/x", "a=%20x&a=+x&a"}, "GET /v1/x?a&a=%20x&a=+x"},
        {{0}, {"GET", "/v1/x", "&&a=1&"}, "GET /v1/x?a=1"},
        {{0}, {"GET", "/v1/x", ""}, "GET /v1/x"},
        {{0}, {"GET", "/v1/x", NULL}, "GET /v1/x"},
        {{.ignore_query = {"ts"}}, {"GET", "/v1/x", "ts=123&a=1"}, "GET /v1/x?a=1"},
        {{.ignore_query = {"ts"}}, {"GET", "/v1/x", "ts=1"}, "GET /v1/x"},
        /* Redacted query parameters stay out of the key. */
        {{0}, {"GET", "/v1/x", "token=sk-real&a=1"}, "GET /v1/x?a=1"},
        {{0}, {"GET", "/v1/x", "token=[REDACTED]&a=1"}, "GET /v1/x?a=1"},
        /* JSON: keys sorted, whitespace gone, numbers in one form. */
        {{0},
         {"POST",
          "/v1/messages",
          "",
          {0},
          "{ \"b\": 1,\n \"a\": [1, 2.0, {\"d\":true, \"c\":null}] }"},
         "POST /v1/messages body={\"a\":[1,2,{\"c\":null,\"d\":true}],\"b\":1}"},
        {{0},
         {"POST", "/v1/messages", "", {0}, "{\"a\":[1e0,2,{\"c\":null,\"d\":true}],\"b\":1.0}"},
         "POST /v1/messages body={\"a\":[1,2,{\"c\":null,\"d\":true}],\"b\":1}"},
        {{.ignore_json = {"/metadata/user_id", "/messages/*/id"}},
         {"POST",
          "/v1/messages",
          "",
          {0},
          "{\"metadata\":{\"user_id\":\"u1\"},\"messages\":[{\"id\":\"m1\",\"role\":\"user\"},"
          "{\"id\":\"m2\",\"role\":\"assistant\"}]}"},
         "POST /v1/messages body={\"messages\":[{\"role\":\"user\"},{\"role\":\"assistant\"}],"
         "\"metadata\":{}}"},
        /* Redacted JSON values stay out of the key. */
        {{0},
         {"POST", "/j", "", {0}, "{\"api_key\":\"sk-real\",\"q\":1}"},
         "POST /j body={\"q\":1}"},
        {{0},
         {"POST", "/j", "", {0}, "{\"q\":1,\"api_key\":\"[REDACTED]\"}"},
         "POST /j body={\"q\":1}"},
        {{0},
         {"POST", "/j", "", {0}, "{\"s\":\"a\\\"b\\n\\u0001\\u00e9/\"}"},
         "POST /j body={\"s\":\"a\\\"b\\n\\u0001\xc3\xa9/\"}"},
        {{0},
         {"POST", "/j", "", {0}, "[0.1, -0, 1e300, 2.5e-3, 123456789012, -3]"},
         "POST /j body=[0.1,0,1e+300,0.0025,123456789012,-3]"},
        {{0}, {"POST", "/j", "", {0}, " \"just a string\" "}, "POST /j body=\"just a string\""},
        /* Other bodies: text as is, binary by length and digest. */
        {{0}, {"POST", "/t", "", {0}, "hello world"}, "POST /t body=hello world"},
        {{0}, {"POST", "/t", "", {0}, "{\"a\":1} not json"}, "POST /t body={\"a\":1} not json"},
        {{0},
         {"PUT", "/b", "", {0}, "\x00\x01\xff", 3},
         "PUT /b body=<binary 3 bytes fnv1a d94a37186c0d38bf>"},
        {{0}, {"GET", "/e", "", {0}, ""}, "GET /e"},
        /* Fields. */
        {{.fields = "method,path"},
         {"POST", "/v1/messages", "a=1", {0}, "{\"x\":1}"},
         "POST /v1/messages"},
        {{.fields = "path,method"},
         {"POST", "/v1/messages", "a=1", {0}, "other"},
         "POST /v1/messages"},
        {{.fields = "query"}, {"POST", "/p", "b=1&a=2", {0}, "x"}, "?a=2&b=1"},
        {{.fields = "path,query"}, {"POST", "/p", "b=1&a=2", {0}, "x"}, "/p?a=2&b=1"},
        {{.fields = "body"}, {"POST", "/p", "", {0}, "x"}, "body=x"},
        {{.fields = "body"}, {"POST", "/p", "", {0}, ""}, ""},
        {{.fields = "method,body"}, {"POST", "/p", "", {0}, "x"}, "POST body=x"},
        /* Named headers, lower-cased; secret ones left out; absent ones say nothing. */
        {{.headers = {"X-V"}}, {"GET", "/a", "", {"x-v", "1"}}, "GET /a header:x-v=1"},
        {{.headers = {"x-v"}},
         {"GET", "/a", "", {"X-V", "1", "X-v", "2"}},
         "GET /a header:x-v=1, 2"},
        {{.headers = {"x-v", "accept"}},
         {"GET", "/a", "", {"Accept", "*/*"}},
         "GET /a header:accept=*/*"},
        {{.headers = {"authorization", "x-secret"}},
         {"GET", "/a", "", {"Authorization", "Bearer sk", "X-Secret", "s"}},
         "GET /a"},
        {{.headers = {"x-v"}}, {"POST", "/a", "", {"x-v", ""}, "b"}, "POST /a header:x-v= body=b"},
        {{.headers = {"x-v"}}, {"GET", "/a", "", {"other", "1"}}, "GET /a"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        char *k = key_of(&cases[i].rules, &cases[i].req);
        CHECK(k && strcmp(k, cases[i].key) == 0, "case %zu: key \"%s\", want \"%s\"", i,
              k ? k : "(null)", cases[i].key);
        free(k);
    }
}

/* Pairs of requests whose keys must be equal (or not) under the same rules. */
static void test_key_pairs(void)
{
    static const struct {
        const char *what;
        struct rules rules;
        struct req a, b;
        int equal;
    } cases[] = {
        {"query in two orders", {0}, {"GET", "/x", "a=1&b=2"}, {"GET", "/x", "b=2&a=1"}, 1},
        {"query values differ", {0}, {"GET", "/x", "a=1"}, {"GET", "/x", "a=2"}, 0},
        {"JSON key order and whitespace",
         {0},
         {"POST", "/m", "", {0}, "{\"model\":\"x\",\"max_tokens\":10,\"stream\":true}"},
         {"POST",
          "/m",
          "",
          {0},
          "{\n  \"stream\" : true,\n  \"max_tokens\" : 10, \"model\":\"x\"\n}"},
         1},
        {"JSON values differ",
         {0},
         {"POST", "/m", "", {0}, "{\"a\":1}"},
         {"POST", "/m", "", {0}, "{\"a\":2}"},
         0},
        {"ignored user id",
         {.ignore_json = {"/metadata/user_id"}},
         {"POST", "/m", "", {0}, "{\"metadata\":{\"user_id\":\"alice\"},\"q\":1}"},
         {"POST", "/m", "", {0}, "{\"q\":1,\"metadata\":{\"user_id\":\"bob\"}}"},
         1},
        {"ignored message ids",
         {.ignore_json = {"/metadata/user_id", "/messages/*/id"}},
         {"POST",
          "/m",
          "",
          {0},
          "{\"messages\":[{\"id\":\"a1\",\"c\":\"hi\"},{\"id\":\"a2\",\"c\":\"yo\"}]}"},
         {"POST",
          "/m",
          "",
          {0},
          "{\"messages\":[{\"id\":\"b1\",\"c\":\"hi\"},{\"c\":\"yo\",\"id\":\"b2\"}]}"},
         1},
        {"ignored message ids but content differs",
         {.ignore_json = {"/messages/*/id"}},
         {"POST", "/m", "", {0}, "{\"messages\":[{\"id\":\"a1\",\"c\":\"hi\"}]}"},
         {"POST", "/m", "", {0}, "{\"messages\":[{\"id\":\"b1\",\"c\":\"ho\"}]}"},
         0},
        {"redacted header: real secret vs stored [REDACTED]",
         {.headers = {"x-api-key", "x-secret"}},
         {"GET", "/x", "", {"X-Api-Key", "sk-ant-real", "X-Secret", "real"}},
         {"GET", "/x", "", {"x-api-key", "[REDACTED]", "x-secret", "[REDACTED]"}},
         1},
        {"redacted query: real secret vs stored [REDACTED]",
         {0},
         {"GET", "/x", "token=sk-real&a=1"},
         {"GET", "/x", "a=1&token=[REDACTED]"},
         1},
        {"redacted JSON: real secret vs stored [REDACTED]",
         {0},
         {"POST", "/x", "", {0}, "{\"api_key\":\"sk-real\",\"n\":[1,2]}"},
         {"POST", "/x", "", {0}, "{\"n\":[1,2],\"api_key\":\"[REDACTED]\"}"},
         1},
        {"binary bodies equal",
         {0},
         {"PUT", "/b", "", {0}, "\x89PNG\r\n\x1a\n\x00", 9},
         {"PUT", "/b", "", {0}, "\x89PNG\r\n\x1a\n\x00", 9},
         1},
        {"binary bodies differ",
         {0},
         {"PUT", "/b", "", {0}, "\x89PNG\r\n\x1a\n\x00", 9},
         {"PUT", "/b", "", {0}, "\x89PNG\r\n\x1a\n\x01", 9},
         0},
        {"match method,path: body and query irrelevant",
         {.fields = "method,path"},
         {"POST", "/m", "a=1", {0}, "{\"a\":1}"},
         {"POST", "/m", "b=2", {0}, "entirely different"},
         1},
        {"match method,path: method still counts",
         {.fields = "method,path"},
         {"POST", "/m", "", {0}, "x"},
         {"PUT", "/m", "", {0}, "x"},
         0},
        {"headers unnamed are irrelevant",
         {0},
         {"GET", "/x", "", {"user-agent", "a"}},
         {"GET", "/x", "", {"user-agent", "b"}},
         1},
        {"named header differs",
         {.headers = {"anthropic-version"}},
         {"GET", "/x", "", {"anthropic-version", "2023-06-01"}},
         {"GET", "/x", "", {"Anthropic-Version", "2024-01-01"}},
         0},
    };
    for (size_t i = 0; i < N(cases); i++) {
        char *ka = key_of(&cases[i].rules, &cases[i].a);
        char *kb = key_of(&cases[i].rules, &cases[i].b);
        int eq = ka && kb && strcmp(ka, kb) == 0;
        CHECK(eq == cases[i].equal, "%s: keys \"%s\" and \"%s\" %s", cases[i].what,
              ka ? ka : "(null)", kb ? kb : "(null)", eq ? "equal" : "differ");
        if (eq)
            CHECK(match_hash(ka) == match_hash(kb), "%s: hashes", cases[i].what);
        free(ka);
        free(kb);
    }
}

static void test_hash(void)
{
    static const struct {
        const char *in;
        uint64_t h;
    } cases[] = {
        {"", 0xcbf29ce484222325ULL},
        {"a", 0xaf63dc4c8601ec8cULL},
        {"foobar", 0x85944171f73967e8ULL},
    };
    for (size_t i = 0; i < N(cases); i++)
        CHECK(match_hash(cases[i].in) == cases[i].h, "hash(%s) = %016llx", cases[i].in,
              (unsigned long long)match_hash(cases[i].in));
}

static void test_canonical(void)
{
    static const struct {
        const char *in;
        const char *ignore[3];
        const char *out; /* NULL: not JSON */
    } cases[] = {
        {"{\"b\":1,\"a\":2}", {0}, "{\"a\":2,\"b\":1}"},
        {" { } ", {0}, "{}"},
        {"[ ]", {0}, "[]"},
        {"{\"B\":1,\"a\":2,\"_\":3,\"aa\":4}", {0}, "{\"B\":1,\"_\":3,\"a\":2,\"aa\":4}"},
        {"{\"n\":[1,1.0,1e0,10E-1,0.5,-2.50,1e15,1e16,1.7976931348623157e308]}",
         {0},
         "{\"n\":[1,1,1,1,0.5,-2.5,1e+15,1e+16,1.7976931348623157e+308]}"},
        {"{\"x\":0.1,\"y\":0.30000000000000004}", {0}, "{\"x\":0.1,\"y\":0.30000000000000004}"},
        {"{\"t\":true,\"f\":false,\"z\":null}", {0}, "{\"f\":false,\"t\":true,\"z\":null}"},
        {"{\"s\":\"tab\\there\\\\ \\/ \\b\\f\\r\"}", {0}, "{\"s\":\"tab\\there\\\\ / \\b\\f\\r\"}"},
        {"{\"u\":\"\\ud83d\\ude00\"}", {0}, "{\"u\":\"\xf0\x9f\x98\x80\"}"},
        {"{\"a\":{\"z\":1,\"y\":{\"b\":2,\"a\":1}}}",
         {0},
         "{\"a\":{\"y\":{\"a\":1,\"b\":2},\"z\":1}}"},
        {"{\"k\":2,\"k\":1}", {0}, "{\"k\":2,\"k\":1}"},
        {"{\"a\":1,\"b\":{\"c\":2}}", {"/b/c", "/a"}, "{\"b\":{}}"},
        {"{\"a\":1}", {"/nothing"}, "{\"a\":1}"},
        {"42", {0}, "42"},
        {"not json", {0}, NULL},
        {"{\"a\":1", {0}, NULL},
        {"{\"a\":1}}", {0}, NULL},
        {"", {0}, NULL},
    };
    for (size_t i = 0; i < N(cases); i++) {
        size_t n = 0;
        while (n < 3 && cases[i].ignore[n])
            n++;
        char *c = match_canonical_json((const unsigned char *)cases[i].in, strlen(cases[i].in),
                                       (char *const *)cases[i].ignore, n);
        if (!cases[i].out)
            CHECK(c == NULL, "canonical(%s) = %s, want NULL", cases[i].in, c);
        else
            CHECK(c && strcmp(c, cases[i].out) == 0, "canonical(%s) = %s, want %s", cases[i].in,
                  c ? c : "(null)", cases[i].out);
        free(c);
    }
}

#define MAXD 32

static void test_diff(void)
{
    static const struct {
        struct rules rules;
        struct req req, rec;
        int count;
        const char *diffs; /* the stored strings joined with " | " */
    } cases[] = {
        {{0}, {"POST", "/a"}, {"GET", "/a"}, 1, "method: POST != GET"},
        {{0}, {"GET", "/a"}, {"GET", "/b"}, 1, "path: /a != /b"},
        {{0}, {"GET", "/a", "a=1"}, {"GET", "/a", "a=2"}, 1, "query a: 1 != 2"},
        {{0}, {"GET", "/a", "a=1"}, {"GET", "/a", "b=2&a=1"}, 1, "query b: missing != 2"},
        {{0}, {"GET", "/a", "c=3&a=1"}, {"GET", "/a", "a=1"}, 1, "query c: 3 != missing"},
        {{0}, {"GET", "/a", "a=1&a=2"}, {"GET", "/a", "a=1"}, 1, "query a: 1,2 != 1"},
        {{0},
         {"GET", "/a", "b=1&d=4"},
         {"GET", "/a", "a=0&c=3&d=5"},
         4,
         "query a: missing != 0 | query b: 1 != missing | query c: missing != 3 | query d: 4 != 5"},
        {{0},
         {"POST", "/a", "b=1"},
         {"GET", "/b", "b=2"},
         3,
         "method: POST != GET | path: /a != /b | query b: 1 != 2"},
        {{.ignore_query = {"ts"}}, {"GET", "/a", "ts=1&a=1"}, {"GET", "/a", "a=1&ts=2"}, 0, ""},
        {{0}, {"GET", "/a", "token=real"}, {"GET", "/a", "token=[REDACTED]"}, 0, ""},
        {{.headers = {"X-V"}},
         {"GET", "/a", "", {"x-v", "1"}},
         {"GET", "/a", "", {"X-V", "2"}},
         1,
         "header x-v: 1 != 2"},
        {{.headers = {"x-v"}},
         {"GET", "/a"},
         {"GET", "/a", "", {"x-v", "2"}},
         1,
         "header x-v: missing != 2"},
        {{.headers = {"x-api-key"}},
         {"GET", "/a", "", {"x-api-key", "sk-real"}},
         {"GET", "/a", "", {"x-api-key", "[REDACTED]"}},
         0,
         ""},
        {{0},
         {"POST", "/m", "", {0}, "{\"x\":[\"hi\"]}"},
         {"POST", "/m", "", {0}, "{\"x\":[\"yo\"]}"},
         1,
         "body /x/0: \"hi\" != \"yo\""},
        {{0},
         {"POST", "/m", "", {0}, "{\"messages\":[{\"content\":\"hi\"}]}"},
         {"POST", "/m", "", {0}, "{\"messages\":[{\"content\":\"yo\"}]}"},
         1,
         "body /messages/0/content: \"hi\" != \"yo\""},
        {{0},
         {"POST", "/m", "", {0}, "{\"a\":1}"},
         {"POST", "/m", "", {0}, "{\"b\":2,\"a\":1}"},
         1,
         "body /b: missing != 2"},
        {{0},
         {"POST", "/m", "", {0}, "{\"a\":1,\"c\":{\"d\":[1,2]}}"},
         {"POST", "/m", "", {0}, "{\"a\":2}"},
         2,
         "body /a: 1 != 2 | body /c: {\"d\":[1,2]} != missing"},
        {{0},
         {"POST", "/m", "", {0}, "{\"a/b\":1,\"m~n\":[true]}"},
         {"POST", "/m", "", {0}, "{\"a/b\":2,\"m~n\":[false]}"},
         2,
         "body /a~1b: 1 != 2 | body /m~0n/0: true != false"},
        {{0},
         {"POST", "/m", "", {0}, "{\"a\":1}"},
         {"POST", "/m", "", {0}, "{\"a\":\"1\"}"},
         1,
         "body /a: 1 != \"1\""},
        {{0},
         {"POST", "/m", "", {0}, "{\"a\":null}"},
         {"POST", "/m", "", {0}, "{\"a\":{}}"},
         1,
         "body /a: null != {}"},
        {{0},
         {"POST", "/m", "", {0}, "[1]"},
         {"POST", "/m", "", {0}, "[1,2,3]"},
         2,
         "body /1: missing != 2 | body /2: missing != 3"},
        {{0},
         {"POST", "/m", "", {0}, "{\"a\":1}"},
         {"POST", "/m", "", {0}, "[1]"},
         1,
         "body: {\"a\":1} != [1]"},
        {{0}, {"POST", "/m", "", {0}, "{\"a\":1.0}"}, {"POST", "/m", "", {0}, "{\"a\":1}"}, 0, ""},
        {{.ignore_json = {"/messages/*/id"}},
         {"POST", "/m", "", {0}, "{\"messages\":[{\"id\":1,\"c\":\"hi\"}]}"},
         {"POST", "/m", "", {0}, "{\"messages\":[{\"id\":2,\"c\":\"hi\"}]}"},
         0,
         ""},
        {{0},
         {"POST", "/m", "", {0}, "{\"api_key\":\"sk\",\"a\":1}"},
         {"POST", "/m", "", {0}, "{\"api_key\":\"[REDACTED]\",\"a\":2}"},
         1,
         "body /a: 1 != 2"},
        {{0},
         {"POST", "/t", "", {0}, "hello world"},
         {"POST", "/t", "", {0}, "hello there"},
         1,
         "body at byte 6: \"hello world\" != \"hello there\""},
        {{0},
         {"POST", "/t", "", {0}, "0123456789abcdefghijklmnopqrstuvwxyz!"},
         {"POST", "/t", "", {0}, "0123456789abcdefghijklmnopqrstuvwxyz?"},
         1,
         "body at byte 36: \"...ghijklmnopqrstuvwxyz!\" != \"...ghijklmnopqrstuvwxyz?\""},
        {{0},
         {"POST", "/t", "", {0}, "line\n\"q\""},
         {"POST", "/t", "", {0}, "line\n\"r\""},
         1,
         "body at byte 6: \"line\\n\\\"q\\\"\" != \"line\\n\\\"r\\\"\""},
        {{0},
         {"POST", "/t", "", {0}, "{\"a\":1}"},
         {"POST", "/t", "", {0}, "hi"},
         1,
         "body: {\"a\":1} != \"hi\""},
        {{0}, {"POST", "/t"}, {"POST", "/t", "", {0}, "{\"a\":1}"}, 1, "body: empty != {\"a\":1}"},
        {{0}, {"POST", "/t", "", {0}, "abc"}, {"POST", "/t"}, 1, "body: \"abc\" != empty"},
        {{0},
         {"PUT", "/b", "", {0}, "\x00\x01\xff", 3},
         {"PUT", "/b", "", {0}, "\x00\x02\xff", 3},
         1,
         "body at byte 1: binary 3 bytes != binary 3 bytes"},
        {{0},
         {"PUT", "/b", "", {0}, "\x00\x01\xff", 3},
         {"PUT", "/b", "", {0}, "\x00\x01\xff", 3},
         0,
         ""},
        {{.fields = "method,path"},
         {"POST", "/m", "a=1", {0}, "{\"a\":1}"},
         {"POST", "/m", "a=2", {0}, "{\"a\":2}"},
         0,
         ""},
        {{.fields = "body"},
         {"POST", "/m", "", {0}, "x"},
         {"GET", "/n", "", {0}, "y"},
         1,
         "body at byte 0: \"x\" != \"y\""},
        {{0},
         {"POST", "/m", "b=2&a=1", {0}, "{ \"y\": [1, 2], \"x\": {} }"},
         {"POST", "/m", "a=1&b=2", {0}, "{\"x\":{},\"y\":[1,2]}"},
         0,
         ""},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct match_rules mr;
        struct headers ha, hb;
        rules_build(&cases[i].rules, &mr);
        struct match_request a = req_view(&cases[i].req, &ha), b = req_view(&cases[i].rec, &hb);
        char *out[MAXD] = {0};
        int n = match_diff(&mr, &redact, &a, &b, out, MAXD);
        struct buf joined = {0};
        buf_puts(&joined, "");
        for (int k = 0; k < n && k < MAXD; k++)
            buf_printf(&joined, "%s%s", k ? " | " : "", out[k]);
        CHECK(n == cases[i].count, "case %zu: %d differences, want %d (%s)", i, n, cases[i].count,
              joined.p);
        CHECK(strcmp(joined.p, cases[i].diffs) == 0, "case %zu: differences\n  got  %s\n  want %s",
              i, joined.p, cases[i].diffs);
        /* No differences exactly when the keys are equal. */
        char *ka = match_key(&mr, &redact, &a), *kb = match_key(&mr, &redact, &b);
        CHECK((n == 0) == (strcmp(ka, kb) == 0), "case %zu: %d differences but keys %s / %s", i, n,
              ka, kb);
        free(ka);
        free(kb);
        for (int k = 0; k < MAXD; k++)
            free(out[k]);
        buf_free(&joined);
        headers_free(&ha);
        headers_free(&hb);
        match_rules_free(&mr);
    }
}

static void test_diff_caps(void)
{
    struct match_rules mr = {0};
    struct match_request a = {.method = "POST", .path = "/a", .query = "x=1"};
    struct match_request b = {.method = "GET", .path = "/b", .query = "x=2"};
    char *out[2] = {0};
    int n = match_diff(&mr, NULL, &a, &b, out, 2);
    CHECK(n == 3, "three differences counted with room for two: %d", n);
    CHECK(out[0] && strcmp(out[0], "method: POST != GET") == 0, "first stored");
    CHECK(out[1] && strcmp(out[1], "path: /a != /b") == 0, "second stored");
    free(out[0]);
    free(out[1]);

    /* Many body differences: the first 16 by pointer, then one line for the rest. */
    struct buf ja = {0}, jb = {0};
    buf_puts(&ja, "{");
    buf_puts(&jb, "{");
    for (int i = 0; i < 40; i++) {
        buf_printf(&ja, "%s\"k%02d\":%d", i ? "," : "", i, i);
        buf_printf(&jb, "%s\"k%02d\":%d", i ? "," : "", i, i + 1);
    }
    buf_puts(&ja, "}");
    buf_puts(&jb, "}");
    a = (struct match_request){
        .method = "POST", .path = "/a", .body = (unsigned char *)ja.p, .body_len = ja.len};
    b = (struct match_request){
        .method = "POST", .path = "/a", .body = (unsigned char *)jb.p, .body_len = jb.len};
    char *many[MAXD] = {0};
    n = match_diff(&mr, NULL, &a, &b, many, MAXD);
    CHECK(n == 17, "body differences capped: %d", n);
    CHECK(many[0] && strcmp(many[0], "body /k00: 0 != 1") == 0, "first: %s", many[0]);
    CHECK(many[15] && strcmp(many[15], "body /k15: 15 != 16") == 0, "16th: %s", many[15]);
    CHECK(many[16] && strcmp(many[16], "body: more differences after the first 16") == 0,
          "last: %s", many[16]);
    for (int k = 0; k < MAXD; k++)
        free(many[k]);

    /* Long values are clipped. */
    struct buf la = {0};
    for (int i = 0; i < 50; i++)
        buf_puts(&la, "abcd");
    a = (struct match_request){.method = "GET", .path = la.p};
    b = (struct match_request){.method = "GET", .path = "/"};
    n = match_diff(&mr, NULL, &a, &b, out, 1);
    CHECK(n == 1 && out[0] && strlen(out[0]) < 120 && strstr(out[0], "...") != NULL,
          "long path clipped: %s", out[0]);
    free(out[0]);
    buf_free(&la);
    buf_free(&ja);
    buf_free(&jb);
}

static void test_parse_fields(void)
{
    static const struct {
        const char *in;
        int rc;
        unsigned bits;
        const char *err;
    } cases[] = {
        {"method,path", 0, MATCH_METHOD | MATCH_PATH, NULL},
        {"path,method", 0, MATCH_METHOD | MATCH_PATH, NULL},
        {"body", 0, MATCH_BODY, NULL},
        {"query", 0, MATCH_QUERY, NULL},
        {"method,path,query,body", 0, MATCH_ALL, NULL},
        {" method , query ", 0, MATCH_METHOD | MATCH_QUERY, NULL},
        {"method,method", 0, MATCH_METHOD, NULL},
        {"bdy", -1, 0, "unknown match field \"bdy\" (accepted: method, path, query, body)"},
        {"method,headers", -1, 0,
         "unknown match field \"headers\" (accepted: method, path, query, body)"},
        {"METHOD", -1, 0, "unknown match field \"METHOD\" (accepted: method, path, query, body)"},
        {"", -1, 0, "empty match field in \"\" (accepted: method, path, query, body)"},
        {"method,", -1, 0,
         "empty match field in \"method,\" (accepted: method, path, query, body)"},
        {"method,,path", -1, 0,
         "empty match field in \"method,,path\" (accepted: method, path, query, body)"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        char err[APISIM_ERR_LEN] = "";
        unsigned bits = 12345;
        int rc = match_parse_fields(cases[i].in, &bits, err);
        CHECK(rc == cases[i].rc, "parse_fields(%s) = %d", cases[i].in, rc);
        if (rc == 0)
            CHECK(bits == cases[i].bits, "parse_fields(%s) bits %u, want %u", cases[i].in, bits,
                  cases[i].bits);
        if (cases[i].err)
            CHECK(strcmp(err, cases[i].err) == 0, "parse_fields(%s) err \"%s\", want \"%s\"",
                  cases[i].in, err, cases[i].err);
    }
}

static void test_rules(void)
{
    struct match_rules a = {.fields = MATCH_METHOD | MATCH_BODY}, b;
    CHECK(match_add_header(&a, "X-V") == 0 && match_add_ignore_query(&a, "ts") == 0 &&
              match_add_ignore_json(&a, IGNORE_IDS[0]) == 0 &&
              match_add_ignore_json(&a, IGNORE_IDS[1]) == 0,
          "add rules");
    CHECK(match_rules_copy(&b, &a) == 0, "copy");
    CHECK(b.fields == a.fields && b.nheaders == 1 && b.nignore_query == 1 && b.nignore_json == 2,
          "copy counts");
    CHECK(b.headers[0] != a.headers[0] && strcmp(b.headers[0], "X-V") == 0, "deep copy header");
    CHECK(strcmp(b.ignore_json[1], "/messages/*/id") == 0, "deep copy pointer");
    match_rules_free(&a);
    CHECK(a.headers == NULL && a.nheaders == 0 && a.nignore_json == 0, "freed rules are empty");
    CHECK(strcmp(b.ignore_query[0], "ts") == 0, "copy survives the original");
    match_rules_free(&b);
    match_rules_free(&b);
    match_rules_free(NULL);

    /* NULL rules and NULL redaction mean: everything, built-in secrets only. */
    struct match_request r = {.method = "GET", .path = "/p", .query = "b=1&a=2"};
    char *k = match_key(NULL, NULL, &r);
    CHECK(k && strcmp(k, "GET /p?a=2&b=1") == 0, "NULL rules key %s", k ? k : "(null)");
    free(k);
}

static void join_list(char **v, size_t n, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "," : "", v[i]);
}

/* The match index: an exchange's identity (what it holds as REDACTED left out) is the one
 * a live request carrying the real secrets gets under the names learnt from it. */
static void test_index(void)
{
    static const struct {
        struct req recorded, live;
        int same;
        const char *query, *json, *headers; /* learnt from the recorded one, joined with "," */
    } cases[] = {
        {{"GET", "/a", "b=2&a=1"}, {"GET", "/a", "a=1&b=2"}, 1, "", "", ""},
        {{"GET", "/a", "a=1&token=" REDACTED}, {"GET", "/a", "token=real&a=1"}, 1, "token", "", ""},
        {{"POST", "/m", "", {NULL}, "{\"k\":\"" REDACTED "\",\"x\":[1,{\"s\":\"" REDACTED "\"}]}"},
         {"POST", "/m", "", {NULL}, "{\"x\": [1, {\"s\": \"real2\"}], \"k\": \"real\"}"},
         1,
         "",
         "/k,/x/1/s",
         ""},
        /* Headers are not in a default key; names beyond the built-in ones are learnt. */
        {{"GET", "/a", "", {"X-Custom", REDACTED, "Authorization", REDACTED, NULL}},
         {"GET", "/a", "", {"X-Custom", "v", NULL}},
         1,
         "",
         "",
         "X-Custom"},
        /* A value recorded as it was is part of the key. */
        {{"GET", "/a", "a=1&token=t1"}, {"GET", "/a", "a=1&token=t2"}, 0, "", "", ""},
        {{"POST", "/m", "", {NULL}, "{\"a\":1}"},
         {"POST", "/m", "", {NULL}, "{\"a\":2}"},
         0,
         "",
         "",
         ""},
        {{"GET", "/a", "n=1"}, {"POST", "/a", "n=1"}, 0, "", "", ""},
        {{"GET", "/a"}, {"GET", "/b"}, 0, "", "", ""},
        /* "[REDACTED]" inside a longer value is data, not a redaction. */
        {{"GET", "/a", "q=x" REDACTED}, {"GET", "/a", "q=y"}, 0, "", "", ""},
    };
    static const struct match_rules all = {.fields = MATCH_ALL};
    for (size_t i = 0; i < N(cases); i++) {
        struct headers hr, hl;
        struct match_request rec = req_view(&cases[i].recorded, &hr);
        struct match_request live = req_view(&cases[i].live, &hl);
        struct redact_rules learnt = {0};
        struct match_ident a = {0}, b = {0};
        char got[256];
        CHECK(match_index_ident(&rec, &learnt, &a) == 0, "case %zu: ident", i);
        join_list(learnt.query, learnt.nquery, got, sizeof got);
        CHECK(strcmp(got, cases[i].query) == 0, "case %zu: learnt query %s", i, got);
        join_list(learnt.json, learnt.njson, got, sizeof got);
        CHECK(strcmp(got, cases[i].json) == 0, "case %zu: learnt json %s", i, got);
        join_list(learnt.headers, learnt.nheaders, got, sizeof got);
        CHECK(strcmp(got, cases[i].headers) == 0, "case %zu: learnt headers %s", i, got);
        char *k = match_key(&all, &learnt, &live);
        match_ident_of(k, &b);
        CHECK((a.hash == b.hash && a.check == b.check) == cases[i].same,
              "case %zu: live key %s: same identity should be %d", i, k, cases[i].same);
        free(k);
        redact_rules_free(&learnt);
        headers_free(&hr);
        headers_free(&hl);
    }
    /* Keys written into files: a change here is a new MATCH_INDEX_VERSION (match.h), so
     * files indexed before are re-indexed instead of answered from. */
    static const struct req golden = {
        "POST",
        "/v1/messages",
        "b=2&a=1&token=" REDACTED,
        {"Content-Type", "application/json", NULL},
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
        "\"metadata\": {\"user_id\": \"" REDACTED "\"}, \"t\": 0.5}"};
    struct headers gh;
    struct match_request gr = req_view(&golden, &gh);
    struct redact_rules gl = {0};
    struct match_ident g = {0};
    CHECK(match_index_ident(&gr, &gl, &g) == 0, "golden");
    CHECK(g.hash == 0x16009a2e4d78390dULL && g.check == 0xba10ee15487d1c8cULL,
          "golden identity %016llx %016llx (bump MATCH_INDEX_VERSION if keys changed)",
          (unsigned long long)g.hash, (unsigned long long)g.check);
    redact_rules_free(&gl);
    headers_free(&gh);
    /* The two halves are unrelated: one-byte changes move both. */
    struct match_ident x, y;
    match_ident_of("GET /a?n=1", &x);
    match_ident_of("GET /a?n=2", &y);
    CHECK(x.hash != y.hash && x.check != y.check, "n=1 / n=2");
    CHECK(match_rules_are_default(&all) && match_rules_are_default(NULL), "default rules");
    struct match_rules r = {.fields = MATCH_METHOD | MATCH_PATH};
    CHECK(!match_rules_are_default(&r), "--match method,path is not the default");
    r.fields = 0;
    match_add_ignore_json(&r, "/x");
    CHECK(!match_rules_are_default(&r), "--ignore-json is not the default");
    match_rules_free(&r);
}

int main(void)
{
    redact_add_query(&redact, "token");
    redact_add_header(&redact, "x-secret");
    redact_add_json(&redact, "/api_key");
    test_key();
    test_key_pairs();
    test_hash();
    test_canonical();
    test_diff();
    test_diff_caps();
    test_parse_fields();
    test_rules();
    test_index();
    redact_rules_free(&redact);
    if (failures) {
        fprintf(stderr, "test_match: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_match: ok\n");
    return 0;
}
