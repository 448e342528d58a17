#include "config.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonptr.h"

/* A JSON path as errors show it: "routes[1].match.fields[0]". */
#define CONFIG_PATH_MAX 256

/* Write "config: PATH: message" into err (the path left out when empty); returns -1. */
__attribute__((format(printf, 3, 4))) static int fail(char *err, const char *path, const char *fmt,
                                                      ...)
{
    int n = path && *path ? snprintf(err, APISIM_ERR_LEN, "config: %.*s: ", CONFIG_PATH_MAX, path)
                          : snprintf(err, APISIM_ERR_LEN, "config: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, APISIM_ERR_LEN - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *type_name(const cJSON *x)
{
    if (cJSON_IsNull(x))
        return "null";
    if (cJSON_IsBool(x))
        return "a boolean";
    if (cJSON_IsNumber(x))
        return "a number";
    if (cJSON_IsString(x))
        return "a string";
    if (cJSON_IsArray(x))
        return "an array";
    if (cJSON_IsObject(x))
        return "an object";
    return "an unknown value";
}

/* path + suffix, clipped to CONFIG_PATH_MAX. */
__attribute__((format(printf, 3, 4))) static const char *join(char *out, const char *path,
                                                              const char *fmt, ...)
{
    size_t n = (size_t)snprintf(out, CONFIG_PATH_MAX, "%s", path);
    if (n >= CONFIG_PATH_MAX)
        return out;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + n, CONFIG_PATH_MAX - n, fmt, ap);
    va_end(ap);
    return out;
}

static const char *member_path(char *out, const char *path, const char *key)
{
    return *path ? join(out, path, ".%.100s", key) : join(out, path, "%.100s", key);
}

/* Check that every member of obj is one of the accepted keys, and none repeats. */
static int check_keys(const cJSON *obj, const char *path, const char *const *keys, size_t nkeys,
                      const char *accepted, char *err)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t k = 0;
        while (k < nkeys && strcmp(c->string, keys[k]) != 0)
            k++;
        if (k == nkeys)
            return fail(err, path, "unknown key \"%.100s\" (accepted: %s)", c->string, accepted);
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (strcmp(d->string, c->string) == 0)
                return fail(err, path, "key \"%.100s\" appears twice", c->string);
    }
    return 0;
}

static int want(const cJSON *x, int ok, const char *path, const char *what, char *err)
{
    return ok ? 0 : fail(err, path, "expected %s, got %s", what, type_name(x));
}

/* An array of non-empty strings; each is handed to add(). check() (may be NULL) vets each
 * first and writes its sentence into why. */
static int string_list(const cJSON *arr, const char *path, void *target,
                       int (*add)(void *target, const char *s),
                       int (*check)(const char *s, char *why), char *err)
{
    char p[CONFIG_PATH_MAX], why[APISIM_ERR_LEN];
    if (want(arr, cJSON_IsArray(arr), path, "an array of strings", err) < 0)
        return -1;
    size_t i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        join(p, path, "[%zu]", i);
        if (want(c, cJSON_IsString(c), p, "a string", err) < 0)
            return -1;
        if (!*c->valuestring)
            return fail(err, p, "must not be empty");
        if (check && check(c->valuestring, why) < 0)
            return fail(err, p, "%s", why);
        if (add(target, c->valuestring) < 0)
            return fail(err, p, "out of memory");
    }
    return 0;
}

static int add_match_header(void *r, const char *s)
{
    return match_add_header(r, s);
}
static int add_ignore_query(void *r, const char *s)
{
    return match_add_ignore_query(r, s);
}
static int add_ignore_json(void *r, const char *s)
{
    return match_add_ignore_json(r, s);
}
static int add_redact_header(void *r, const char *s)
{
    return redact_add_header(r, s);
}
static int add_redact_query(void *r, const char *s)
{
    return redact_add_query(r, s);
}
static int add_redact_json(void *r, const char *s)
{
    return redact_add_json(r, s);
}

static int check_pointer(const char *s, char *why)
{
    return jsonptr_validate(s, why);
}

static int parse_fields(const cJSON *arr, const char *path, unsigned *out, char *err)
{
    char p[CONFIG_PATH_MAX], why[APISIM_ERR_LEN];
    unsigned bits = 0;
    if (want(arr, cJSON_IsArray(arr), path, "an array of strings", err) < 0)
        return -1;
    size_t i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        unsigned b;
        join(p, path, "[%zu]", i);
        if (want(c, cJSON_IsString(c), p, "a string", err) < 0)
            return -1;
        if (match_parse_fields(c->valuestring, &b, why) < 0)
            return fail(err, p, "%s", why);
        bits |= b;
    }
    if (!bits)
        return fail(err, path,
                    "list at least one field (accepted: method, path, query, body); leave "
                    "\"fields\" out to match on all of them");
    *out = bits;
    return 0;
}

