/* Unit tests for codec.c: every encoding decoded whole and fed in pieces, streams cut short,
 * garbage, output over the cap, bytes after the end. The bodies are made here with each
 * format's own encoder (zlib, libbrotlienc, libzstd). */
#include <brotli/encode.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "check.h"
#include "codec.h"

#define PLAIN_LEN 20000

static unsigned char plain[PLAIN_LEN];

/* zlib-wrapped (deflate), raw deflate (what some servers send as "deflate") or gzip. */
static size_t zlib_encode(int window_bits, unsigned char *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    zs.next_in = plain;
    zs.avail_in = PLAIN_LEN;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int rc = deflate(&zs, Z_FINISH);
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    return rc == Z_STREAM_END ? n : 0;
}

static size_t encode(const char *encoding, unsigned char *out, size_t cap)
{
    if (strcmp(encoding, "gzip") == 0)
        return zlib_encode(15 + 16, out, cap);
    if (strcmp(encoding, "deflate") == 0)
        return zlib_encode(15, out, cap);
    if (strcmp(encoding, "deflate-raw") == 0)
        return zlib_encode(-15, out, cap);
    if (strcmp(encoding, "br") == 0) {
        size_t n = cap;
        return BrotliEncoderCompress(5, 22, BROTLI_MODE_TEXT, PLAIN_LEN, plain, &n, out) ? n : 0;
    }
    if (strcmp(encoding, "zstd") == 0) {
        size_t n = ZSTD_compress(out, cap, plain, PLAIN_LEN, 3);
        return ZSTD_isError(n) ? 0 : n;
    }
    return 0;
}

/* Feed in pieces of `step` bytes (0: all at once). Returns codec_feed's last result. */
static int feed(struct codec *c, const unsigned char *in, size_t n, size_t step, struct buf *out)
{
    if (step == 0)
        return codec_feed(c, in, n, out);
    for (size_t off = 0; off < n; off += step) {
        size_t take = n - off < step ? n - off : step;
        if (codec_feed(c, in + off, take, out) < 0)
            return -1;
    }
    return 0;
}

int main(void)
{
    /* Text that compresses, with some variety so every format uses several blocks. */
    for (size_t i = 0; i < PLAIN_LEN; i++)
        plain[i] = (unsigned char)("{\"k\": \"value\", \"n\": 12345}\n"[i % 27] + (i / 997) % 3);

    static const struct {
        const char *encoding; /* Content-Encoding given to codec_new */
        const char *made_as;  /* how the body is encoded */
    } cases[] = {
        {"gzip", "gzip"},           {"x-gzip", "gzip"}, {"deflate", "deflate"},
        {"deflate", "deflate-raw"}, {"br", "br"},       {"zstd", "zstd"},
    };
    static const size_t steps[] = {0, 1, 7, 4096};
    unsigned char enc[PLAIN_LEN + 1024];

    for (size_t i = 0; i < N(cases); i++) {
        size_t n = encode(cases[i].made_as, enc, sizeof enc);
        CHECK(n > 0 && n < PLAIN_LEN, "%s: encoding the sample failed", cases[i].made_as);
        for (size_t s = 0; s < N(steps); s++) {
            /* Whole, in pieces: the same plain bytes, finished. */
            struct codec *c = codec_new(cases[i].encoding);
            struct buf out = {.max = 1024 * 1024};
            CHECK(c != NULL, "%s: no codec", cases[i].encoding);
            if (!c)
                continue;
            int rc = feed(c, enc, n, steps[s], &out);
            CHECK(rc == 0, "%s as %s, step %zu: feed failed", cases[i].encoding, cases[i].made_as,
                  steps[s]);
            CHECK(codec_finished(c), "%s step %zu: not finished", cases[i].made_as, steps[s]);
            CHECK(out.len == PLAIN_LEN && memcmp(out.p, plain, PLAIN_LEN) == 0,
                  "%s step %zu: decoded %zu bytes, not the %d plain ones", cases[i].made_as,
                  steps[s], out.len, PLAIN_LEN);
            codec_free(c);
            buf_free(&out);
        }

        /* Cut short: no error yet, but never finished (the body is stored raw). */
        struct codec *c = codec_new(cases[i].encoding);
        struct buf out = {.max = 1024 * 1024};
        if (c) {
            CHECK(codec_feed(c, enc, n / 2, &out) == 0, "%s: half a stream refused",
                  cases[i].made_as);
            CHECK(!codec_finished(c), "%s: half a stream finished", cases[i].made_as);
        }
        codec_free(c);
        buf_free(&out);

        /* Output over the buffer's cap fails instead of growing. */
        c = codec_new(cases[i].encoding);
        struct buf small = {.max = 1000};
        if (c)
            CHECK(codec_feed(c, enc, n, &small) < 0 && small.len <= 1000,
                  "%s: %zu bytes decoded past a 1000-byte cap", cases[i].made_as, small.len);
        codec_free(c);
        buf_free(&small);
    }

    /* Garbage is refused by every decoder. */
    static const char *encodings[] = {"gzip", "deflate", "br", "zstd"};
    static const unsigned char garbage[] = "this is not compressed at all, not even a little";
    for (size_t i = 0; i < N(encodings); i++) {
        struct codec *c = codec_new(encodings[i]);
        struct buf out = {.max = 1024 * 1024};
        CHECK(c && codec_feed(c, garbage, sizeof garbage - 1, &out) < 0, "%s: garbage accepted",
              encodings[i]);
        codec_free(c);
        buf_free(&out);
    }

    /* Bytes after a brotli or gzip stream's end are ignored. */
    static const char *trailing[] = {"gzip", "br"};
    for (size_t i = 0; i < N(trailing); i++) {
        size_t n = encode(trailing[i], enc, sizeof enc - 16);
        memcpy(enc + n, "TRAILING", 8);
        struct codec *c = codec_new(trailing[i]);
        struct buf out = {.max = 1024 * 1024};
        CHECK(c && codec_feed(c, enc, n + 8, &out) == 0 && codec_finished(c) &&
                  out.len == PLAIN_LEN,
              "%s: trailing bytes broke the decode (%zu bytes)", trailing[i], out.len);
        codec_free(c);
        buf_free(&out);
    }

    /* Encodings apisim does not decode get no codec: the body is stored as sent. */
    static const char *none[] = {"identity", "compress", "", "BR", "gzip, br"};
    for (size_t i = 0; i < N(none); i++) {
        struct codec *c = codec_new(none[i]);
        CHECK(c == NULL, "\"%s\" should have no codec", none[i]);
        codec_free(c);
    }
    CHECK(codec_new(NULL) == NULL, "NULL encoding");
    codec_free(NULL);
    return failures ? 1 : 0;
}
