/* match — the match key of a request, and how a request differs from a recorded one.
 *
 * The key is built from the fields in rules->fields: method, path, the query with its
 * parameters sorted (ignored and redacted parameters left out), the body (JSON bodies
 * canonicalised: object keys sorted, whitespace dropped, ignored and redacted pointers
 * removed; other bodies as bytes) and the named headers. Two requests match when their keys
 * are equal. Keys are text: non-JSON bodies that are not UTF-8 appear as their length and a hex
 * FNV-1a digest.
 *
 * Pure: no I/O, no logging.
 */
#ifndef APISIM_MATCH_H
#define APISIM_MATCH_H

#include <stddef.h>
#include <stdint.h>

#include "redact.h"
#include "util.h"

enum {
    MATCH_METHOD = 1 << 0,
    MATCH_PATH = 1 << 1,
    MATCH_QUERY = 1 << 2,
    MATCH_BODY = 1 << 3,
    MATCH_ALL = MATCH_METHOD | MATCH_PATH | MATCH_QUERY | MATCH_BODY,
};

struct match_rules {
    unsigned fields; /* MATCH_* bits; 0 is treated as MATCH_ALL */
    char **headers;  /* header names that take part in the key (case-insensitive) */
    size_t nheaders;
    char **ignore_query; /* query parameter names left out */
    size_t nignore_query;
    char **ignore_json; /* JSON pointers removed from JSON bodies before comparing */
    size_t nignore_json;
};

/* The parts of a request that matching looks at. Borrowed pointers. */
struct match_request {
    const char *method;
    const char *path;
    const char *query; /* raw, without '?'; "" or NULL when none */
    const struct headers *headers;
    const unsigned char *body;
    size_t body_len;
};

/* Parse "method,path,query,body" (any non-empty subset, any order) into MATCH_* bits.
 * Returns 0, or -1 with err naming the unknown field and the accepted ones. */
int match_parse_fields(const char *s, unsigned *out, char *err);

/* Build the key of req under rules; secrets named by redact (may be NULL) are left out of
 * it, so a request carrying the real secret matches a recording that holds REDACTED.
 * Returns a newly allocated string the caller frees, or NULL when out of memory. */
char *match_key(const struct match_rules *rules, const struct redact_rules *redact,
                const struct match_request *req);

/* 64-bit FNV-1a of a key, for hash tables. */
uint64_t match_hash(const char *key);

/* A key's identity in the match index: FNV-1a and a second, independent 64-bit hash of its
 * text (128 bits: keys that differ share one by accident with odds of n^2 / 2^129). */
struct match_ident {
    uint64_t hash;
    uint64_t check;
};
void match_ident_of(const char *key, struct match_ident *out);

/* What match_index_ident() computes; stored with every index entry (schema/007), so a file
 * indexed by an apisim that computed keys differently is re-indexed. Bump it whenever a
 * change here (or in what the index key covers) changes any key. */
#define MATCH_INDEX_VERSION 1
/* Names and pointers learnt from one request, at most. */
#define MATCH_LEARN_MAX 256

/* Learn into r what req holds as REDACTED: query parameter names whose value is REDACTED,
 * header names (other than the built-in secret ones) whose value is, and the JSON pointer of
 * every string value that is (members named "*" aside). Names already in r are not added
 * again; r stops growing at MATCH_LEARN_MAX per kind. Returns 0, or -1 when out of memory. */
int match_learn_redacted(struct redact_rules *r, const struct match_request *req);

/* The identity of req's key in the match index: the key under the default rules (every
 * field, no headers, nothing ignored) with what req itself holds as REDACTED left out (as
 * match_learn_redacted() finds it, into learnt: empty rules the caller frees). A request
 * carrying the real secrets, keyed with those names as redact rules, has the same key.
 * Returns 0, or -1 when out of memory. */
int match_index_ident(const struct match_request *req, struct redact_rules *learnt,
                      struct match_ident *out);

/* 1 when rules is the default (every field, no headers, nothing ignored): what the index
 * in the database answers for. NULL is the default. */
int match_rules_are_default(const struct match_rules *rules);

/* Describe how req differs from rec under rules, one newly allocated string per difference
 * (e.g. "method: POST != GET", "path: /a != /b", "query a: 1 != 2", "query b: missing",
 * "body /messages/0/content: \"hi\" != \"yo\"", "header x-v: 1 != 2"): request value first,
 * recorded value second. Stores up to max strings in out and returns the total number of
 * differences (0 when the keys would be equal), or -1 when out of memory. Caller frees
 * each string. */
int match_diff(const struct match_rules *rules, const struct redact_rules *redact,
               const struct match_request *req, const struct match_request *rec, char **out,
               size_t max);

/* Canonical compact JSON of body (sorted keys, no whitespace) with the pointers in
 * ignore[] removed. Returns a newly allocated string, or NULL when body is not JSON. */
char *match_canonical_json(const unsigned char *body, size_t len, char *const *ignore,
                           size_t nignore);

/* Add copies to the rule lists. Return 0 or -1 (no memory). */
int match_add_header(struct match_rules *r, const char *name);
int match_add_ignore_query(struct match_rules *r, const char *name);
int match_add_ignore_json(struct match_rules *r, const char *ptr);
/* Deep copy src into dst (dst's old contents are not freed). Returns 0 or -1. */
int match_rules_copy(struct match_rules *dst, const struct match_rules *src);
void match_rules_free(struct match_rules *r);

#endif
