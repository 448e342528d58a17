/* Unit tests for config.c: a good file, every error path with its JSON path, routes, globs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "util.h"

#include "check.h"

static int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static const char GOOD[] =
    "{\n"
    "  \"match\": {\"fields\": [\"method\", \"path\", \"body\"], \"headers\": "
    "[\"anthropic-version\"],\n"
    "            \"ignore_query\": [\"ts\"], \"ignore_json\": [\"/metadata/user_id\", "
    "\"/messages/*/id\"]},\n"
    "  \"latency\": \"fixed:20ms\",\n"
    "  \"faults\": \"reset:5%,status:529:10%\",\n"
    "  \"redact\": {\"headers\": [\"x-session\"], \"query\": [\"token\"], \"json\": "
    "[\"/api_key\"]},\n"
    "  \"routes\": [\n"
    "    {\"method\": \"POST\", \"path\": \"/v1/messages\", \"match\": {\"fields\": "
    "[\"method\", \"path\"]},\n"
    "     \"latency\": \"lognormal:40ms,200ms\", \"faults\": [\"cut-stream:20%\", "
    "\"latency-spike:2s:1%\"]},\n"
    "    {\"path\": \"/v1/models/*\", \"latency\": \"none\", \"faults\": []},\n"
    "    {\"method\": \"*\", \"path\": \"/health\"},\n"
    "    {\"method\": \"GET\", \"match\": {}}\n"
    "  ]\n"
    "}\n";

