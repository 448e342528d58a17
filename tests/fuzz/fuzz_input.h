/* fuzz_input — splits a fuzzer's input into NUL-terminated fields.
 *
 * An input is fields separated by '\0' bytes: "GET\0/v1/x\0a=1\0{...}". fuzz_fields() copies
 * up to max fields (the last takes the rest of the input, '\0's included; fuzz_len[i] is
 * each field's length), so a seed is easy to write with printf and every byte sequence is
 * still a valid input. Free with fuzz_fields_free().
 */
#ifndef APISIM_FUZZ_INPUT_H
#define APISIM_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_FIELDS 16

struct fuzz_fields {
    char *v[FUZZ_MAX_FIELDS]; /* always max of them, "" when the input ran out */
    size_t len[FUZZ_MAX_FIELDS];
    size_t n;
};

static inline int fuzz_fields(const uint8_t *data, size_t size, size_t max, struct fuzz_fields *f)
{
    memset(f, 0, sizeof *f);
    if (max > FUZZ_MAX_FIELDS)
        max = FUZZ_MAX_FIELDS;
    size_t pos = 0;
    for (size_t i = 0; i < max; i++) {
        size_t end = pos;
        if (i + 1 < max)
            while (end < size && data[end] != 0)
                end++;
        else
            end = size;
        size_t n = end > pos ? end - pos : 0;
        if (!(f->v[i] = malloc(n + 1)))
            return -1;
        if (n)
            memcpy(f->v[i], data + pos, n);
        f->v[i][n] = '\0';
        f->len[i] = n;
        f->n = i + 1;
        pos = end < size ? end + 1 : size;
    }
    return 0;
}

static inline void fuzz_fields_free(struct fuzz_fields *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i]);
    f->n = 0;
}

#endif
