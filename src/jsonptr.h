/* jsonptr — RFC 6901 JSON pointers over cJSON trees, with one extension: a segment "*"
 * stands for every element of an array and every member of an object.
 *
 * Pure: no I/O. Used by redaction (replace values) and matching (drop values).
 */
#ifndef APISIM_JSONPTR_H
#define APISIM_JSONPTR_H

#include <cjson/cJSON.h>

/* Check that s is a pointer this module accepts: "" (the whole document) or a sequence of
 * "/segment" with "~0" and "~1" the only escapes. Returns 0, or -1 with err naming s and
 * what is wrong. */
int jsonptr_validate(const char *s, char *err);

/* Call fn(parent, item, ctx) for every item the pointer reaches in root (parent is NULL for
 * the root itself). fn may replace or detach item through parent; the walk has already
 * moved past it. Returns how many items were reached. */
int jsonptr_visit(cJSON *root, const char *ptr, void (*fn)(cJSON *parent, cJSON *item, void *ctx),
                  void *ctx);

/* Remove every item the pointer reaches (the root itself cannot be removed). Returns how
 * many were removed. */
int jsonptr_remove(cJSON *root, const char *ptr);

#endif
