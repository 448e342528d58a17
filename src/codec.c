#include "codec.h"

#include <brotli/decode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

enum codec_kind { CODEC_ZLIB, CODEC_BROTLI, CODEC_ZSTD };

struct codec {
    enum codec_kind kind;
    BrotliDecoderState *br;
    ZSTD_DStream *zstd;
    z_stream zs;
    int deflate;           /* "deflate": zlib-wrapped, or raw as some servers send it */
    int decided;           /* "deflate": which of the two it is, from its first 2 bytes */
    unsigned char head[2]; /* those bytes, until both have arrived */
    size_t nhead;
    int finished;
};

struct codec *codec_new(const char *encoding)
{
    if (!encoding)
        return NULL;
    int gzip = strcmp(encoding, "gzip") == 0 || strcmp(encoding, "x-gzip") == 0;
    int deflate = strcmp(encoding, "deflate") == 0;
    int br = strcmp(encoding, "br") == 0;
    int zstd = strcmp(encoding, "zstd") == 0;
    if (!gzip && !deflate && !br && !zstd)
        return NULL;
    struct codec *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (br) {
        c->kind = CODEC_BROTLI;
        if (!(c->br = BrotliDecoderCreateInstance(NULL, NULL, NULL))) {
            free(c);
            return NULL;
        }
        return c;
    }
    if (zstd) {
        c->kind = CODEC_ZSTD;
        if (!(c->zstd = ZSTD_createDStream()) || ZSTD_isError(ZSTD_initDStream(c->zstd))) {
            ZSTD_freeDStream(c->zstd);
            free(c);
            return NULL;
        }
        return c;
    }
    c->deflate = deflate;
    /* 15 + 16: gzip only; 15: zlib wrapper. */
    if (inflateInit2(&c->zs, gzip ? 15 + 16 : 15) != Z_OK) {
        free(c);
        return NULL;
    }
    return c;
}

/* Brotli: one stream; what follows its end is ignored, as for gzip. */
static int feed_brotli(struct codec *c, const unsigned char *in, size_t n, struct buf *out)
{
    unsigned char tmp[16384];
    for (;;) {
        unsigned char *next_out = tmp;
        size_t avail_out = sizeof tmp;
        BrotliDecoderResult r =
            BrotliDecoderDecompressStream(c->br, &n, &in, &avail_out, &next_out, NULL);
        size_t got = sizeof tmp - avail_out;
        if (got && buf_append(out, tmp, got) < 0)
            return -1;
        if (r == BROTLI_DECODER_RESULT_ERROR)
            return -1;
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            c->finished = 1;
            return 0;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT)
            return 0;
        /* NEEDS_MORE_OUTPUT: go round with an empty buffer again. */
    }
}

/* zstd: a body may hold several frames; it is finished when the last one has ended with
 * no input left over. */
static int feed_zstd(struct codec *c, const unsigned char *in, size_t n, struct buf *out)
{
    unsigned char tmp[16384];
    ZSTD_inBuffer ib = {in, n, 0};
    for (;;) {
        ZSTD_outBuffer ob = {tmp, sizeof tmp, 0};
        size_t r = ZSTD_decompressStream(c->zstd, &ob, &ib);
        if (ZSTD_isError(r))
            return -1;
        if (ob.pos && buf_append(out, tmp, ob.pos) < 0)
            return -1;
        c->finished = r == 0;
        if (ib.pos == ib.size && ob.pos < ob.size)
            return 0;
    }
}

static int feed_zlib(struct codec *c, const unsigned char *in, size_t n, struct buf *out)
{
    unsigned char tmp[16384];
    while (n > 0) {
        unsigned take = n > 1u << 30 ? 1u << 30 : (unsigned)n;
        c->zs.next_in = (unsigned char *)(uintptr_t)in;
        c->zs.avail_in = take;
        for (;;) {
            c->zs.next_out = tmp;
            c->zs.avail_out = sizeof tmp;
            int zr = inflate(&c->zs, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
                return -1;
            size_t got = sizeof tmp - c->zs.avail_out;
            if (got && buf_append(out, tmp, got) < 0)
                return -1;
            if (zr == Z_STREAM_END) {
                c->finished = 1;
                return 0; /* trailing bytes after the end are ignored */
            }
            if (c->zs.avail_in == 0 && got < sizeof tmp)
                break;
            if (zr == Z_BUF_ERROR && got == 0)
                break;
        }
        in += take;
        n -= take;
    }
    return 0;
}

int codec_feed(struct codec *c, const void *in, size_t n, struct buf *out)
{
    const unsigned char *p = in;
    if (c->kind == CODEC_BROTLI)
        return c->finished ? 0 : feed_brotli(c, p, n, out); /* trailing bytes ignored */
    if (c->kind == CODEC_ZSTD)
        return n == 0 ? 0 : feed_zstd(c, p, n, out);
    if (c->finished)
        return n == 0 ? 0 : -1;
    if (c->deflate && !c->decided) {
        /* "deflate" is meant zlib-wrapped, but some servers send raw deflate: a zlib header
         * says which (compression method 8, and a multiple of 31 as a big-endian number),
         * however the body is split. */
        while (n > 0 && c->nhead < 2) {
            c->head[c->nhead++] = *p++;
            n--;
        }
        if (c->nhead < 2)
            return 0;
        c->decided = 1;
        int zlib = (c->head[0] & 0x0f) == 8 && ((c->head[0] << 8) | c->head[1]) % 31 == 0;
        if (!zlib) {
            inflateEnd(&c->zs);
            memset(&c->zs, 0, sizeof c->zs);
            if (inflateInit2(&c->zs, -15) != Z_OK)
                return -1;
        }
        if (feed_zlib(c, c->head, 2, out) < 0)
            return -1;
        if (c->finished)
            return 0;
    }
    return feed_zlib(c, p, n, out);
}

int codec_finished(const struct codec *c)
{
    return c->finished;
}

void codec_free(struct codec *c)
{
    if (!c)
        return;
    if (c->kind == CODEC_BROTLI)
        BrotliDecoderDestroyInstance(c->br);
    else if (c->kind == CODEC_ZSTD)
        ZSTD_freeDStream(c->zstd);
    else
        inflateEnd(&c->zs);
    free(c);
}
