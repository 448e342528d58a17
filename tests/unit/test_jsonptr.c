/* Unit tests for jsonptr.c: validation, visiting and removal, as tables of cases. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonptr.h"
#include "util.h"

#include "check.h"

static cJSON *parse(const char *text)
{
    const char *end = NULL;
    return cJSON_ParseWithOpts(text, &end, 1);
}

static void test_validate(void)
{
    static const struct {
        const char *ptr;
        int rc;
        const char *err_has; /* a piece the error must contain */
    } cases[] = {
        {"", 0, NULL},
        {"/", 0, NULL},
        {"/a", 0, NULL},
        {"/a/b/0", 0, NULL},
        {"/messages/*/id", 0, NULL},
        {"/a~0b", 0, NULL},
        {"/a~1b", 0, NULL},
        {"/~0~1", 0, NULL},
        {"a", -1, "must be empty or start with '/'"},
        {"metadata/user_id", -1, "\"metadata/user_id\""},
        {"/a~", -1, "'~' at offset 2"},
        {"/a~2", -1, "followed by 0 or 1"},
        {"/~x/b", -1, "'~' at offset 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[APISIM_ERR_LEN] = "";
        int rc = jsonptr_validate(cases[i].ptr, err);
        CHECK(rc == cases[i].rc, "validate(%s) = %d, want %d", cases[i].ptr, rc, cases[i].rc);
        if (cases[i].err_has)
            CHECK(strstr(err, cases[i].err_has) != NULL, "validate(%s) err \"%s\" lacks \"%s\"",
                  cases[i].ptr, err, cases[i].err_has);
    }
    char err[APISIM_ERR_LEN];
    CHECK(jsonptr_validate(NULL, err) == -1, "NULL pointer refused");
}

static void test_remove(void)
{
    static const struct {
        const char *doc;
        const char *ptr;
        int removed;
        const char *after; /* cJSON_PrintUnformatted of the result */
    } cases[] = {
        {"{\"a\":1,\"b\":2}", "/a", 1, "{\"b\":2}"},
        {"{\"a\":{\"b\":1,\"c\":2}}", "/a/b", 1, "{\"a\":{\"c\":2}}"},
        {"{\"metadata\":{\"user_id\":\"u1\",\"x\":1}}", "/metadata/user_id", 1,
         "{\"metadata\":{\"x\":1}}"},
        {"{\"messages\":[{\"id\":1,\"t\":\"x\"},{\"id\":2,\"t\":\"y\"},{\"t\":\"z\"}]}",
         "/messages/*/id", 2, "{\"messages\":[{\"t\":\"x\"},{\"t\":\"y\"},{\"t\":\"z\"}]}"},
        {"{\"a\":[1,2,3]}", "/a/1", 1, "{\"a\":[1,3]}"},
        {"{\"a\":[1,2,3]}", "/a/0", 1, "{\"a\":[2,3]}"},
        {"{\"a\":[1,2,3]}", "/a/3", 0, "{\"a\":[1,2,3]}"},
        {"{\"a\":[1,2,3]}", "/a/01", 0, "{\"a\":[1,2,3]}"},
        {"{\"a\":[1,2,3]}", "/a/-", 0, "{\"a\":[1,2,3]}"},
        {"{\"a\":[1,2,3]}", "/a/x", 0, "{\"a\":[1,2,3]}"},
        {"{\"a/b\":1,\"m~n\":2}", "/a~1b", 1, "{\"m~n\":2}"},
        {"{\"a/b\":1,\"m~n\":2}", "/m~0n", 1, "{\"a/b\":1}"},
        {"{\"a/b\":1,\"m~n\":2}", "/a/b", 0, "{\"a/b\":1,\"m~n\":2}"},
        {"{\"\":1,\"x\":2}", "/", 1, "{\"x\":2}"},
        {"{\"a\":1,\"b\":2}", "/*", 2, "{}"},
        {"[1,2,3]", "/*", 3, "[]"},
        {"{\"a\":{\"x\":1},\"b\":[1,2],\"c\":3}", "/*/*", 3, "{\"a\":{},\"b\":[],\"c\":3}"},
        {"{\"a\":[{\"b\":[{\"c\":1,\"d\":2}]},{\"b\":[]}]}", "/a/*/b/*/c", 1,
         "{\"a\":[{\"b\":[{\"d\":2}]},{\"b\":[]}]}"},
        {"{\"k\":1,\"k\":2,\"j\":3}", "/k", 2, "{\"j\":3}"},
        {"{\"1\":true,\"2\":false}", "/1", 1, "{\"2\":false}"},
        {"{\"x\":\"str\"}", "/x/y", 0, "{\"x\":\"str\"}"},
        {"{\"x\":5}", "/x/*", 0, "{\"x\":5}"},
        {"{\"x\":5}", "/nope", 0, "{\"x\":5}"},
        {"{\"x\":5}", "", 0, "{\"x\":5}"},    /* the root cannot be removed */
        {"{\"x\":5}", "x", 0, "{\"x\":5}"},   /* invalid pointers reach nothing */
        {"{\"*\":1,\"a\":2}", "/*", 2, "{}"}, /* '*' is every member */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *root = parse(cases[i].doc);
        CHECK(root != NULL, "case %zu: parse %s", i, cases[i].doc);
        if (!root)
            continue;
        int n = jsonptr_remove(root, cases[i].ptr);
        char *after = cJSON_PrintUnformatted(root);
        CHECK(n == cases[i].removed, "remove(%s, %s) = %d, want %d", cases[i].doc, cases[i].ptr, n,
              cases[i].removed);
        CHECK(after && strcmp(after, cases[i].after) == 0, "remove(%s, %s) left %s, want %s",
              cases[i].doc, cases[i].ptr, after ? after : "(null)", cases[i].after);
        free(after);
        cJSON_Delete(root);
    }
}

