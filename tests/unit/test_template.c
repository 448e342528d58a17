/* template: placeholders in stub bodies, one table of cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"

/* 2026-11-24T17:00:00.123456Z */
#define NOW_US 1795539600123456LL

struct tcase {
    const char *body;
    const char *path;
    const char *query;
    const char *want;
};

static const struct tcase cases[] = {
    {"", "/", "", ""},
    {"no placeholders", "/", "", "no placeholders"},
    {"{{now}}", "/", "", "2026-11-24T17:00:00.123Z"},
    {"{{ now }}", "/", "", "2026-11-24T17:00:00.123Z"},
    {"at {{now+90s}}.", "/", "", "at 2026-11-24T17:01:30.123Z."},
    {"{{now+2m}}", "/", "", "2026-11-24T17:02:00.123Z"},
    {"{{now+2h}}", "/", "", "2026-11-24T19:00:00.123Z"},
    {"{{now-1d}}", "/", "", "2026-11-23T17:00:00.123Z"},
    {"{{now+0s}}", "/", "", "2026-11-24T17:00:00.123Z"},
    {"{{now_epoch}}", "/", "", "1795539600"},
    {"{{now_epoch+90s}}", "/", "", "1795539690"},
    {"{{now_epoch-1d}}", "/", "", "1795453200"},
    {"{{now_epoch_ms}}", "/", "", "1795539600123"},
    {"{{now_epoch_ms+2h}}", "/", "", "1795546800123"},
    {"{{request.path}}", "/v1/items/42", "", "/v1/items/42"},
    {"{{request.query.id}}", "/", "a=1&id=x%20y&id=2", "x%20y"},
    {"{{request.query.a}}", "/", "a=1&id=2", "1"},
    {"[{{request.query.missing}}]", "/", "a=1", "[]"},
    {"[{{request.query.flag}}]", "/", "flag&b=2", "[]"},
    {"[{{request.query.a}}]", "/", "", "[]"},
    {"{\"p\":\"{{request.path}}\",\"t\":{{now_epoch}}}", "/x", "",
     "{\"p\":\"/x\",\"t\":1795539600}"},
    /* Left as written: unknown names, bad offsets, unclosed braces. */
    {"{{unknown}}", "/", "", "{{unknown}}"},
    {"{{now+5}}", "/", "", "{{now+5}}"},
    {"{{now+5w}}", "/", "", "{{now+5w}}"},
    {"{{now+s}}", "/", "", "{{now+s}}"},
    {"{{now*2h}}", "/", "", "{{now*2h}}"},
    {"{{now+1h2}}", "/", "", "{{now+1h2}}"},
    {"{{now+99999999999999999999d}}", "/", "", "{{now+99999999999999999999d}}"},
    {"{{nowhere}}", "/", "", "{{nowhere}}"},
    {"{{request.query.}}", "/", "", "{{request.query.}}"},
    {"{{request.paths}}", "/", "", "{{request.paths}}"},
    {"{{now", "/", "", "{{now"},
    {"{{now}", "/", "", "{{now}"},
    {"{{}}", "/", "", "{{}}"},
    {"{", "/", "", "{"},
    {"}}{{", "/", "", "}}{{"},
    /* A stray brace before a placeholder does not hide it. */
    {"{{{now_epoch}}}", "/", "", "{1795539600}"},
    {"{{x}} {{now_epoch}}", "/", "", "{{x}} 1795539600"},
    {"{{now_epoch}}{{now_epoch}}", "/", "", "17955396001795539600"},
};

static int check_binary(void)
{
    /* Bytes around placeholders pass through untouched, NULs included. */
    static const unsigned char in[] = {0,   0xff, '{', '{', 'n', 'o', 'w', '_', 'e',
                                       'p', 'o',  'c', 'h', '}', '}', 0,   0x80};
    static const char want[] = "\0\xff"
                               "1795539600\0\x80";
    struct server_request req = {.method = "GET", .path = "/", .query = ""};
    size_t n = 0;
    unsigned char *out = template_expand(in, sizeof in, &req, NOW_US, &n);
    int ok = out && n == sizeof want - 1 && memcmp(out, want, n) == 0;
    if (!ok)
        fprintf(stderr, "FAIL binary body: got %zu bytes\n", n);
    free(out);
    return ok ? 0 : 1;
}

static int check_cap(void)
{
    /* Expansions stop at TEMPLATE_MAX_EXPANSION bytes; the rest stays as written. */
    size_t qlen = 4096, reps = TEMPLATE_MAX_EXPANSION / qlen + 10;
    static const char ph[] = "{{request.query.q}}";
    size_t phlen = sizeof ph - 1, n = 0;
    char *query = malloc(qlen + 3);
    unsigned char *body = malloc(reps * phlen), *out = NULL;
    int ok = 0;
    if (!query || !body)
        goto out;
    memcpy(query, "q=", 2);
    memset(query + 2, 'v', qlen);
    query[qlen + 2] = '\0';
    for (size_t i = 0; i < reps; i++)
        memcpy(body + i * phlen, ph, phlen);
    struct server_request req = {.method = "GET", .path = "/", .query = query};
    out = template_expand(body, reps * phlen, &req, NOW_US, &n);
    size_t done = TEMPLATE_MAX_EXPANSION / qlen;
    ok = out && n == done * qlen + (reps - done) * phlen &&
         memcmp(out + done * qlen, ph, phlen) == 0 && out[done * qlen - 1] == 'v';
    if (!ok)
        fprintf(stderr, "FAIL expansion cap: got %zu bytes\n", n);
out:
    free(query);
    free(body);
    free(out);
    return ok ? 0 : 1;
}

int main(void)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tcase *c = &cases[i];
        struct server_request req = {.method = "GET", .path = c->path, .query = c->query};
        size_t n = 0;
        unsigned char *out =
            template_expand((const unsigned char *)c->body, strlen(c->body), &req, NOW_US, &n);
        if (!out || n != strlen(c->want) || memcmp(out, c->want, n) != 0 || out[n] != '\0') {
            fprintf(stderr, "FAIL case %zu %s: got \"%.*s\", want \"%s\"\n", i, c->body,
                    out ? (int)n : 0, out ? (const char *)out : "", c->want);
            failed++;
        }
        if (template_has_placeholders((const unsigned char *)c->body, strlen(c->body)) !=
            (strstr(c->body, "{{") != NULL)) {
            fprintf(stderr, "FAIL case %zu %s: template_has_placeholders\n", i, c->body);
            failed++;
        }
        free(out);
    }
    failed += check_binary();
    failed += check_cap();
    if (failed) {
        fprintf(stderr, "%d template case(s) failed\n", failed);
        return 1;
    }
    printf("template: all cases pass\n");
    return 0;
}
