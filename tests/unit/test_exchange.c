/* Unit tests for exchange.c: headers read back from their JSON column, by the direct reader
 * of the plain form and by cJSON for the rest, give the same pairs; headers written to that
 * column are the text cJSON writes for them, and read back the same. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "exchange.h"
#include "util.h"

#include "check.h"

static void test_headers_from_json(void)
{
    static const struct {
        const char *json;
        int rc;
        size_t n;
        const char *name0, *value0, *name_last, *value_last; /* when n > 0 */
    } cases[] = {
        /* the plain form, as apisim writes it */
        {"[]", 0, 0, NULL, NULL, NULL, NULL},
        {"[[\"Content-Type\",\"application/json\"],[\"Content-Length\",\"1024\"]]", 0, 2,
         "Content-Type", "application/json", "Content-Length", "1024"},
        {" [ [ \"a\" , \"\" ] ,\n[\"\",\"b\"] ]\r\n", 0, 2, "a", "", "", "b"},
        {"[[\"x-caf\xc3\xa9\",\"\xe2\x82\xac\"]]", 0, 1, "x-caf\xc3\xa9", "\xe2\x82\xac",
         "x-caf\xc3\xa9", "\xe2\x82\xac"},
        /* escapes: read by cJSON */
        {"[[\"a\\\"b\",\"c\\\\d\"],[\"e\",\"\\u0041\"]]", 0, 2, "a\"b", "c\\d", "e", "A"},
        /* more than a pair: the first two kept, as before */
        {"[[\"a\",\"b\",\"c\"]]", 0, 1, "a", "b", "a", "b"},
        /* what follows the array is ignored, as cJSON does */
        {"[[\"a\",\"b\"]] trailing", 0, 1, "a", "b", "a", "b"},
        /* not headers */
        {"", -1, 0, NULL, NULL, NULL, NULL},
        {"{}", -1, 0, NULL, NULL, NULL, NULL},
        {"[[\"a\",1]]", -1, 0, NULL, NULL, NULL, NULL},
        {"[\"a\",\"b\"]", -1, 0, NULL, NULL, NULL, NULL},
        {"[[\"a\",\"b\"]", -1, 0, NULL, NULL, NULL, NULL},
        {"[[\"a\"]]", -1, 0, NULL, NULL, NULL, NULL},
    };
    for (size_t i = 0; i < N(cases); i++) {
        struct headers h = {0};
        const char *j = cases[i].json;
        int rc = exchange_headers_from_json(j, strlen(j), &h);
        CHECK(rc == cases[i].rc, "%s: rc %d, expected %d", j, rc, cases[i].rc);
        if (rc == 0) {
            CHECK(h.n == cases[i].n, "%s: %zu headers, expected %zu", j, h.n, cases[i].n);
            if (h.n && h.n == cases[i].n) {
                CHECK(strcmp(h.v[0].name, cases[i].name0) == 0, "%s: name %s", j, h.v[0].name);
                CHECK(strcmp(h.v[0].value, cases[i].value0) == 0, "%s: value %s", j, h.v[0].value);
                CHECK(strcmp(h.v[h.n - 1].name, cases[i].name_last) == 0, "%s: last name %s", j,
                      h.v[h.n - 1].name);
                CHECK(strcmp(h.v[h.n - 1].value, cases[i].value_last) == 0, "%s: last value %s", j,
                      h.v[h.n - 1].value);
            }
        }
        headers_free(&h);
    }
    /* A length short of the text: only what is within it is read. */
    struct headers h = {0};
    const char *j = "[[\"a\",\"b\"]][[\"c\",\"d\"]]";
    CHECK(exchange_headers_from_json(j, 11, &h) == 0 && h.n == 1, "the first 11 bytes: one pair");
    headers_free(&h);
    CHECK(exchange_headers_from_json(j, 9, &h) == -1, "9 bytes of it: not headers");
    headers_free(&h);
    CHECK(exchange_headers_from_json(NULL, 0, &h) == -1 && h.n == 0, "no text: not headers");
    headers_free(&h);
    /* A round trip through exchange_headers_to_json. */
    struct headers in = {0}, out = {0};
    CHECK(headers_add(&in, "X-Q", "say \"hi\"\\") == 0 && headers_add(&in, "A", "b") == 0,
          "headers added");
    char *text = exchange_headers_to_json(&in);
    CHECK(text != NULL, "headers written");
    if (text) {
        CHECK(exchange_headers_from_json(text, strlen(text), &out) == 0 && out.n == 2 &&
                  strcmp(out.v[0].value, "say \"hi\"\\") == 0 && strcmp(out.v[1].name, "A") == 0,
              "read back: %s", text);
    }
    free(text);
    headers_free(&in);
    headers_free(&out);
}

/* What exchange_headers_to_json wrote before it wrote directly: a cJSON tree, printed. */
static char *via_cjson(const struct headers *h)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < h->n; i++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(h->v[i].name));
        cJSON_AddItemToArray(pair, cJSON_CreateString(h->v[i].value));
        cJSON_AddItemToArray(arr, pair);
    }
    char *out = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return out;
}

static void test_headers_to_json(void)
{
    static const char *const pairs[][2] = {
        {"Content-Type", "application/json"},
        {"", ""},
        {"x-quote", "a\"b\\c"},
        {"x-controls", "\b\f\n\r\t\x01\x1f end"},
        {"x-caf\xc3\xa9", "\xe2\x82\xac and \xff (not UTF-8)"},
        {"x-slash", "/path?q=1&r=</script>"},
    };
    size_t npairs = sizeof pairs / sizeof pairs[0];
    for (size_t n = 0; n <= npairs; n++) {
        struct headers h = {0};
        for (size_t i = 0; i < n; i++)
            CHECK(headers_add(&h, pairs[i][0], pairs[i][1]) == 0, "headers_add");
        char *got = exchange_headers_to_json(&h), *want = via_cjson(&h);
        CHECK(got && want && strcmp(got, want) == 0, "%zu pair(s): wrote %s, cJSON writes %s", n,
              got ? got : "NULL", want ? want : "NULL");
        struct headers back = {0};
        CHECK(got && exchange_headers_from_json(got, strlen(got), &back) == 0 && back.n == n,
              "%zu pair(s): %s does not read back", n, got ? got : "NULL");
        for (size_t i = 0; i < back.n && i < n; i++)
            CHECK(strcmp(back.v[i].name, pairs[i][0]) == 0 &&
                      strcmp(back.v[i].value, pairs[i][1]) == 0,
                  "pair %zu reads back as [%s, %s]", i, back.v[i].name, back.v[i].value);
        headers_free(&back);
        headers_free(&h);
        free(got);
        free(want);
    }
}

int main(void)
{
    test_headers_from_json();
    test_headers_to_json();
    if (failures) {
        fprintf(stderr, "test_exchange: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_exchange: ok\n");
    return 0;
}
