#include "codec.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct codec {
    z_stream zs;
    int deflate;   /* "deflate": zlib-wrapped, or raw as some servers send it */
    int tried_raw; /* switched to raw deflate after a zlib header error */
    int started;   /* any input seen */
    int finished;
};

struct codec *codec_new(const char *encoding)
{
    if (!encoding)
        return NULL;
    int gzip = strcmp(encoding, "gzip") == 0 || strcmp(encoding, "x-gzip") == 0;
    int deflate = strcmp(encoding, "deflate") == 0;
    if (!gzip && !deflate)
        return NULL;
    struct codec *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->deflate = deflate;
    /* 15 + 16: gzip only; 15: zlib wrapper. */
    if (inflateInit2(&c->zs, gzip ? 15 + 16 : 15) != Z_OK) {
        free(c);
        return NULL;
    }
    return c;
}

int codec_feed(struct codec *c, const void *in, size_t n, struct buf *out)
{
    unsigned char tmp[16384];
    if (c->finished)
        return n == 0 ? 0 : -1;
    while (n > 0) {
        unsigned take = n > 1u << 30 ? 1u << 30 : (unsigned)n;
        c->zs.next_in = (unsigned char *)(uintptr_t)in;
        c->zs.avail_in = take;
        int first = !c->started;
        c->started = 1;
        for (;;) {
            c->zs.next_out = tmp;
            c->zs.avail_out = sizeof tmp;
            int zr = inflate(&c->zs, Z_NO_FLUSH);
            if (zr == Z_DATA_ERROR && c->deflate && first && !c->tried_raw) {
                /* "deflate" sent without the zlib wrapper: start over as raw deflate. */
                inflateEnd(&c->zs);
                memset(&c->zs, 0, sizeof c->zs);
                if (inflateInit2(&c->zs, -15) != Z_OK)
                    return -1;
                c->tried_raw = 1;
                c->zs.next_in = (unsigned char *)(uintptr_t)in;
                c->zs.avail_in = take;
                continue;
            }
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
        in = (const unsigned char *)in + take;
        n -= take;
    }
    return 0;
}

int codec_finished(const struct codec *c)
{
    return c->finished;
}

void codec_free(struct codec *c)
{
    if (!c)
        return;
    inflateEnd(&c->zs);
    free(c);
}
