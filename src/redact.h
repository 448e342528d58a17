/* redact — keeps secrets out of what apisim stores.
 *
 * Built-in header names (authorization, proxy-authorization, x-api-key, cookie, set-cookie)
 * are always redacted; rules add more header names, query parameter names and JSON
 * pointers. A redacted value becomes the string "[REDACTED]". Only what is stored is
 * redacted; callers forward the original.
 *
 * Pure: no I/O, no logging.
 */
#ifndef APISIM_REDACT_H
#define APISIM_REDACT_H

#include <stddef.h>

#include "util.h"

#define REDACTED "[REDACTED]"

struct redact_rules {
    char **headers; /* extra header names, compared case-insensitively */
    size_t nheaders;
    char **query; /* query parameter names, compared exactly */
    size_t nquery;
    char **json; /* JSON pointers (jsonptr.h syntax) into request and response bodies */
    size_t njson;
};

/* 1 when a header with this name is redacted (built-in or by rule). */
int redact_is_secret_header(const struct redact_rules *r, const char *name);
/* 1 when a query parameter with this name is redacted. */
int redact_is_secret_query(const struct redact_rules *r, const char *name);

/* Replace the values of secret headers in h with REDACTED. Returns 0 or -1 (no memory). */
int redact_headers(const struct redact_rules *r, struct headers *h);

/* Return a newly allocated copy of query ("a=1&b=2", no '?') with the values of secret
 * parameters replaced by REDACTED; order and everything else kept byte for byte. Caller
 * frees. NULL only when out of memory. */
char *redact_query(const struct redact_rules *r, const char *query);

/* When body is a JSON document and a rule pointer reaches something in it, set *out to a
 * newly allocated compact rendering with those values replaced by REDACTED and return 1.
 * Return 0 when nothing changed (not JSON, or nothing reached; *out untouched), -1 when out
 * of memory. Caller frees *out. */
int redact_json(const struct redact_rules *r, const unsigned char *body, size_t len,
                unsigned char **out, size_t *outlen);

/* Add copies of names/pointers to the rules. Returns 0 or -1 (no memory). */
int redact_add_header(struct redact_rules *r, const char *name);
int redact_add_query(struct redact_rules *r, const char *name);
int redact_add_json(struct redact_rules *r, const char *ptr);
/* Free what the rules own (not r itself); r is left empty. */
void redact_rules_free(struct redact_rules *r);

#endif