static int parse_match(const cJSON *obj, const char *path, struct match_rules *m, char *err)
{
    static const char *const keys[] = {"fields", "headers", "ignore_query", "ignore_json"};
    char p[CONFIG_PATH_MAX];
    if (want(obj, cJSON_IsObject(obj), path, "an object", err) < 0 ||
        check_keys(obj, path, keys, 4, "fields, headers, ignore_query, ignore_json", err) < 0)
        return -1;
    for (const cJSON *c = obj->child; c; c = c->next) {
        member_path(p, path, c->string);
        int rc;
        if (strcmp(c->string, "fields") == 0)
            rc = parse_fields(c, p, &m->fields, err);
        else if (strcmp(c->string, "headers") == 0)
            rc = string_list(c, p, m, add_match_header, NULL, err);
        else if (strcmp(c->string, "ignore_query") == 0)
            rc = string_list(c, p, m, add_ignore_query, NULL, err);
        else
            rc = string_list(c, p, m, add_ignore_json, check_pointer, err);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int parse_latency(const cJSON *x, const char *path, struct latency_spec *out, char *err)
{
    char why[APISIM_ERR_LEN];
    if (want(x, cJSON_IsString(x), path, "a latency string such as \"fixed:50ms\"", err) < 0)
        return -1;
    if (latency_parse(x->valuestring, out, why) < 0)
        return fail(err, path, "%s", why);
    return 0;
}

/* "faults": one string of comma-separated specs, or an array of specs. */
static int parse_faults(const cJSON *x, const char *path, struct fault_set *out, char *err)
{
    char why[APISIM_ERR_LEN], p[CONFIG_PATH_MAX];
    if (cJSON_IsString(x)) {
        if (fault_parse(x->valuestring, out, why) < 0)
            return fail(err, path, "%s", why);
        return 0;
    }
    if (want(x, cJSON_IsArray(x), path,
             "a string such as \"reset:5%,status:529:10%\" or an array of such strings", err) < 0)
        return -1;
    size_t i = 0;
    for (const cJSON *c = x->child; c; c = c->next, i++) {
        join(p, path, "[%zu]", i);
        if (want(c, cJSON_IsString(c), p, "a string such as \"reset:5%\"", err) < 0)
            return -1;
        if (fault_parse(c->valuestring, out, why) < 0)
            return fail(err, p, "%s", why);
    }
    return 0;
}

static int parse_redact(const cJSON *obj, const char *path, struct redact_rules *r, char *err)
{
    static const char *const keys[] = {"headers", "query", "json"};
    char p[CONFIG_PATH_MAX];
    if (want(obj, cJSON_IsObject(obj), path, "an object", err) < 0 ||
        check_keys(obj, path, keys, 3, "headers, query, json", err) < 0)
        return -1;
    for (const cJSON *c = obj->child; c; c = c->next) {
        member_path(p, path, c->string);
        int rc;
        if (strcmp(c->string, "headers") == 0)
            rc = string_list(c, p, r, add_redact_header, NULL, err);
        else if (strcmp(c->string, "query") == 0)
            rc = string_list(c, p, r, add_redact_query, NULL, err);
        else
            rc = string_list(c, p, r, add_redact_json, check_pointer, err);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int parse_route(const cJSON *obj, const char *path, struct route_rule *r, char *err)
{
    static const char *const keys[] = {"method", "path", "match", "latency", "faults"};
    char p[CONFIG_PATH_MAX];
    if (want(obj, cJSON_IsObject(obj), path, "an object", err) < 0 ||
        check_keys(obj, path, keys, 5, "method, path, match, latency, faults", err) < 0)
        return -1;
    for (const cJSON *c = obj->child; c; c = c->next) {
        member_path(p, path, c->string);
        if (strcmp(c->string, "method") == 0 || strcmp(c->string, "path") == 0) {
            if (want(c, cJSON_IsString(c), p, "a string", err) < 0)
                return -1;
            if (!*c->valuestring)
                return fail(err, p, "must not be empty");
            char **dst = c->string[0] == 'm' ? &r->method : &r->path_glob;
            if (!(*dst = strdup(c->valuestring)))
                return fail(err, p, "out of memory");
        } else if (strcmp(c->string, "match") == 0) {
            r->has_match = 1;
            if (parse_match(c, p, &r->match, err) < 0)
                return -1;
        } else if (strcmp(c->string, "faults") == 0) {
            r->has_faults = 1;
            if (parse_faults(c, p, &r->faults, err) < 0)
                return -1;
        } else {
            r->has_latency = 1;
            if (parse_latency(c, p, &r->latency, err) < 0)
                return -1;
        }
    }
    /* A route without a path applies to every path. */
    if (!r->path_glob && !(r->path_glob = strdup("*")))
        return fail(err, path, "out of memory");
    return 0;
}

static int parse_routes(const cJSON *arr, struct config *cfg, char *err)
{
    char p[CONFIG_PATH_MAX];
    if (want(arr, cJSON_IsArray(arr), "routes", "an array of objects", err) < 0)
        return -1;
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (n == 0)
        return 0;
    cfg->routes = calloc(n, sizeof *cfg->routes);
    if (!cfg->routes)
        return fail(err, "routes", "out of memory");
    for (const cJSON *c = arr->child; c; c = c->next) {
        join(p, "routes", "[%zu]", cfg->nroutes);
        /* Counted before parsing so config_free() frees a half-parsed route. */
        struct route_rule *r = &cfg->routes[cfg->nroutes++];
        if (parse_route(c, p, r, err) < 0)
            return -1;
    }
    return 0;
}

/* Where in text the parser stopped, as "line L, column C". */
static void where(const char *text, const char *at, char *out, size_t outlen)
{
    size_t line = 1, col = 1;
    for (const char *p = text; p < at && *p; p++) {
        if (*p == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(out, outlen, "line %zu, column %zu", line, col);
}

int config_parse(const char *text, size_t len, struct config *cfg, char *err)
{
    static const char *const keys[] = {"match", "latency", "faults", "redact", "routes"};
    char *copy = NULL;
    cJSON *root = NULL;
    int rc = -1;
    if (!text || len == 0) {
        fail(err, NULL, "the file is empty; expected a JSON object");
        goto out;
    }
    if (memchr(text, '\0', len)) {
        fail(err, NULL, "the file holds a NUL byte; expected a JSON object");
        goto out;
    }
    copy = xstrndup(text, len);
    if (!copy) {
        fail(err, NULL, "out of memory");
        goto out;
    }
    const char *end = NULL;
    root = cJSON_ParseWithOpts(copy, &end, 1);
    if (!root) {
        char at[64];
        where(copy, end ? end : copy, at, sizeof at);
        fail(err, NULL, "invalid JSON near %s", at);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        fail(err, NULL, "expected a JSON object at the top level, got %s", type_name(root));
        goto out;
    }
    if (check_keys(root, "", keys, 5, "match, latency, faults, redact, routes", err) < 0)
        goto out;
    for (const cJSON *c = root->child; c; c = c->next) {
        int r;
        if (strcmp(c->string, "match") == 0) {
            cfg->has_match = 1;
            r = parse_match(c, "match", &cfg->match, err);
        } else if (strcmp(c->string, "latency") == 0) {
            cfg->has_latency = 1;
            r = parse_latency(c, "latency", &cfg->latency, err);
        } else if (strcmp(c->string, "faults") == 0) {
            r = parse_faults(c, "faults", &cfg->faults, err);
        } else if (strcmp(c->string, "redact") == 0) {
            r = parse_redact(c, "redact", &cfg->redact, err);
        } else {
            r = parse_routes(c, cfg, err);
        }
        if (r < 0)
            goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        config_free(cfg);
    cJSON_Delete(root);
    free(copy);
    return rc;
}

int config_glob_match(const char *glob, const char *path)
{
    const char *star = NULL, *resume = NULL;
    while (*path) {
        if (*glob == '*') {
            star = glob++;
            resume = path;
        } else if (*glob == *path) {
            glob++;
            path++;
        } else if (star) {
            /* Let the last '*' swallow one more character and try again. */
            glob = star + 1;
            path = ++resume;
        } else {
            return 0;
        }
    }
    while (*glob == '*')
        glob++;
    return *glob == '\0';
}

const struct route_rule *config_route_for(const struct config *cfg, const char *method,
                                          const char *path)
{
    for (size_t i = 0; cfg && i < cfg->nroutes; i++) {
        const struct route_rule *r = &cfg->routes[i];
        if (r->method && strcmp(r->method, "*") != 0 &&
            (!method || ascii_casecmp(r->method, method) != 0))
            continue;
        if (r->path_glob && !config_glob_match(r->path_glob, path ? path : ""))
            continue;
        return r;
    }
    return NULL;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    match_rules_free(&cfg->match);
    redact_rules_free(&cfg->redact);
    fault_set_free(&cfg->faults);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].method);
        free(cfg->routes[i].path_glob);
        match_rules_free(&cfg->routes[i].match);
        fault_set_free(&cfg->routes[i].faults);
    }
    free(cfg->routes);
    memset(cfg, 0, sizeof *cfg);
}
