/* codec — decodes gzip, deflate, br (libbrotli) and zstd (libzstd) response bodies as they
 * stream, so recordings hold readable bodies and each recorded chunk's size is in decoded
 * bytes. Output is capped by the struct buf it goes into.
 *
 * Pure: no I/O. One struct codec per body.
 */
#ifndef APISIM_CODEC_H
#define APISIM_CODEC_H

#include <stddef.h>

#include "util.h"

struct codec;

/* A decoder for a Content-Encoding value; NULL when the encoding is not one apisim decodes
 * (identity, compress, ...) or out of memory. */
struct codec *codec_new(const char *encoding);

/* Decode n more bytes, appending to out. Returns 0, or -1 when the input is not valid for
 * the encoding or out would pass its cap (the codec is then unusable). */
int codec_feed(struct codec *c, const void *in, size_t n, struct buf *out);

/* 1 when the encoded stream has ended cleanly. */
int codec_finished(const struct codec *c);

void codec_free(struct codec *c);

#endif