static void test_good(void)
{
    struct config cfg = {0};
    char err[APISIM_ERR_LEN] = "";
    int rc = config_parse(GOOD, strlen(GOOD), &cfg, err);
    CHECK(rc == 0, "good config parses: %s", err);
    if (rc != 0)
        return;
    CHECK(cfg.has_match && cfg.match.fields == (MATCH_METHOD | MATCH_PATH | MATCH_BODY),
          "top match fields %u", cfg.match.fields);
    CHECK(cfg.match.nheaders == 1 && streq(cfg.match.headers[0], "anthropic-version"),
          "top match headers");
    CHECK(cfg.match.nignore_query == 1 && streq(cfg.match.ignore_query[0], "ts"), "ignore_query");
    CHECK(cfg.match.nignore_json == 2 && streq(cfg.match.ignore_json[0], "/metadata/user_id") &&
              streq(cfg.match.ignore_json[1], "/messages/*/id"),
          "ignore_json");
    CHECK(cfg.has_latency && cfg.latency.kind == LATENCY_FIXED && cfg.latency.a_us == 20000,
          "top latency");
    CHECK(cfg.faults.n == 2 && cfg.faults.v[0].kind == FAULT_RESET &&
              cfg.faults.v[0].rate == 0.05 && cfg.faults.v[1].kind == FAULT_STATUS &&
              cfg.faults.v[1].status == 529 && streq(cfg.faults.v[1].name, "status:529"),
          "top faults");
    CHECK(cfg.redact.nheaders == 1 && streq(cfg.redact.headers[0], "x-session"), "redact headers");
    CHECK(cfg.redact.nquery == 1 && streq(cfg.redact.query[0], "token"), "redact query");
    CHECK(cfg.redact.njson == 1 && streq(cfg.redact.json[0], "/api_key"), "redact json");
    CHECK(cfg.nroutes == 4, "four routes: %zu", cfg.nroutes);
    if (cfg.nroutes == 4) {
        const struct route_rule *r = cfg.routes;
        CHECK(streq(r[0].method, "POST") && streq(r[0].path_glob, "/v1/messages"), "route 0");
        CHECK(r[0].has_match && r[0].match.fields == (MATCH_METHOD | MATCH_PATH), "route 0 match");
        CHECK(r[0].has_latency && r[0].latency.kind == LATENCY_LOGNORMAL &&
                  r[0].latency.a_us == 40000 && r[0].latency.b_us == 200000,
              "route 0 latency");
        CHECK(r[0].has_faults && r[0].faults.n == 2 && r[0].faults.v[0].kind == FAULT_CUT_STREAM &&
                  r[0].faults.v[1].kind == FAULT_LATENCY_SPIKE &&
                  r[0].faults.v[1].spike_us == 2000000 && r[0].faults.v[1].rate == 0.01,
              "route 0 faults");
        CHECK(r[1].has_faults && r[1].faults.n == 0, "route 1: no faults, said so");
        CHECK(!r[2].has_faults, "route 2: the top level's faults");
        CHECK(r[1].method == NULL && streq(r[1].path_glob, "/v1/models/*") && !r[1].has_match &&
                  r[1].has_latency && r[1].latency.kind == LATENCY_NONE,
              "route 1");
        CHECK(streq(r[2].method, "*") && !r[2].has_latency, "route 2");
        CHECK(streq(r[3].path_glob, "*") && r[3].has_match && r[3].match.fields == 0,
              "route 3: no path is every path; empty match is all fields");
    }

    static const struct {
        const char *method, *path;
        int route; /* index, or -1 for none */
    } routes[] = {
        {"POST", "/v1/messages", 0},  {"post", "/v1/messages", 0},   {"POST", "/v1/messages/x", -1},
        {"PUT", "/v1/models/a/b", 1}, {"DELETE", "/health", 2},      {"GET", "/health", 2},
        {"GET", "/anything", 3},      {"POST", "/v1/messages2", -1}, {"PATCH", "/x", -1},
    };
    for (size_t i = 0; i < N(routes); i++) {
        const struct route_rule *r = config_route_for(&cfg, routes[i].method, routes[i].path);
        int got = r ? (int)(r - cfg.routes) : -1;
        CHECK(got == routes[i].route, "%s %s -> route %d, want %d", routes[i].method,
              routes[i].path, got, routes[i].route);
    }
    config_free(&cfg);
    struct config zero = {0};
    CHECK(memcmp(&cfg, &zero, sizeof cfg) == 0, "config_free leaves it zeroed");
    config_free(&cfg);
    config_free(NULL);
    CHECK(config_route_for(NULL, "GET", "/") == NULL, "no config, no route");

    rc = config_parse("{}", 2, &cfg, err);
    CHECK(rc == 0 && !cfg.has_match && !cfg.has_latency && cfg.nroutes == 0, "empty object");
    config_free(&cfg);
    rc = config_parse("{\"routes\": []}  \n", 17, &cfg, err);
    CHECK(rc == 0 && cfg.nroutes == 0 && cfg.routes == NULL, "no routes: %s", err);
    config_free(&cfg);
    /* Only len bytes are read. */
    rc = config_parse("{\"latency\":\"none\"}garbage", 18, &cfg, err);
    CHECK(rc == 0 && cfg.has_latency, "length-bounded text: %s", err);
    config_free(&cfg);
}

#define FORMS "accepted: none, fixed:50ms, recorded, recorded*0.5, uniform:10ms..50ms"