struct seen {
    int n;
    int root_parent_null;
    char names[256];
};

static void record_visit(cJSON *parent, cJSON *item, void *ctx)
{
    struct seen *s = ctx;
    s->n++;
    if (!parent)
        s->root_parent_null = 1;
    size_t len = strlen(s->names);
    snprintf(s->names + len, sizeof s->names - len, "%s%s", len ? "," : "",
             item->string ? item->string : (cJSON_IsNumber(item) ? "#" : "?"));
}

/* Replace what is reached with a string, as redaction does, while the walk goes on. */
static void replace_visit(cJSON *parent, cJSON *item, void *ctx)
{
    (void)ctx;
    if (!parent)
        return;
    cJSON *s = cJSON_CreateString("X");
    if (item->string)
        s->string = strdup(item->string);
    cJSON_ReplaceItemViaPointer(parent, item, s);
}

static void test_visit(void)
{
    static const struct {
        const char *doc;
        const char *ptr;
        int count;
        const char *names; /* names of the items reached, in order */
        const char *replaced;
    } cases[] = {
        {"{\"a\":1}", "", 1, "?", "{\"a\":1}"},
        {"{\"b\":1,\"a\":2}", "/*", 2, "b,a", "{\"b\":\"X\",\"a\":\"X\"}"},
        {"[1,2]", "/*", 2, "#,#", "[\"X\",\"X\"]"},
        {"{\"m\":[{\"id\":1},{\"id\":2}]}", "/m/*/id", 2, "id,id",
         "{\"m\":[{\"id\":\"X\"},{\"id\":\"X\"}]}"},
        {"{\"m\":[{\"id\":1},{\"id\":2}]}", "/m/*", 2, "?,?", "{\"m\":[\"X\",\"X\"]}"},
        {"{\"m\":[]}", "/m/*", 0, "", "{\"m\":[]}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *root = parse(cases[i].doc);
        struct seen s = {0};
        int n = jsonptr_visit(root, cases[i].ptr, record_visit, &s);
        CHECK(n == cases[i].count && s.n == n, "visit(%s, %s) = %d (fn %d), want %d", cases[i].doc,
              cases[i].ptr, n, s.n, cases[i].count);
        CHECK(strcmp(s.names, cases[i].names) == 0, "visit(%s, %s) reached %s, want %s",
              cases[i].doc, cases[i].ptr, s.names, cases[i].names);
        if (cases[i].ptr[0] == '\0')
            CHECK(s.root_parent_null, "root visited with parent NULL");
        jsonptr_visit(root, cases[i].ptr, replace_visit, NULL);
        char *after = cJSON_PrintUnformatted(root);
        CHECK(after && strcmp(after, cases[i].replaced) == 0, "replace(%s, %s) = %s, want %s",
              cases[i].doc, cases[i].ptr, after ? after : "(null)", cases[i].replaced);
        free(after);
        cJSON_Delete(root);
    }
    CHECK(jsonptr_visit(NULL, "/a", record_visit, NULL) == 0, "NULL root reaches nothing");
}

int main(void)
{
    test_validate();
    test_remove();
    test_visit();
    if (failures) {
        fprintf(stderr, "test_jsonptr: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_jsonptr: ok\n");
    return 0;
}
