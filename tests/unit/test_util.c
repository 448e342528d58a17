/* Unit tests for util.c's is_utf8_text: a table of valid and invalid sequences, each tried
 * at every offset of an ASCII run (so that it falls in, across and after the eight-byte
 * words the ASCII fast path reads), and a NUL at every position; and format_iso8601_ms. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util.h"

#include "check.h"

static void test_utf8_sequences(void)
{
    static const struct {
        const char *bytes;
        int utf8;
    } cases[] = {
        {"", 1},
        {"plain ascii", 1},
        {"\xc3\xa9", 1},                             /* é */
        {"\xe2\x82\xac", 1},                         /* € */
        {"\xf0\x9f\x98\x80", 1},                     /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 1},                     /* U+10FFFF */
        {"\x80", 0},                                 /* a lone continuation byte */
        {"\xc3", 0},                                 /* cut short */
        {"\xe2\x82", 0},                             /* cut short */
        {"\xc3\x28", 0},                             /* not a continuation */
        {"\xc0\xaf", 0},                             /* overlong */
        {"\xe0\x80\xaf", 0},                         /* overlong */
        {"\xed\xa0\x80", 0},                         /* a surrogate */
        {"\xf4\x90\x80\x80", 0},                     /* past U+10FFFF */
        {"\xff", 0},                                 /* never in UTF-8 */
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 1}, /* three in a row */
    };
    const char *run = "abcdefghijklmnopqrstuvwxyz{}\"':,0123456789";
    for (size_t i = 0; i < N(cases); i++) {
        size_t len = strlen(cases[i].bytes);
        for (size_t before = 0; before <= 20; before++) {
            for (size_t after = 0; after <= 9; after += 9) {
                unsigned char buf[64];
                memcpy(buf, run, before);
                memcpy(buf + before, cases[i].bytes, len);
                memcpy(buf + before + len, run, after);
                size_t n = before + len + after;
                CHECK(is_utf8_text(buf, n) == cases[i].utf8,
                      "case %zu (%d expected) after %zu ASCII bytes, before %zu", i, cases[i].utf8,
                      before, after);
            }
        }
    }
}

static void test_nul_anywhere(void)
{
    unsigned char buf[40];
    for (size_t at = 0; at < sizeof buf; at++) {
        memset(buf, 'x', sizeof buf);
        buf[at] = 0;
        CHECK(!is_utf8_text(buf, sizeof buf), "NUL at %zu taken for text", at);
        CHECK(is_utf8_text(buf, at), "the %zu bytes before the NUL are text", at);
    }
    memset(buf, 'x', sizeof buf);
    CHECK(is_utf8_text(buf, sizeof buf), "40 ASCII bytes are text");
    buf[39] = 0x80;
    CHECK(!is_utf8_text(buf, sizeof buf), "a continuation byte last is not text");
}

/* The time stamp, whose date and time part is kept from one call to the next in the same
 * second: against gmtime_r and strftime at each call, across second, day and year ends. */
static void test_iso8601_ms(void)
{
    static const int64_t times_us[] = {
        0,
        999,
        1000,
        999999,
        1000000,
        1700000000123456,
        1700000000999999,
        1700000001000000,
        1700000000123456, /* an earlier second again */
        1735689599999000,
        1735689600000000, /* 2024-12-31T23:59:59.999Z, 2025-01-01T00:00:00.000Z */
        -1,
        -1000000,
        -1500000,
    };
    for (size_t i = 0; i < sizeof times_us / sizeof times_us[0]; i++) {
        int64_t t = times_us[i];
        time_t secs = (time_t)(t / 1000000);
        int64_t rem = t % 1000000;
        if (rem < 0) {
            secs--;
            rem += 1000000;
        }
        struct tm tm;
        gmtime_r(&secs, &tm);
        char want[64], got[64];
        size_t n = strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(want + n, sizeof want - n, ".%03dZ", (int)(rem / 1000));
        format_iso8601_ms(t, got, sizeof got);
        CHECK(strcmp(got, want) == 0, "%lld µs: %s, want %s", (long long)t, got, want);
    }
    char small[11];
    format_iso8601_ms(1700000000123456, small, sizeof small);
    CHECK(strcmp(small, "2023-11-14") == 0, "cut to 10 characters: %s", small);
}

int main(void)
{
    test_utf8_sequences();
    test_nul_anywhere();
    test_iso8601_ms();
    if (failures) {
        fprintf(stderr, "test_util: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_util: ok\n");
    return 0;
}