static void test_errors(void)
{
    static const struct {
        const char *text;
        const char *err; /* the whole message, or its beginning when it ends in "..." */
    } cases[] = {
        {"", "config: the file is empty; expected a JSON object"},
        {"[1]", "config: expected a JSON object at the top level, got an array"},
        {"\"str\"", "config: expected a JSON object at the top level, got a string"},
        {"{\"match\": ", "config: invalid JSON near line 1, column 11"},
        {"{\n  \"latency\": \"none\",\n  oops\n}", "config: invalid JSON near line 3, column 4"},
        {"{} x", "config: invalid JSON near line 1, column 4"},
        {"{\"bogus\": 1}",
         "config: unknown key \"bogus\" (accepted: match, latency, faults, redact, routes)"},
        {"{\"latency\": \"none\", \"latency\": \"fixed:1ms\"}",
         "config: key \"latency\" appears twice"},
        {"{\"match\": []}", "config: match: expected an object, got an array"},
        {"{\"match\": {\"fieldz\": []}}",
         "config: match: unknown key \"fieldz\" (accepted: fields, headers, ignore_query, "
         "ignore_json)"},
        {"{\"match\": {\"fields\": \"method\"}}",
         "config: match.fields: expected an array of strings, got a string"},
        {"{\"match\": {\"fields\": [1]}}",
         "config: match.fields[0]: expected a string, got a number"},
        {"{\"match\": {\"fields\": []}}", "config: match.fields: list at least one field..."},
        {"{\"match\": {\"fields\": [\"method\", \"bdy\"]}}",
         "config: match.fields[1]: unknown match field \"bdy\" (accepted: method, path, query, "
         "body)"},
        {"{\"match\": {\"headers\": [\"\"]}}", "config: match.headers[0]: must not be empty"},
        {"{\"match\": {\"headers\": {}}}",
         "config: match.headers: expected an array of strings, got an object"},
        {"{\"match\": {\"ignore_query\": [null]}}",
         "config: match.ignore_query[0]: expected a string, got null"},
        {"{\"match\": {\"ignore_json\": [\"/ok\", \"metadata\"]}}",
         "config: match.ignore_json[1]: invalid JSON pointer \"metadata\": must be empty or start "
         "with '/'..."},
        {"{\"latency\": 5}",
         "config: latency: expected a latency string such as \"fixed:50ms\", got a number"},
        {"{\"latency\": \"fast\"}",
         "config: latency: invalid latency \"fast\": unknown model; " FORMS "..."},
        {"{\"redact\": true}", "config: redact: expected an object, got a boolean"},
        {"{\"redact\": {\"cookies\": []}}",
         "config: redact: unknown key \"cookies\" (accepted: headers, query, json)"},
        {"{\"redact\": {\"headers\": \"x\"}}",
         "config: redact.headers: expected an array of strings, got a string"},
        {"{\"redact\": {\"query\": [true]}}",
         "config: redact.query[0]: expected a string, got a boolean"},
        {"{\"redact\": {\"json\": [\"x\"]}}",
         "config: redact.json[0]: invalid JSON pointer \"x\": must be empty or start with '/'..."},
        {"{\"routes\": {}}", "config: routes: expected an array of objects, got an object"},
        {"{\"routes\": [1]}", "config: routes[0]: expected an object, got a number"},
        {"{\"routes\": [{\"pth\": \"/a\"}]}",
         "config: routes[0]: unknown key \"pth\" (accepted: method, path, match, latency, "
         "faults)"},
        {"{\"routes\": [{\"path\": 5}]}",
         "config: routes[0].path: expected a string, got a number"},
        {"{\"routes\": [{\"method\": \"\"}]}", "config: routes[0].method: must not be empty"},
        {"{\"routes\": [{\"path\": \"/a\", \"path\": \"/b\"}]}",
         "config: routes[0]: key \"path\" appears twice"},
        {"{\"routes\": [{\"path\": \"/a\"}, {\"path\": \"/b\", \"match\": {\"fields\": "
         "[\"bdy\"]}}]}",
         "config: routes[1].match.fields[0]: unknown match field \"bdy\" (accepted: method, path, "
         "query, body)"},
        {"{\"routes\": [{}, {}, {\"match\": 3}]}",
         "config: routes[2].match: expected an object, got a number"},
        {"{\"routes\": [{\"latency\": \"uniform:5ms..1ms\"}]}",
         "config: routes[0].latency: invalid latency \"uniform:5ms..1ms\": LOW must not exceed "
         "HIGH; " FORMS "..."},
        {"{\"routes\": [{\"latency\": null}]}",
         "config: routes[0].latency: expected a latency string such as \"fixed:50ms\", got null"},
        {"{\"routes\": [{\"match\": {\"ignore_json\": [\"/a/~2\"]}}]}",
         "config: routes[0].match.ignore_json[0]: invalid JSON pointer \"/a/~2\": '~' at offset 3 "
         "must be followed by 0 or 1..."},
        {"{\"routes\": [{\"match\": {\"headers\": [\"x\", 2]}}]}",
         "config: routes[0].match.headers[1]: expected a string, got a number"},
        {"{\"faults\": 5}",
         "config: faults: expected a string such as \"reset:5%,status:529:10%\" or an array of "
         "such strings, got a number"},
        {"{\"faults\": \"explode:5%\"}",
         "config: faults: \"explode:5%\": unknown fault kind \"explode\" (expected reset, empty, "
         "status:CODE, latency-spike:DURATION, cut-stream)"},
        {"{\"faults\": [\"reset:5%\", \"reset:101%\"]}",
         "config: faults[1]: \"reset:101%\": rate 101% is outside 0%..100%"},
        {"{\"faults\": [\"reset:5%\", 7]}",
         "config: faults[1]: expected a string such as \"reset:5%\", got a number"},
        {"{\"routes\": [{\"faults\": \"latency-spike:2parsecs:1%\"}]}",
         "config: routes[0].faults: \"latency-spike:2parsecs:1%\": invalid duration..."},
        {"{\"routes\": [{}, {\"faults\": \"reset:60%,empty:50%\"}]}",
         "config: routes[1].faults: \"reset:60%,empty:50%\": the rates add up to 110%, more than "
         "100%..."},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct config cfg = {0}, zero = {0};
        char err[APISIM_ERR_LEN] = "";
        int rc = config_parse(cases[i].text, strlen(cases[i].text), &cfg, err);
        CHECK(rc == -1, "case %zu (%s) fails", i, cases[i].text);
        size_t n = strlen(cases[i].err);
        int prefix = n > 3 && strcmp(cases[i].err + n - 3, "...") == 0;
        int ok = prefix ? strncmp(err, cases[i].err, n - 3) == 0 : strcmp(err, cases[i].err) == 0;
        CHECK(ok, "case %zu (%s)\n  got  %s\n  want %s", i, cases[i].text, err, cases[i].err);
        CHECK(memcmp(&cfg, &zero, sizeof cfg) == 0, "case %zu leaves cfg empty", i);
        config_free(&cfg);
    }
    /* A NUL inside the text. */
    struct config cfg = {0};
    char err[APISIM_ERR_LEN] = "";
    CHECK(config_parse("{}\0{}", 5, &cfg, err) == -1 && strstr(err, "NUL") != NULL, "NUL byte: %s",
          err);
}

