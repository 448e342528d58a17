/* util — small building blocks shared by every module: capped byte buffers, header lists,
 * clocks, and parsing of the durations and sizes the command line accepts.
 *
 * Pure: no I/O, no logging. Functions that can fail return 0 on success and -1 on failure;
 * where a caller needs a sentence, it is written into char err[APISIM_ERR_LEN].
 */
#ifndef APISIM_UTIL_H
#define APISIM_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define APISIM_ERR_LEN 512

/* A growable byte buffer that refuses to grow past max (0 means SIZE_MAX). Always keeps a
 * NUL after the last byte so text can be used as a C string. */
struct buf {
    char *p;
    size_t len;
    size_t cap;
    size_t max;
};

/* Append n bytes. Returns 0, or -1 when the cap would be exceeded or memory ran out (the
 * buffer is then unchanged). */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand the bytes to the caller (who frees them with free()); the buffer is left empty. */
char *buf_steal(struct buf *b, size_t *len);
void buf_free(struct buf *b);

/* One HTTP header as received or recorded; name keeps its case. */
struct header {
    char *name;
    char *value;
};

/* An ordered list of headers; repeated names are kept as separate entries. */
struct headers {
    struct header *v;
    size_t n;
    size_t cap;
};

/* Append a copy of name and value. Returns 0 or -1 (out of memory). */
int headers_add(struct headers *h, const char *name, const char *value);
int headers_addn(struct headers *h, const char *name, size_t nlen, const char *value, size_t vlen);
/* The value of the first header named name (case-insensitive), or NULL. */
const char *headers_get(const struct headers *h, const char *name);
/* Remove every header named name (case-insensitive). */
void headers_remove(struct headers *h, const char *name);
void headers_free(struct headers *h);
/* 1 when name is a hop-by-hop header (RFC 9110 7.6.1) that a proxy must not forward. */
int header_is_hop_by_hop(const char *name);

/* Microseconds on the monotonic clock. */
int64_t now_mono_us(void);
/* Microseconds since the Unix epoch. */
int64_t now_wall_us(void);
/* Write wall time t (µs since epoch) as "2026-11-24T17:00:00.123Z" into out (>= 32 bytes). */
void format_iso8601_ms(int64_t t_us, char *out, size_t outlen);

/* Parse a duration: a non-negative number with unit us, ms or s ("250ms", "1.5s").
 * Returns 0 and the value in microseconds, or -1 with err naming the value. */
int parse_duration_us(const char *s, int64_t *out, char *err);
/* Parse a size: a non-negative integer with optional unit B, KiB, MiB, GiB ("64MiB").
 * Returns 0 and bytes, or -1 with err. */
int parse_size(const char *s, size_t *out, char *err);

/* 1 when the n bytes are valid UTF-8 with no NUL, so they can be stored as TEXT. */
int is_utf8_text(const unsigned char *p, size_t n);

/* Base64 (standard alphabet, with padding) of n bytes: a malloc'd string the caller
 * frees, or NULL when out of memory. */
char *base64_encode(const unsigned char *p, size_t n);

/* Decode base64 (standard or URL-safe alphabet, padding optional, whitespace ignored) and
 * append the bytes to b. Returns 0, -1 when s is not base64, -2 when b's cap is exceeded or
 * memory ran out. */
int base64_decode_append(const char *s, size_t n, struct buf *b);

/* A growable array of owned strings: append a copy of s; free them all. */
int strlist_add(char ***list, size_t *n, const char *s);
void strlist_free(char ***list, size_t *n);

/* strdup that returns NULL only for a NULL argument or on out of memory. */
char *xstrndup(const char *s, size_t n);

/* Case-insensitive ASCII comparisons. */
int ascii_casecmp(const char *a, const char *b);

#endif
