/* libFuzzer target: match keys, differences and JSON canonicalisation (match.h).
 *
 * Input fields ('\0'-separated, see fuzz_input.h):
 *   0 fields ("method,path,query,body" or any text: invalid lists fall back to all)
 *   1 method  2 path  3 query  4 header name  5 header value
 *   6 ignore-json pointer  7 redact-json pointer  8 ignore-query name
 *   9 recorded body (for match_diff)  10 body (the rest, any bytes)
 */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_input.h"
#include "jsonptr.h"
#include "match.h"
#include "redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_fields f;
    char err[APISIM_ERR_LEN];
    if (fuzz_fields(data, size, 11, &f) < 0)
        goto out;
    struct match_rules rules = {0};
    struct redact_rules redact = {0};
    if (match_parse_fields(f.v[0], &rules.fields, err) < 0)
        rules.fields = MATCH_ALL;
    if (f.v[4][0])
        match_add_header(&rules, f.v[4]);
    /* main.c validates pointers before they reach the rules: so does this. */
    if (jsonptr_validate(f.v[6], err) == 0)
        match_add_ignore_json(&rules, f.v[6]);
    if (jsonptr_validate(f.v[7], err) == 0)
        redact_add_json(&redact, f.v[7]);
    if (f.v[8][0]) {
        match_add_ignore_query(&rules, f.v[8]);
        redact_add_query(&redact, f.v[8]);
    }
    struct headers h = {0};
    headers_add(&h, f.v[4][0] ? f.v[4] : "x-h", f.v[5]);
    struct match_request req = {.method = f.v[1],
                                .path = f.v[2],
                                .query = f.v[3],
                                .headers = &h,
                                .body = (const unsigned char *)f.v[10],
                                .body_len = f.len[10]};
    struct match_request rec = req;
    rec.body = (const unsigned char *)f.v[9];
    rec.body_len = f.len[9];

    free(match_key(&rules, &redact, &req));
    char *k = match_key(&rules, NULL, &rec);
    if (k)
        (void)match_hash(k);
    free(k);
    char *diffs[8];
    int nd = match_diff(&rules, &redact, &req, &rec, diffs, 8);
    for (int i = 0; i < nd && i < 8; i++)
        free(diffs[i]);
    char *ign[1] = {f.v[6]};
    size_t nign = jsonptr_validate(f.v[6], err) == 0 ? 1 : 0;
    free(match_canonical_json(req.body, req.body_len, nign ? ign : NULL, nign));
    free(match_canonical_json(rec.body, rec.body_len, NULL, 0));
    /* redact_json and redact_query see the same bytes on the record path. */
    unsigned char *red = NULL;
    size_t redlen = 0;
    if (redact_json(&redact, req.body, req.body_len, &red, &redlen) == 1)
        free(red);
    free(redact_query(&redact, f.v[3]));

    headers_free(&h);
    match_rules_free(&rules);
    redact_rules_free(&redact);
out:
    fuzz_fields_free(&f);
    return 0;
}