static void test_glob(void)
{
    static const struct {
        const char *glob, *path;
        int match;
    } cases[] = {
        {"/v1/messages", "/v1/messages", 1},
        {"/v1/messages", "/v1/messages/", 0},
        {"/v1/messages", "/v1/message", 0},
        {"/v1/*", "/v1/messages", 1},
        {"/v1/*", "/v1/", 1},
        {"/v1/*", "/v1", 0},
        {"*", "", 1},
        {"*", "/anything/at/all", 1},
        {"/v1/*/count", "/v1/models/x/count", 1},
        {"/v1/*/count", "/v1/count", 0},
        {"/v1/*/count", "/v1//count", 1},
        {"*.json", "/a/b.json", 1},
        {"*.json", "/a/b.jsonx", 0},
        {"/a*b*c", "/aXbYc", 1},
        {"/a*b*c", "/aXbY", 0},
        {"/a*b*c", "/abcbc", 1},
        {"/a**", "/a", 1},
        {"", "", 1},
        {"", "/", 0},
        {"/a*a*a*a*a*b", "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
    };
    for (size_t i = 0; i < N(cases); i++)
        CHECK(config_glob_match(cases[i].glob, cases[i].path) == cases[i].match,
              "glob(%s, %s) != %d", cases[i].glob, cases[i].path, cases[i].match);
}

int main(void)
{
    test_good();
    test_errors();
    test_glob();
    if (failures) {
        fprintf(stderr, "test_config: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_config: ok\n");
    return 0;
}
