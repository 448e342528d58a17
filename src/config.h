/* config — the --config FILE (JSON) that carries what flags cannot say well.
 *
 *   {"match": {"fields": ["method","path"], "headers": [..], "ignore_query": [..],
 *              "ignore_json": ["/metadata/user_id"]},
 *    "latency": "SPEC",
 *    "faults": "KIND[:ARG]:RATE%,..." or ["KIND[:ARG]:RATE%", ...]   (fault.h),
 *    "redact": {"headers": [..], "query": [..], "json": [..]},
 *    "routes": [{"method": "POST", "path": "/v1/messages" or a glob with '*',
 *                "match": {same as above}, "latency": "SPEC", "faults": same as above}]}
 *
 * Unknown keys and wrong types are errors naming the JSON path ("routes[1].match.fields[0]").
 * The first route whose method and path fit a request applies to it.
 *
 * Pure: parsing takes the file's text; no I/O, no logging.
 */
#ifndef APISIM_CONFIG_H
#define APISIM_CONFIG_H

#include <stddef.h>

#include "fault.h"
#include "latency.h"
#include "match.h"
#include "redact.h"

struct route_rule {
    char *method;    /* NULL or "*" for any method; else compared case-insensitively */
    char *path_glob; /* exact path, or a glob where '*' matches any run of characters */
    int has_match;   /* 1 when the route has its own "match" object */
    struct match_rules match;
    int has_latency;
    struct latency_spec latency;
    int has_faults; /* the route's own "faults" (possibly empty: none on this route) */
    struct fault_set faults;
};

struct config {
    int has_match;
    struct match_rules match;
    int has_latency;
    struct latency_spec latency;
    struct fault_set faults; /* replay faults for every route without its own */
    struct redact_rules redact;
    struct route_rule *routes;
    size_t nroutes;
};

/* Parse the text of a config file into cfg (which must be zeroed). Returns 0, or -1 with
 * err naming the JSON path and what was expected; cfg is then empty. */
int config_parse(const char *text, size_t len, struct config *cfg, char *err);

/* The first route that fits method and path, or NULL. */
const struct route_rule *config_route_for(const struct config *cfg, const char *method,
                                          const char *path);

/* 1 when path fits the glob ('*' matches any run of characters, including '/'). */
int config_glob_match(const char *glob, const char *path);

/* Free what cfg owns; cfg is left zeroed. */
void config_free(struct config *cfg);

#endif
